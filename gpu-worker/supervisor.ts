/**
 * A self-restarting inference thread. {@link SupervisedInference} runs batches on an
 * {@link InferenceThread} and, when that thread crashes (an uncaught error in it: its Worker's "error"
 * event), starts a new one with the same models and options:
 *
 * - the calls in flight on the dead thread reject (the scheduler stops those requests with `internal`);
 * - calls made while the new thread starts wait for it, then run on it;
 * - restart attempts back off: 100 ms, 200 ms, 400 ms, … up to 5 s (the delay doubles with each failed
 *   attempt and with each earlier crash inside the crash window);
 * - it gives up after `maxRestartAttempts` consecutive failed attempts (default 5), or when more than
 *   `maxCrashes` crashes (default 5) fall within `crashWindowMs` (default 60 s): a crash loop. `failure`
 *   is then set for good and every waiting and later call rejects with it.
 *
 *     const inference = await SupervisedInference.start(infos, { providers: ["cpu"] }, { log });
 *     inference.restarts; inference.restarting; inference.lastCrash;   // for /healthz and /metrics
 */
import {
  type BatchOutputs,
  type Inference,
  InferenceThread,
  type LoadedModelReport,
  type LoadReport,
  type ThreadOptions,
  type WireTensor,
} from "./inference.ts";
import type { GraphKind, LoadedModel } from "./manifest.ts";

/** What the supervisor needs of a thread: {@link InferenceThread}'s calls, its crash notice and report. */
export interface SupervisedThread extends Inference {
  /** Per model: provider, input/output names, load and warm-up times. */
  readonly models: Map<string, LoadedModelReport>;
  /** Calls `fn` once if the thread crashes (at once if it already has). */
  onFailure(fn: (err: Error) => void): void;
  /** Loads more models into the running thread ({@link InferenceThread.load}). */
  load?(models: LoadedModel[]): Promise<LoadReport>;
  /** Releases models loaded earlier ({@link InferenceThread.unload}). */
  unload?(names: string[]): Promise<void>;
}

/** Starts a thread with every model loaded (default: {@link InferenceThread.start}). */
export type StartThread = (
  models: LoadedModel[],
  options: ThreadOptions,
  url?: URL,
) => Promise<SupervisedThread>;

/** When a crashed thread is restarted, and when the supervisor gives up. */
export interface RestartPolicy {
  /** Delay before the first restart attempt, doubled per failed attempt and per recent crash (100 ms). */
  backoffMs?: number;
  /** Longest delay between attempts (5000 ms). */
  maxBackoffMs?: number;
  /** Consecutive failed restart attempts before giving up (5). */
  maxRestartAttempts?: number;
  /** Crashes tolerated within `crashWindowMs`; one more is a crash loop and ends the restarts (5). */
  maxCrashes?: number;
  /** The crash-loop window (60 000 ms). */
  crashWindowMs?: number;
}

export interface SupervisorOptions extends RestartPolicy {
  /** The thread's module (default: threadModuleUrl() of inference.ts). */
  url?: URL;
  /** How a thread is started (default {@link InferenceThread.start}); tests inject failures here. */
  startThread?: StartThread;
  /** One line per crash, failed attempt, restart and giving up. */
  log?: (line: string) => void;
  /** Called with the new thread's model report after each successful restart. */
  onRestart?: (models: Map<string, LoadedModelReport>) => void;
}

const CLOSED = "the inference thread is closed";

/** The inference thread, restarted when it crashes (see the module comment). */
export class SupervisedInference implements Inference {
  #thread: SupervisedThread | undefined;
  #models: Map<string, LoadedModelReport>;
  #waiters: { resolve: (t: SupervisedThread) => void; reject: (e: Error) => void }[] = [];
  #crashes: number[] = [];
  #restarts = 0;
  #lastCrash: string | undefined;
  #failure: Error | undefined;
  #closed = false;
  /** The restart loop in progress, if any. */
  #loop: Promise<void> | undefined;
  /** The backoff timer of the restart loop, so that close() can cut it short. */
  #delay: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | undefined;
  readonly #start: () => Promise<SupervisedThread>;
  /** The models a restarted thread loads: those started with, as reloads changed them. */
  readonly #infos: LoadedModel[];
  readonly #log: (line: string) => void;
  readonly #onRestart?: (models: Map<string, LoadedModelReport>) => void;
  readonly #policy: Required<RestartPolicy>;
  /** Models the first thread could not load or warm up (left out of {@link models}), with why. */
  readonly failed: Map<string, string>;

