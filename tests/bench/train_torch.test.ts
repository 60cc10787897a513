/**
 * `deno task bench:train --torch` (bench/train/torch.ts, bench/train/torch_step.py): PyTorch runs the same
 * training graph, so its loss and its autograd's gradients must equal ONNX Runtime's and onnx/grad.ts's,
 * and its "native" variant must have replaced every decomposed GroupNorm and SiLU. Needs PyTorch for
 * Python 3 (Debian: python3-torch); without it the tests are ignored.
 */
import { gradModel, meanSquaredErrorLoss } from "../../onnx/grad.ts";
import { createSession, runSession, type TensorInit } from "../../onnx/ort.ts";
import { encodeModel } from "../../onnx/proto.ts";
import { rngStream } from "../../core/rng.ts";
import { vpLinearSchedule } from "../../core/schedule.ts";
import { loadDigits } from "../../training/common.ts";
import { preconditionedBatch } from "../../training/precondition.ts";
import { buildMnistUNet, PRECONDITION, TIME_SAMPLING } from "../../training/train.ts";
import {
  randomizeWeights,
  torchGradients,
  type TorchOptions,
  torchReference,
} from "../../bench/train/torch.ts";
import { assert, assertEquals, test } from "../testing.ts";

const PYTHON = (() => {
  try {
    Deno.statSync("/usr/bin/python3");
    return "/usr/bin/python3";
  } catch {
    return "python3";
  }
})();

function hasTorch(): boolean {
  try {
    return new Deno.Command(PYTHON, { args: ["-c", "import numpy, torch"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const skip = !hasTorch() && `no PyTorch for ${PYTHON}`;

/** mnist-unet's training loss graph with every weight drawn at random (the output conv starts at zero). */
async function setup(batch: number): Promise<TorchOptions & { feeds: Record<string, TensorInit> }> {
  const unet = buildMnistUNet();
  randomizeWeights(unet.model, unet.params, 11);
  const model = meanSquaredErrorLoss(unet.model, "eps");
  const data = preconditionedBatch(
    await loadDigits(),
    batch,
    0.1,
    vpLinearSchedule(),
    PRECONDITION,
    TIME_SAMPLING,
  );
  const feeds = data(0, rngStream(1, 0)) as Record<string, TensorInit>;
  const { session } = await createSession(encodeModel(model), { providers: ["cpu"], threads: 1 });
  const ortLoss = Number((await runSession(session, feeds, ["loss"])).loss.data[0]);
  await session.release();
  return {
    python: PYTHON,
    model,
    params: unet.params,
    eps: "eps",
    loss: "loss",
    batches: [{ batch, feeds, ortLoss }],
    threads: 1,
    steps: 1,
    optimizer: { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, clip: 1, average: 0.999 },
    feeds,
  };
}

test("bench:train --torch: PyTorch's autograd gives onnx/grad.ts's loss and gradients on mnist-unet", {
  skip,
}, async () => {
  const o = await setup(3);
  const training = gradModel(o.model, { params: [...o.params] });
  const feeds: Record<string, TensorInit> = { ...o.feeds };
  for (const p of training.params) {
    feeds[p.name] = { type: "float32", data: Float32Array.from(p.init!), dims: p.dims };
  }
  const { session } = await createSession(encodeModel(training.model), { providers: ["cpu"], threads: 1 });
  const out = await runSession(session, feeds, [training.loss, ...training.params.map((p) => p.grad)]);
  await session.release();
  const torch = await torchGradients(o);
  const ortLoss = Number(out[training.loss].data[0]);
  assert(Math.abs(torch.loss - ortLoss) <= 1e-5 * Math.abs(ortLoss), `loss ${torch.loss} vs ${ortLoss}`);
  assertEquals(Object.keys(torch.grads).length, training.params.length);
  // the norm of each gradient and of its difference; a gradient that is zero in exact arithmetic (the
  // attention keys' bias: softmax ignores a shift shared by a row's scores) is compared in absolute terms
  const norms = training.params.map((p) => {
    const ours = out[p.grad].data as Float32Array, theirs = torch.grads[p.name];
    assertEquals(theirs.length, ours.length, p.name);
    let diff = 0, norm = 0;
    for (let i = 0; i < ours.length; i++) {
      diff += (ours[i] - theirs[i]) ** 2;
      norm += theirs[i] ** 2;
    }
    return { name: p.name, diff: Math.sqrt(diff), norm: Math.sqrt(norm) };
  });
  const largest = Math.max(...norms.map((n) => n.norm));
  const zero = norms.filter((n) => n.norm <= 1e-9 * largest).map((n) => n.name);
  assertEquals(zero, ["mid.attn.k.b"]);
  for (const n of norms) {
    const bound = zero.includes(n.name) ? 1e-9 * largest : 1e-4 * n.norm;
    assert(n.diff <= bound, `${n.name}: |difference| ${n.diff} against |gradient| ${n.norm}`);
  }
});

test("bench:train --torch: the native variant replaces every GroupNorm and SiLU and keeps the loss", {
  skip,
}, async () => {
  const o = await setup(2);
  const result = await torchReference(o);
  const count = (op: string) => o.model.graph!.node!.filter((n) => n.opType === op).length;
  // a decomposed GroupNorm with its scale and bias is 11 nodes (Shape(h) stays), SiLU 2
  const norms = count("Sqrt"), silus = count("Sigmoid");
  assert(norms > 0 && silus > 0);
  assertEquals(result.nodes.graph, o.model.graph!.node!.length);
  assertEquals(result.nodes.native, result.nodes.graph - 10 * norms - silus);
  const [row] = result.rows;
  assertEquals(row.batch, 2);
  for (const v of Object.values(row.variants)) {
    assert(
      Math.abs(v.loss - row.ortLoss) <= 1e-5 * Math.abs(row.ortLoss),
      `loss ${v.loss} vs ${row.ortLoss}`,
    );
    assert(v.stepMs > 0 && v.forwardMs > 0);
  }
});
