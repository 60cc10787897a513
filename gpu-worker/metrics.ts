/**
 * Prometheus text metrics of the worker (`GET /metrics`): queue depth, batch sizes, evaluations per
 * second, inference and request latency, inference thread restarts, memory (core/metrics.ts renders them).
 */
import process from "node:process";
import { Counter, Gauge, Histogram, LATENCY_BUCKETS, MetricsRegistry } from "../core/metrics.ts";

/** The values render() reads from the rest of the worker at scrape time. */
export interface QueueState {
  inFlight: number;
  queuedSamples: number;
  maxQueue: number;
  /** Successful restarts of a crashed inference thread (0 when omitted). */
  inferenceRestarts?: number;
}

export class WorkerMetrics {
  readonly windowMs = 10_000;
  readonly started = Date.now();
  /** (time ms, samples) of recent inference calls, for the evaluations-per-second gauge. */
  #recent: [number, number][] = [];
  /** The queue state of the scrape being rendered. */
  #queue: QueueState = { inFlight: 0, queuedSamples: 0, maxQueue: 0 };
  readonly #registry = new MetricsRegistry();
  readonly #evaluations: Counter;
  readonly #batchSize: Histogram;
  readonly #inferenceSeconds: Histogram;
  readonly #requestSeconds: Histogram;
  readonly #requests: Counter;

  constructor() {
    const r = this.#registry;
    const queue = (read: (q: QueueState) => number) => () => read(this.#queue);
    r.add(
      "genie_worker_requests_in_flight",
      Gauge.single("Requests being solved (running solver coroutines).", queue((q) => q.inFlight)),
    );
    r.add(
      "genie_worker_queue_depth",
      Gauge.single("Samples waiting for an inference call.", queue((q) => q.queuedSamples)),
    );
    r.add(
      "genie_worker_queue_capacity",
      Gauge.single("Requests in flight at most before 429.", queue((q) => q.maxQueue)),
    );
    r.add(
      "genie_worker_evaluations_per_second",
      Gauge.single(
        "Sample evaluations per second over the last 10 s.",
        () => Number(this.evaluationsPerSecond().toFixed(3)),
      ),
    );
    this.#evaluations = r.add(
      "genie_worker_evaluations_total",
      new Counter("Sample evaluations by model and graph."),
    );
    this.#batchSize = r.add(
      "genie_worker_batch_size",
      new Histogram("Samples per inference call.", [1, 2, 4, 8, 16, 32, 64, 128, 256]),
    );
    this.#inferenceSeconds = r.add(
      "genie_worker_inference_seconds",
      new Histogram("Time inside ORT per call.", [
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
      ]),
    );
    this.#requestSeconds = r.add(
      "genie_worker_request_duration_seconds",
      new Histogram("Latency of batch and encode requests.", LATENCY_BUCKETS),
    );
    for (const h of [this.#batchSize, this.#inferenceSeconds, this.#requestSeconds]) h.declare();
    this.#requests = r.add(
      "genie_worker_http_requests_total",
      new Counter("HTTP requests by route and status."),
    );
    r.add(
      "genie_worker_inference_restarts_total",
      Gauge.single(
        "Restarts of the inference thread after a crash.",
        queue((q) => q.inferenceRestarts ?? 0),
        "counter",
      ),
    );
    r.add(
      "process_resident_memory_bytes",
      Gauge.single("Resident set size.", () => process.memoryUsage().rss),
    );
    r.add(
      "genie_worker_heap_used_bytes",
      Gauge.single("JavaScript heap in use.", () => process.memoryUsage().heapUsed),
    );
    r.add(
      "genie_worker_uptime_seconds",
      Gauge.single("Seconds since start.", () => Math.round((Date.now() - this.started) / 1000)),
    );
  }

  /** One inference call of `rows` samples. */
  batch(model: string, graph: string, rows: number, ms: number): void {
    this.#batchSize.observe({}, rows);
    this.#inferenceSeconds.observe({}, ms / 1000);
    this.#evaluations.inc({ model, graph }, rows);
    const now = Date.now();
    this.#recent.push([now, rows]);
    this.#trim(now);
  }

  /** One finished HTTP request. */
  request(route: string, status: number, seconds: number): void {
    this.#requests.inc({ route, code: String(status) });
    if (route === "/v1/batch" || route === "/v1/encode") this.#requestSeconds.observe({}, seconds);
  }

  #trim(now: number): void {
    while (this.#recent.length && this.#recent[0][0] < now - this.windowMs) this.#recent.shift();
  }

  /** Sample evaluations per second over the last window. */
  evaluationsPerSecond(now = Date.now()): number {
    this.#trim(now);
    const span = Math.min(this.windowMs, now - this.started) / 1000;
    const total = this.#recent.reduce((n, [, r]) => n + r, 0);
    return span > 0 ? total / span : 0;
  }

  render(queue: QueueState): string {
    this.#queue = queue;
    return this.#registry.render();
  }
}
