/**
 * The settings of `deno task bench:jvp` (bench/jvp.ts): its flags and fixed choices, and the number format
 * and progress lines every part uses.
 */
import { dirname, join } from "node:path";
import { parseFlags } from "../../core/flags.ts";

/** The flags' values. */
export interface JvpSettings {
  /** Rounds of the cost section. */
  reps: number;
  /** Timing repetitions of every run of section 3. */
  timingReps: number;
  samples: number;
  /** ORT intra-op threads. */
  threads: number;
  /** The report (--out), and the plot beside it. */
  out: string;
  svgOut: string;
}

/** The settings `argv` asks for. */
export function jvpSettings(argv: string[]): JvpSettings {
  const { values: flags } = parseFlags(argv, [
    { flag: "--reps", kind: "int", min: 1, default: 41 },
    { flag: "--timing-reps", kind: "int", min: 1, default: 7 },
    { flag: "--samples", kind: "int", min: 1, default: 8 },
    { flag: "--threads", kind: "int", min: 0, default: 1 },
    { flag: "--out", kind: "string", default: "docs/jvp.md" },
  ], { help: false });
  return {
    reps: flags.reps,
    timingReps: flags.timingReps,
    samples: flags.samples,
    threads: flags.threads,
    out: flags.out,
    svgOut: join(dirname(flags.out), "jvp.svg"),
  };
}

export const COMMAND = "deno task bench:jvp";
/** The batches of the cost section. */
export const BATCHES = [1, 8, 32];
/** The NFEs of sections 2 and 3. */
export const NFES = [3, 4, 5, 6, 8, 10, 15, 20];
/** RK4 steps of the reference solution. */
export const REF_STEPS = 200;

/** A number in scientific notation, 3 significant digits. */
export const sci = (x: number) => x.toExponential(2);
/** A progress line on stderr. */
export const log = (line: string) => console.error(line);
