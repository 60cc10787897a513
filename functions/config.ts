/**
 * Configuration of the edge app: what `createApp` takes, and how it is read from the environment
 * (docs/contracts.md §5: PORT, GENIE_API_KEYS, GENIE_WORKER_URLS, GENIE_WORKER_SECRET, plus the
 * GENIE_EDGE_* tuning variables documented in {@link configFromEnv}). The connection caps and the header
 * and idle timeouts (GENIE_MAX_CONNECTIONS, GENIE_MAX_CONNECTIONS_PER_CLIENT, GENIE_HEADER_TIMEOUT_MS,
 * GENIE_IDLE_TIMEOUT_MS) belong to the server, not the app: core/api/guard.ts reads them.
 */
import { DEFAULT_BODY_TIMEOUT_MS } from "../core/api/body.ts";
import { type JobsConfig, jobsConfigFromEnv } from "./jobs/config.ts";
import { DEFAULT_EDGE_LOCAL, EDGE_LOCAL_MODES, type EdgeLocalConfig, type EdgeLocalMode } from "./local.ts";

export interface RateLimitConfig {
  /** Sustained requests per minute per key (token refill rate); 0 disables rate limiting. */
  perMinute: number;
  /** Bucket size: requests allowed in a burst. */
  burst: number;
}

export interface EdgeConfig {
  /** Base URLs of the GPU workers. */
  workerUrls: string[];
  /** Shared secret for signing forwarded calls (HMAC-SHA-256); unsigned when absent. */
  workerSecret?: string;
  /**
   * API keys: plain keys, or `sha256:<hex>` digests of keys so that the plain key never sits in the
   * configuration. Only digests are kept in memory. Empty: the server runs open.
   */
  apiKeys: string[];
  rateLimit: RateLimitConfig;
  /** Concurrent sampling/encoding requests per key. */
  concurrencyPerKey: number;
  /** Requests waiting on or running at the workers, all keys together, before 429 queue_full. */
  maxQueue: number;
  /** Largest accepted request body in bytes (413 above). */
  maxBodyBytes: number;
  /** How long a request body may take to arrive (ms; 408 after, the body cancelled); 0: no limit. */
  bodyTimeoutMs: number;
  /**
   * Deadline of a request without deadline_ms, and the cap on deadline_ms (ms). Either is capped at
   * HARD_LIMITS.deadline_ms (1 h) when applied.
   */
  defaultDeadlineMs: number;
  maxDeadlineMs: number;
  /** Allowed CORS origins: [] for no CORS headers, ["*"] for any origin. */
  corsOrigins: string[];
  /** How often worker health is checked (ms); also the Retry-After hint when none is available. */
  healthIntervalMs: number;
  /** Timeout of one health check (ms). */
  healthTimeoutMs: number;
  /** `fetch` used to reach workers (tests may inject one). */
  fetch?: typeof fetch;
  /** Clock in ms (tests may inject one). */
  now?: () => number;
  /** Log sink for operational messages (default console.error). */
  log?: (message: string) => void;
  /** Batch jobs (functions/jobs/config.ts); absent: `/v1/jobs` answers 503. */
  jobs?: JobsConfig;
  /** Edge-local inference of small models (functions/local.ts); mode `off` by default. */
  edgeLocal: EdgeLocalConfig;
}

const DEFAULT_CONFIG: EdgeConfig = {
  workerUrls: [],
  apiKeys: [],
  rateLimit: { perMinute: 600, burst: 60 },
  concurrencyPerKey: 8,
  maxQueue: 256,
  maxBodyBytes: 8 * 1024 * 1024,
  bodyTimeoutMs: DEFAULT_BODY_TIMEOUT_MS,
  defaultDeadlineMs: 120_000,
  maxDeadlineMs: 600_000,
  corsOrigins: [],
  healthIntervalMs: 2_000,
  healthTimeoutMs: 1_000,
  edgeLocal: DEFAULT_EDGE_LOCAL,
};

/** What `createApp` takes: any part of an {@link EdgeConfig}, `edgeLocal` in part too. */
export type EdgeConfigInput = Omit<Partial<EdgeConfig>, "edgeLocal"> & {
  edgeLocal?: Partial<EdgeLocalConfig>;
};

/** The defaults overridden by `partial`. */
export function makeConfig(partial: EdgeConfigInput = {}): EdgeConfig {
  return {
    ...DEFAULT_CONFIG,
    ...partial,
    rateLimit: { ...DEFAULT_CONFIG.rateLimit, ...partial.rateLimit },
    edgeLocal: { ...DEFAULT_CONFIG.edgeLocal, ...partial.edgeLocal },
  };
}

/** A comma- or whitespace-separated list, empty entries dropped. */
function splitList(value: string | undefined): string[] {
  return (value ?? "").split(/[\s,]+/).map((s) => s.trim()).filter((s) => s.length > 0);
}

function positiveInt(name: string, value: string | undefined, fallback: number, allowZero = false): number {
  if (value === undefined || value.trim() === "") return fallback;
  const v = Number(value);
  if (!Number.isSafeInteger(v) || v < (allowZero ? 0 : 1)) {
    throw new Error(
      `${name}: expected a ${allowZero ? "non-negative" : "positive"} integer, got ${JSON.stringify(value)}`,
    );
  }
  return v;
}

