/**
 * A small Prometheus text-format registry (exposition format 0.0.4): labelled counters, values read on
 * scrape (gauges, or counters kept elsewhere) and histograms. Web-standard only: the edge functions and
 * the GPU worker both render their `/metrics` with it.
 */

type Labels = Record<string, string>;

/** Histogram buckets (seconds) for request latencies: 5 ms to 60 s. */
export const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

function labelKey(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return "";
  return "{" + keys.map((k) => `${k}="${escapeLabel(labels[k])}"`).join(",") + "}";
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

interface Family {
  help: string;
  type: "counter" | "gauge" | "histogram";
  render(name: string): string[];
}

export class Counter implements Family {
  readonly type = "counter" as const;
  private readonly values = new Map<string, number>();
  constructor(readonly help: string) {}
  inc(labels: Labels = {}, by = 1): void {
    const k = labelKey(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
  }
  get(labels: Labels = {}): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }
  render(name: string): string[] {
    return [...this.values].map(([k, v]) => `${name}${k} ${v}`);
  }
}

/** Values read at scrape time: a gauge, or (type "counter") a count kept by someone else. */
export class Gauge implements Family {
  constructor(
    readonly help: string,
    private readonly read: () => [Labels, number][],
    readonly type: "gauge" | "counter" = "gauge",
  ) {}
  /** One unlabelled value read at scrape time. */
  static single(help: string, read: () => number, type: "gauge" | "counter" = "gauge"): Gauge {
    return new Gauge(help, () => [[{}, read()]], type);
  }
  render(name: string): string[] {
    return this.read().map(([l, v]) => `${name}${labelKey(l)} ${v}`);
  }
}

export class Histogram implements Family {
  readonly type = "histogram" as const;
  private readonly series = new Map<
    string,
    { labels: Labels; counts: number[]; sum: number; count: number }
  >();
  constructor(readonly help: string, private readonly buckets: number[]) {}
  /** Exposes the series of `labels` before its first observation (all counts 0). */
  declare(labels: Labels = {}): void {
    this.#seriesOf(labels);
  }
  #seriesOf(labels: Labels) {
    const k = labelKey(labels);
    let s = this.series.get(k);
    if (!s) {
      s = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.series.set(k, s);
    }
    return s;
  }
  observe(labels: Labels, value: number): void {
    const s = this.#seriesOf(labels);
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]) s.counts[i]++;
    s.sum += value;
    s.count++;
  }
  render(name: string): string[] {
    const out: string[] = [];
    for (const s of this.series.values()) {
      this.buckets.forEach((b, i) =>
        out.push(`${name}_bucket${labelKey({ ...s.labels, le: String(b) })} ${s.counts[i]}`)
      );
      out.push(`${name}_bucket${labelKey({ ...s.labels, le: "+Inf" })} ${s.count}`);
      out.push(`${name}_sum${labelKey(s.labels)} ${s.sum}`);
      out.push(`${name}_count${labelKey(s.labels)} ${s.count}`);
    }
    return out;
  }
}

export class MetricsRegistry {
  private readonly families = new Map<string, Family>();
  add<F extends Family>(name: string, family: F): F {
    this.families.set(name, family);
    return family;
  }
  /** The Prometheus text exposition (version 0.0.4). */
  render(): string {
    const lines: string[] = [];
    for (const [name, f] of this.families) {
      lines.push(`# HELP ${name} ${f.help}`, `# TYPE ${name} ${f.type}`, ...f.render(name));
    }
    return lines.join("\n") + "\n";
  }
}
