/**
 * Composite gradients for onnx/grad.ts: two patterns the model builders write out node by node
 * (training/layers.ts), differentiated as one function at their last node, straight to the pattern's
 * input. The gradient is the same; the training graph gets fewer memory-bound elementwise nodes
 * (docs/training.md):
 *
 * - SiLU, y = x·σ(x) written Mul(x, Sigmoid(x)):
 *
 *       dx = dy·(σ + y·(1 − σ))                              4 elementwise nodes; 6 node by node
 *
 * - Standardisation over axes A (GroupNorm's and LayerNorm's core), written
 *   x̂ = (X − mean_A X) / sqrt(mean_A (X − mean_A X)² + ε), with r = 1/sqrt(var + ε) and G the cotangent
 *   of x̂:
 *
 *       dX = r·(G − mean_A G − x̂·mean_A(G·x̂))                5 elementwise nodes; about 10 node by node
 *
 * The inner nodes of a pattern get no cotangent along this path. Where one of their values has another
 * consumer, that consumer's cotangent still flows through the usual rules, so the total stays exact.
 */
import { getAttribute, type NodeProto } from "./proto.ts";

/** What a composite needs from onnx/grad.ts's rule context. */
export interface CompositeContext {
  readonly x: string[];
  readonly y: string[];
  readonly dy: string;
  /** The node that computes `v` in the forward graph (undefined for inputs and initializers). */
  producer(v: string): NodeProto | undefined;
  /** True when the value needs a gradient. */
  wantsValue(v: string): boolean;
  /** The values of a constant, when `v` is one. */
  constValues(v: string): number[] | undefined;
  /** The static shape of a value, when known. */
  shape(v: string): readonly unknown[] | null;
  sub(a: string | number, b: string | number): string;
  add(a: string | number, b: string | number): string;
  mul(a: string | number, b: string | number, ...more: (string | number)[]): string;
  mean(v: string, axes: readonly number[], keepdims?: number): string;
  f(op: string, ...inputs: (string | number)[]): string;
}

/** A composite's gradient: `grad()` is the whole contribution of this node's output to `input`. */
export interface Composite {
  input: string;
  grad: () => string;
}

/** The composite whose last node is the context's node, if its pattern matches. */
export function compositeGradient(c: CompositeContext, op: string): Composite | undefined {
  if (op === "Mul") return silu(c);
  if (op === "Div") return standardize(c);
  return undefined;
}

/** The node computing `v` when it is an `op` node of the default domain. */
function producedBy(c: CompositeContext, v: string, op: string): NodeProto | undefined {
  const n = c.producer(v);
  return n && n.opType === op && (!n.domain || n.domain === "ai.onnx") ? n : undefined;
}

/** y = x·Sigmoid(x), in either operand order. */
function silu(c: CompositeContext): Composite | undefined {
  const [a, b] = c.x;
  for (const [x, s] of [[a, b], [b, a]]) {
    if (x === s || producedBy(c, s, "Sigmoid")?.input[0] !== x || !c.wantsValue(x)) continue;
    return { input: x, grad: () => c.mul(c.dy, c.add(s, c.mul(c.y[0], c.sub(1, s)))) };
  }
  return undefined;
}

/** The sorted, non-negative axes of a ReduceMean node with keepdims, or undefined. */
function meanAxes(c: CompositeContext, n: NodeProto, rank: number): number[] | undefined {
  if ((getAttribute(n, "keepdims") ?? 1) !== 1) return undefined;
  const axes = n.input[1] ? c.constValues(n.input[1]) : getAttribute(n, "axes") as number[] | undefined;
  if (!axes?.length) return undefined; // (all axes, or unknown: not the pattern)
  return [...new Set(axes.map((a) => (a < 0 ? a + rank : a)))].sort((p, q) => p - q);
}

/** x̂ = (X − mean X)/sqrt(mean (X − mean X)² + ε) over the same axes. */
function standardize(c: CompositeContext): Composite | undefined {
  const [xc, denominator] = c.x;
  const centre = producedBy(c, xc, "Sub");
  const mean = centre && producedBy(c, centre.input[1], "ReduceMean");
  const X = centre?.input[0];
  if (!X || !mean || mean.input[0] !== X || !c.wantsValue(X)) return undefined;
  const root = producedBy(c, denominator, "Sqrt");
  const plus = root && producedBy(c, root.input[0], "Add");
  if (!plus) return undefined;
  const [p, q] = plus.input;
  const variance = c.constValues(q)?.length === 1 ? p : c.constValues(p)?.length === 1 ? q : undefined;
  const meanSquare = variance ? producedBy(c, variance, "ReduceMean") : undefined;
  const square = meanSquare && producedBy(c, meanSquare.input[0], "Mul");
  if (!square || square.input[0] !== xc || square.input[1] !== xc) return undefined;
  const rank = c.shape(X)?.length;
  if (rank === undefined) return undefined;
  const axes = meanAxes(c, mean, rank), axes2 = meanAxes(c, meanSquare, rank);
  if (!axes || !axes2 || axes.join() !== axes2.join()) return undefined;
  return {
    input: X,
    grad: () => {
      const G = c.dy, xhat = c.y[0], rstd = c.f("Reciprocal", denominator);
      const inner = c.sub(c.sub(G, c.mean(G, axes)), c.mul(xhat, c.mean(c.mul(G, xhat), axes)));
      return c.mul(inner, rstd);
    },
  };
}
