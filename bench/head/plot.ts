/** The plot of `deno task bench:head` (bench/head.ts): error against NFE, log-log, one line per solver. */

/** Where the plot goes: beside the report, `X.md` → `X-error.svg`. */
export const svgPathOf = (out: string) => out.replace(/\.md$/, "-error.svg");

export function svgPlot(series: { label: string; points: [number, number][] }[], title: string): string {
  const W = 640, H = 420, L = 70, R = 170, T = 30, Bm = 50;
  const xs = series.flatMap((s) => s.points.map((q) => q[0])),
    ys = series.flatMap((s) => s.points.map((q) => q[1]));
  const [x0, x1] = [Math.log(Math.min(...xs)), Math.log(Math.max(...xs))];
  const [y0, y1] = [Math.log10(Math.min(...ys)), Math.log10(Math.max(...ys))];
  const X = (v: number) => L + ((Math.log(v) - x0) / (x1 - x0 || 1)) * (W - L - R);
  const Y = (v: number) => H - Bm - ((Math.log10(v) - y0) / (y1 - y0 || 1)) * (H - T - Bm);
  const colors = [
    "#d62728",
    "#ff7f0e",
    "#bcbd22",
    "#7f7f7f",
    "#1f77b4",
    "#2ca02c",
    "#17becf",
    "#9467bd",
    "#8c564b",
  ];
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${L}" y="18" font-size="13">${title}</text>`,
    `<line x1="${L}" y1="${H - Bm}" x2="${W - R}" y2="${H - Bm}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - Bm}" stroke="black"/>`,
  ];
  for (const v of [...new Set(xs)]) {
    out.push(`<text x="${X(v)}" y="${H - Bm + 15}" text-anchor="middle">${v}</text>`);
  }
  for (let e = Math.floor(y0); e <= Math.ceil(y1); e++) {
    const v = 10 ** e;
    if (Math.log10(v) < y0 - 1e-9 || Math.log10(v) > y1 + 1e-9) continue;
    out.push(`<text x="${L - 5}" y="${Y(v) + 4}" text-anchor="end">1e${e}</text>`);
    out.push(`<line x1="${L}" y1="${Y(v)}" x2="${W - R}" y2="${Y(v)}" stroke="#ddd"/>`);
  }
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">NFE (log)</text>`);
  series.forEach((s, i) => {
    const c = colors[i % colors.length];
    out.push(
      `<polyline fill="none" stroke="${c}" stroke-width="${i === 0 ? 2.5 : 1.3}" points="${
        s.points.map(([a, b]) => `${X(a).toFixed(1)},${Y(b).toFixed(1)}`).join(" ")
      }"/>`,
    );
    out.push(`<text x="${W - R + 10}" y="${T + 14 * i + 10}" fill="${c}">${s.label}</text>`);
  });
  out.push("</svg>");
  return out.join("\n");
}
