#!/usr/bin/env python3
"""The PyTorch side of `deno task bench:peer` (bench/peer.ts), which starts it and talks to it.

    python3 bench/peer.py serve --out DIR [--width 64] [--threads N] [--seed 0] [--jvp auto]

Builds a DDPM-style epsilon U-Net on 3x32x32 with random weights (width 64, channel multipliers 1, 2, 2,
one residual block per level, self-attention at 8x8 in the middle, GroupNorm with 32 groups, SiLU, a
sinusoidal embedding of the timestep and its MLP: 4.24 M parameters, 1.95 GFLOP per sample in the
convolutions and dense layers at width 64), exports it with torch.onnx.export as a diffusers-style
folder (DIR/unet/model.onnx with inputs `sample`, `timestep` and output `out_sample`, and
DIR/scheduler_config.json: DDPM's linear betas 1e-4 to 0.02 over 1000 steps), which bench/peer.ts turns
into a model folder with gpu-worker/import.ts. It prints one JSON line when ready, then answers JSON
lines on stdin:

    {"cmd": "run", "solver": "dpmpp-2m" | "genie", "latents": PATH.npy, "plan": {...}, "out": PATH?}
        -> {"ms": ...}    (wall time of the sampling loop alone, PyTorch eager)
    {"cmd": "quit"}

The plan carries, per grid time t_n of the solve, the schedule's alpha, gamma = sigma/alpha,
lambda = -log gamma, the timestep the network sees (N t - 1 for the discrete schedule) and its
derivative in gamma, all computed by the project (core/schedule.ts), so that both sides run the same
update rule on the same numbers:

- DPM-Solver++(2M) as core/solvers/dpmpp.ts has it: x_bar = x/alpha, data prediction
  D = x_bar - gamma eps, x_bar <- e^-h x_bar + (1 - e^-h) D (order 1) or with the second-order
  correction (1 - e^-h) h/(2 h0) (D_n - D_{n-1}) (order 2), h = lambda_{n+1} - lambda_n; order
  min(2, n + 1), and with fewer than `lower_order_final_below` steps also min(., N - n), so that at 10
  steps the final step is first order (the rule of diffusers' lower_order_final, below 15 steps).
- GENIE as core/solvers/genie.ts has it: x_bar <- x_bar + h eps + h^2/2 k with h = gamma_{n+1} - gamma_n
  and k = d eps/d gamma along the ODE, a forward-mode JVP of the network along the tangent
  dx = alpha eps - gamma alpha^2 x, d(timestep) = d(timestep)/d gamma; one plain call for eps, then one
  JVP call (which computes eps again), as the project's JVP graph does.

Solver state is float64, the network float32, as in the project. Needs PyTorch (Debian: python3-torch,
1.13) and numpy.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class ResBlock(nn.Module):
    def __init__(self, cin, cout, embed, groups):
        super().__init__()
        self.norm0 = nn.GroupNorm(groups, cin)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(embed, cout)
        self.norm1 = nn.GroupNorm(groups, cout)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x))) + self.temb(emb)[:, :, None, None]
        h = self.conv1(F.silu(self.norm1(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.q, self.k, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).reshape(b, c, h * w) for m in (self.q, self.k, self.v))
        attn = torch.softmax(torch.bmm(q.transpose(1, 2), k) / math.sqrt(c), dim=-1)
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj(out)


class UNet(nn.Module):
    """A DDPM-style epsilon network (Ho et al. 2020's layout, smaller)."""

    def __init__(self, width=64, mults=(1, 2, 2), blocks=1, size=32, channels=3):
        super().__init__()
        groups = min(32, width // 2)
        embed = 4 * width
        self.width = width
        half = width // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs)
        self.embed = nn.Sequential(nn.Linear(width, embed), nn.SiLU(), nn.Linear(embed, embed))
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        skips, c = [width], width
        for level, m in enumerate(mults):
            for _ in range(blocks):
                self.down.append(ResBlock(c, width * m, embed, groups))
                c = width * m
                skips.append(c)
            if level < len(mults) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, embed, groups), Attention(c, groups), ResBlock(c, c, embed, groups)])
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), width * m, embed, groups))
                c = width * m
            if level > 0:
                self.up.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(groups, c)
        self.conv_out = nn.Conv2d(c, channels, 3, padding=1)

    def forward(self, sample, timestep):
        phase = timestep[:, None] * self.freqs[None, :]
        emb = self.embed(torch.cat([torch.sin(phase), torch.cos(phase)], dim=1))
        h = self.conv_in(sample)
        hs = [h]
        for m in self.down:
            h = m(h, emb) if isinstance(m, ResBlock) else m(h)
            hs.append(h)
        for m in self.mid:
            h = m(h, emb) if isinstance(m, ResBlock) else m(h)
        for m in self.up:
            if isinstance(m, ResBlock):
                h = m(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = m(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def gflop_per_sample(model, size=32, channels=3):
    """2 x multiply-adds of the convolutions and dense layers for one sample (attention's products aside)."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            total[0] += 2 * out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups
        elif isinstance(mod, nn.Linear):
            total[0] += 2 * out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, channels, size, size), torch.zeros(1))
    for h in handles:
        h.remove()
    return total[0] / 1e9


def export(model, out):
    os.makedirs(os.path.join(out, "unet"), exist_ok=True)
    sample, timestep = torch.randn(2, 3, 32, 32), torch.tensor([10.0, 500.0])
    torch.onnx.export(
        model,
        (sample, timestep),
        os.path.join(out, "unet", "model.onnx"),
        input_names=["sample", "timestep"],
        output_names=["out_sample"],
        dynamic_axes={"sample": {0: "batch"}, "timestep": {0: "batch"}, "out_sample": {0: "batch"}},
        opset_version=17,
        do_constant_folding=True,
    )
    config = {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": 1000,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "prediction_type": "epsilon",
    }
    with open(os.path.join(out, "scheduler_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def make_jvp(kind):
    """A function (model, primals, tangents) -> (outputs, jvp) by functorch or torch.autograd.forward_ad."""
    if kind in ("auto", "functorch"):
        try:
            from functorch import jvp as functorch_jvp

            return "functorch.jvp", lambda model, p, t: functorch_jvp(model, p, t)
        except ImportError:
            if kind == "functorch":
                raise
    import torch.autograd.forward_ad as fwAD

    def forward_ad(model, primals, tangents):
        with fwAD.dual_level():
            duals = [fwAD.make_dual(p, t) for p, t in zip(primals, tangents)]
            out = fwAD.unpack_dual(model(*duals))
            return out.primal, out.tangent

    return "torch.autograd.forward_ad", forward_ad


def dpmpp_2m(model, x, plan):
    a, g, lam, tau = plan["alpha"], plan["gamma"], plan["lambda"], plan["timestep"]
    n_steps, below = len(a) - 1, plan["lower_order_final_below"]
    batch = x.shape[0]
    xbar = x.double() / a[0]
    history, lambdas = [], []
    for n in range(n_steps):
        eps = model((a[n] * xbar).float(), torch.full((batch,), tau[n], dtype=torch.float32)).double()
        history.insert(0, xbar - g[n] * eps)
        lambdas.insert(0, lam[n])
        del history[2:], lambdas[2:]
        order = min(2, n + 1)
        if n_steps < below:
            order = min(order, n_steps - n)
        h = lam[n + 1] - lambdas[0]
        decay, gain = math.exp(-h), -math.expm1(-h)
        if order == 1:
            xbar = decay * xbar + gain * history[0]
        else:
            c = gain * h / (2 * (lambdas[0] - lambdas[1]))
            xbar = decay * xbar + gain * history[0] + c * (history[0] - history[1])
    return (a[n_steps] * xbar).float()


def genie(model, x, plan, jvp):
    a, g, tau, dtau = plan["alpha"], plan["gamma"], plan["timestep"], plan["dtimestep_dgamma"]
    n_steps, batch = len(a) - 1, x.shape[0]
    xbar = x.double() / a[0]
    for n in range(n_steps):
        h = g[n + 1] - g[n]
        xn = (a[n] * xbar).float()
        tn = torch.full((batch,), tau[n], dtype=torch.float32)
        eps = model(xn, tn).double()
        dx = a[n] * eps - g[n] * a[n] * a[n] * (a[n] * xbar)
        _, k = jvp(model, (xn, tn), (dx.float(), torch.full((batch,), dtau[n], dtype=torch.float32)))
        xbar = (xbar + h * eps) + 0.5 * h * h * k.double()
    return (a[n_steps] * xbar).float()


def serve(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = UNet(width=args.width).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    export(model, args.out)
    jvp_name, jvp = make_jvp(args.jvp)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "ready": True,
        "params": params,
        "gflop": gflop_per_sample(model),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "jvp": jvp_name,
        "python": sys.version.split()[0],
    }), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        x = torch.from_numpy(np.load(msg["latents"]).astype(np.float32))
        plan = msg["plan"]
        with torch.no_grad():
            t0 = time.perf_counter()
            if msg["solver"] == "dpmpp-2m":
                out = dpmpp_2m(model, x, plan)
            elif msg["solver"] == "genie":
                out = genie(model, x, plan, jvp)
            else:
                raise ValueError(f"unknown solver {msg['solver']}")
            ms = (time.perf_counter() - t0) * 1000
        if msg.get("out"):
            np.save(msg["out"], out.numpy())
        print(json.dumps({"ms": ms}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--out", required=True)
    s.add_argument("--width", type=int, default=64)
    s.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--jvp", choices=["auto", "functorch", "forward_ad"], default="auto")
    args = parser.parse_args()
    serve(args)


if __name__ == "__main__":
    main()
