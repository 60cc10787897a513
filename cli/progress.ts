/**
 * The command line's progress bar: steps done of the total, elapsed time and ETA, on stderr. It is drawn
 * only when stderr is a terminal, without --json or --quiet, and once a run has taken over a second,
 * so short and piped runs stay quiet.
 */

/** Seconds as "0.4 s", "12 s", "3 min 05 s". */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60), r = Math.round(s - 60 * m);
  return `${m} min ${String(r).padStart(2, "0")} s`;
}

/**
 * One line of progress: `[##########··········]  5/10 steps  50%  1.2 s, ETA 1.2 s`. The ETA assumes
 * the remaining steps take as long as the finished ones did; before the first step is done it is "?".
 */
export function renderBar(done: number, total: number, elapsedS: number, width = 24): string {
  const t = Math.max(1, total), d = Math.min(Math.max(0, done), t);
  const filled = Math.round((d / t) * width);
  const bar = "#".repeat(filled) + "·".repeat(width - filled);
  const pct = Math.floor((d / t) * 100);
  const eta = d === t ? "done" : d === 0 ? "ETA ?" : `ETA ${formatSeconds((elapsedS / d) * (t - d))}`;
  return `[${bar}] ${String(d).padStart(String(t).length)}/${t} steps ${String(pct).padStart(3)}%  ` +
    `${formatSeconds(elapsedS)}, ${eta}`;
}

/** Whether a run shows the bar: stderr is a terminal, and neither --json nor --quiet was given. */
export function showProgress(opts: { json: boolean; quiet: boolean; isTerminal: boolean }): boolean {
  return opts.isTerminal && !opts.json && !opts.quiet;
}

export interface ProgressBar {
  /** The solver is at `step` (0-based) of `steps`: `step` steps are done. */
  onStep(step: number, steps: number): void;
  /** The run ended: draws the full bar and ends its line, when the bar was shown. */
  finish(): void;
}

/**
 * A bar that writes to `write` (by default stderr) when `enabled`, from `delayMs` (default 1000) after
 * its creation on, at most every `intervalMs` (default 100).
 */
export function progressBar(opts: {
  enabled: boolean;
  write?: (text: string) => void;
  now?: () => number;
  delayMs?: number;
  intervalMs?: number;
}): ProgressBar {
  if (!opts.enabled) return { onStep() {}, finish() {} };
  const enc = new TextEncoder();
  const write = opts.write ?? ((t: string) => Deno.stderr.writeSync(enc.encode(t)));
  const now = opts.now ?? (() => performance.now());
  const delay = opts.delayMs ?? 1000, interval = opts.intervalMs ?? 100;
  const start = now();
  let shown = false, last = -Infinity, total = 0, done = 0;
  const draw = (t: number) => {
    write(`\r${renderBar(done, total, (t - start) / 1000)}\x1b[K`);
    shown = true;
    last = t;
  };
  return {
    onStep(step, steps) {
      total = steps;
      done = Math.max(done, step);
      const t = now();
      if (t - start >= delay && t - last >= interval) draw(t);
    },
    finish() {
      if (!shown) return;
      done = total;
      draw(now());
      write("\n");
    },
  };
}

/** The bar of a command run with these flags: on stderr, when {@link showProgress} says so. */
export function commandProgress(args: { json: boolean; quiet: boolean }): ProgressBar {
  return progressBar({ enabled: showProgress({ ...args, isTerminal: Deno.stderr.isTerminal() }) });
}
