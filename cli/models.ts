/**
 * Model resolution for the command line: one function turns a `--model` value into everything a
 * solve needs. `gmm:SPEC.json` is an analytic Gaussian mixture; named models resolve here too.
 */
import { gmmEvaluator, GmmSpecError, parseGmmSpec } from "../core/gmm.ts";
import type { Schedule } from "../core/schedule.ts";
import type { AsyncEvaluator, Evaluator } from "../core/solvers/drive.ts";
import type { DerivativeSource } from "../core/solvers/types.ts";
import { UsageError } from "./args.ts";

/** A model ready to sample from. */
export interface ResolvedModel {
  /** The `--model` value it was resolved from. */
  name: string;
  /** Shape of one sample, e.g. [C, H, W] or [D]. */
  shape: number[];
  schedule: Schedule;
  /** Answers the solver's evaluation requests (synchronously for analytic models). */
  evaluator: Evaluator | AsyncEvaluator;
  /** Class-conditional models: the number of classes and the label of the unconditional class. */
  classes?: { count: number; nullClass?: number };
  /** The derivative sources GENIE can use with this model. */
  derivatives: DerivativeSource[];
  /** Releases what the model holds (sessions, workers). */
  close?: () => void | Promise<void>;
}

const GMM_PREFIX = "gmm:";

/** Resolves a `--model` value; problems with the value itself are UsageErrors naming --model. */
export async function resolveModel(name: string): Promise<ResolvedModel> {
  if (name.startsWith(GMM_PREFIX)) return await gmmModel(name, name.slice(GMM_PREFIX.length));
  throw new UsageError(
    "--model",
    `unknown model ${JSON.stringify(name)} (use gmm:SPEC.json for a Gaussian mixture)`,
  );
}

async function gmmModel(name: string, path: string): Promise<ResolvedModel> {
  if (path === "") throw new UsageError("--model", "gmm: needs the path of a JSON mixture spec");
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new UsageError("--model", `cannot read ${path}: ${e instanceof Error ? e.message : e}`);
  }
  let spec: unknown;
  try {
    spec = JSON.parse(text);
  } catch (e) {
    throw new UsageError("--model", `${path} is not valid JSON: ${e instanceof Error ? e.message : e}`);
  }
  let mix;
  try {
    mix = parseGmmSpec(spec);
  } catch (e) {
    if (e instanceof GmmSpecError) throw new UsageError("--model", `${path}: ${e.message}`);
    throw e;
  }
  const shape = sampleShape(path, (spec as { shape?: unknown }).shape, mix.dim);
  return {
    name,
    shape,
    schedule: mix.schedule,
    evaluator: gmmEvaluator(mix, mix.schedule),
    classes: mix.classes === undefined ? undefined : { count: mix.classes, nullClass: mix.classes },
    // The mixture answers JVP requests exactly too, so "jvp" costs what it costs on a network but
    // returns the exact derivative.
    derivatives: ["exact", "jvp", "fd"],
  };
}

/** The optional `shape` of a mixture spec (e.g. [1, 28, 28] for images), else [dim]. */
function sampleShape(path: string, shape: unknown, dim: number): number[] {
  if (shape === undefined) return [dim];
  if (
    !Array.isArray(shape) || shape.length === 0 ||
    !shape.every((d) => typeof d === "number" && Number.isInteger(d) && d >= 1)
  ) {
    throw new UsageError("--model", `${path}: shape must be an array of positive integers`);
  }
  const size = shape.reduce((a: number, b: number) => a * b, 1);
  if (size !== dim) {
    throw new UsageError(
      "--model",
      `${path}: shape [${shape.join(", ")}] has ${size} numbers, the means ${dim}`,
    );
  }
  return shape as number[];
}
