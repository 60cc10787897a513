/** Cron specs (core/api/cron.ts): parsing, errors naming the field, and the next firing time in UTC. */
import { assert, assertEquals, assertMatch, assertStrictEquals, assertThrows } from "../testing.ts";
import { cronProblem, nextCronTime, parseCron } from "../../core/api/cron.ts";

const at = (s: string) => Date.parse(s);
const next = (spec: string, after: string) => {
  const t = nextCronTime(parseCron(spec), at(after));
  return t === null ? null : new Date(t).toISOString();
};

Deno.test("fields, ranges, steps, lists and names parse to value sets", () => {
  const c = parseCron("*/15 9-17/4 1,15 jan-mar MON-fri");
  assertEquals([...c.minutes], [0, 15, 30, 45]);
  assertEquals([...c.hours], [9, 13, 17]);
  assertEquals([...c.days], [1, 15]);
  assertEquals([...c.months], [1, 2, 3]);
  assertEquals([...c.weekdays], [1, 2, 3, 4, 5]);
  assertEquals([...parseCron("0 0 * * 7").weekdays], [0]);
  assertEquals([...parseCron("5/20 * * * *").minutes], [5, 25, 45]);
  assertEquals(parseCron("@daily").spec, "@daily");
  assertEquals([...parseCron("@hourly").minutes], [0]);
});

Deno.test("bad specs throw with the field named", () => {
  const cases: [string, RegExp][] = [
    ["61 * * * *", /minute: 61 is outside 0-59/],
    ["* 24 * * *", /hour/],
    ["* * 0 * *", /day of month/],
    ["* * * 13 *", /month/],
    ["* * * * 8", /day of week/],
    ["* * * *", /expected 5 fields/],
    ["*/0 * * * *", /minute: step/],
    ["5-1 * * * *", /minute: range 5-1 runs backwards/],
    ["a * * * *", /minute: "a" is not a value/],
    ["@often", /unknown alias/],
    ["1,,2 * * * *", /minute: empty list item/],
  ];
  for (const [spec, re] of cases) assertThrows(() => parseCron(spec), re, spec);
  assertMatch(cronProblem("0 0 30 2 *")!, /never fires/);
  assertStrictEquals(cronProblem("0 0 29 2 *"), undefined);
  assertStrictEquals(cronProblem("*/5 * * * *"), undefined);
});

Deno.test("nextCronTime: strictly after, minute resolution, UTC", () => {
  assertEquals(next("*/5 * * * *", "2030-01-01T00:02:30Z"), "2030-01-01T00:05:00.000Z");
  assertEquals(next("*/5 * * * *", "2030-01-01T00:05:00Z"), "2030-01-01T00:10:00.000Z");
  assertEquals(next("*/5 * * * *", "2030-01-01T00:04:59.999Z"), "2030-01-01T00:05:00.000Z");
  assertEquals(next("* * * * *", "2030-01-01T00:00:00Z"), "2030-01-01T00:01:00.000Z");
  assertEquals(next("30 2 * * *", "2030-01-01T02:30:00Z"), "2030-01-02T02:30:00.000Z");
  assertEquals(next("0 0 1 * *", "2030-01-31T12:00:00Z"), "2030-02-01T00:00:00.000Z");
  assertEquals(next("59 23 31 12 *", "2030-06-01T00:00:00Z"), "2030-12-31T23:59:00.000Z");
  // Leap day: the next one after 2030 is in 2032.
  assertEquals(next("0 12 29 2 *", "2030-01-01T00:00:00Z"), "2032-02-29T12:00:00.000Z");
  // Weekdays: 2030-01-05 is a Saturday.
  assertEquals(next("0 9 * * mon-fri", "2030-01-04T10:00:00Z"), "2030-01-07T09:00:00.000Z");
  // Both day fields restricted: either matches (the 13th, or any Friday).
  assertEquals(next("0 0 13 * 5", "2030-01-01T00:00:00Z"), "2030-01-04T00:00:00.000Z");
  assertEquals(next("0 0 13 * 5", "2030-01-12T00:00:00Z"), "2030-01-13T00:00:00.000Z");
  // Impossible dates never fire.
  assertStrictEquals(nextCronTime(parseCron("0 0 31 4 *"), at("2030-01-01T00:00:00Z")), null);
  // Month rollover at the end of a year.
  assertEquals(next("0 0 * jan *", "2030-02-01T00:00:00Z"), "2031-01-01T00:00:00.000Z");
  assert(next("@yearly", "2030-01-01T00:00:00Z") === "2031-01-01T00:00:00.000Z");
});
