/** The edge's Hono environment, shared by functions/app.ts, its middleware and its route sub-apps. */

export type Env = {
  /** What `Deno.serve` hands the app as its env (functions/serve.ts, functions/main.ts): the client's address. */
  Bindings: { remoteAddr?: { hostname?: string } };
  Variables: {
    /** Who is calling: `key:<id>` with API keys, else `ip:<address>` (functions/middleware/auth.ts). */
    principal: string;
    /** The `x-request-id` of the response (functions/middleware/observe.ts). */
    requestId: string;
  };
};
