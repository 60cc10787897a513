/**
 * Step-level continuous batching (docs/architecture.md): every in-flight request is a running solver
 * coroutine. The scheduler collects the evaluation requests the coroutines are waiting on, groups them
 * by (model, graph), concatenates their samples — each carries its own t and class — up to the batch
 * limit, runs ONE inference call, splits the outputs back and resumes each coroutine, which then
 * yields its next request. Requests at different steps therefore share a call.
 *
 * - Order: strict priority (higher first), then fair sharing within a priority: deficit round-robin over
 *   requests, in milliseconds of inference time. Requests wait in a rotation; each call is led by the
 *   first ready request in it (highest priority first), and is filled with the other requests waiting on
 *   the same (model, graph), which ride along and then move to the back. When requests compete — work
 *   waiting on another graph or model, or more rows than one call holds — the leader starts a turn with a
 *   quantum (`quantumMs`) of credit; each call it leads is cut to the rows its credit buys at the measured
 *   cost per row of that graph (at least one row) and costs it those rows plus a fixed call overhead.
 *   Coroutines resume as soon as a call returns, so the leader's next evaluation is already waiting: it
 *   leads again until its credit cannot buy another call, then goes to the back with its debts, not its
 *   savings. A small request beside a huge one therefore makes several steps per turn and waits about one
 *   quantum per turn, not for the huge one to finish. Alone, a request's calls are cut at a few quanta
 *   (LONE_CALL_QUANTA), so that one arriving meanwhile waits no longer than that. An evaluation larger
 *   than a call is split across calls. Strict priority can starve low priorities under sustained
 *   load.
 * - `maxWaitMs`: a batch with room left waits at most this long (from its oldest evaluation) for more
 *   samples; 0 (default) runs at once — coroutines resume synchronously when a batch returns, so the
 *   next call already holds every request that was waiting.
 * - A request that finds the inference idle is dispatched at the end of the current turn of the event
 *   loop (`setImmediate`, a few µs), not inside `submit`: requests that arrive together (one read of the
 *   sockets, one burst of clients) share their first call instead of the first one going alone.
 * - Deadlines and cancellation act between steps: the coroutine is closed and its pending work dropped;
 *   a call already running finishes for the others.
 * - The number of requests in flight is bounded (`maxQueue`); beyond it `submit` answers 429.
 * - `drain()` refuses new requests and resolves when the in-flight ones have finished.
 *
 * Results never depend on batching: every sample's numbers are computed row by row from its own x, t
 * and class, provided the graphs' kernels compute each row on its own (ORT's float64 Softmax, Exp and Log
 * do not; see graphs.ts for how the analytic graphs avoid them). tests/gpu-worker/batch_invariance.test.ts
 * checks it graph by graph and end to end.
 *
 * The model, solve and result types, and the tensors of one call (its inputs, its outputs as ε), are in
 * served.ts.
 */
import { setImmediate } from "node:timers";
import { countRequest, newRunStats, type RunStats } from "../core/solvers/drive.ts";
import type { EvalRequest, EvalResult } from "../core/solvers/types.ts";
import { asWorkerError, invalidField, WorkerError } from "./errors.ts";
import type { Inference } from "./inference.ts";
import type { GraphKind } from "./manifest.ts";
import {
  batchFeeds,
  graphFor,
  type ServedModel,
  type SolveResult,
  type SolveSpec,
  toEpsResult,
} from "./served.ts";

/** The longest delay a timer holds (2³¹ − 1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The default quantum (ms of inference time per turn): a small request beside a large one waits about
 * this long per step (docs/worker.md, "Fairness"), while the large one's calls shrink only while others
 * wait.
 */
export const DEFAULT_QUANTUM_MS = 5;

/** What each call costs the request that leads it beyond its rows' inference time (ms). */
const CALL_OVERHEAD_MS = 0.25;

/**
 * Uncontended calls are cut to this many quanta of inference time too: a request that arrives while
 * another runs alone waits for at most about that long, not for a whole batch (72 ms for 54 rows of
 * mnist-unet on 2 cores). Batches of 16 rows or more cost about as much per row as full ones there.
 */
