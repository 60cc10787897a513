/** Per-key request rate (token bucket) and concurrency caps. In-memory, per edge instance. */
import type { RateLimitConfig } from "./config.ts";

interface Bucket {
  tokens: number;
  updated: number;
}

/** Token buckets: `burst` tokens, refilled at `perMinute / 60` per second. */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly config: RateLimitConfig, private readonly now: () => number = Date.now) {}

  /** Takes a token for `key`: 0 when allowed, else the seconds until one is available. */
  take(key: string): number {
    const { perMinute, burst } = this.config;
    if (perMinute <= 0) return 0;
    const rate = perMinute / 60_000; // tokens per ms
    const t = this.now();
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= 10_000) this.prune(t);
      b = { tokens: burst, updated: t };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(burst, b.tokens + (t - b.updated) * rate);
    b.updated = t;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return (1 - b.tokens) / rate / 1000;
  }

  /** Drops buckets that have refilled completely (they carry no state). */
  private prune(t: number): void {
    const rate = this.config.perMinute / 60_000;
    for (const [k, b] of this.buckets) {
      if (b.tokens + (t - b.updated) * rate >= this.config.burst) this.buckets.delete(k);
    }
  }
}

/** At most `limit` concurrent holders per key. */
export class ConcurrencyLimiter {
  private readonly active = new Map<string, number>();

  constructor(private readonly limit: number) {}

  /** A release function, or null when `key` already holds `limit` slots. */
  acquire(key: string): (() => void) | null {
    const n = this.active.get(key) ?? 0;
    if (n >= this.limit) return null;
    this.active.set(key, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const m = (this.active.get(key) ?? 1) - 1;
      if (m <= 0) this.active.delete(key);
      else this.active.set(key, m);
    };
  }

  total(): number {
    let s = 0;
    for (const v of this.active.values()) s += v;
    return s;
  }
}
