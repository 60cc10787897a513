/**
 * Authentication of the API (`/v1/*`): a bearer API key checked against the configured digests
 * (functions/auth.ts), or, with no keys configured, the client's address as the principal.
 */
import type { MiddlewareHandler } from "hono";
import { bearerToken, KeyStore } from "../auth.ts";
import type { Env } from "../env.ts";
import { ApiError } from "../errors.ts";

/**
 * Sets `principal`: `key:<id>` for a known key, else a 401 with `WWW-Authenticate`; `ip:<address>` when
 * `apiKeys` is empty. Keys are hashed once, here; a malformed entry is a 500 on every request.
 */
export function authenticate(apiKeys: readonly string[]): MiddlewareHandler<Env> {
  const keys = KeyStore.create(apiKeys);
  keys.catch(() => {}); // reported on first use
  return async (c, next) => {
    const store = await keys.catch((e) => {
      throw new ApiError(
        500,
        "internal",
        `API keys are misconfigured: ${e instanceof Error ? e.message : e}`,
      );
    });
    let principal: string;
    if (store.open) {
      principal = "ip:" + (c.env?.remoteAddr?.hostname ?? "local");
    } else {
      const token = bearerToken(c.req.header("authorization"));
      const id = token === null ? null : await store.verify(token);
      if (id === null) {
        throw new ApiError(
          401,
          "unauthorized",
          token === null ? "send Authorization: Bearer <API key>" : "unknown API key",
          undefined,
          { "www-authenticate": 'Bearer realm="genie"' },
        );
      }
      principal = id;
    }
    c.set("principal", principal);
    await next();
  };
}
