/**
 * The worker's responses (docs/contracts.md §3): JSON and msgpack bodies, a finished solve's message and
 * a failure's, `{v:1, id, error:{code, message, field?}}` with the matching status (Retry-After on 429
 * and 503).
 */
import { float32ToBytes } from "../core/api/tensor.ts";
import { MSGPACK } from "../core/api/worker.ts";
import { costFields } from "../core/cost.ts";
import { asWorkerError, WorkerError } from "./errors.ts";
import { encodeMessage } from "./protocol.ts";
import type { PlannedSolve } from "./requests.ts";
import type { SolveResult } from "./served.ts";

export function jsonResponse(value: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

export function msgpackResponse(
  value: unknown,
  status = 200,
  headers: Record<string, string> = {},
): Response {
  return new Response(encodeMessage(value) as BodyInit, {
    status,
    headers: { "content-type": MSGPACK, ...headers },
  });
}

/** Whether a request asks for msgpack rather than JSON. */
export function wantsMsgpack(req: Request): boolean {
  const accept = req.headers.get("accept") ?? "";
  return accept.includes("msgpack") && !accept.includes("json");
}

/** The success message of a finished solve; a result with NaN or ±∞ (in float32) is an error instead. */
export function resultMessage(plan: PlannedSolve, result: SolveResult): Record<string, unknown> {
  const data = Float32Array.from(result.x);
  const bad = data.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) {
    const per = data.length / Math.max(1, plan.shape[0]);
    throw new WorkerError(
      "non_finite_result",
      `the solve produced a non-finite value (${data[bad]}) in sample ${Math.floor(bad / per)}; ` +
        "no data is returned (the model or solver diverged on this input)",
    );
  }
  return {
    v: 1,
    id: plan.id,
    shape: plan.shape,
    data: float32ToBytes(data),
    // nfe, calls, cost, cost_estimated, graph_calls: per sample trajectory, priced with model.json `costs`.
    ...costFields(result.stats, plan.model.info.manifest.costs),
    steps: plan.steps,
    solver: plan.solver,
    grid: plan.grid,
    ...(plan.rho !== undefined ? { rho: plan.rho } : {}),
    ...(plan.derivative && plan.solver === "genie" ? { genie_derivative: plan.derivative } : {}),
    deriv_evals: result.stats.derivEvals,
    timings: { queue_ms: round(result.queueMs), compute_ms: round(result.computeMs) },
  };
}

/** How failures are answered: where internal errors are logged, and the Retry-After of 429 and 503. */
export interface ErrorContext {
  log: (line: string) => void;
  /** Retry-After seconds, as the header's text. */
  retryAfter: string;
}

/** The error message of a failure (with its HTTP status as `status` inside a stream). */
export function errorMessage(
  e: unknown,
  id: string | undefined,
  { log }: Pick<ErrorContext, "log">,
  streamed = false,
): Record<string, unknown> {
  const err = asWorkerError(e);
  if (err.code === "internal" || err.code === "non_finite_result") {
    log(`${err.code} error: ${e instanceof Error ? e.stack ?? e.message : e}`);
  }
  const error: Record<string, string> = { code: err.code, message: err.message };
  if (err.field) error.field = err.field;
  return { v: 1, ...(id !== undefined ? { id } : {}), error, ...(streamed ? { status: err.status } : {}) };
}

/** A failure as a msgpack response with its status. */
export function errorResponse(e: unknown, id: string | undefined, ctx: ErrorContext): Response {
  const err = asWorkerError(e);
  const headers: Record<string, string> = err.status === 429 || err.status === 503
    ? { "retry-after": ctx.retryAfter }
    : {};
  return msgpackResponse(errorMessage(e, id, ctx), err.status, headers);
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
