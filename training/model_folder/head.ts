/**
 * The served `head` graph of a model folder: its eps graph under the standard names with γ(t) of its
 * schedule computed inside, then the distilled head. Part of training/model_folder.ts.
 */
import { discreteTimesteps } from "../../core/schedule.ts";
import {
  encodeModel,
  GraphBuilder,
  type IGraphProto,
  modelOpset,
  type ModelProto,
  onnx,
} from "../../onnx/proto.ts";
import { type HeadOptions, withTrainedHead } from "../head.ts";
import type { FolderModel } from "./read.ts";

/** Renames values throughout a graph and its subgraphs (inputs, outputs, initializers, node edges). */
function renameValues(graph: IGraphProto, map: ReadonlyMap<string, string>): void {
  const rename = (n: string | null | undefined) => (n ? map.get(n) ?? n : n);
  for (const list of [graph.input, graph.output, graph.valueInfo]) {
    for (const v of list ?? []) v.name = rename(v.name);
  }
  for (const t of graph.initializer ?? []) t.name = rename(t.name);
  for (const node of graph.node ?? []) {
    node.input = (node.input ?? []).map((n) => rename(n)!);
    node.output = (node.output ?? []).map((n) => rename(n)!);
    for (const a of node.attribute ?? []) {
      if (a.g) renameValues(a.g, map);
      for (const sub of a.graphs ?? []) renameValues(sub, map);
    }
  }
}

/** Every value name of a graph (inputs, outputs, initializers, node outputs). */
function valueNames(graph: IGraphProto): Set<string> {
  return new Set([
    ...(graph.input ?? []).map((v) => v.name ?? ""),
    ...(graph.output ?? []).map((v) => v.name ?? ""),
    ...(graph.valueInfo ?? []).map((v) => v.name ?? ""),
    ...(graph.initializer ?? []).map((t) => t.name ?? ""),
    ...(graph.node ?? []).flatMap((n) => n.output ?? []),
  ]);
}

/**
 * The served head graph of a model folder: its eps graph with the inputs renamed to x, t, class and the
 * output to eps (other values with those names moved aside), γ(t) in float64 (closed form for vp-linear,
 * else B = log(1+γ²) interpolated linearly between knots, exact for the piecewise-linear discrete
 * schedules), ε̂ converted to ε for x₀ and v models, then the head with the trained `params`. Outputs: eps
 * (the raw prediction, as eps.onnx gives it) and deriv (dε/dγ).
 */
export function combinedFolderHead(
  model: FolderModel,
  tensors: { features: string; temb?: string },
  params: Readonly<Record<string, Float32Array>>,
  options: Partial<HeadOptions>,
): ModelProto {
  const source = onnx.ModelProto.decode(encodeModel(model.eps)); // a copy to rename in
  const graph = source.graph!;
  const roles: [string, string][] = [
    [model.names.x, "x"],
    [model.names.t, "t"],
    [model.names.class, "class"],
    [model.names.eps, "eps"],
  ];
  const taken = valueNames(graph);
  const mine = new Set(roles.map(([from]) => from));
  const aside = new Map<string, string>();
  for (const std of ["x", "t", "class", "eps", "deriv"]) {
    if (!taken.has(std) || (mine.has(std) && roles.some(([from, to]) => from === std && to === std))) {
      continue;
    }
    let alt = `${std}__model`, n = 1;
    while (taken.has(alt)) alt = `${std}__model_${n++}`;
    aside.set(std, alt);
    taken.add(alt);
  }
  if (aside.size) renameValues(graph, aside);
  const toStd = new Map<string, string>();
  for (const [from, to] of roles) {
    const now = aside.get(from) ?? from;
    if (now !== to) toStd.set(now, to);
  }
  if (toStd.size) renameValues(graph, toStd);
  const moved = (n: string) => toStd.get(aside.get(n) ?? n) ?? aside.get(n) ?? n;
  const features = moved(tensors.features), temb = tensors.temb ? moved(tensors.temb) : undefined;

  const g = new GraphBuilder(`${graph.name ?? "model"}-genie-head`, { opset: modelOpset(source) });
  g.reserveNamesOf(graph);
  const num = (v: number) => g.constant(new Float64Array([v]), [], "float64");
  // the solver's time from the graph's: (t − offset)/scale, in float64
  const ts = g.op("Div", [
    g.op("Sub", [g.op("Cast", ["t"], { to: 11 }), num(model.time.offset)]),
    num(model.time.scale),
  ]);
  const spec = model.schedule.spec;
  let B: string;
  if (spec.type === "vp-linear") {
    const bMin = spec.beta_min ?? 0.1, bD = (spec.beta_max ?? 20) - bMin;
    B = g.op("Add", [g.op("Mul", [num(bMin), ts]), g.op("Mul", [num(0.5 * bD), g.op("Mul", [ts, ts])])]);
  } else {
    const K = spec.type === "discrete"
      ? discreteTimesteps(model.schedule)!
      : spec.type === "ddpm-discrete"
      ? spec.betas?.length ?? spec.steps ?? 1000
      : 4096;
    const knots = Float64Array.from({ length: K + 1 }, (_, k) => model.schedule.logOnePlusGamma2(k / K));
    const scaled = g.op("Mul", [ts, num(K)]);
    const index = g.op("Max", [g.op("Min", [g.op("Floor", [scaled]), num(K - 1)]), num(0)]);
    const at = g.op("Cast", [index], { to: 7 });
    const lo = g.op("Gather", [g.constant(knots.slice(0, K), [K], "float64"), at], { axis: 0 });
    const hi = g.op("Gather", [g.constant(knots.slice(1), [K], "float64"), at], { axis: 0 });
    B = g.op("Add", [lo, g.op("Mul", [g.op("Sub", [hi, lo]), g.op("Sub", [scaled, index])])]);
  }
  const gamma64 = g.op("Sqrt", [g.op("Sub", [g.op("Exp", [B]), num(1)])]);
  const gamma = g.op("Cast", [gamma64], { to: 1 });
  // ε from the raw prediction f: x0: (sqrt(1+γ²) x − f)/γ; v: (f + γ x)/sqrt(1+γ²)
  let epsIn = "eps";
  if (model.prediction !== "eps") {
    const axes = g.constant([1, 2, 3], [3], "int64");
    const perSample = (v64: string) => g.op("Unsqueeze", [g.op("Cast", [v64], { to: 1 }), axes]);
    const root = g.op("Sqrt", [g.op("Add", [num(1), g.op("Mul", [gamma64, gamma64])])]);
    const [a, b] = model.prediction === "x0"
      ? [g.op("Neg", [g.op("Reciprocal", [gamma64])]), g.op("Div", [root, gamma64])]
      : [g.op("Reciprocal", [root]), g.op("Div", [gamma64, root])];
    epsIn = g.op("Add", [g.op("Mul", ["eps", perSample(a)]), g.op("Mul", ["x", perSample(b)])]);
  }
  const eps = (graph.output ?? []).find((o) => o.name === "eps")!;
  return withTrainedHead(source, g, eps, { x: "x", eps: epsIn, features, temb, gamma }, {
    params,
    options: { ...options, embed: temb ? options.embed : 0 },
  });
}
