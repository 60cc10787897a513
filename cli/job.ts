/**
 * `deno task job`: batch jobs over the HTTP API (docs/contracts.md §2, `/v1/jobs`; docs/jobs.md).
 *
 *     deno task job submit --model mnist-mix --nfe 10 --count 256 [--chunk 16] [--seed 7] [--wait]
 *     deno task job submit --request body.json --count 256 --schedule "0 3 * * *"
 *     deno task job status ID [--json]
 *     deno task job wait ID [--timeout SECONDS]
 *     deno task job fetch ID --out DIR | FILE.tar | FILE.npy
 *     deno task job cancel ID
 *     deno task job delete ID
 *     deno task job usage [--json]
 *
 * Every command takes `--url` (GENIE_URL, default http://127.0.0.1:8000) and `--key` (GENIE_API_KEY).
 * Progress and ETA go to stderr; results and `--json` summaries to stdout. Exit status: 0 success,
 * 1 failure (HTTP error, job failed or canceled, timeout), 2 bad flags (the message names the flag).
 *
 * The parts are in cli/job/: the flags (`args.ts`), the HTTP client (`client.ts`), the progress bar
 * (`progress.ts`) and the commands' work (`commands.ts`).
 */
import type { JobsUsage } from "../core/api/jobs.ts";
import { HELP, type JobArgs, parseJobArgs, UsageError } from "./job/args.ts";
import { Client, type Job } from "./job/client.ts";
import { buildRequest, fetchResults, report, usageLines, waitFor } from "./job/commands.ts";

/** Runs the command line; returns the exit status. */
export async function main(argv: readonly string[]): Promise<number> {
  let args: JobArgs | null;
  try {
    args = parseJobArgs(argv);
  } catch (e) {
    console.error(e instanceof Error ? e.message : String(e));
    return 2;
  }
  if (!args) {
    console.log(HELP);
    return 0;
  }
  const client = new Client(args);
  try {
    switch (args.command) {
      case "submit": {
        const body: Record<string, unknown> = {
          request: await buildRequest(args),
          count: args.flags.count,
        };
        if (args.flags.chunk !== undefined) body.chunk = args.flags.chunk;
        if (args.flags.schedule !== undefined) body.schedule = args.flags.schedule;
        const job = await client.json<Job>("POST", "/v1/jobs", body);
        if (!args.flags.wait) {
          if (args.json) console.log(JSON.stringify(job));
          else console.log(job.id);
          return 0;
        }
        console.error(`submitted ${job.id}`);
        const final = await waitFor(client, args, job.id);
        report(final, args.json);
        return final.status === "succeeded" ? 0 : 1;
      }
      case "status": {
        report(await client.json<Job>("GET", `/v1/jobs/${args.id}`), args.json);
        return 0;
      }
      case "wait": {
        const final = await waitFor(client, args, args.id!);
        report(final, args.json);
        return final.status === "succeeded" ? 0 : 1;
      }
      case "cancel": {
        report(await client.json<Job>("POST", `/v1/jobs/${args.id}/cancel`), args.json);
        return 0;
      }
      case "fetch": {
        await fetchResults(client, args, args.id!);
        return 0;
      }
      case "delete": {
        await (await client.call("DELETE", `/v1/jobs/${args.id}`)).body?.cancel();
        console.log(`${args.id}: deleted`);
        return 0;
      }
      case "usage": {
        const u = await client.json<JobsUsage>("GET", "/v1/jobs");
        if (args.json) console.log(JSON.stringify(u));
        else console.log(usageLines(u).join("\n"));
        return 0;
      }
    }
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(e.message);
      return 2;
    }
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
