/**
 * Schedules against closed-form truth (docs/method.md §1–2, §8): γ ↔ t round trips, the identities between
 * α, σ, γ and λ, dt/dγ, digits near t_min, and the discrete and cosine schedules' defining formulas.
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
  ddpmDiscreteSchedule,
  discreteSchedule,
  type Schedule,
  ScheduleError,
  scheduleFromSpec,
  vpCosineSchedule,
  vpLinearSchedule,
} from "../../core/schedule.ts";

const SCHEDULES: Schedule[] = [
  vpLinearSchedule(),
  vpCosineSchedule(),
  ddpmDiscreteSchedule(),
  discreteSchedule({ beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 }),
];

/** `count` times spread geometrically over [lo, hi], endpoints included. */
function geomTimes(lo: number, hi: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => lo * Math.pow(hi / lo, i / (count - 1)));
}

function assertRel(actual: number, expected: number, tol: number, what: string): void {
  assertClose(actual, expected, tol * Math.abs(expected), what);
}

for (const s of SCHEDULES) {
  const times = [...geomTimes(s.tMin, s.tMax, 400), ...geomTimes(1e-7, s.tMin, 50)];

  describe(`${s.name} schedule`, () => {
    test("γ ↔ t round trip to 1e−12 (relative) from 1e−7 to t_max", () => {
      for (const t of times) assertRel(s.tFromGamma(s.gamma(t)), t, 1e-12, `t(γ(${t}))`);
    });

    test("γ → t → γ round trip over γ(t_min) … γ(t_max)", () => {
      const g0 = s.gamma(s.tMin), g1 = s.gamma(s.tMax);
      for (const g of geomTimes(g0, g1, 200)) assertRel(s.gamma(s.tFromGamma(g)), g, 1e-12, `γ(t(${g}))`);
    });

    test("α² + σ² = 1, γ = σ/α, λ = −log γ, B = log(1 + γ²)", () => {
      for (const t of times) {
        const a = s.alpha(t), sg = s.sigma(t), g = s.gamma(t);
        assertClose(a * a + sg * sg, 1, 4e-16, `α² + σ² at ${t}`);
        assertRel(g, sg / a, 1e-14, `γ at ${t}`);
        assertClose(s.lambda(t), -Math.log(g), 1e-14 * Math.max(1, Math.abs(s.lambda(t))), `λ at ${t}`);
        assertRel(s.logOnePlusGamma2(t), Math.log1p(g * g), 1e-14, `B at ${t}`);
      }
    });

    test("α decreases and γ increases strictly in t", () => {
      for (let i = 1; i < times.length && times[i] > times[i - 1]; i++) {
        assert(s.alpha(times[i]) < s.alpha(times[i - 1]), `α at ${times[i]}`);
        assert(s.gamma(times[i]) > s.gamma(times[i - 1]), `γ at ${times[i]}`);
      }
    });

    test("tFromLambda inverts lambda", () => {
      for (const t of times) assertRel(s.tFromLambda(s.lambda(t)), t, 1e-12, `t(λ(${t}))`);
    });

    test("dtDgamma matches a central finite difference of tFromGamma", () => {
      // Mid-segment times, so that the piecewise-linear discrete schedule is smooth around them.
      for (let i = 0; i < 40; i++) {
        const t = s.tMin + (s.tMax - s.tMin) * (i + 0.5) / 40;
        const g = s.gamma(t), h = 1e-6 * g;
        const fd = (s.tFromGamma(g + h) - s.tFromGamma(g - h)) / (2 * h);
        assertRel(s.dtDgamma(t), fd, 1e-7, `dt/dγ at ${t}`);
      }
    });

    test("its spec rebuilds the same schedule", () => {
      const r = scheduleFromSpec(JSON.parse(JSON.stringify(s.spec)));
      assertStrictEquals(r.name, s.name);
      for (const t of times) assertStrictEquals(r.gamma(t), s.gamma(t));
    });
  });
}

