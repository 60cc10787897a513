/**
 * Five-field cron specs (the `schedule` of `POST /v1/jobs`), in UTC like Deno.cron:
 *
 *     minute hour day-of-month month day-of-week
 *     0-59   0-23 1-31         1-12  0-7 (0 and 7 are Sunday)
 *
 * Each field is `*`, a value, a range `a-b`, a step `*∕n`, `a-b∕n` or `a∕n`, or a comma-separated list
 * of these. Months and weekdays may be named (`jan`…`dec`, `sun`…`sat`). Aliases: `@yearly`
 * (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`. When both day fields are
 * restricted, a day matches if either matches (the classic cron rule). Pure functions, no clock.
 */

export interface CronSchedule {
  /** The spec as given (trimmed). */
  spec: string;
  minutes: ReadonlySet<number>;
  hours: ReadonlySet<number>;
  days: ReadonlySet<number>;
  months: ReadonlySet<number>;
  weekdays: ReadonlySet<number>;
  /** Whether the day-of-month / day-of-week field is `*` (unrestricted). */
  anyDay: boolean;
  anyWeekday: boolean;
}

/** A spec that cannot be parsed; the message names the field. */
export class CronError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CronError";
  }
}

const ALIASES: Record<string, string> = {
  "@yearly": "0 0 1 1 *",
  "@annually": "0 0 1 1 *",
  "@monthly": "0 0 1 * *",
  "@weekly": "0 0 * * 0",
  "@daily": "0 0 * * *",
  "@midnight": "0 0 * * *",
  "@hourly": "0 * * * *",
};

const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

interface FieldSpec {
  name: string;
  min: number;
  max: number;
  names?: string[];
  namesFrom?: number;
}

const FIELDS: FieldSpec[] = [
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day of month", min: 1, max: 31 },
  { name: "month", min: 1, max: 12, names: MONTHS, namesFrom: 1 },
  { name: "day of week", min: 0, max: 7, names: WEEKDAYS, namesFrom: 0 },
];

function value(text: string, f: FieldSpec): number {
  const lower = text.toLowerCase();
  const named = f.names?.indexOf(lower) ?? -1;
  if (named >= 0) return named + f.namesFrom!;
  if (!/^\d{1,2}$/.test(text)) throw new CronError(`${f.name}: ${JSON.stringify(text)} is not a value`);
  const v = Number(text);
  if (v < f.min || v > f.max) throw new CronError(`${f.name}: ${v} is outside ${f.min}-${f.max}`);
  return v;
}

function field(text: string, f: FieldSpec): Set<number> {
  const out = new Set<number>();
  for (const part of text.split(",")) {
    if (part === "") throw new CronError(`${f.name}: empty list item`);
    const [range, stepText, extra] = part.split("/");
    if (extra !== undefined) throw new CronError(`${f.name}: ${JSON.stringify(part)} has two steps`);
    let step = 1;
    if (stepText !== undefined) {
      if (!/^\d{1,2}$/.test(stepText) || Number(stepText) < 1) {
        throw new CronError(`${f.name}: step ${JSON.stringify(stepText)} is not a positive integer`);
      }
      step = Number(stepText);
    }
    let lo: number, hi: number;
    if (range === "*") {
      lo = f.min;
      hi = f.max;
    } else if (range.includes("-")) {
      const [a, b, more] = range.split("-");
      if (more !== undefined) throw new CronError(`${f.name}: ${JSON.stringify(range)} is not a range`);
      lo = value(a, f);
      hi = value(b, f);
      if (lo > hi) throw new CronError(`${f.name}: range ${range} runs backwards`);
    } else {
      lo = value(range, f);
      hi = stepText !== undefined ? f.max : lo;
    }
    for (let v = lo; v <= hi; v += step) out.add(v);
  }
  return out;
}

/** Parses a spec or throws a {@link CronError} naming the bad field. */
export function parseCron(spec: string): CronSchedule {
  const trimmed = spec.trim();
  const expanded = ALIASES[trimmed.toLowerCase()] ?? trimmed;
  if (expanded.startsWith("@")) throw new CronError(`unknown alias ${JSON.stringify(trimmed)}`);
  const parts = expanded.split(/\s+/).filter(Boolean);
  if (parts.length !== 5) {
    throw new CronError(
      `expected 5 fields (minute hour day-of-month month day-of-week), got ${parts.length}`,
    );
  }
  const [minutes, hours, days, months, weekdaysRaw] = parts.map((p, i) => field(p, FIELDS[i]));
  const weekdays = new Set([...weekdaysRaw].map((d) => d % 7));
  return {
    spec: trimmed,
    minutes,
    hours,
    days,
    months,
    weekdays,
    anyDay: parts[2] === "*",
    anyWeekday: parts[4] === "*",
  };
}

/** Why `spec` is unusable (unparsable, or never fires), or undefined when it is fine. */
export function cronProblem(spec: string): string | undefined {
  try {
    const c = parseCron(spec);
    if (nextCronTime(c, Date.UTC(2000, 0, 1)) === null) return "never fires (no such date)";
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

function dayMatches(c: CronSchedule, d: Date): boolean {
  const dom = c.days.has(d.getUTCDate());
  const dow = c.weekdays.has(d.getUTCDay());
  if (c.anyDay && c.anyWeekday) return true;
  if (c.anyDay) return dow;
  if (c.anyWeekday) return dom;
  return dom || dow;
}

const MINUTE = 60_000;
/** Search horizon: leap days repeat within 8 years, so 9 years finds every satisfiable spec. */
const HORIZON_MS = 9 * 366 * 24 * 3600 * 1000;

/** The first minute strictly after `afterMs` (ms since epoch) that `c` fires at, or null if none. */
export function nextCronTime(c: CronSchedule, afterMs: number): number | null {
  let t = Math.floor(afterMs / MINUTE) * MINUTE + MINUTE;
  const end = afterMs + HORIZON_MS;
  while (t <= end) {
    const d = new Date(t);
    if (!c.months.has(d.getUTCMonth() + 1)) {
      t = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
    } else if (!dayMatches(c, d)) {
      t = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
    } else if (!c.hours.has(d.getUTCHours())) {
      t = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), d.getUTCHours() + 1);
    } else if (!c.minutes.has(d.getUTCMinutes())) {
      t += MINUTE;
    } else {
      return t;
    }
  }
  return null;
}
