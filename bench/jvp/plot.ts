/** The plot of `deno task bench:jvp` (bench/jvp.ts): error against NFE and against time, log-log. */
import type { Run } from "./runs.ts";
import { CONFIGS } from "./runs.ts";
import { NFES } from "./settings.ts";

/** The run of solver `label` at `nfe` with the lower error (AFS off or on), if any. */
export function best(runs: Run[], label: string, nfe: number): Run | undefined {
  const cands = runs.filter((r) => r.config.label === label && r.nfe === nfe);
  return cands.sort((a, b) => a.error - b.error)[0];
}

/** The two panels, per solver the better AFS setting at each NFE. */
export function svg(runs: Run[]): string {
  const COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"];
  const panelW = 440, panelH = 360, m = { l: 70, r: 20, t: 40, b: 55 }, legendW = 150;
  const width = 2 * panelW + legendW, height = panelH;
  const s: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ` +
    `${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
  ];
  const series = CONFIGS.map((c) =>
    NFES.map((n) => best(runs, c.label, n)).filter((r): r is Run => r !== undefined)
  );
  const all = series.flat();
  const lo = Math.floor(Math.log10(Math.min(...all.map((r) => r.error))));
  const hi = Math.ceil(Math.log10(Math.max(...all.map((r) => r.error))));
  const panels = [
    { title: "error vs NFE", x: (r: Run) => r.nfe, label: "NFE (log scale)" },
    { title: "error vs time", x: (r: Run) => r.secondsPerSample * 1e3, label: "ms per sample (log scale)" },
  ];
  panels.forEach((p, pi) => {
    const x0 = pi * panelW + m.l, y0 = m.t, w = panelW - m.l - m.r, h = panelH - m.t - m.b;
    const xsAll = all.map(p.x);
    const [xlo, xhi] = [Math.log(Math.min(...xsAll)), Math.log(Math.max(...xsAll))];
    const X = (v: number) => x0 + ((Math.log(v) - xlo) / Math.max(1e-9, xhi - xlo)) * w;
    const Y = (e: number) => y0 + h - ((Math.log10(e) - lo) / Math.max(1, hi - lo)) * h;
    s.push(
      `<text x="${x0 + w / 2}" y="${y0 - 16}" text-anchor="middle" font-size="14" font-weight="bold">` +
        `(${"ab"[pi]}) ${p.title}</text>`,
    );
    for (let e = lo; e <= hi; e++) {
      s.push(`<line x1="${x0}" y1="${Y(10 ** e)}" x2="${x0 + w}" y2="${Y(10 ** e)}" stroke="#ddd"/>`);
      s.push(`<text x="${x0 - 8}" y="${Y(10 ** e) + 4}" text-anchor="end">1e${e}</text>`);
    }
    const ticks = pi === 0 ? NFES : niceTicks(Math.exp(xlo), Math.exp(xhi));
    for (const v of ticks) {
      s.push(`<line x1="${X(v)}" y1="${y0}" x2="${X(v)}" y2="${y0 + h}" stroke="#eee"/>`);
      s.push(`<text x="${X(v)}" y="${y0 + h + 18}" text-anchor="middle">${v}</text>`);
    }
    s.push(`<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="none" stroke="black"/>`);
    s.push(`<text x="${x0 + w / 2}" y="${y0 + h + 40}" text-anchor="middle">${p.label}</text>`);
    s.push(
      `<text transform="translate(${x0 - 52} ${y0 + h / 2}) rotate(-90)" text-anchor="middle">` +
        `median RMSE vs reference</text>`,
    );
    series.forEach((rs, si) => {
      const pts = [...rs].sort((a, b) => p.x(a) - p.x(b)).map((r) => [X(p.x(r)), Y(r.error)]);
      const d = pts.map((q, i) => `${i ? "L" : "M"}${q[0].toFixed(1)},${q[1].toFixed(1)}`).join(" ");
      s.push(`<path d="${d}" fill="none" stroke="${COLORS[si]}" stroke-width="1.6"/>`);
      for (const q of pts) {
        s.push(`<circle cx="${q[0].toFixed(1)}" cy="${q[1].toFixed(1)}" r="2.5" fill="${COLORS[si]}"/>`);
      }
    });
  });
  CONFIGS.forEach((c, i) => {
    const y = m.t + 10 + 20 * i, x = 2 * panelW + 10;
    s.push(`<line x1="${x}" y1="${y}" x2="${x + 24}" y2="${y}" stroke="${COLORS[i]}" stroke-width="2"/>`);
    s.push(`<text x="${x + 30}" y="${y + 4}">${c.label}</text>`);
  });
  s.push("</svg>");
  return s.join("\n") + "\n";
}

/** Round tick values (1, 2, 5 × 10^k) between lo and hi. */
function niceTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const f of [1, 2, 5]) {
      const v = f * 10 ** e;
      if (v >= lo && v <= hi) out.push(Number(v.toPrecision(3)));
    }
  }
  return out;
}
