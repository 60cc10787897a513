/**
 * Edge-local inference (docs/backends.md, "Edge-local inference"): small models solved inside the edge
 * process on ONNX Runtime's WebAssembly backend, without the hop to a worker.
 *
 * A request's model runs here when all of these hold; otherwise its calls go to the worker pool as usual:
 *
 * - the edge allows it (`GENIE_EDGE_LOCAL=auto`; `deno task start` defaults to `auto`, every other
 *   entry point to `off`);
 * - the model folder is present locally (GENIE_MODELS_DIR, else `models/`, as the worker finds it), its
 *   model.json says `"edge": true` (docs/contracts.md §4) and its eps graph is built;
 * - its eps.onnx is at most `maxEpsBytes` (GENIE_EDGE_LOCAL_MAX_BYTES, default 64 KiB);
 * - fewer than `maxModels` other models are open here (GENIE_EDGE_LOCAL_MODELS, default 4);
 * - its engine opened on `wasm` with one thread.
 *
 * Each model's engine (gpu-worker/engine.ts) is opened once, on the first request for it (or by
 * {@link EdgeLocal.warm}), and kept until {@link EdgeLocal.close}: creating ONNX Runtime sessions is slow
 * and does not give all of its memory back, so engines are never closed to make room — the count bound
 * and the size bound together bound the memory. A model above the size bound runs on the workers without
 * a word (that is the setting's purpose); one that cannot run here (over the count, an engine that does
 * not open or whose evaluation fails) is logged in one line and left to the workers
 * from then on; a request whose local evaluation failed is sent to the workers (nothing was changed, so
 * running it again elsewhere is safe).
 *
 * The local engine answers the worker protocol's messages in-process with the worker's own planning and
 * answers (gpu-worker/in_process.ts), so functions/sampling.ts runs every request the same way, chunks,
 * progress, previews, img2img and encoding included; only the {@link Caller} differs. This module is the
 * one module of functions/ that reaches into gpu-worker/, and only into its engine, imported when first
 * needed (an edge with `GENIE_EDGE_LOCAL=off` never loads it).
 */
import type { ModelInfo } from "../core/api/models.ts";
import type { EdgeFacts, OpenedModel } from "../gpu-worker/engine.ts";
import { type CallResult, workerFailure, type WorkerPool } from "./pool.ts";

/** `auto`: run edge-capable models here when possible; `off`: always forward to the workers. */
export type EdgeLocalMode = "auto" | "off";

export const EDGE_LOCAL_MODES: readonly EdgeLocalMode[] = ["auto", "off"];

export interface EdgeLocalConfig {
  mode: EdgeLocalMode;
  /** The models directory (default GENIE_MODELS_DIR, else the repository's `models/`). */
  modelsDir?: string;
  /** Largest eps.onnx run here, in bytes. */
  maxEpsBytes: number;
  /** Most models open here at once. */
  maxModels: number;
}

export const DEFAULT_EDGE_LOCAL: EdgeLocalConfig = {
  mode: "off",
  // 64 KiB: gmm2d (3 KiB) runs here; mnist-mix (3.1 MiB) is several times slower on one wasm thread
  // than through the hop to a native worker (docs/edge.md), so it runs there unless the bound is raised
  maxEpsBytes: 64 * 1024,
  maxModels: 4,
};

/** Where a request ran, as the `x-genie-backend` response header says. */
export type Backend = "edge-wasm" | "worker";

/** What functions/sampling.ts needs to send a worker-protocol message: the pool, or a local route. */
export type Caller = Pick<WorkerPool, "call">;

/** A request's way to its model: the caller of its messages and where they ran. */
export interface Route {
  caller: Caller;
  /** `edge-wasm` while every message ran here, `worker` once one went to the workers. */
  backend(): Backend;
}

/** The part of an opened engine the edge uses. */
export type LocalEngine = Pick<OpenedModel, "answer" | "close">;

/** How the edge reads a folder and opens an engine (gpu-worker/engine.ts; tests inject others). */
export interface EngineAccess {
  inspect(name: string, modelsDir?: string): Promise<EdgeFacts | undefined>;
  open(name: string, modelsDir?: string): Promise<LocalEngine>;
}

/** The engine module, loaded on first use: providers ["wasm"], one thread, nothing built or written. */
const engineAccess: EngineAccess = {
  inspect: async (name, dir) => (await engineModule()).inspectModel(name, dir),
  open: async (name, dir) => {
    const { openModel } = await engineModule();
    return await openModel(name, dir, { providers: ["wasm"], threads: 1, build: false, builtins: false });
  },
};

let engineImport: Promise<typeof import("../gpu-worker/engine.ts")> | undefined;
function engineModule(): Promise<typeof import("../gpu-worker/engine.ts")> {
  return engineImport ??= import("../gpu-worker/engine.ts");
}

