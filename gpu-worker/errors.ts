/**
 * The worker's typed errors: each carries the HTTP status and the protocol's error code, and
 * invalid-value errors name the offending field (docs/contracts.md §3: `{v:1, id, error:{code, message}}`).
 * Codes are those of core/api/errors.ts where one fits; `unavailable` (503, shutting down) and
 * `non_finite_result` (500: the solve produced NaN or ±∞, and no data is sent) are added.
 */

export const ERROR_STATUS = {
  bad_request: 400,
  unauthorized: 401,
  not_found: 404,
  method_not_allowed: 405,
  request_timeout: 408,
  payload_too_large: 413,
  unsupported_media_type: 415,
  invalid_request: 422,
  queue_full: 429,
  canceled: 499,
  internal: 500,
  non_finite_result: 500,
  unavailable: 503,
  deadline_exceeded: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class WorkerError extends Error {
  readonly status: number;
  constructor(readonly code: ErrorCode, message: string, readonly field?: string) {
    super(field ? `${field}: ${message}` : message);
    this.name = "WorkerError";
    this.status = ERROR_STATUS[code];
  }
}

/** 422 naming a field. */
export function invalidField(field: string, message: string): WorkerError {
  return new WorkerError("invalid_request", message, field);
}

/** Errors of core/ and the manifest layer carry `field`; they become 422s naming it. */
export function asWorkerError(e: unknown): WorkerError {
  if (e instanceof WorkerError) return e;
  if (e instanceof Error && typeof (e as { field?: unknown }).field === "string") {
    const field = (e as unknown as { field: string }).field;
    const prefix = `${field}: `;
    return invalidField(field, e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message);
  }
  return new WorkerError("internal", e instanceof Error ? e.message : String(e));
}