  private constructor(
    thread: SupervisedThread,
    start: () => Promise<SupervisedThread>,
    opts: SupervisorOptions,
    infos: LoadedModel[],
  ) {
    this.#start = start;
    this.#infos = infos;
    this.#log = opts.log ?? (() => {});
    this.#onRestart = opts.onRestart;
    this.#policy = {
      backoffMs: opts.backoffMs ?? 100,
      maxBackoffMs: opts.maxBackoffMs ?? 5000,
      maxRestartAttempts: opts.maxRestartAttempts ?? 5,
      maxCrashes: opts.maxCrashes ?? 5,
      crashWindowMs: opts.crashWindowMs ?? 60_000,
    };
    this.#models = thread.models;
    this.failed = (thread as { failed?: Map<string, string> }).failed ?? new Map();
    this.#adopt(thread);
  }

  /** Starts the first thread (its failure to start is thrown, not retried). */
  static async start(
    models: LoadedModel[],
    options: ThreadOptions,
    opts: SupervisorOptions = {},
  ): Promise<SupervisedInference> {
    const startThread: StartThread = opts.startThread ?? ((m, o, u) => InferenceThread.start(m, o, u));
    const infos = [...models];
    const start = () => startThread(infos, options, opts.url);
    const first = await start();
    // the ones the first thread refused are not retried by restarts
    const failed = (first as { failed?: Map<string, string> }).failed;
    if (failed?.size) infos.splice(0, infos.length, ...infos.filter((m) => !failed.has(m.manifest.name)));
    return new SupervisedInference(first, start, opts, infos);
  }

  /** Per model: provider, input/output names, load and warm-up times (of the latest thread). */
  get models(): Map<string, LoadedModelReport> {
    return this.#models;
  }

  /** Successful restarts so far. */
  get restarts(): number {
    return this.#restarts;
  }

  /** Whether a crashed thread is being replaced (calls wait meanwhile). */
  get restarting(): boolean {
    return !this.#thread && !this.#failure && !this.#closed;
  }

  /** The message of the latest crash, if the thread ever crashed. */
  get lastCrash(): string | undefined {
    return this.#lastCrash;
  }

  /** Set once the supervisor has given up restarting; every later call fails with it. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  /** Runs one batch on the live thread, waiting for a restart in progress. */
  async run(model: string, graph: GraphKind, feeds: Record<string, WireTensor>): Promise<BatchOutputs> {
    for (;;) {
      if (this.#closed) throw new Error(CLOSED);
      if (this.#failure) throw this.#failure;
      const thread = this.#thread ?? await this.#next();
      if (thread.failure) {
        // A crash not reported yet: treat it as reported, and wait for the replacement.
        this.#crashed(thread, thread.failure);
        continue;
      }
      return await thread.run(model, graph, feeds);
    }
  }

  /**
   * Loads more models into the live thread (waiting for a restart in progress); the ones that load are
   * loaded again by later restarts.
   */
  async load(models: LoadedModel[]): Promise<LoadReport> {
    if (this.#closed) throw new Error(CLOSED);
    if (this.#failure) throw this.#failure;
    const thread = this.#thread ?? await this.#next();
    if (!thread.load) throw new Error("this inference thread cannot load models while running");
    const report = await thread.load(models);
    for (const m of models) if (report.models.has(m.manifest.name)) this.#infos.push(m);
    return report;
  }

  /** Releases models loaded earlier; restarts no longer load them. */
  async unload(names: string[]): Promise<void> {
    const keep = this.#infos.filter((m) => !names.includes(m.manifest.name));
    this.#infos.splice(0, this.#infos.length, ...keep);
    const thread = this.#thread;
    if (this.#closed || this.#failure || !thread?.unload) return;
    await thread.unload(names);
  }

  /** Stops the thread; a restart in progress is abandoned (its thread closed) and waiting calls reject. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#settle(new Error(CLOSED));
    if (this.#delay) {
      clearTimeout(this.#delay.timer);
      this.#delay.resolve();
    }
    const thread = this.#thread;
    this.#thread = undefined;
    await Promise.all([thread?.close(), this.#loop]);
  }

  /** The next live thread: resolves after a restart, rejects if the supervisor gives up or closes. */
  #next(): Promise<SupervisedThread> {
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Resolves the waiting calls with `thread`, or rejects them with an error. */
  #settle(outcome: SupervisedThread | Error): void {
    for (const w of this.#waiters.splice(0)) {
      if (outcome instanceof Error) w.reject(outcome);
      else w.resolve(outcome);
    }
  }

  #adopt(thread: SupervisedThread): void {
    this.#thread = thread;
    this.#models = thread.models;
    thread.onFailure((err) => this.#crashed(thread, err));
  }

  #crashed(thread: SupervisedThread, err: Error): void {
    if (thread !== this.#thread || this.#closed || this.#failure) return;
    this.#thread = undefined;
    this.#lastCrash = err.message;
    // Its calls have been rejected; close() only releases the dead thread's handle.
    thread.close().catch(() => {});
    const now = Date.now();
    this.#crashes = this.#crashes.filter((at) => at > now - this.#policy.crashWindowMs);
    this.#crashes.push(now);
    const recent = this.#crashes.length, window = `${Math.round(this.#policy.crashWindowMs / 1000)} s`;
    this.#log(`inference thread crashed: ${err.message} (crash ${recent} within ${window})`);
    if (recent > this.#policy.maxCrashes) {
      this.#giveUp(
        `the inference thread crashed ${recent} times within ${window} (last: ${err.message}); ` +
          `no more restarts`,
      );
      return;
    }
    this.#loop = this.#restartLoop(recent);
  }

  async #restartLoop(recent: number): Promise<void> {
    const p = this.#policy;
    const t0 = performance.now();
    for (let attempt = 1;; attempt++) {
      const delay = Math.min(p.backoffMs * 2 ** (attempt - 1 + recent - 1), p.maxBackoffMs);
      await new Promise<void>((resolve) => {
        this.#delay = { timer: setTimeout(resolve, delay), resolve };
      });
      this.#delay = undefined;
      if (this.#closed) return;
      let thread: SupervisedThread;
      try {
        thread = await this.#start();
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e);
        if (this.#closed) return;
        this.#log(`inference thread restart attempt ${attempt} of ${p.maxRestartAttempts} failed: ${why}`);
        if (attempt >= p.maxRestartAttempts) {
          this.#giveUp(
            `the inference thread could not be restarted (${attempt} attempts; last: ${why}); ` +
              `no more restarts`,
          );
          return;
        }
        continue;
      }
      if (this.#closed) {
        await thread.close().catch(() => {});
        return;
      }
      this.#restarts++;
      this.#log(
        `inference thread restarted (restart ${this.#restarts}, attempt ${attempt}, ` +
          `${(performance.now() - t0).toFixed(0)} ms after the crash)`,
      );
      this.#adopt(thread);
      try {
        this.#onRestart?.(thread.models);
      } catch {
        // a listener's error does not stop the restart
      }
      // The thread may have crashed already (then a new restart is under way and the calls keep waiting).
      if (this.#thread === thread) this.#settle(thread);
      return;
    }
  }

  #giveUp(message: string): void {
    this.#failure = new Error(message);
    this.#log(`inference thread failed for good: ${message}`);
    this.#settle(this.#failure);
  }
}
