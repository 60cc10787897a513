/**
 * The per-key limits of the API: a request rate on every `/v1/*` request (after authentication), and,
 * around each request forwarded to the workers, a concurrency cap per key and a queue cap for the edge.
 * The counting itself is functions/limits.ts.
 */
import type { MiddlewareHandler } from "hono";
import { createMiddleware } from "hono/factory";
import type { Counter } from "../../core/metrics.ts";
import type { RateLimitConfig } from "../config.ts";
import type { Env } from "../env.ts";
import { ApiError, retryAfter } from "../errors.ts";
import { ConcurrencyLimiter, RateLimiter } from "../limits.ts";

/** 429 `rate_limited` with Retry-After when the principal's token bucket is empty. */
export function rateLimit(
  config: RateLimitConfig,
  now: () => number,
  limited: Counter,
): MiddlewareHandler<Env> {
  const rate = new RateLimiter(config, now);
  return async (c, next) => {
    const wait = rate.take(c.get("principal"));
    if (wait > 0) {
      limited.inc({ reason: "rate" });
      throw new ApiError(429, "rate_limited", "too many requests for this key", undefined, retryAfter(wait));
    }
    await next();
  };
}

/** One admitted request's place: released once, at the end of the request unless kept. */
export class Slot {
  #released = false;
  #kept = false;

  constructor(private readonly free: () => void) {}

  /** Whether a handler took the slot past its response (a stream); it releases it itself. */
  get kept(): boolean {
    return this.#kept;
  }

  /** Keeps the slot after the response is returned; the caller must call the release function. */
  keep(): () => void {
    this.#kept = true;
    return () => this.release();
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.free();
  }
}

export interface AdmissionOptions {
  /** Concurrent requests per key (GENIE_CONCURRENCY_PER_KEY). */
  perKey: number;
  /** Requests at the workers from this edge, all keys (GENIE_MAX_QUEUE). */
  maxQueue: number;
  /** Retry-After of a full queue (the pool's estimate). */
  retryAfterS: () => number;
  limited: Counter;
}

/** The concurrency and queue caps of requests forwarded to the workers. */
export class Admission {
  readonly #concurrency: ConcurrencyLimiter;
  #inflight = 0;

  constructor(private readonly opts: AdmissionOptions) {
    this.#concurrency = new ConcurrencyLimiter(opts.perKey);
  }

  /** Requests admitted and not yet released (`genie_edge_inflight`). */
  get inflight(): number {
    return this.#inflight;
  }

  /** A slot for one request of `principal`, or 429 `too_many_concurrent` / `queue_full`. */
  admit(principal: string): Slot {
    const release = this.#concurrency.acquire(principal);
    if (!release) {
      this.opts.limited.inc({ reason: "concurrency" });
      throw new ApiError(
        429,
        "too_many_concurrent",
        `at most ${this.opts.perKey} concurrent requests per key`,
        undefined,
        retryAfter(1),
      );
    }
    if (this.#inflight >= this.opts.maxQueue) {
      release();
      this.opts.limited.inc({ reason: "queue" });
      throw new ApiError(
        429,
        "queue_full",
        "the server is at capacity",
        undefined,
        retryAfter(this.opts.retryAfterS()),
      );
    }
    this.#inflight++;
    return new Slot(() => {
      this.#inflight--;
      release();
    });
  }
}

/**
 * Admits the request (`slot`) for the rest of its handlers and releases its slot when they are done —
 * unless a handler kept it (`c.var.slot.keep()`) to release when its stream ends.
 */
export function admit(admission: Admission) {
  return createMiddleware<Env & { Variables: { slot: Slot } }>(async (c, next) => {
    const slot = admission.admit(c.get("principal"));
    c.set("slot", slot);
    try {
      await next();
    } finally {
      if (!slot.kept) slot.release();
    }
  });
}
