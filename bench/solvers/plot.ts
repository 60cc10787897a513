/**
 * The plot of the solver benchmark (bench/solvers.ts): docs/solver-error.svg, median error against NFE,
 * log-log, one panel per model.
 */
import { COMMAND } from "./report.ts";
import { best, type Cell, configs, type ModelResult, NFES } from "./runs.ts";

const COLORS = [
  "#1f77b4",
  "#d62728",
  "#2ca02c",
  "#ff7f0e",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#17becf",
  "#7f7f7f",
  "#bcbd22",
  "#000000",
  "#aec7e8",
];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function svg(results: ModelResult[]): string {
  const panelW = 460, panelH = 380, margin = { l: 70, r: 20, t: 40, b: 55 }, legendW = 170;
  const width = results.length * panelW + legendW, height = panelH;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  const labels = configs().map((c) => c.label);
  results.forEach((r, mi) => {
    const x0 = mi * panelW + margin.l, y0 = margin.t;
    const w = panelW - margin.l - margin.r, h = panelH - margin.t - margin.b;
    const series = labels.map((label) => best(r, label));
    const errs = series.flat().filter((c): c is Cell => c !== undefined).map((c) => c.error!);
    const lo = Math.floor(Math.log10(Math.min(...errs))), hi = Math.ceil(Math.log10(Math.max(...errs)));
    const xs = (n: number) =>
      x0 + ((Math.log(n) - Math.log(NFES[0])) / (Math.log(NFES.at(-1)!) - Math.log(NFES[0]))) * w;
    const ys = (e: number) => y0 + h - ((Math.log10(e) - lo) / Math.max(1, hi - lo)) * h;
    out.push(
      `<text x="${x0 + w / 2}" y="${y0 - 16}" text-anchor="middle" font-size="14" font-weight="bold">` +
        `(${String.fromCharCode(97 + mi)}) ${esc(r.model.title.replace(/ \(.*\)$/, ""))}</text>`,
    );
    // Grid lines and ticks.
    for (let e = lo; e <= hi; e++) {
      const y = ys(10 ** e);
      out.push(`<line x1="${x0}" y1="${y}" x2="${x0 + w}" y2="${y}" stroke="#ddd"/>`);
      out.push(`<line x1="${x0 - 5}" y1="${y}" x2="${x0}" y2="${y}" stroke="black"/>`);
      out.push(`<text x="${x0 - 8}" y="${y + 4}" text-anchor="end">1e${e}</text>`);
      if (e < hi) {
        for (let m = 2; m < 10; m++) {
          const ym = ys(m * 10 ** e);
          out.push(`<line x1="${x0 - 3}" y1="${ym}" x2="${x0}" y2="${ym}" stroke="black"/>`);
        }
      }
    }
    for (const n of NFES) {
      const x = xs(n);
      out.push(`<line x1="${x}" y1="${y0}" x2="${x}" y2="${y0 + h}" stroke="#eee"/>`);
      out.push(`<line x1="${x}" y1="${y0 + h}" x2="${x}" y2="${y0 + h + 5}" stroke="black"/>`);
      out.push(`<text x="${x}" y="${y0 + h + 18}" text-anchor="middle">${n}</text>`);
    }
    out.push(`<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="none" stroke="black"/>`);
    out.push(
      `<text x="${x0 + w / 2}" y="${
        y0 + h + 40
      }" text-anchor="middle">NFE (network evaluations, log scale)</text>`,
    );
    out.push(
      `<text transform="translate(${x0 - 52} ${y0 + h / 2}) rotate(-90)" text-anchor="middle">` +
        `median RMSE vs reference (log scale)</text>`,
    );
    // Lines.
    series.forEach((cells, si) => {
      const color = COLORS[si % COLORS.length];
      const pts = cells.map((
        c,
        j,
      ) => (c === undefined ? undefined : [xs(NFES[j]), ys(c.error!), c.afs] as const));
      let path = "";
      let pen = false;
      for (const pt of pts) {
        if (!pt) continue; // impossible NFEs are skipped; the line joins the possible ones
        path += `${pen ? "L" : "M"}${pt[0].toFixed(1)},${pt[1].toFixed(1)} `;
        pen = true;
      }
      out.push(`<path d="${path.trim()}" fill="none" stroke="${color}" stroke-width="1.6"/>`);
      for (const pt of pts) {
        if (!pt) continue;
        out.push(
          `<circle cx="${pt[0].toFixed(1)}" cy="${pt[1].toFixed(1)}" r="3.2" stroke="${color}" ` +
            `fill="${pt[2] ? color : "white"}" stroke-width="1.4"/>`,
        );
      }
    });
  });
  // Legend.
  const lx = results.length * panelW + 10;
  out.push(`<text x="${lx}" y="${margin.t}" font-weight="bold">solver</text>`);
  labels.forEach((label, si) => {
    const y = margin.t + 20 + si * 20, color = COLORS[si % COLORS.length];
    out.push(
      `<line x1="${lx}" y1="${y - 4}" x2="${lx + 24}" y2="${y - 4}" stroke="${color}" stroke-width="1.6"/>`,
    );
    out.push(`<circle cx="${lx + 12}" cy="${y - 4}" r="3.2" stroke="${color}" fill="${color}"/>`);
    out.push(`<text x="${lx + 32}" y="${y}">${esc(label)}</text>`);
  });
  const ny = margin.t + 40 + labels.length * 20;
  out.push(`<circle cx="${lx + 12}" cy="${ny - 4}" r="3.2" stroke="black" fill="black"/>`);
  out.push(`<text x="${lx + 32}" y="${ny}">AFS on</text>`);
  out.push(`<circle cx="${lx + 12}" cy="${ny + 16}" r="3.2" stroke="black" fill="white"/>`);
  out.push(`<text x="${lx + 32}" y="${ny + 20}">AFS off</text>`);
  out.push(`<text x="${lx}" y="${ny + 48}" font-size="10">${esc(COMMAND)}</text>`);
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}
