/** Content negotiation for `Accept`, and request bodies read with a size limit. */
import { DEFAULT_BODY_TIMEOUT_MS, readRequestBody } from "../core/api/body.ts";
import { ApiError } from "./errors.ts";
import { isMsgpackType, unpackMsg } from "../core/api/msgpack.ts";

export type OutputFormat = "json" | "msgpack" | "png" | "sse";

const OFFERS: [OutputFormat, string[]][] = [
  ["json", ["application/json"]],
  ["msgpack", ["application/msgpack", "application/x-msgpack", "application/vnd.msgpack"]],
  ["png", ["image/png"]],
  ["sse", ["text/event-stream"]],
];

/**
 * The best format `accept` allows among `offered` (in server preference order), JSON when the header
 * is absent or allows anything; null when nothing offered is acceptable (406).
 */
export function negotiate(
  accept: string | null | undefined,
  offered: readonly OutputFormat[],
): OutputFormat | null {
  if (!accept || !accept.trim()) return offered[0];
  const ranges = accept.split(",").slice(0, 32).map((part) => {
    const [type, ...params] = part.trim().toLowerCase().split(";");
    let q = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*([0-9.]+)\s*$/.exec(p);
      if (m) q = Math.min(1, Math.max(0, Number(m[1]) || 0));
    }
    return { type: type.trim(), q };
  }).filter((r) => r.type.length > 0);
  let best: OutputFormat | null = null, bestQ = 0, bestSpecific = -1;
  for (const fmt of offered) {
    const types = OFFERS.find(([f]) => f === fmt)![1];
    for (const r of ranges) {
      const [rt, rs] = r.type.split("/");
      const hit = types.find((t) => {
        const [tt, ts] = t.split("/");
        return (rt === "*" && (rs === "*" || rs === undefined)) || (rt === tt && (rs === "*" || rs === ts));
      });
      if (!hit || r.q <= 0) continue;
      const specific = rt === "*" ? 0 : rs === "*" ? 1 : 2;
      if (r.q > bestQ || (r.q === bestQ && specific > bestSpecific)) {
        best = fmt;
        bestQ = r.q;
        bestSpecific = specific;
      }
    }
  }
  return best;
}

/**
 * Reads a request body, answering 413 past `limit` bytes (by Content-Length or while streaming) and
 * 408 when it has not arrived within `timeoutMs` (GENIE_EDGE_BODY_TIMEOUT_MS; the body is cancelled).
 */
async function readBody(
  req: Request,
  limit: number,
  timeoutMs = DEFAULT_BODY_TIMEOUT_MS,
): Promise<Uint8Array> {
  const read = await readRequestBody(req, limit, timeoutMs);
  if (read.ok) return read.bytes;
  if (read.reason === "unreadable") {
    throw new ApiError(400, "bad_request", "the request body could not be read");
  }
  if (read.reason === "timeout") {
    throw new ApiError(
      408,
      "request_timeout",
      `the request body did not arrive within ${read.ms} ms`,
    );
  }
  throw tooLarge(limit);
}

function tooLarge(limit: number): ApiError {
  return new ApiError(413, "payload_too_large", `the request body exceeds ${limit} bytes`);
}

/**
 * A request body as a value: msgpack for msgpack content types, otherwise JSON (also when the type is
 * missing, text/plain or form-encoded, as simple clients send). 400 when it does not parse, 415 for
 * other declared types.
 */
export async function parseBody(
  req: Request,
  limit: number,
  timeoutMs = DEFAULT_BODY_TIMEOUT_MS,
): Promise<unknown> {
  const type = (req.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  const msgpack = isMsgpackType(type);
  if (
    !msgpack && type !== "" && !/^application\/([a-z0-9.+-]*\+)?json$/.test(type) &&
    type !== "text/plain" && type !== "application/x-www-form-urlencoded"
  ) {
    throw new ApiError(
      415,
      "unsupported_media_type",
      `send application/json or application/msgpack, not ${type}`,
    );
  }
  const bytes = await readBody(req, limit, timeoutMs);
  if (bytes.byteLength === 0) throw new ApiError(400, "bad_request", "the request body is empty");
  if (msgpack) {
    try {
      return unpackMsg(bytes, limit);
    } catch (e) {
      throw new ApiError(
        400,
        "bad_request",
        `malformed msgpack: ${String(e instanceof Error ? e.message : e).slice(0, 200)}`,
      );
    }
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ApiError(400, "bad_request", "the request body is not UTF-8");
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(
      400,
      "bad_request",
      `malformed JSON: ${String(e instanceof Error ? e.message : e).slice(0, 200)}`,
    );
  }
}