const LONE_CALL_QUANTA = 4;

export interface SchedulerOptions {
  /** Samples per inference call, at most (each model's `limits.max_batch` applies too). Default 64. */
  maxBatch?: number;
  /** How long a batch with room left may wait for more samples (ms). Default 0. */
  maxWaitMs?: number;
  /** Requests in flight at most; more are refused with 429. Default 256. */
  maxQueue?: number;
  /**
   * Inference time (ms) a request earns per turn when requests compete (deficit round-robin). Smaller
   * means shorter waits for small requests beside large ones and smaller batches for the large. Default 5.
   */
  quantumMs?: number;
  /** Called after every inference call (metrics). */
  onBatch?: (info: { model: string; graph: GraphKind; rows: number; ms: number; requests: number }) => void;
}

interface Solve {
  seq: number;
  spec: SolveSpec;
  priority: number;
  submitted: number;
  started?: number;
  stats: RunStats;
  current?: Pending;
  /** Inference time (ms) this request may still use before it yields its turn (deficit round-robin). */
  credit: number;
  finished: boolean;
  resolve: (r: SolveResult) => void;
  reject: (e: Error) => void;
  cleanup: () => void;
}

interface Pending {
  solve: Solve;
  req: EvalRequest;
  graph: GraphKind;
  rows: number;
  /** Rows handed to inference calls so far, and rows answered. */
  sent: number;
  done: number;
  enqueued: number;
  outputs: Record<string, Float32Array>;
}

interface Slice {
  p: Pending;
  from: number;
  count: number;
}

export class Scheduler {
  readonly maxBatch: number;
  readonly maxWaitMs: number;
  readonly maxQueue: number;
  readonly quantumMs: number;
  #inference: Inference;
  #onBatch: SchedulerOptions["onBatch"];
  #solves = new Set<Solve>();
  #pending: Pending[] = [];
  /** Requests in flight in turn order: the front is served first within a priority. */
  #rotation: Solve[] = [];
  /** The request whose turn it is: it leads calls from the front of the rotation while its credit lasts. */
  #turn: Solve | undefined;
  /** Measured inference time per row (ms), by model and graph. */
  #msPerRow = new Map<string, number>();
  #seq = 0;
  #busy = false;
  /** A dispatch is scheduled for the end of this event-loop turn. */
  #soon = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #draining = false;
  #drained: (() => void)[] = [];
  /** Waiters for a model's last request to end ({@link whenIdle}). */
  #idle = new Map<ServedModel, (() => void)[]>();
  /** Counters for metrics. */
  readonly counters = {
    batches: 0,
    samples: 0,
    completed: 0,
    failed: 0,
    canceled: 0,
    expired: 0,
    rejected: 0,
  };

  constructor(inference: Inference, opts: SchedulerOptions = {}) {
    this.#inference = inference;
    this.maxBatch = opts.maxBatch ?? 64;
    this.maxWaitMs = opts.maxWaitMs ?? 0;
    this.maxQueue = opts.maxQueue ?? 256;
    this.quantumMs = opts.quantumMs ?? DEFAULT_QUANTUM_MS;
    if (!(this.quantumMs > 0)) throw new RangeError("quantumMs must be positive");
    this.#onBatch = opts.onBatch;
  }

  /** Requests in flight. */
  get inFlight(): number {
    return this.#solves.size;
  }

