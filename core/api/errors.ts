/**
 * The error body of the HTTP API and of the worker protocol (docs/contracts.md §2, §3), and the conversion
 * of schema issues into `details` entries that name the offending field by its path.
 */
import { z } from "zod";

/** Machine-readable error codes. New codes may be added; existing ones keep their meaning. */
export const ERROR_CODES = [
  "bad_request",
  "unauthorized",
  "not_found",
  "method_not_allowed",
  "not_acceptable",
  "payload_too_large",
  "request_timeout",
  "unsupported_media_type",
  "invalid_request",
  "rate_limited",
  "too_many_concurrent",
  "queue_full",
  "no_worker",
  "worker_lost",
  "worker_error",
  "deadline_exceeded",
  "canceled",
  "jobs_unavailable",
  "quota_exceeded",
  "job_expired",
  "internal",
] as const;
export type ErrorCode = typeof ERROR_CODES[number];

/** One problem with a request value: `path` is the field's location in the body (e.g. ["latents", "shape", 0]). */
export const Issue = z.object({
  path: z.array(z.union([z.string(), z.number()])),
  message: z.string(),
  code: z.string().optional(),
  valid: z.array(z.number()).optional().meta({
    description:
      "The nearest values that would work, where the server can tell (e.g. the NFEs a solver can use)",
  }),
}).meta({ id: "Issue" });
export type Issue = z.infer<typeof Issue>;

/** `{"error": {"code", "message", "details"?}}` */
export const ErrorBody = z.object({
  error: z.object({
    code: z.string().meta({ description: "Machine-readable code, e.g. invalid_request, rate_limited" }),
    message: z.string(),
    details: z.array(Issue).optional(),
  }),
}).meta({ id: "Error" });
export type ErrorBody = z.infer<typeof ErrorBody>;

/** The issues of a failed zod parse as `details` entries (at most `max`). */
export function issuesFromZod(error: z.ZodError, max = 50): Issue[] {
  return error.issues.slice(0, max).map((i) => ({
    path: i.path.map((p) => (typeof p === "symbol" ? String(p) : p)),
    message: i.message,
    code: i.code,
  }));
}

/** A one-line summary of issues: "n: Too big: expected number to be <=64; solver: …". */
export function summarizeIssues(issues: readonly Issue[], max = 3): string {
  const parts = issues.slice(0, max).map((i) =>
    `${i.path.length ? i.path.join(".") : "(body)"}: ${i.message}`
  );
  if (issues.length > max) parts.push(`… ${issues.length - max} more`);
  return parts.join("; ");
}
