/**
 * Edge-local inference against the worker hop (bench/edge.ts; docs/backends.md, "Edge-local inference"):
 * the same `POST /v1/samples` request to two edges in front of the same worker — one that solves models
 * marked `edge` itself on WebAssembly (`GENIE_EDGE_LOCAL=auto`), one that forwards every request
 * (`GENIE_EDGE_LOCAL=off`) — interleaved pair by pair in random order, per model. Each answer's
 * `x-genie-backend` header is checked, so a row never mixes up the paths.
 */
import { decode as mpDecode } from "@msgpack/msgpack";
import { MSGPACK } from "../../core/api/worker.ts";
import { quantileInterpolated as quantile } from "../../core/stats.ts";

export interface LocalSettings {
  /** Base URLs of the edge that runs models itself and of the one that forwards them. */
  localUrl: string;
  hopUrl: string;
  models: string[];
  solver: string;
  nfe: number;
  n: number;
  seed: number;
  warmup: number;
  pairs: number;
}

export interface LocalRow {
  model: string;
  local: number[];
  hop: number[];
  /** Per round: edge-local time / worker-hop time. */
  ratios: number[];
}

async function sample(url: string, want: string, body: Record<string, unknown>): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/samples`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: MSGPACK },
    body: JSON.stringify(body),
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const ms = performance.now() - t0;
  if (!res.ok) throw new Error(`edge ${res.status}: ${new TextDecoder().decode(bytes).slice(0, 200)}`);
  const backend = res.headers.get("x-genie-backend");
  if (backend !== want) throw new Error(`${body.model}: ran on ${backend}, expected ${want}`);
  mpDecode(bytes);
  return ms;
}

/** Times each model on both edges: `pairs` rounds after `warmup` (at least one: it opens the engine). */
export async function measureLocal(s: LocalSettings): Promise<LocalRow[]> {
  const rows: LocalRow[] = [];
  for (const model of s.models) {
    const body = { model, solver: s.solver, nfe: s.nfe, n: s.n, seed: s.seed, output: "tensor" };
    const paths = {
      local: () => sample(s.localUrl, "edge-wasm", body),
      hop: () => sample(s.hopUrl, "worker", body),
    };
    for (let i = 0; i < Math.max(1, s.warmup); i++) {
      await paths.local();
      await paths.hop();
    }
    const row: LocalRow = { model, local: [], hop: [], ratios: [] };
    for (let i = 0; i < s.pairs; i++) {
      const got: Partial<Record<keyof typeof paths, number>> = {};
      for (const key of (["local", "hop"] as const).toSorted(() => Math.random() - 0.5)) {
        got[key] = await paths[key]();
      }
      row.local.push(got.local!);
      row.hop.push(got.hop!);
      row.ratios.push(got.local! / got.hop!);
      if ((i + 1) % 10 === 0) console.error(`  ${model}: ${i + 1}/${s.pairs} rounds`);
    }
    rows.push(row);
  }
  return rows;
}

/** The report's section for {@link measureLocal}'s rows. */
export function localSection(s: LocalSettings, rows: LocalRow[]): string {
  const f = (x: number, d = 2) => x.toFixed(d);
  const q = (v: number[], p: number) => quantile(v, p);
  const lines = rows.map((r) =>
    `| \`${r.model}\` | ${f(q(r.local, 0.5))} | ${f(q(r.local, 0.95))} | ${f(q(r.hop, 0.5))} | ${
      f(q(r.hop, 0.95))
    } | ${f(q(r.local, 0.5) / q(r.hop, 0.5), 3)} | ${f(q(r.local, 0.95) / q(r.hop, 0.95), 3)} | ${
      f(q(r.ratios, 0.5), 3)
    } |`
  );
  return `## Edge-local inference against the worker hop (ms, ${s.pairs} requests per path and model)

Models marked \`edge\` solved in the edge itself on WebAssembly (\`GENIE_EDGE_LOCAL=auto\`: one wasm thread,
docs/backends.md; \`GENIE_EDGE_LOCAL_MAX_BYTES\` raised to 64 MiB so that mnist-mix, above the default bound of
64 KiB, runs there too) against the same request through a second edge that forwards it to the worker
(\`GENIE_EDGE_LOCAL=off\`); both edges run as \`functions/main.ts\` in front of the worker above. Request:
solver \`${s.solver}\`, NFE ${s.nfe}, n = ${s.n}, seeds ${s.seed}…${s.seed + s.n - 1}, Accept msgpack, output
tensor. ${Math.max(1, s.warmup)} warm-up rounds (the first opens the edge's engine), then ${s.pairs} rounds,
the two paths in random order within a round; each answer's \`x-genie-backend\` header is checked. A ratio
below 1 means the edge-local answer is faster.

| model | edge-local p50 | edge-local p95 | worker hop p50 | worker hop p95 | ratio p50 | ratio p95 | ratio per round, median |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
${lines.join("\n")}
`;
}
