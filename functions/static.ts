/**
 * The playground and docs assets in functions/static/, served by the app itself (no CDN). Files are
 * read once (relative to this module, so it works from any working directory and on Deno Deploy) and
 * kept in memory; only the names listed here are served.
 */
import { ApiError } from "./errors.ts";

const TYPES: Record<string, string> = {
  "playground.html": "text/html; charset=utf-8",
  "playground.js": "text/javascript; charset=utf-8",
  "playground_api.js": "text/javascript; charset=utf-8",
  "playground_results.js": "text/javascript; charset=utf-8",
  "docs.html": "text/html; charset=utf-8",
  "docs.js": "text/javascript; charset=utf-8",
  "style.css": "text/css; charset=utf-8",
};

const cache = new Map<string, Uint8Array>();

export async function serveStatic(name: string): Promise<Response> {
  const type = TYPES[name];
  if (!type) throw new ApiError(404, "not_found", "no such file");
  let bytes = cache.get(name);
  if (!bytes) {
    bytes = await Deno.readFile(new URL(`./static/${name}`, import.meta.url));
    cache.set(name, bytes);
  }
  return new Response(bytes as BodyInit, {
    headers: { "content-type": type, "cache-control": "no-cache" },
  });
}