  /** Samples waiting for an inference call. */
  get queuedSamples(): number {
    return this.#pending.reduce((n, p) => n + p.rows - p.sent, 0);
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Starts a request; resolves with the solver's result, rejects with a WorkerError. */
  submit(spec: SolveSpec): Promise<SolveResult> {
    if (this.#draining) return Promise.reject(new WorkerError("unavailable", "the worker is shutting down"));
    if (this.#solves.size >= this.maxQueue) {
      this.counters.rejected++;
      return Promise.reject(new WorkerError("queue_full", `the queue is full (${this.maxQueue} requests)`));
    }
    return new Promise<SolveResult>((resolve, reject) => {
      const solve: Solve = {
        seq: this.#seq++,
        spec,
        priority: spec.priority ?? 0,
        submitted: performance.now(),
        stats: newRunStats(),
        credit: 0,
        finished: false,
        resolve,
        reject,
        cleanup: () => {},
      };
      this.#solves.add(solve);
      this.#rotation.push(solve);
      const timers: (() => void)[] = [];
      if (spec.deadline !== undefined) {
        // A timer holds at most 2³¹ − 1 ms (a longer delay fires at once): far deadlines re-arm.
        const deadline = spec.deadline;
        let id: ReturnType<typeof setTimeout>;
        const arm = () => {
          const left = deadline - Date.now();
          id = setTimeout(
            () =>
              left > MAX_TIMER_MS
                ? arm()
                : this.#stop(solve, new WorkerError("deadline_exceeded", "the request's deadline passed")),
            Math.min(Math.max(0, left), MAX_TIMER_MS),
          );
        };
        arm();
        timers.push(() => clearTimeout(id));
      }
      if (spec.signal) {
        const onAbort = () => this.#stop(solve, new WorkerError("canceled", "the request was canceled"));
        if (spec.signal.aborted) {
          onAbort();
          return;
        }
        spec.signal.addEventListener("abort", onAbort, { once: true });
        timers.push(() => spec.signal!.removeEventListener("abort", onAbort));
      }
      solve.cleanup = () => timers.forEach((f) => f());
      this.#advance(solve, undefined);
      this.#pumpSoon();
    });
  }

  /**
   * Resolves once no request in flight uses `model` (at once if none does). Requests submitted later
   * with it are not waited for: a reload calls it after the model stopped taking new ones.
   */
  whenIdle(model: ServedModel): Promise<void> {
    if (![...this.#solves].some((j) => j.spec.model === model)) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.#idle.get(model) ?? [];
      list.push(resolve);
      this.#idle.set(model, list);
    });
  }

  /** Refuses new requests; resolves when every request in flight has finished. */
  drain(): Promise<void> {
    this.#draining = true;
    if (this.#solves.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drained.push(resolve));
  }

  #finish(solve: Solve, outcome: { result?: Float64Array; error?: Error }): void {
    if (solve.finished) return;
    solve.finished = true;
    solve.cleanup();
    this.#solves.delete(solve);
    this.#rotation.splice(this.#rotation.indexOf(solve), 1);
    if (this.#turn === solve) this.#turn = undefined;
    const at = solve.current ? this.#pending.indexOf(solve.current) : -1;
    if (at >= 0) this.#pending.splice(at, 1);
    solve.current = undefined;
    const now = performance.now();
    if (outcome.error) {
      const e = outcome.error;
      if (e instanceof WorkerError && e.code === "canceled") this.counters.canceled++;
      else if (e instanceof WorkerError && e.code === "deadline_exceeded") this.counters.expired++;
      else this.counters.failed++;
      solve.reject(e);
    } else {
      this.counters.completed++;
      const started = solve.started ?? now;
      solve.resolve({
        x: outcome.result!,
        stats: solve.stats,
        queueMs: started - solve.submitted,
        computeMs: now - started,
      });
    }
    if (this.#solves.size === 0 && this.#drained.length) this.#drained.splice(0).forEach((f) => f());
    const model = solve.spec.model, idle = this.#idle.get(model);
    if (idle && ![...this.#solves].some((j) => j.spec.model === model)) {
      this.#idle.delete(model);
      idle.forEach((f) => f());
    }
  }

  /** Cancels between steps: closes the coroutine and drops its queued work. */
  #stop(solve: Solve, error: WorkerError): void {
    if (solve.finished) return;
    try {
      solve.spec.run.return(new Float64Array(0));
    } catch {
      // a coroutine that throws while closing is closed all the same
    }
    this.#finish(solve, { error });
  }

  /** Resumes a coroutine with a result (or starts it) and queues its next request. */
  #advance(solve: Solve, result: EvalResult | undefined): void {
    let next: IteratorResult<EvalRequest, Float64Array>;
    try {
      next = result === undefined ? solve.spec.run.next() : solve.spec.run.next(result);
    } catch (e) {
      this.#finish(solve, { error: asWorkerError(e) });
      return;
    }
    if (next.done) {
      this.#finish(solve, { result: next.value });
      return;
    }
    const req = next.value;
    const graph = graphFor(req);
    const model = solve.spec.model;
    if (!model.info.graphPaths[graph]) {
      this.#stop(
        solve,
        invalidField("genie_derivative", `model ${model.info.manifest.name} has no ${graph} graph`),
      );
      return;
    }
    const rows = req.t.length;
    if (req.x.length !== rows * model.info.dim) {
      this.#stop(solve, invalidField("x", `a request of ${req.x.length} numbers is not ${rows} samples`));
      return;
    }
    countRequest(solve.stats, req);
    const p: Pending = {
      solve,
      req,
      graph,
      rows,
      sent: 0,
      done: 0,
      enqueued: performance.now(),
      outputs: {},
    };
    solve.current = p;
    this.#pending.push(p);
    try {
      solve.spec.onStep?.(req.step, req.steps);
    } catch {
      // progress reporting never fails the request
    }
  }

  /** Dispatches once the requests arriving in this turn of the event loop have been queued. */
  #pumpSoon(): void {
    if (this.#busy || this.#soon) return;
    this.#soon = true;
    setImmediate(() => {
      this.#soon = false;
      this.#pump();
    });
  }

  #pump(): void {
    if (this.#busy) return;
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const ready = this.#pending.filter((p) => p.sent < p.rows);
    if (ready.length === 0) return;
    const turn = new Map(this.#rotation.map((solve, i) => [solve, i]));
    ready.sort((a, b) => b.solve.priority - a.solve.priority || turn.get(a.solve)! - turn.get(b.solve)!);
    const head = ready[0];
    const model = head.solve.spec.model;
    const group = ready.filter((p) => p.solve.spec.model === model && p.graph === head.graph);
    const cap = Math.min(this.maxBatch, model.maxBatch);
    const available = group.reduce((n, p) => n + p.rows - p.sent, 0);
    const contended = group.length < ready.length || available > cap;
    if (!contended && available < cap && this.maxWaitMs > 0) {
      const oldest = Math.min(...group.map((p) => p.enqueued));
      const wait = oldest + this.maxWaitMs - performance.now();
      if (wait > 0) {
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.#pump();
        }, wait);
        return;
      }
    }
    // A request whose turn is cut short (another leads: its next evaluation was not ready, or a higher
    // priority came) goes to the back with its debts, not its savings.
    if (this.#turn && this.#turn !== head.solve) this.#endTurn();
    // Deficit round-robin: under contention the leader's credit decides how many rows this call takes. A
    // turn earns one quantum; the leader keeps leading (its solver's next evaluation is queued as soon
    // as a call returns) until its credit is spent, so a small request finishes several steps per turn.
    const perRow = this.#msPerRow.get(costKey(model, head.graph)) ?? 0;
    const dealt = contended && perRow > 0;
    if (dealt && this.#turn !== head.solve) {
      head.solve.credit += this.quantumMs;
      this.#turn = head.solve;
    }
    // the inference time this call may take: the leader's credit, or alone a few quanta
    const budget = dealt ? head.solve.credit : LONE_CALL_QUANTA * this.quantumMs;
    const room = perRow > 0 ? Math.min(cap, Math.max(1, Math.floor(budget / perRow))) : cap;
    const slices: Slice[] = [];
    let total = 0;
    for (const p of group) {
      const count = Math.min(p.rows - p.sent, room - total);
      slices.push({ p, from: p.sent, count });
      p.sent += count;
      total += count;
      if (contended) {
        p.solve.credit -= count * perRow;
        // a rider that is idle until this call returns keeps its debts, not its savings (it is not
        // waiting for a turn); the leader's savings last its turn
        if (p.sent === p.rows && p.solve !== this.#turn) p.solve.credit = Math.min(p.solve.credit, 0);
      }
      if (total === room) break;
    }
    const leader = head.solve;
    // a call's fixed overhead (feeds, the thread's messages) is not in the measured inference time: the
    // leader pays it too, so a request of many cheap calls cannot hold a turn for long
    if (dealt) leader.credit -= CALL_OVERHEAD_MS;
    // the turn ends when what is left cannot buy another call of one row
    if (this.#turn === leader && leader.credit < perRow + CALL_OVERHEAD_MS) this.#endTurn();
    // the leader of a turn that goes on stays at the front; everyone else served goes to the back
    this.#rotateToBack(slices.map((s) => s.p.solve).filter((solve) => solve !== this.#turn));
    this.#dispatch(model, head.graph, slices, total);
  }

  /** Ends the current turn: its request to the back of the rotation, its unspent credit dropped. */
  #endTurn(): void {
    const solve = this.#turn!;
    this.#turn = undefined;
    solve.credit = Math.min(solve.credit, 0);
    this.#rotateToBack([solve]);
  }

  /** Moves the requests a call serves to the back of the rotation, in the order served. */
  #rotateToBack(solves: Solve[]): void {
    const served = new Set(solves);
    this.#rotation = [...this.#rotation.filter((j) => !served.has(j)), ...served];
  }

  #dispatch(model: ServedModel, graph: GraphKind, slices: Slice[], rows: number): void {
    const info = model.info;
    const now = performance.now();
    for (const { p } of slices) p.solve.started ??= now;
    const feeds = batchFeeds(model, graph, slices.map(({ p, from, count }) => ({ req: p.req, from, count })));
    this.#busy = true;
    this.counters.batches++;
    this.counters.samples += rows;
    const name = info.manifest.name;
    this.#inference.run(model.key ?? name, graph, feeds).then(
      ({ outputs, ms }) => {
        this.#onBatch?.({ model: name, graph, rows, ms, requests: slices.length });
        this.#learnCost(model, graph, rows, ms);
        this.#busy = false;
        this.#scatter(slices, outputs, info.dim);
        this.#pump();
      },
      (e) => {
        this.#busy = false;
        const err = new WorkerError("internal", `inference failed: ${e instanceof Error ? e.message : e}`);
        for (const { p } of slices) this.#stop(p.solve, err);
        this.#pump();
      },
    );
  }

