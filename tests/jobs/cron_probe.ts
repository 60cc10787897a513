/** Registers the jobs tick with Deno.cron (as functions/main.ts does at top level) and reports whether it could. */
import { registerJobsCron } from "../../functions/jobs/cron.ts";

console.log(`registered: ${registerJobsCron("* * * * *", "genie-jobs-probe")}`);
Deno.exit(0);
