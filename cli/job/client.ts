/**
 * The HTTP client of `deno task job` (cli/job.ts): JSON calls to the jobs API with the key, refusals as
 * {@link Failure}s.
 */
import type { JobInfo } from "../../core/api/jobs.ts";
import type { JobArgs } from "./args.ts";

/** A command that failed (HTTP error, job failed or canceled, timeout): exit status 1. */
export class Failure extends Error {}

/** A job as `GET /v1/jobs/{id}` describes it. */
export type Job = JobInfo;

/** Calls the jobs API at the command line's URL with its key; an error answer throws a {@link Failure}. */
export class Client {
  constructor(private readonly args: JobArgs) {}

  async call(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.args.key) headers.authorization = `Bearer ${this.args.key}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let res: Response;
    try {
      res = await fetch(this.args.url + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new Failure(`cannot reach ${this.args.url}: ${e instanceof Error ? e.message : e}`);
    }
    if (!res.ok) {
      const text = await res.text();
      let detail = text.slice(0, 500);
      try {
        const err = JSON.parse(text).error;
        detail = `${err.code}: ${err.message}`;
      } catch { /* not JSON */ }
      throw new Failure(`${method} ${path}: HTTP ${res.status} ${detail}`);
    }
    return res;
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    return await (await this.call(method, path, body)).json() as T;
  }
}