  /** Updates the measured cost per row of a graph (moving average over calls). */
  #learnCost(model: ServedModel, graph: GraphKind, rows: number, ms: number): void {
    if (!(rows > 0) || !Number.isFinite(ms) || ms < 0) return;
    const key = costKey(model, graph), sample = ms / rows, old = this.#msPerRow.get(key);
    this.#msPerRow.set(key, old === undefined ? sample : 0.7 * old + 0.3 * sample);
  }

  /** Copies each slice's rows of every output back to its request; resumes completed requests. */
  #scatter(slices: Slice[], outputs: Record<string, Float32Array>, dim: number): void {
    let at = 0;
    for (const { p, from, count } of slices) {
      const off = at;
      at += count;
      if (p.solve.finished || p.solve.current !== p) continue;
      for (const [name, data] of Object.entries(outputs)) {
        if (count === p.rows) {
          // A view, not a copy: the call's output buffer is ours and each request owns its rows.
          p.outputs[name] = data.subarray(off * dim, (off + count) * dim);
          continue;
        }
        p.outputs[name] ??= new Float32Array(p.rows * dim);
        p.outputs[name].set(data.subarray(off * dim, (off + count) * dim), from * dim);
      }
      p.done += count;
      if (p.done < p.rows) continue;
      this.#pending.splice(this.#pending.indexOf(p), 1);
      p.solve.current = undefined;
      const solve = p.solve;
      if (solve.spec.signal?.aborted) {
        this.#stop(solve, new WorkerError("canceled", "the request was canceled"));
        continue;
      }
      if (solve.spec.deadline !== undefined && Date.now() >= solve.spec.deadline) {
        this.#stop(solve, new WorkerError("deadline_exceeded", "the request's deadline passed"));
        continue;
      }
      let result: EvalResult;
      try {
        result = toEpsResult(solve.spec.model.info, p.req, p.graph, p.outputs);
      } catch (e) {
        this.#stop(solve, asWorkerError(e));
        continue;
      }
      this.#advance(solve, result);
    }
  }
}

function costKey(model: ServedModel, graph: GraphKind): string {
  return `${model.info.manifest.name}\u0000${graph}`;
}
