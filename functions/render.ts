/**
 * The answers of `/v1/samples` and `/v1/encode` (docs/contracts.md §2): JSON (binary fields base64),
 * msgpack (binary fields raw), or one PNG grid, with the A1111-style `parameters` text in every PNG.
 */
import type { Context } from "hono";
import { guidanceOf, type SamplesRequest } from "../core/api/samples.ts";
import { bytesToBase64, float32FromBytes } from "../core/api/tensor.ts";
import { type ImageParameters, isImageShape, pngParameters, toUint8Image } from "../core/image.ts";
import { encodePng } from "../core/png.ts";
import { gridPng, samplesToPng } from "./images.ts";
import { packMsg } from "../core/api/msgpack.ts";
import type { OutputFormat } from "./negotiate.ts";
import type { Progress, RunOutcome } from "./sampling.ts";

export function tensorOut(o: RunOutcome, binary: boolean) {
  return { shape: o.shape, dtype: "float32" as const, data: binary ? o.data : bytesToBase64(o.data) };
}

/** calls, cost, cost_estimated, grid and rho of an outcome: those the workers reported. */
export function priceOf(o: RunOutcome): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (o.calls !== undefined) out.calls = o.calls;
  if (o.cost !== undefined) out.cost = o.cost;
  if (o.costEstimated !== undefined) out.cost_estimated = o.costEstimated;
  if (o.grid !== undefined) out.grid = o.grid;
  if (o.rho !== undefined) out.rho = o.rho;
  return out;
}

/** What a samples request adds to its PNGs: the upscaling and the settings for their `parameters` text. */
export interface PngInfo {
  scale: number;
  settings: Pick<ImageParameters, "class" | "guidance" | "genieDerivative" | "afs" | "denoise" | "strength">;
  latents: boolean;
}

export function pngInfo(req: SamplesRequest): PngInfo {
  return {
    scale: req.scale ?? 1,
    settings: {
      class: req.class,
      guidance: guidanceOf(req),
      genieDerivative: req.genie_derivative,
      afs: req.afs,
      denoise: req.denoise,
      strength: req.strength,
    },
    latents: req.latents !== undefined || req.images !== undefined,
  };
}

/** The `parameters` PNG text of samples [from, from + count) of an outcome. */
function parametersText(o: RunOutcome, info: PngInfo, from: number, count: number): string {
  return pngParameters({
    model: o.model.name,
    solver: o.solver,
    steps: o.steps,
    nfe: o.nfe,
    seed: info.latents ? undefined : o.seeds[from],
    n: count,
    grid: o.grid,
    rho: o.rho,
    scale: info.scale,
    ...info.settings,
  });
}

/** The samples result object; binary fields raw (msgpack) or base64 (JSON). */
export function samplesBody(
  o: RunOutcome,
  output: "png" | "tensor",
  binary: boolean,
  info: PngInfo,
): Record<string, unknown> {
  const body: Record<string, unknown> = {
    id: o.id,
    model: o.model.name,
    solver: o.solver,
    steps: o.steps,
    nfe: o.nfe,
    ...priceOf(o),
    seeds: o.seeds,
    shape: o.shape,
  };
  if (output === "tensor") body.tensor = tensorOut(o, binary);
  else {
    const pngs = samplesToPng(float32FromBytes(o.data), o.shape, {
      scale: info.scale,
      parameters: (i) => parametersText(o, info, i, 1),
    });
    body.images = pngs.map((png, i) => ({ seed: o.seeds[i], png: binary ? png : bytesToBase64(png) }));
  }
  body.timings = o.timings;
  return body;
}

/**
 * The data of an SSE `progress` event (core/api/samples.ts ProgressEvent): the progress as it is, with
 * its preview (x̂₀ of the first sample) as a PNG data URL for images [C, H, W] (C = 1 or 3) or as the
 * sample's values otherwise, and the step it comes from; a preview that does not match its shape is
 * dropped.
 */
export function progressEvent(p: Progress): Record<string, unknown> {
  const { preview, ...rest } = p;
  const out: Record<string, unknown> = rest;
  if (!preview) return out;
  const values = preview.data.byteLength % 4 === 0 ? float32FromBytes(preview.data) : undefined;
  const size = preview.shape.reduce((a, b) => a * b, 1);
  if (!values || values.length !== size) return out;
  out.preview = isImageShape(preview.shape)
    ? "data:image/png;base64," + bytesToBase64(encodePng(toUint8Image(values, preview.shape)))
    : Array.from(values);
  out.preview_step = preview.step;
  return out;
}

export function msgpackResponse(body: unknown): Response {
  return new Response(packMsg(body) as BodyInit, { headers: { "content-type": "application/msgpack" } });
}

/** A samples outcome in `format` (all but `sse`): a PNG grid with `x-genie-*` headers, msgpack or JSON. */
export function renderSamples(
  c: Context,
  format: Exclude<OutputFormat, "sse">,
  o: RunOutcome,
  output: "png" | "tensor",
  info: PngInfo,
): Response {
  if (format === "png") {
    const png = gridPng(float32FromBytes(o.data), o.shape, {
      scale: info.scale,
      parameters: parametersText(o, info, 0, o.seeds.length),
    });
    return new Response(png as BodyInit, {
      headers: {
        "content-type": "image/png",
        "x-genie-id": o.id,
        "x-genie-steps": String(o.steps),
        "x-genie-nfe": String(o.nfe),
        ...(o.calls !== undefined ? { "x-genie-calls": String(o.calls) } : {}),
        ...(o.cost !== undefined ? { "x-genie-cost": String(o.cost) } : {}),
        "x-genie-seeds": o.seeds.length <= 64 ? o.seeds.join(",") : `${o.seeds[0]}+${o.seeds.length}`,
      },
    });
  }
  if (format === "msgpack") return msgpackResponse(samplesBody(o, output, true, info));
  return c.json(samplesBody(o, output, false, info));
}
