/** Typed API errors and their JSON form `{"error":{"code","message","details"?}}` (docs/contracts.md §2). */
import type { ErrorCode, Issue } from "../core/api/errors.ts";

/** An error that becomes an HTTP response with `status`, `code` and optional `details` and headers. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly details?: Issue[],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** The error body. */
  body(): { error: { code: string; message: string; details?: Issue[] } } {
    const error: { code: string; message: string; details?: Issue[] } = {
      code: this.code,
      message: this.message,
    };
    if (this.details && this.details.length > 0) error.details = this.details;
    return { error };
  }

  toResponse(extraHeaders: Record<string, string> = {}): Response {
    return new Response(JSON.stringify(this.body()), {
      status: this.status,
      headers: { "content-type": "application/json; charset=utf-8", ...this.headers, ...extraHeaders },
    });
  }
}

/** 503/429 errors carry Retry-After in whole seconds (at least 1). */
export function retryAfter(seconds: number): Record<string, string> {
  return { "retry-after": String(Math.max(1, Math.ceil(seconds))) };
}

export const badRequest = (message: string) => new ApiError(400, "bad_request", message);
export const invalidRequest = (message: string, details: Issue[]) =>
  new ApiError(422, "invalid_request", message, details);
export const noWorker = (message: string, afterS: number) =>
  new ApiError(503, "no_worker", message, undefined, retryAfter(afterS));
export const deadlineExceeded = (ms: number) =>
  new ApiError(504, "deadline_exceeded", `the request did not finish within ${ms} ms`);
/** The client closed the connection before the answer (499; the client never sees it). */
export const CANCELED = new ApiError(499, "canceled", "the client closed the connection");
