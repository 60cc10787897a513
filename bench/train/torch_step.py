"""PyTorch's autograd on the training graph of `deno task train`, for `deno task bench:train --torch`.

Reads the folder bench/train/torch.ts writes (graph.json and data.bin: the ONNX graph of the loss of the
preconditioned U-Net F, its weights, one batch per batch size and the loss ONNX Runtime computed on it),
runs the graph node by node with PyTorch operators, and times, per batch size, one training step
(forward, loss, backward, gradient clipping, Adam and the weight average) against one forward pass of F
(no gradients), the same two things bench/train.ts times through ONNX Runtime. Two variants, timed in
turn: "graph", the nodes as they are, and "native", with the graph's decomposed GroupNorm and SiLU
replaced by PyTorch's own (`native`), as a PyTorch model would be written. Prints one JSON object.

usage: python3 bench/train/torch_step.py FOLDER THREADS STEPS
       python3 bench/train/torch_step.py FOLDER THREADS grads
The second form writes the gradients of the first batch's loss (the graph's nodes as they are, initial
weights) to FOLDER/grads.bin, float32, parameter after parameter in graph.json's order, and prints the loss.
"""

import json
import math
import statistics
import sys
import time

import numpy
import torch
import torch.nn.functional as F


def load(folder):
    with open(f"{folder}/graph.json") as f:
        spec = json.load(f)
    blob = numpy.fromfile(f"{folder}/data.bin", dtype=numpy.uint8)

    def tensor(entry):
        count = math.prod(entry["dims"])
        dtype = numpy.float32 if entry["dtype"] == "float32" else numpy.int64
        size = numpy.dtype(dtype).itemsize
        raw = blob[entry["offset"] : entry["offset"] + count * size]
        return torch.from_numpy(raw.view(dtype).reshape(entry["dims"]).copy())

    return spec, tensor


def attr(node, name, default=None):
    return node["attrs"].get(name, default)


def as_list(v):
    return [int(d) for d in (v.tolist() if torch.is_tensor(v) else v)]


def reshape(x, shape):
    shape = as_list(shape)
    return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(shape)])


def conv(node, x, w, b=None):
    pads = attr(node, "pads", [0, 0, 0, 0])
    if pads[:2] != pads[2:]:
        raise ValueError(f"{node['name']}: asymmetric pads {pads}")
    return F.conv2d(
        x,
        w,
        b,
        stride=attr(node, "strides", [1, 1]),
        padding=pads[:2],
        dilation=attr(node, "dilations", [1, 1]),
        groups=attr(node, "group", 1),
    )


def gemm(node, a, b, c=None):
    if attr(node, "transA", 0):
        a = a.t()
    if attr(node, "transB", 0):
        b = b.t()
    y = attr(node, "alpha", 1.0) * (a @ b)
    return y if c is None else y + attr(node, "beta", 1.0) * c


def reduce_mean(node, x, axes=None):
    axes = as_list(axes) if axes is not None else attr(node, "axes")
    keep = bool(attr(node, "keepdims", 1))
    return x.mean(dim=axes, keepdim=keep) if axes else x.mean()


def resize(node, x, _roi=None, scales=None, sizes=None):
    if attr(node, "mode", "nearest") != "nearest":
        raise ValueError(f"{node['name']}: only nearest Resize")
    factors = as_list(torch.round(scales)) if scales is not None else None
    if factors is None or factors[:2] != [1, 1]:
        raise ValueError(f"{node['name']}: only spatial integer scales")
    return F.interpolate(x, scale_factor=tuple(float(f) for f in factors[2:]), mode="nearest")


