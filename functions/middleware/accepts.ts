/** Content negotiation as middleware: the response format `Accept` allows (functions/negotiate.ts), or 406. */
import { createMiddleware } from "hono/factory";
import { ApiError } from "../errors.ts";
import { negotiate, type OutputFormat } from "../negotiate.ts";

/** Sets `format` to the best of `offered` (in server preference order); 406 `not_acceptable` with `message` if none. */
export function accepts<F extends OutputFormat>(offered: readonly F[], message: string) {
  return createMiddleware<{ Variables: { format: F } }>(async (c, next) => {
    const format = negotiate(c.req.header("accept"), offered) as F | null;
    if (!format) throw new ApiError(406, "not_acceptable", message);
    c.set("format", format);
    await next();
  });
}
