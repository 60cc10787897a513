/** The edge's Prometheus metrics (`GET /metrics`, `genie_edge_*`), registered in the order they are rendered. */
import { Counter, Gauge, Histogram, LATENCY_BUCKETS, MetricsRegistry } from "../core/metrics.ts";
import type { WorkerPool } from "./pool.ts";

export interface EdgeMetrics {
  /** Every metric of the edge; batch jobs add theirs (functions/jobs/). */
  registry: MetricsRegistry;
  /** `genie_edge_requests_total{method, route, status}`. */
  requests: Counter;
  /** `genie_edge_request_duration_seconds{route}`. */
  duration: Histogram;
  /** `genie_edge_samples_total{model, solver}`. */
  samples: Counter;
  /** `genie_edge_limited_total{reason}`: rate, concurrency, queue. */
  limited: Counter;
}

export interface EdgeMetricsOptions {
  pool: WorkerPool;
  /** No API keys configured. */
  open: boolean;
  /** Requests waiting on or running at workers, all keys. */
  inflight: () => number;
}

export function edgeMetrics({ pool, open, inflight }: EdgeMetricsOptions): EdgeMetrics {
  const registry = new MetricsRegistry();
  const requests = registry.add(
    "genie_edge_requests_total",
    new Counter("HTTP requests by route and status"),
  );
  const duration = registry.add(
    "genie_edge_request_duration_seconds",
    new Histogram("Request latency at the edge", LATENCY_BUCKETS),
  );
  const samples = registry.add(
    "genie_edge_samples_total",
    new Counter("Samples returned, by model and solver"),
  );
  const limited = registry.add(
    "genie_edge_limited_total",
    new Counter("Requests refused by a limit, by reason"),
  );
  registry.add("genie_edge_inflight", Gauge.single("Requests at the workers from this edge", inflight));
  registry.add("genie_edge_open", Gauge.single("1 when no API keys are configured", () => open ? 1 : 0));
  registry.add(
    "genie_edge_worker_up",
    new Gauge(
      "Worker health (1 up)",
      () => pool.snapshot().map((w) => [{ worker: String(w.index) }, w.up ? 1 : 0]),
    ),
  );
  registry.add(
    "genie_edge_worker_inflight_samples",
    new Gauge(
      "Samples in flight per worker",
      () => pool.snapshot().map((w) => [{ worker: String(w.index) }, w.inflight]),
    ),
  );
  registry.add(
    "genie_edge_worker_calls_total",
    new Gauge(
      "Calls forwarded per worker",
      () => pool.snapshot().map((w) => [{ worker: String(w.index) }, w.calls]),
      "counter",
    ),
  );
  return { registry, requests, duration, samples, limited };
}
