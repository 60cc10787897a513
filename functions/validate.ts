/** Validation of request bodies and queries with the zod schemas of core/api/, as 422 `invalid_request`. */
import type { z } from "zod";
import { issuesFromZod, summarizeIssues } from "../core/api/errors.ts";
import { invalidRequest } from "./errors.ts";

/**
 * A parser for `schema`: the parsed value, or a 422 whose message summarizes the issues and whose
 * `details` lists them (core/api/errors.ts).
 */
export function parseWith<S extends z.ZodType>(schema: S): (value: unknown) => z.output<S> {
  return (value) => {
    const parsed = schema.safeParse(value);
    if (parsed.success) return parsed.data;
    const details = issuesFromZod(parsed.error);
    throw invalidRequest(summarizeIssues(details), details);
  };
}
