/**
 * Deno KV with retries of transient "database is locked" errors. A local KV file opened by several
 * handles (several processes on one machine, or tests) is SQLite underneath; a transaction that checks
 * then writes can be refused at once with SQLITE_BUSY when another handle writes at the same moment.
 * Nothing was written when that happens, so the same call is simply made again after a short pause.
 * Remote databases never raise it; the wrapper is then a pass-through.
 */

const RETRIES = 50;

function isLocked(e: unknown): boolean {
  return e instanceof Error && /database is locked|SQLITE_BUSY/i.test(e.message);
}

async function retry<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0;; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (!isLocked(e) || attempt >= RETRIES) throw e;
      await new Promise((r) => setTimeout(r, 2 + Math.random() * Math.min(50, 2 ** attempt)));
    }
  }
}

const RETRIED = new Set(["get", "getMany", "set", "delete", "enqueue"]);

/** An atomic operation whose commit is retried (a refused commit wrote nothing, so it can be sent again). */
function resilientAtomic(op: Deno.AtomicOperation): Deno.AtomicOperation {
  const proxy: Deno.AtomicOperation = new Proxy(op, {
    get(o, p) {
      const v = Reflect.get(o, p, o);
      if (p === "commit") return () => retry(() => o.commit());
      if (typeof v !== "function") return v;
      // Builder methods return the operation itself: keep handing out the proxy.
      return (...args: unknown[]) => {
        const r = v.apply(o, args);
        return r === o ? proxy : r;
      };
    },
  });
  return proxy;
}

/** `kv` with its writes and point reads retried on "database is locked". */
export function resilientKv(kv: Deno.Kv): Deno.Kv {
  return new Proxy(kv, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (typeof value !== "function") return value;
      if (prop === "atomic") return () => resilientAtomic(target.atomic());
      if (RETRIED.has(prop as string)) {
        return (...args: unknown[]) => retry(() => value.apply(target, args));
      }
      return value.bind(target);
    },
  });
}