OPS = {
    "Add": lambda n, a, b: a + b,
    "Sub": lambda n, a, b: a - b,
    "Mul": lambda n, a, b: a * b,
    "Div": lambda n, a, b: a / b,
    "Sigmoid": lambda n, a: torch.sigmoid(a),
    "Sqrt": lambda n, a: torch.sqrt(a),
    "Exp": lambda n, a: torch.exp(a),
    "Reciprocal": lambda n, a: 1 / a,
    "Sin": lambda n, a: torch.sin(a),
    "Cos": lambda n, a: torch.cos(a),
    "Identity": lambda n, a: a,
    "Conv": conv,
    "Gemm": gemm,
    "MatMul": lambda n, a, b: a @ b,
    "Reshape": lambda n, x, s: reshape(x, s),
    "Shape": lambda n, x: list(x.shape),
    "Unsqueeze": lambda n, x, axes: x.reshape(unsqueezed(x.shape, as_list(axes))),
    "Concat": lambda n, *xs: torch.cat(xs, dim=attr(n, "axis")),
    "Transpose": lambda n, x: x.permute(attr(n, "perm")),
    "Softmax": lambda n, x: torch.softmax(x, dim=attr(n, "axis", -1)),
    "Gather": lambda n, table, idx: torch.index_select(table, attr(n, "axis", 0), idx.reshape(-1)).reshape(
        list(idx.shape) + list(table.shape[1:])
    ),
    "ReduceMean": reduce_mean,
    "Resize": resize,
}


def group_norm(node, x, weight=None, bias=None):
    c = x.shape[1]
    w = None if weight is None else weight.reshape(c)
    b = None if bias is None else bias.reshape(c)
    return F.group_norm(x, attr(node, "groups"), w, b, attr(node, "epsilon"))


OPS["GroupNorm"] = group_norm
OPS["SiLU"] = lambda n, x: F.silu(x)


def native(spec, constants):
    """
    The nodes with the graph's decomposed GroupNorm (Reshape to groups, mean, centring, variance, +eps,
    sqrt, division, Reshape back, then the scale and bias) and its SiLU (x * Sigmoid(x)) replaced by
    PyTorch's own group_norm and silu, as a PyTorch model would be written. Patterns whose inner values
    are read elsewhere are left as they are.
    """
    nodes = spec["nodes"]
    producer = {o: n for n in nodes for o in n["outputs"]}
    consumers = {}
    for n in nodes:
        for i in dict.fromkeys(n["inputs"]):
            consumers.setdefault(i, []).append(n)

    def only(value, op):
        users = consumers.get(value, [])
        return users[0] if len(users) == 1 and users[0]["op"] == op else None

    drop, replace = set(), {}
    for r1 in nodes:
        shape = constants.get(r1["inputs"][1]) if r1["op"] == "Reshape" else None
        if shape is None or torch.is_tensor(shape) and shape.numel() != 3:
            continue
        shape = as_list(shape)
        if len(shape) != 3 or shape[0] != 0 or shape[2] != -1:
            continue
        grouped = r1["outputs"][0]
        users = consumers.get(grouped, [])
        mean = next((u for u in users if u["op"] == "ReduceMean"), None)
        sub = next((u for u in users if u["op"] == "Sub"), None)
        if len(users) != 2 or not mean or not sub or only(mean["outputs"][0], "Sub") is not sub:
            continue
        xc = sub["outputs"][0]
        xc_users = consumers.get(xc, [])
        sq = next((u for u in xc_users if u["op"] == "Mul"), None)
        div = next((u for u in xc_users if u["op"] == "Div"), None)
        if len(xc_users) != 2 or not sq or not div or sq["inputs"] != [xc, xc]:
            continue
        var = only(sq["outputs"][0], "ReduceMean")
        add = var and only(var["outputs"][0], "Add")
        sqrt = add and only(add["outputs"][0], "Sqrt")
        if not sqrt or only(sqrt["outputs"][0], "Div") is not div:
            continue
        r2 = only(div["outputs"][0], "Reshape")
        eps = constants.get(add["inputs"][1])
        if not r2 or eps is None:
            continue
        inner = [r1, mean, sub, sq, var, add, sqrt, div, r2]
        out, inputs = r2["outputs"][0], [r1["inputs"][0]]
        scale = only(out, "Mul")
        shift = scale and only(scale["outputs"][0], "Add")
        params = {p["name"] for p in spec["params"]}
        if shift and scale["inputs"][1] in params and shift["inputs"][1] in params:
            inner += [scale, shift]
            out, inputs = shift["outputs"][0], inputs + [scale["inputs"][1], shift["inputs"][1]]
        fused = {
            "op": "GroupNorm",
            "name": r1["name"] + "/native",
            "inputs": inputs,
            "outputs": [out],
            "attrs": {"groups": shape[1], "epsilon": float(eps.reshape(-1)[0])},
        }
        drop.update(id(n) for n in inner)
        replace[id(inner[-1])] = fused
    for sig in nodes:
        if sig["op"] != "Sigmoid" or id(sig) in drop:
            continue
        h = sig["inputs"][0]
        mul = only(sig["outputs"][0], "Mul")
        if mul and sorted(mul["inputs"]) == sorted([h, sig["outputs"][0]]):
            drop.update([id(sig), id(mul)])
            replace[id(mul)] = {"op": "SiLU", "name": mul["name"] + "/native", "inputs": [h], "outputs": mul["outputs"], "attrs": {}}
    out = []
    for n in nodes:
        if id(n) in replace:
            out.append(replace[id(n)])
        elif id(n) not in drop:
            out.append(n)
    return {**spec, "nodes": out}


