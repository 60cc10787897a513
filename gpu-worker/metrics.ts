/**
 * Prometheus text metrics of the worker (`GET /metrics`): queue depth, batch sizes, evaluations per
 * second, inference and request latency, inference thread restarts, memory.
 */
import process from "node:process";

class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly buckets: number[]) {
    this.counts = new Array(buckets.length).fill(0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]) this.counts[i]++;
  }
  render(name: string, help: string, labels = ""): string[] {
    const l = labels ? `${labels},` : "";
    const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
    this.buckets.forEach((b, i) => lines.push(`${name}_bucket{${l}le="${b}"} ${this.counts[i]}`));
    lines.push(`${name}_bucket{${l}le="+Inf"} ${this.count}`);
    lines.push(`${name}_sum${labels ? `{${labels}}` : ""} ${this.sum}`);
    lines.push(`${name}_count${labels ? `{${labels}}` : ""} ${this.count}`);
    return lines;
  }
}

/** Counts per label value. */
class Counter {
  readonly values = new Map<string, number>();
  inc(label: string, by = 1): void {
    this.values.set(label, (this.values.get(label) ?? 0) + by);
  }
}

/** The values render() reads from the rest of the worker at scrape time. */
export interface QueueState {
  inFlight: number;
  queuedSamples: number;
  maxQueue: number;
  /** Successful restarts of a crashed inference thread (0 when omitted). */
  inferenceRestarts?: number;
}

export class WorkerMetrics {
  readonly batchSize = new Histogram([1, 2, 4, 8, 16, 32, 64, 128, 256]);
  readonly inferenceSeconds = new Histogram([
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
  ]);
  readonly requestSeconds = new Histogram([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]);
  readonly requests = new Counter();
  readonly evaluations = new Counter();
  /** (time ms, samples) of recent inference calls, for the evaluations-per-second gauge. */
  #recent: [number, number][] = [];
  readonly windowMs = 10_000;
  readonly started = Date.now();

  /** One inference call of `rows` samples. */
  batch(model: string, graph: string, rows: number, ms: number): void {
    this.batchSize.observe(rows);
    this.inferenceSeconds.observe(ms / 1000);
    this.evaluations.inc(`model="${model}",graph="${graph}"`, rows);
    const now = Date.now();
    this.#recent.push([now, rows]);
    this.#trim(now);
  }

  /** One finished HTTP request. */
  request(route: string, status: number, seconds: number): void {
    this.requests.inc(`route="${route}",code="${status}"`);
    if (route === "/v1/batch" || route === "/v1/encode") this.requestSeconds.observe(seconds);
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
    const lines: string[] = [];
    const gauge = (name: string, help: string, value: number) =>
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${value}`);
    gauge(
      "genie_worker_requests_in_flight",
      "Requests being solved (running solver coroutines).",
      queue.inFlight,
    );
    gauge("genie_worker_queue_depth", "Samples waiting for an inference call.", queue.queuedSamples);
    gauge("genie_worker_queue_capacity", "Requests in flight at most before 429.", queue.maxQueue);
    gauge(
      "genie_worker_evaluations_per_second",
      "Sample evaluations per second over the last 10 s.",
      Number(this.evaluationsPerSecond().toFixed(3)),
    );
    lines.push(
      "# HELP genie_worker_evaluations_total Sample evaluations by model and graph.",
      "# TYPE genie_worker_evaluations_total counter",
    );
    for (const [l, v] of this.evaluations.values) lines.push(`genie_worker_evaluations_total{${l}} ${v}`);
    lines.push(...this.batchSize.render("genie_worker_batch_size", "Samples per inference call."));
    lines.push(
      ...this.inferenceSeconds.render("genie_worker_inference_seconds", "Time inside ORT per call."),
    );
    lines.push(
      ...this.requestSeconds.render(
        "genie_worker_request_duration_seconds",
        "Latency of batch and encode requests.",
      ),
    );
    lines.push(
      "# HELP genie_worker_http_requests_total HTTP requests by route and status.",
      "# TYPE genie_worker_http_requests_total counter",
    );
    for (const [l, v] of this.requests.values) lines.push(`genie_worker_http_requests_total{${l}} ${v}`);
    lines.push(
      "# HELP genie_worker_inference_restarts_total Restarts of the inference thread after a crash.",
      "# TYPE genie_worker_inference_restarts_total counter",
      `genie_worker_inference_restarts_total ${queue.inferenceRestarts ?? 0}`,
    );
    const mem = process.memoryUsage();
    gauge("process_resident_memory_bytes", "Resident set size.", mem.rss);
    gauge("genie_worker_heap_used_bytes", "JavaScript heap in use.", mem.heapUsed);
    gauge(
      "genie_worker_uptime_seconds",
      "Seconds since start.",
      Math.round((Date.now() - this.started) / 1000),
    );
    return lines.join("\n") + "\n";
  }
}
