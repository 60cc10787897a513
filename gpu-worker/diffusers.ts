/**
 * Reading a diffusers-style export for `deno task import` (import.ts): its scheduler configuration (the
 * schedule, the prediction type, the settings that only steer diffusers' own sampling loop), the class
 * embedding table the graph gathers its labels from, and the graph's external-data files. What cannot be
 * served is refused with an {@link ImportError} naming the configuration field.
 */
import { existsSync, readFileSync } from "node:fs";
import { PREDICTION_ALIASES } from "../core/prediction.ts";
import { BETA_SCHEDULES, discreteSchedule, type DiscreteScheduleSpec } from "../core/schedule.ts";
import type { IGraphProto } from "../onnx/proto.ts";

/** An export that cannot be imported; `field` names the offending configuration field or file. */
export class ImportError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "ImportError";
  }
}

/** Scheduler settings that only steer diffusers' own sampling loop; the worker's solvers replace them. */
const SAMPLING_ONLY = [
  "timestep_spacing",
  "steps_offset",
  "set_alpha_to_one",
  "clip_sample",
  "clip_sample_range",
  "thresholding",
  "dynamic_thresholding_ratio",
  "sample_max_value",
  "solver_order",
  "solver_type",
  "algorithm_type",
  "lower_order_final",
  "use_karras_sigmas",
  "interpolation_type",
  "skip_prk_steps",
];

/** A JSON object. */
export type Obj = Record<string, unknown>;

/** A JSON object read from `path`, or undefined when there is no such file; `field` names it in errors. */
export function readJson(path: string, field: string): Obj | undefined {
  if (!existsSync(path)) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new ImportError(field, `is not valid JSON (${e instanceof Error ? e.message : e})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new ImportError(field, "must be a JSON object");
  }
  return json as Obj;
}
/** The schedule and prediction kind of a diffusers scheduler configuration, and the facts about it. */
export function fromSchedulerConfig(
  config: Obj,
): { schedule: DiscreteScheduleSpec; prediction: string; facts: string[] } {
  const field = (key: string) => `scheduler_config.json: ${key}`;
  const facts: string[] = [];
  const prediction = config.prediction_type ?? "epsilon";
  if (typeof prediction !== "string" || !Object.hasOwn(PREDICTION_ALIASES, prediction)) {
    throw new ImportError(
      field("prediction_type"),
      `unsupported ${JSON.stringify(prediction)} (one of ${Object.keys(PREDICTION_ALIASES).join(", ")})`,
    );
  }
  if (config.rescale_betas_zero_snr === true) {
    throw new ImportError(
      field("rescale_betas_zero_snr"),
      "zero terminal SNR (ᾱ = 0 at the last timestep) puts t = 1 at infinite noise, which the solvers " +
        "cannot start from",
    );
  }
  if (config.timestep_type !== undefined && config.timestep_type !== "discrete") {
    throw new ImportError(
      field("timestep_type"),
      `unsupported ${JSON.stringify(config.timestep_type)} (only discrete timesteps are supported)`,
    );
  }
  const variance = config.variance_type;
  if (typeof variance === "string" && variance.startsWith("learned")) {
    throw new ImportError(
      field("variance_type"),
      `${JSON.stringify(variance)}: a model that also predicts its variance (2C output channels) is not ` +
        "supported; export the ε half of the output only",
    );
  }
  const num = (key: string): number | undefined => {
    const v = config[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new ImportError(field(key), `must be a number, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  let schedule: DiscreteScheduleSpec;
  const trained = config.trained_betas;
  if (trained !== undefined && trained !== null) {
    schedule = { type: "discrete", trained_betas: trained as number[] };
  } else {
    const kind = config.beta_schedule ?? "linear";
    if (typeof kind !== "string" || !(BETA_SCHEDULES as readonly string[]).includes(kind)) {
      throw new ImportError(
        field("beta_schedule"),
        `unsupported ${JSON.stringify(kind)} (one of ${BETA_SCHEDULES.join(", ")}, or trained_betas)`,
      );
    }
    schedule = {
      type: "discrete",
      beta_schedule: kind as DiscreteScheduleSpec["beta_schedule"],
      num_train_timesteps: num("num_train_timesteps") ?? 1000,
    };
    if (kind !== "squaredcos_cap_v2") {
      schedule.beta_start = num("beta_start") ?? 1e-4;
      schedule.beta_end = num("beta_end") ?? 0.02;
    }
  }
  try {
    discreteSchedule(schedule);
  } catch (e) {
    const f = (e as { field?: string }).field;
    throw new ImportError(field(f ?? "beta_schedule"), (e as Error).message.replace(/^[^:]*: /, ""));
  }
  const steps = schedule.trained_betas?.length ?? schedule.num_train_timesteps!;
  const kindFact = schedule.trained_betas
    ? `trained betas (${steps})`
    : schedule.beta_schedule === "squaredcos_cap_v2"
    ? "squaredcos_cap_v2 betas"
    : `${schedule.beta_schedule} betas ${schedule.beta_start} … ${schedule.beta_end}`;
  facts.push(`schedule: discrete, ${kindFact} over ${steps} training timesteps`);
  facts.push(`prediction: ${PREDICTION_ALIASES[prediction]} (prediction_type ${JSON.stringify(prediction)})`);
  const ignored = SAMPLING_ONLY.filter((k) =>
    config[k] !== undefined && config[k] !== null && config[k] !== false
  )
    .map((k) => `${k}=${JSON.stringify(config[k])}`);
  if (ignored.length) {
    facts.push(`ignored: ${ignored.join(", ")} (settings of diffusers' own sampling loop)`);
  }
  return { schedule, prediction, facts };
}
/** The number of rows of the initializer the graph gathers `labels` from (through casts and reshapes). */
export function classTableRows(
  graph: IGraphProto,
  labels: string,
): { rows: number; table: string } | undefined {
  const inits = new Map((graph.initializer ?? []).map((t) => [t.name ?? "", t]));
  const passThrough = new Set(["Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten"]);
  const seen = new Set([labels]);
  const frontier = [labels];
  while (frontier.length) {
    const value = frontier.shift()!;
    for (const node of graph.node ?? []) {
      const inputs = node.input ?? [];
      if (node.opType === "Gather" && inputs[1] === value && inits.has(inputs[0])) {
        const dims = (inits.get(inputs[0])!.dims ?? []).map(Number);
        if (dims.length >= 1 && dims[0] > 0) return { rows: dims[0], table: inputs[0] };
      }
      if (passThrough.has(node.opType ?? "") && inputs[0] === value) {
        for (const o of node.output ?? []) {
          if (!seen.has(o)) seen.add(o), frontier.push(o);
        }
      }
    }
  }
  return undefined;
}
/** The external-data files the graph's initializers live in (relative to the graph's folder). */
export function externalFiles(graph: IGraphProto): string[] {
  const files = new Set<string>();
  for (const t of graph.initializer ?? []) {
    for (const e of t.externalData ?? []) if (e.key === "location" && e.value) files.add(e.value);
  }
  return [...files];
}