def unsqueezed(shape, axes):
    out = list(shape)
    rank = len(out) + len(axes)
    for a in sorted(a % rank for a in axes):
        out.insert(a, 1)
    return out


def run(spec, values, stop=None):
    """Evaluates the nodes in order on `values` (name → tensor); stops once `stop` is computed."""
    for node in spec["nodes"]:
        op = OPS.get(node["op"])
        if op is None:
            raise ValueError(f"{node['name']}: operator {node['op']} is not supported")
        args = [values[i] if i else None for i in node["inputs"]]
        values[node["outputs"][0]] = op(node, *args)
        if stop is not None and stop in values:
            return values[stop]
    return values


def gradients(folder, spec, constants, params, feeds):
    loss = run(spec, {**constants, **params, **feeds})[spec["loss"]]
    loss.backward()
    grads = [params[p["name"]].grad.reshape(-1) for p in spec["params"]]
    torch.cat(grads).numpy().astype(numpy.float32).tofile(f"{folder}/grads.bin")
    print(json.dumps({"loss": float(loss)}))


def main():
    folder, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    spec, tensor = load(folder)
    constants = {c["name"]: tensor(c) for c in spec["constants"]}
    params = {p["name"]: torch.nn.Parameter(tensor(p)) for p in spec["params"]}
    if sys.argv[3] == "grads":
        feeds = {k: tensor(v) for k, v in spec["batches"][0]["feeds"].items()}
        return gradients(folder, spec, constants, params, feeds)
    steps = int(sys.argv[3])
    average = {k: v.detach().clone() for k, v in params.items()}
    opt = spec["optimizer"]
    adam = torch.optim.Adam(params.values(), lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]), eps=opt["eps"])
    batches = [{**b, "feeds": {k: tensor(v) for k, v in b["feeds"].items()}} for b in spec["batches"]]
    variants = {"graph": spec, "native": native(spec, constants)}
    # the loss on every batch with the weights both runtimes started from, before any step changes them
    with torch.no_grad():
        for b in batches:
            b["loss"] = {k: float(run(v, {**constants, **params, **b["feeds"]})[spec["loss"]]) for k, v in variants.items()}

    def step(graph, feeds):
        adam.zero_grad(set_to_none=True)
        loss = run(graph, {**constants, **params, **feeds})[spec["loss"]]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), opt["clip"])
        adam.step()
        with torch.no_grad():
            for k, p in params.items():
                average[k].mul_(opt["average"]).add_(p, alpha=1 - opt["average"])

    def forward(graph, feeds):
        with torch.no_grad():
            return run(graph, {**constants, **params, **feeds}, stop=spec["eps"])

    def timed(f, *args):
        t0 = time.perf_counter()
        f(*args)
        return 1000 * (time.perf_counter() - t0)

    rows = []
    for batch in batches:
        feeds = batch["feeds"]
        times = {k: {"step": [], "forward": []} for k in variants}
        for i in range(steps + 1):  # the first round warms up
            for k, graph in variants.items():
                s_ms, f_ms = timed(step, graph, feeds), timed(forward, graph, feeds)
                if i:
                    times[k]["step"].append(s_ms)
                    times[k]["forward"].append(f_ms)
        rows.append(
            {
                "batch": batch["batch"],
                "ortLoss": batch["ortLoss"],
                "variants": {
                    k: {
                        "stepMs": statistics.median(t["step"]),
                        "forwardMs": statistics.median(t["forward"]),
                        "loss": batch["loss"][k],
                    }
                    for k, t in times.items()
                },
            }
        )
    nodes = {k: len(v["nodes"]) for k, v in variants.items()}
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "nodes": nodes, "rows": rows}))


if __name__ == "__main__":
    main()
