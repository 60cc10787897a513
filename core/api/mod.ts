/** Request, response and protocol schemas shared by the edge (functions/) and the worker (gpu-worker/). */
export * from "./errors.ts";
export * from "./models.ts";
export * from "./samples.ts";
export * from "./tensor.ts";
export * from "./worker.ts";
export * from "./cron.ts";
export * from "./jobs.ts";