/** The path a worker-protocol message goes to, if the engine answers it. */
function solvePath(path: string): "/v1/batch" | "/v1/encode" | undefined {
  return path === "/v1/batch" || path === "/v1/encode" ? path : undefined;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Edge-local inference for one edge app (created by functions/app.ts when the mode is `auto`). */
export class EdgeLocal {
  /** Per model: its engine once open, or undefined when it runs on the workers (decided once). */
  private readonly engines = new Map<string, Promise<LocalEngine | undefined>>();
  private readonly access: EngineAccess;
  /** Models whose local evaluation failed: left to the workers. */
  private readonly disabled = new Set<string>();
  private opened = 0;
  private closed = false;

  constructor(
    readonly config: EdgeLocalConfig,
    private readonly log: (message: string) => void,
    access?: EngineAccess,
  ) {
    this.access = access ?? engineAccess;
  }

  /** The route of a request on `model`: this edge's engine when the model may run here, else the pool. */
  async route(model: ModelInfo, pool: WorkerPool): Promise<Route> {
    const engine = this.config.mode === "auto" && !this.closed ? await this.engineFor(model.name) : undefined;
    if (!engine) return { caller: pool, backend: () => "worker" };
    let forwarded = false;
    const caller: Caller = {
      call: async (path, name, message, signal, weight, onProgress) => {
        const local = solvePath(path);
        if (local && !forwarded) {
          const answer = await engine.answer(local, message, {
            signal,
            onProgress,
            log: (line) => this.log(`edge-local: ${name}: ${line}`),
          });
          const error = (answer.body as { error?: { code?: unknown; message?: unknown } }).error;
          if (answer.status === 200) return { worker: -1, body: answer.body } satisfies CallResult;
          if (error?.code !== "internal") {
            throw workerFailure(answer.status, answer.body, "the edge's engine");
          }
          this.disable(name, `its evaluation failed (${String(error.message)})`);
        }
        forwarded = true;
        return await pool.call(path, name, message, signal, weight, onProgress);
      },
    };
    return { caller, backend: () => forwarded ? "worker" : "edge-wasm" };
  }

  /** Opens the engines of those of `names` that may run here (in the background of a start-up). */
  async warm(names: readonly string[]): Promise<void> {
    if (this.config.mode !== "auto") return;
    await Promise.all(names.map((name) => this.engineFor(name)));
  }

  /** Closes every engine; later requests go to the workers. */
  async close(): Promise<void> {
    this.closed = true;
    const engines = await Promise.all(this.engines.values());
    this.engines.clear();
    await Promise.allSettled(engines.map((e) => e?.close()));
  }

  /** The open engine of `name`, opening it on first use when the model may run here. */
  private engineFor(name: string): Promise<LocalEngine | undefined> {
    const known = this.engines.get(name);
    if (known) return known;
    const decided = this.decide(name).then(
      (engine) => {
        if (engine !== "later") return engine;
        this.engines.delete(name);
        return undefined;
      },
      (e) => {
        this.log(`edge-local: ${name}: ${errorText(e)}; its requests go to the workers`);
        return undefined;
      },
    );
    this.engines.set(name, decided);
    return decided;
  }

  /**
   * Whether `name` runs here, and its engine if so. Undefined, without a log line, for a model that is
   * not marked `edge`, has no folder here or is above the size bound; `later` for a folder whose eps graph is not built yet (asked
   * again on the next request: the worker builds the analytic models' graphs); other refusals throw
   * the reason, which is logged once.
   */
  private async decide(name: string): Promise<LocalEngine | undefined | "later"> {
    const { modelsDir, maxEpsBytes, maxModels } = this.config;
    const facts = await this.access.inspect(name, modelsDir);
    if (!facts?.edge) return undefined;
    if (facts.epsBytes === undefined) return "later";
    // above the size bound: the workers serve it by the edge's setting, which is no fault to report
    if (facts.epsBytes > maxEpsBytes) return undefined;
    if (this.opened >= maxModels) {
      throw new Error(`${maxModels} models are open on the edge already (GENIE_EDGE_LOCAL_MODELS)`);
    }
    this.opened++;
    let engine: LocalEngine;
    try {
      engine = await this.access.open(name, modelsDir);
    } catch (e) {
      this.opened--;
      throw new Error(`could not open on wasm (${errorText(e)})`);
    }
    if (this.closed) {
      await engine.close();
      return undefined;
    }
    return engine;
  }

  /** Leaves `name` to the workers from now on (one log line) and closes its engine. */
  private disable(name: string, why: string): void {
    const engine = this.engines.get(name);
    if (!engine || this.disabled.has(name)) return;
    this.disabled.add(name);
    this.engines.set(name, Promise.resolve(undefined));
    this.log(`edge-local: ${name}: ${why}; its requests go to the workers`);
    void engine.then((e) => e?.close()).catch(() => {});
  }
}