describe("digits near t_min", () => {
  // γ to 17 digits from 60-digit arithmetic (mpmath) with each schedule's defaults.
  const truth: [Schedule, number, number][] = [
    [vpLinearSchedule(), 1e-6, 0.00031624350586374926],
    [vpLinearSchedule(), 1e-3, 0.010485992786702986],
    [vpLinearSchedule(), 0.5, 3.4129183090691204],
    [vpCosineSchedule(), 1e-6, 0.00019712611508520378],
    [vpCosineSchedule(), 1e-3, 0.0064254127711271709],
    [vpCosineSchedule(), 0.5, 1.0123895639480042],
    [ddpmDiscreteSchedule(), 1e-6, 0.00031623568004552957],
    [ddpmDiscreteSchedule(), 1e-3, 0.010000500037503126],
    [ddpmDiscreteSchedule(), 0.5, 3.4241366190440413],
  ];
  for (const [s, t, g] of truth) {
    test(`${s.name}: γ(${t}) to 1e−14 of a high-precision value`, () => {
      assertRel(s.gamma(t), g, 1e-14, `γ(${t})`);
    });
  }

  test("vp-linear γ equals the series sqrt(B + B²/2 + B³/6 + …) down to t = 1e−9", () => {
    const s = vpLinearSchedule();
    for (const t of geomTimes(1e-9, 1e-2, 60)) {
      const b = 0.1 * t + 0.5 * 19.9 * t * t;
      let sum = 0, term = b;
      for (let n = 1; n < 20; n++, term *= b / n) sum += term;
      assertRel(s.gamma(t), Math.sqrt(sum), 2e-15, `γ(${t})`);
    }
  });

  test("vp-cosine γ equals a cancellation-free closed form down to t = 1e−9", () => {
    // With a = ks, θ = kt: 1 − α = (cos a − cos(a+θ))/cos a = 2 sin(a + θ/2) sin(θ/2)/cos a exactly,
    // and γ² = (1 − α²)/α².
    const s = vpCosineSchedule(), k = Math.PI / (2 * 1.008), a = k * 0.008;
    for (const t of geomTimes(1e-9, 1e-2, 60)) {
      const oneMinusAlpha = 2 * Math.sin(a + 0.5 * k * t) * Math.sin(0.5 * k * t) / Math.cos(a);
      const alpha = 1 - oneMinusAlpha;
      const g = Math.sqrt(oneMinusAlpha * (1 + alpha)) / alpha;
      assertRel(s.gamma(t), g, 4e-15, `γ(${t})`);
    }
  });
});

describe("vp-linear closed forms (docs/method.md §1–2)", () => {
  const s = vpLinearSchedule();
  const betaMin = 0.1, betaD = 19.9;

  test("B(t) = β_min t + ½ β_d t² and α = exp(−B/2)", () => {
    for (const t of geomTimes(1e-4, 1, 100)) {
      const b = betaMin * t + 0.5 * betaD * t * t;
      assertRel(s.logOnePlusGamma2(t), b, 1e-15, `B(${t})`);
      assertRel(s.alpha(t), Math.exp(-0.5 * b), 1e-15, `α(${t})`);
    }
  });

  test("t(γ) = (−β_min + sqrt(β_min² + 2 β_d ln(1+γ²)))/β_d", () => {
    for (const g of geomTimes(0.05, 150, 100)) {
      const t = (-betaMin + Math.sqrt(betaMin * betaMin + 2 * betaD * Math.log1p(g * g))) / betaD;
      assertRel(s.tFromGamma(g), t, 1e-13, `t(${g})`);
    }
  });

  test("dt/dγ = 2γ/((1+γ²) β(t))", () => {
    for (const t of geomTimes(1e-4, 1, 100)) {
      const g = s.gamma(t);
      assertRel(s.dtDgamma(t), (2 * g) / ((1 + g * g) * (betaMin + betaD * t)), 1e-14, `dt/dγ(${t})`);
    }
  });

  test("custom β range", () => {
    const c = vpLinearSchedule(0.05, 12);
    assertRel(c.logOnePlusGamma2(0.7), 0.05 * 0.7 + 0.5 * (12 - 0.05) * 0.49, 1e-15, "B(0.7)");
  });
});

describe("vp-cosine", () => {
  test("α_t = cos(π/2 (t+s)/(1+s)) / cos(π/2 s/(1+s))", () => {
    for (const sParam of [0.008, 0.02]) {
      const s = vpCosineSchedule(sParam);
      const f = (t: number) => Math.cos((Math.PI / 2) * (t + sParam) / (1 + sParam));
      for (const t of geomTimes(1e-3, s.tMax, 100)) {
        assertRel(s.alpha(t), f(t) / f(0), 1e-12, `α(${t}) with s = ${sParam}`);
      }
    }
  });

  test("default t_max = 0.9946 and tMax option", () => {
    assertStrictEquals(vpCosineSchedule().tMax, 0.9946);
    assertStrictEquals(vpCosineSchedule(0.008, 0.99).tMax, 0.99);
  });
});

