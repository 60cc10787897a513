/**
 * Batch jobs (docs/contracts.md §2, `/v1/jobs`): the submission schema the edge validates with, and the
 * response shapes the OpenAPI document is generated from.
 *
 * A job runs one samples request `count` times: `total = count × (request.n ?? 1)` samples, split into
 * chunks of `chunk` samples. Sample i (0 ≤ i < total) uses seed `(base_seed + i) mod 2³²`, where
 * `base_seed` is `request.seed` or a random seed drawn at submission; run r (0-based) of a recurring
 * job uses `base_seed + r × total`. The same seeds give bit-identical samples however the job is
 * chunked, interrupted or retried.
 */
import { z } from "zod";
import { cronProblem } from "./cron.ts";
import { HARD_LIMITS, SamplesRequest } from "./samples.ts";

export const JOB_LIMITS = {
  /** Repetitions of the request. */
  count: 100_000,
  /** Samples in one job (count × n). */
  total: 1_000_000,
} as const;

export const JOB_STATUSES = ["queued", "running", "succeeded", "failed", "canceled"] as const;
export type JobStatus = typeof JOB_STATUSES[number];
/** Statuses after which nothing changes. */
export const FINAL_STATUSES: readonly JobStatus[] = ["succeeded", "failed", "canceled"];

/** A five-field cron spec (UTC), checked to parse and to fire at least once. */
export const CronSpec = z.string().min(1).max(200).superRefine((spec, ctx) => {
  const problem = cronProblem(spec);
  if (problem) ctx.addIssue({ code: "custom", message: `invalid cron spec: ${problem}` });
}).meta({
  description: 'Cron spec in UTC, e.g. "0 3 * * *" (minute hour day-of-month month day-of-week) or @daily',
});

export const JobRequest = z.strictObject({
  request: SamplesRequest,
  count: z.int().min(1).max(JOB_LIMITS.count).meta({
    description: "How many times to run the request (total samples = count × request.n)",
  }),
  chunk: z.int().min(1).max(HARD_LIMITS.n).optional().meta({
    description: "Samples per chunk (one worker call each); default: the model's max_batch",
  }),
  schedule: CronSpec.optional().meta({
    description: "Run the job on this cron schedule (UTC) instead of once, now",
  }),
}).superRefine((v, ctx) => {
  if (v.request.latents !== undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["request", "latents"],
      message: "jobs draw their latents from seeds; latents are not supported",
    });
  }
  if (v.request.images !== undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["request", "images"],
      message: "jobs draw their latents from seeds; img2img images are not supported",
    });
  }
  const total = v.count * (v.request.n ?? 1);
  if (total > JOB_LIMITS.total) {
    ctx.addIssue({
      code: "custom",
      path: ["count"],
      message: `count × n = ${total} samples; at most ${JOB_LIMITS.total} per job`,
    });
  }
}).meta({ id: "JobRequest" });
export type JobRequest = z.infer<typeof JobRequest>;

export const JobError = z.object({ code: z.string(), message: z.string() }).meta({ id: "JobError" });

export const JobInfo = z.object({
  id: z.string(),
  status: z.enum(JOB_STATUSES),
  done: z.int().meta({ description: "Samples finished" }),
  total: z.int().meta({ description: "Samples in the job (count × n); of the latest run when recurring" }),
  failed: z.int().meta({ description: "Samples in chunks that failed for good" }),
  chunks: z.object({ total: z.int(), done: z.int(), failed: z.int(), running: z.int() }),
  model: z.string(),
  solver: z.string(),
  count: z.int(),
  chunk: z.int(),
  base_seed: z.int(),
  shape: z.array(z.int()).meta({ description: "Shape of one sample" }),
  created_at: z.string(),
  started_at: z.string().optional(),
  finished_at: z.string().optional(),
  error: JobError.optional(),
  schedule: z.string().optional(),
  next_run_at: z.string().optional(),
  runs: z.int().optional().meta({ description: "Runs started so far (recurring jobs)" }),
  skipped: z.int().optional().meta({
    description: "Ticks skipped because the previous run was still going",
  }),
  last_run: z.string().optional().meta({ description: "Id of the latest run (recurring jobs)" }),
  parent: z.string().optional().meta({ description: "The recurring job this run belongs to" }),
  run: z.int().optional(),
  expires_at: z.string().optional().meta({
    description: "When the job expires (finished, failed and canceled jobs): its files and results are " +
      "deleted and its id answers 410 job_expired",
  }),
  files_deleted: z.boolean().optional().meta({
    description: "The job's result files were deleted (canceling a job deletes them)",
  }),
  results: z.string().meta({ description: "URL of the first page of results" }),
  archive: z.string().meta({ description: "URL of the whole job as one tar archive" }),
}).meta({ id: "Job" });
export type JobInfo = z.infer<typeof JobInfo>;

export const JobResult = z.object({
  chunk: z.int(),
  status: z.enum(["done", "failed"]),
  start: z.int().meta({ description: "Index of the chunk's first sample in the job" }),
  count: z.int(),
  seeds: z.array(z.int()),
  shape: z.array(z.int()).meta({ description: "[count, …sample shape]" }),
  nfe: z.int().optional(),
  calls: z.int().optional().meta({
    description: "Graph calls of every kind per sample (as the worker reports)",
  }),
  cost: z.number().optional().meta({
    description: "Forward-pass equivalents per sample (as the worker reports)",
  }),
  cost_estimated: z.boolean().optional(),
  steps: z.int().optional(),
  attempts: z.int(),
  files: z.object({
    npy: z.string().meta({ description: "URL of the chunk's samples (.npy, <f4)" }),
    png: z.string().optional().meta({ description: "URL of a PNG grid of the chunk (image models)" }),
  }).optional(),
  error: JobError.optional(),
}).meta({ id: "JobResult" });
export type JobResult = z.infer<typeof JobResult>;

export const JobResultsPage = z.object({
  id: z.string(),
  status: z.enum(JOB_STATUSES),
  items: z.array(JobResult),
  next_cursor: z.string().nullable().meta({
    description: "Cursor of the next page; null when every chunk has been listed. Pages stop at the " +
      "first unfinished chunk, so polling with the cursor never misses a result.",
  }),
}).meta({ id: "JobResultsPage" });
export type JobResultsPage = z.infer<typeof JobResultsPage>;

/** A per-key limit; null when there is none. */
const Limit = z.int().nullable();

export const JobsUsage = z.object({
  limits: z.object({
    max_active_jobs: Limit.meta({
      description: "Jobs queued or running at once (a recurring job until canceled)",
    }),
    max_job_samples: Limit.meta({
      description: "Samples in one job, count × n (of each run when recurring)",
    }),
    max_active_samples: Limit.meta({ description: "Samples of the key's active jobs together" }),
    max_stored_bytes: Limit.meta({ description: "Bytes of result files the key may keep stored" }),
    retention_ms: z.int().meta({
      description: "How long a finished, failed or canceled job is kept before it expires",
    }),
  }),
  usage: z.object({
    active_jobs: z.int(),
    active_samples: z.int(),
    stored_bytes: z.int().meta({ description: "Bytes of result files stored now" }),
    reserved_bytes: z.int().meta({
      description: "Expected bytes of .npy files that the key's active jobs have yet to write",
    }),
  }),
  active: z.array(z.string()).meta({ description: "Ids of the key's active jobs" }),
}).meta({ id: "JobsUsage" });
export type JobsUsage = z.infer<typeof JobsUsage>;
