/**
 * The progress bar of `deno task job` (cli/job.ts): rate and ETA on stderr.
 */

function fmtDuration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h > 0
    ? `${h}h${String(m).padStart(2, "0")}m`
    : m > 0
    ? `${m}m${String(sec).padStart(2, "0")}s`
    : `${sec}s`;
}

/** A progress bar with rate and ETA on stderr (redrawn in place on a terminal, else one line per 10 %). */
export class ProgressBar {
  private first?: { t: number; done: number };
  private lastDecile = -1;
  private readonly tty: boolean;
  private readonly enc = new TextEncoder();
  constructor(private readonly quiet: boolean, private readonly now = () => performance.now()) {
    let tty = false;
    try {
      tty = Deno.stderr.isTerminal();
    } catch { /* no stderr */ }
    this.tty = tty;
  }

  /** The line for `done` of `total` (exported for tests). */
  line(done: number, total: number, status: string): string {
    const t = this.now();
    this.first ??= { t, done };
    const frac = total > 0 ? done / total : 0;
    const width = 30;
    const filled = Math.round(frac * width);
    const bar = "#".repeat(filled) + ".".repeat(width - filled);
    const dt = (t - this.first.t) / 1000;
    const rate = dt > 0 ? (done - this.first.done) / dt : 0;
    const eta = rate > 0 ? fmtDuration((total - done) / rate) : "?";
    return `[${bar}] ${done}/${total} ${(frac * 100).toFixed(0)}% ${status}` +
      (rate > 0 ? ` ${rate.toFixed(1)}/s ETA ${eta}` : "");
  }

  update(done: number, total: number, status: string): void {
    if (this.quiet) return;
    const text = this.line(done, total, status);
    if (this.tty) {
      Deno.stderr.writeSync(this.enc.encode(`\r${text}\x1b[K`));
    } else {
      const decile = Math.floor((total > 0 ? done / total : 0) * 10);
      if (decile !== this.lastDecile) {
        this.lastDecile = decile;
        Deno.stderr.writeSync(this.enc.encode(text + "\n"));
      }
    }
  }

  end(): void {
    if (!this.quiet && this.tty) Deno.stderr.writeSync(this.enc.encode("\n"));
  }
}