describe("ddpm-discrete", () => {
  /** −Σ_{j<i} log(1 − β_j) for every knot i. */
  function knots(betas: number[]): number[] {
    const out = [0];
    for (const b of betas) out.push(out[out.length - 1] - Math.log1p(-b));
    return out;
  }

  test("B at the knots t = i/N equals −Σ log(1 − β)", () => {
    const betas = Array.from({ length: 1000 }, (_, i) => 1e-4 + (0.02 - 1e-4) * i / 999);
    const s = ddpmDiscreteSchedule();
    const b = knots(betas);
    for (let i = 1; i <= 1000; i++) assertRel(s.logOnePlusGamma2(i / 1000), b[i], 1e-13, `B(${i}/1000)`);
    assertRel(s.alpha(1) ** 2, 4.0358297653756825e-5, 1e-12, "ᾱ_N of the DDPM linear betas");
  });

  test("explicit betas: knots, and linear interpolation of B between them", () => {
    const betas = [0.01, 0.05, 0.2, 0.5];
    const s = ddpmDiscreteSchedule({ betas });
    const b = knots(betas);
    for (let i = 0; i <= 4; i++) assertRel(s.logOnePlusGamma2(i / 4), b[i], 1e-15, `B(${i}/4)`);
    assertRel(s.logOnePlusGamma2(0.375), 0.5 * (b[1] + b[2]), 1e-15, "B(3/8)");
    assertRel(
      s.dtDgamma(0.375),
      (2 * s.gamma(0.375)) / ((1 + s.gamma(0.375) ** 2) * 4 * (b[2] - b[1])),
      1e-14,
      "dt/dγ",
    );
    assertEquals(s.spec, { type: "ddpm-discrete", betas });
  });

  test("beta_start, beta_end and steps", () => {
    const s = ddpmDiscreteSchedule({ beta_start: 1e-3, beta_end: 0.05, steps: 50 });
    const b = knots(Array.from({ length: 50 }, (_, i) => 1e-3 + (0.05 - 1e-3) * i / 49));
    assertRel(s.logOnePlusGamma2(1), b[50], 1e-14, "B(1)");
  });
});

describe("schedule spec errors name the field", () => {
  const cases: [unknown, string][] = [
    [null, "schedule"],
    ["vp-linear", "schedule"],
    [{ type: "vp-quadratic" }, "schedule.type"],
    [{}, "schedule.type"],
    [{ type: "vp-linear", beta_min: -1 }, "schedule.beta_min"],
    [{ type: "vp-linear", beta_max: "20" }, "schedule.beta_max"],
    [{ type: "vp-linear", beta_min: 1, beta_max: 0.5 }, "schedule.beta_max"],
    [{ type: "vp-cosine", s: 0 }, "schedule.s"],
    [{ type: "vp-cosine", t_max: 1.5 }, "schedule.t_max"],
    [{ type: "ddpm-discrete", betas: [0.1] }, "schedule.betas"],
    [{ type: "ddpm-discrete", betas: "0.1,0.2" }, "schedule.betas"],
    [{ type: "ddpm-discrete", betas: [0.1, 0.2, 1] }, "schedule.betas[2]"],
    [{ type: "ddpm-discrete", betas: [0.1, null] }, "schedule.betas[1]"],
    [{ type: "ddpm-discrete", steps: 1 }, "schedule.steps"],
    [{ type: "ddpm-discrete", steps: 10.5 }, "schedule.steps"],
    [{ type: "ddpm-discrete", beta_end: 0 }, "schedule.beta_end"],
  ];
  for (const [spec, field] of cases) {
    test(`${JSON.stringify(spec)} → ${field}`, () => {
      assertThrows(() => scheduleFromSpec(spec), (e: unknown) => {
        assert(e instanceof ScheduleError, `expected a ScheduleError, got ${e}`);
        assertStrictEquals(e.field, field);
        assert(e.message.startsWith(`${field}: `), e.message);
        return true;
      });
    });
  }

  test("constructors name their own parameters", () => {
    assertThrows(
      () => vpLinearSchedule(0),
      (e: unknown) => e instanceof ScheduleError && e.field === "beta_min",
    );
    assertThrows(
      () => vpCosineSchedule(0.008, 1),
      (e: unknown) => e instanceof ScheduleError && e.field === "t_max",
    );
    assertThrows(
      () => ddpmDiscreteSchedule({ betas: [0.1, -0.1] }),
      (e: unknown) => e instanceof ScheduleError && e.field === "betas[1]",
    );
  });

  test("no spec means the default vp-linear schedule", () => {
    const s = scheduleFromSpec(undefined);
    assertEquals(s.spec, { type: "vp-linear", beta_min: 0.1, beta_max: 20 });
  });
});