/**
 * Configuration from environment variables:
 * - GENIE_WORKER_URLS — worker base URLs (comma-separated)
 * - GENIE_WORKER_SECRET — HMAC secret shared with the workers
 * - GENIE_API_KEYS — API keys, plain or `sha256:<hex>` (comma-separated); none: open server
 * - GENIE_EDGE_RATE_PER_MIN (600), GENIE_EDGE_RATE_BURST (60) — per-key rate limit (0: off)
 * - GENIE_EDGE_CONCURRENCY (8) — concurrent sampling requests per key
 * - GENIE_EDGE_MAX_QUEUE (256) — requests in flight to workers before 429 queue_full
 * - GENIE_EDGE_MAX_BODY_BYTES (8 MiB), GENIE_EDGE_DEADLINE_MS (120000), GENIE_EDGE_MAX_DEADLINE_MS (600000;
 *   deadlines never exceed 1 h whatever these say)
 * - GENIE_EDGE_BODY_TIMEOUT_MS (30000) — time a request body may take to arrive; after it 408 (the body
 *   is cancelled; 0: no limit)
 * - GENIE_EDGE_CORS_ORIGINS — allowed origins (comma-separated, or *); unset: no CORS
 * - GENIE_EDGE_HEALTH_MS (2000) — worker health-check interval
 * - GENIE_JOBS, GENIE_KV_PATH, GENIE_RESULTS_DIR, GENIE_JOBS_* — batch jobs (functions/jobs/config.ts)
 * - GENIE_EDGE_LOCAL (`auto` or `off`; `defaults.edgeLocal` when unset: `auto` for `deno task start`,
 *   else `off`) — run models marked `edge` in the edge itself, on WebAssembly (functions/local.ts);
 *   GENIE_EDGE_LOCAL_MAX_BYTES (64 KiB) — the largest eps.onnx run there; GENIE_EDGE_LOCAL_MODELS (4) —
 *   the most models open there; GENIE_MODELS_DIR (default `models/`) — where their folders are
 */
export function configFromEnv(
  get: (name: string) => string | undefined = envGetter(),
  defaults: { edgeLocal?: EdgeLocalMode } = {},
): EdgeConfig {
  return makeConfig({
    workerUrls: splitList(get("GENIE_WORKER_URLS")).map((u) => u.replace(/\/+$/, "")),
    workerSecret: get("GENIE_WORKER_SECRET") || undefined,
    apiKeys: splitList(get("GENIE_API_KEYS")),
    rateLimit: {
      perMinute: positiveInt("GENIE_EDGE_RATE_PER_MIN", get("GENIE_EDGE_RATE_PER_MIN"), 600, true),
      burst: positiveInt("GENIE_EDGE_RATE_BURST", get("GENIE_EDGE_RATE_BURST"), 60),
    },
    concurrencyPerKey: positiveInt("GENIE_EDGE_CONCURRENCY", get("GENIE_EDGE_CONCURRENCY"), 8),
    maxQueue: positiveInt("GENIE_EDGE_MAX_QUEUE", get("GENIE_EDGE_MAX_QUEUE"), 256),
    maxBodyBytes: positiveInt("GENIE_EDGE_MAX_BODY_BYTES", get("GENIE_EDGE_MAX_BODY_BYTES"), 8 * 1024 * 1024),
    bodyTimeoutMs: positiveInt(
      "GENIE_EDGE_BODY_TIMEOUT_MS",
      get("GENIE_EDGE_BODY_TIMEOUT_MS"),
      DEFAULT_BODY_TIMEOUT_MS,
      true,
    ),
    defaultDeadlineMs: positiveInt("GENIE_EDGE_DEADLINE_MS", get("GENIE_EDGE_DEADLINE_MS"), 120_000),
    maxDeadlineMs: positiveInt("GENIE_EDGE_MAX_DEADLINE_MS", get("GENIE_EDGE_MAX_DEADLINE_MS"), 600_000),
    corsOrigins: splitList(get("GENIE_EDGE_CORS_ORIGINS")),
    healthIntervalMs: positiveInt("GENIE_EDGE_HEALTH_MS", get("GENIE_EDGE_HEALTH_MS"), 2_000),
    jobs: jobsConfigFromEnv(get),
    edgeLocal: {
      mode: edgeLocalMode(get("GENIE_EDGE_LOCAL"), defaults.edgeLocal ?? DEFAULT_EDGE_LOCAL.mode),
      modelsDir: get("GENIE_MODELS_DIR") || undefined,
      maxEpsBytes: positiveInt(
        "GENIE_EDGE_LOCAL_MAX_BYTES",
        get("GENIE_EDGE_LOCAL_MAX_BYTES"),
        DEFAULT_EDGE_LOCAL.maxEpsBytes,
      ),
      maxModels: positiveInt(
        "GENIE_EDGE_LOCAL_MODELS",
        get("GENIE_EDGE_LOCAL_MODELS"),
        DEFAULT_EDGE_LOCAL.maxModels,
      ),
    },
  });
}

/** GENIE_EDGE_LOCAL: `auto` or `off` (case-insensitive); unset or empty: `fallback`. */
function edgeLocalMode(value: string | undefined, fallback: EdgeLocalMode): EdgeLocalMode {
  if (value === undefined || value.trim() === "") return fallback;
  const mode = value.trim().toLowerCase();
  if (!(EDGE_LOCAL_MODES as readonly string[]).includes(mode)) {
    throw new Error(
      `GENIE_EDGE_LOCAL: expected ${EDGE_LOCAL_MODES.join(" or ")}, got ${JSON.stringify(value)}`,
    );
  }
  return mode as EdgeLocalMode;
}

/** Deno.env.get, or nothing where the environment may not be read. */
function envGetter(): (name: string) => string | undefined {
  return (name) => {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined;
    }
  };
}
