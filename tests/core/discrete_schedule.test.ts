/**
 * The `discrete` schedule (diffusers' vocabulary, DPM-Solver's time convention) against closed forms:
 * ᾱ_n = Π_{i≤n} (1 − β_i) at t = (n+1)/N, log α linear in t between indices, the three beta schedules'
 * defining formulas, and errors naming the field.
 */
import {
  assert,
  assertClose,
  assertEquals,
  assertStrictEquals,
  assertThrows,
  describe,
  test,
} from "../testing.ts";
import {
  discreteBetas,
  discreteSchedule,
  discreteTimesteps,
  ScheduleError,
  scheduleFromSpec,
} from "../../core/schedule.ts";

function assertRel(actual: number, expected: number, tol: number, what: string): void {
  assertClose(actual, expected, tol * Math.abs(expected), what);
}

/** ᾱ_n = Π_{i≤n} (1 − β_i), as a plain product. */
function alphaBars(betas: number[]): number[] {
  const out: number[] = [];
  let p = 1;
  for (const b of betas) out.push(p *= 1 - b);
  return out;
}

const linspace = (a: number, b: number, n: number) =>
  Array.from({ length: n }, (_, i) => a + (b - a) * i / (n - 1));

describe("discrete schedule", () => {
  test("linear betas: α(t)² = ᾱ_n at t = (n+1)/N, t_min = 1/N, t_max = 1", () => {
    const N = 1000, betas = linspace(1e-4, 0.02, N), abar = alphaBars(betas);
    const s = scheduleFromSpec({
      type: "discrete",
      beta_schedule: "linear",
      beta_start: 1e-4,
      beta_end: 0.02,
      num_train_timesteps: N,
    });
    assertStrictEquals(s.tMin, 1 / N);
    assertStrictEquals(s.tMax, 1);
    assertStrictEquals(discreteTimesteps(s), N);
    for (let n = 0; n < N; n++) assertRel(s.alpha((n + 1) / N) ** 2, abar[n], 1e-12, `ᾱ_${n}`);
    assertRel(s.alpha(1) ** 2, 4.0358297653756825e-5, 1e-12, "ᾱ_999 of the DDPM linear betas");
  });

  test("between indices, log α is linear in t (index N·t − 1)", () => {
    const N = 1000, abar = alphaBars(linspace(1e-4, 0.02, N));
    const s = discreteSchedule();
    for (const [n, w] of [[0, 0.25], [10, 0.5], [499, 0.1], [998, 0.9]]) {
      const t = (n + 1 + w) / N; // index n + w
      const logAlpha = 0.5 * ((1 - w) * Math.log(abar[n]) + w * Math.log(abar[n + 1]));
      assertRel(Math.log(s.alpha(t)), logAlpha, 1e-10, `log α at index ${n + w}`);
      // dB/dt is constant on the piece: B' = N (log ᾱ_n − log ᾱ_{n+1})
      const g = s.gamma(t);
      const dB = N * (Math.log(abar[n]) - Math.log(abar[n + 1]));
      assertRel(s.dtDgamma(t), (2 * g) / ((1 + g * g) * dB), 1e-8, `dt/dγ at index ${n + w}`);
      assertRel(s.tFromGamma(g), t, 1e-12, `t(γ) at index ${n + w}`);
    }
  });

  test("scaled_linear betas = linspace(√β_start, √β_end, N)²", () => {
    const N = 1000, b0 = 0.00085, b1 = 0.012;
    const betas = linspace(Math.sqrt(b0), Math.sqrt(b1), N).map((r) => r * r);
    const got = discreteBetas("scaled_linear", N, b0, b1);
    for (let i = 0; i < N; i++) assertRel(got[i], betas[i], 1e-13, `β_${i}`);
    const s = discreteSchedule({ beta_schedule: "scaled_linear", beta_start: b0, beta_end: b1 });
    const abar = alphaBars(betas);
    for (const n of [0, 1, 500, 999]) assertRel(s.alpha((n + 1) / N) ** 2, abar[n], 1e-12, `ᾱ_${n}`);
  });

  test("squaredcos_cap_v2 betas = min(1 − ᾱ(t₂)/ᾱ(t₁), 0.999)", () => {
    const N = 1000, f = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
    const betas = Array.from({ length: N }, (_, i) => Math.min(1 - f((i + 1) / N) / f(i / N), 0.999));
    assertStrictEquals(betas[N - 1], 0.999); // the cap applies at the end
    const s = discreteSchedule({ beta_schedule: "squaredcos_cap_v2" });
    assertEquals(s.spec, { type: "discrete", beta_schedule: "squaredcos_cap_v2", num_train_timesteps: N });
    const abar = alphaBars(betas);
    for (const n of [0, 100, 500, 990, 999]) assertRel(s.alpha((n + 1) / N) ** 2, abar[n], 1e-11, `ᾱ_${n}`);
  });

  test("trained_betas", () => {
    const betas = [0.01, 0.05, 0.2, 0.5];
    const s = scheduleFromSpec({ type: "discrete", trained_betas: betas });
    assertStrictEquals(discreteTimesteps(s), 4);
    assertStrictEquals(s.tMin, 0.25);
    const abar = alphaBars(betas);
    for (let n = 0; n < 4; n++) assertRel(s.alpha((n + 1) / 4) ** 2, abar[n], 1e-15, `ᾱ_${n}`);
    assertEquals(scheduleFromSpec(s.spec).spec, s.spec);
  });

  test("γ ↔ t round trip and monotonicity over [t_min, 1]", () => {
    for (const kind of ["linear", "scaled_linear", "squaredcos_cap_v2"] as const) {
      const s = discreteSchedule({ beta_schedule: kind, num_train_timesteps: 100 });
      let last = 0;
      for (let i = 0; i <= 400; i++) {
        const t = s.tMin + (1 - s.tMin) * i / 400;
        const g = s.gamma(t);
        assert(g > last, `${kind}: γ increases at ${t}`);
        last = g;
        assertRel(s.tFromGamma(g), t, 1e-11, `${kind}: t(γ(${t}))`);
      }
    }
  });

  test("other schedules have no discrete timesteps", () => {
    assertStrictEquals(discreteTimesteps(scheduleFromSpec({ type: "vp-linear" })), undefined);
  });

  const errors: [unknown, string][] = [
    [{ type: "discrete", beta_schedule: "sigmoid" }, "schedule.beta_schedule"],
    [{ type: "discrete", num_train_timesteps: 1 }, "schedule.num_train_timesteps"],
    [{ type: "discrete", num_train_timesteps: "1000" }, "schedule.num_train_timesteps"],
    [{ type: "discrete", beta_start: -1 }, "schedule.beta_start"],
    [{ type: "discrete", beta_start: 0.1, beta_end: 0.01 }, "schedule.beta_end"],
    [{ type: "discrete", trained_betas: [0.1, 1.5] }, "schedule.trained_betas[1]"],
    [{ type: "discrete", trained_betas: [0.1, 0.2], num_train_timesteps: 3 }, "schedule.num_train_timesteps"],
    [{ type: "discrete", trained_betas: [0.1, 0.2], beta_schedule: "linear" }, "schedule.beta_schedule"],
    [{ type: "discrete", clip_sample: true }, "schedule.clip_sample"],
  ];
  for (const [spec, field] of errors) {
    test(`${JSON.stringify(spec)} → ${field}`, () => {
      assertThrows(() => scheduleFromSpec(spec), (e: unknown) => {
        assert(e instanceof ScheduleError, `expected a ScheduleError, got ${e}`);
        assertStrictEquals(e.field, field);
        return true;
      });
    });
  }
});
