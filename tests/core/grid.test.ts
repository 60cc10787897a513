/**
 * Grids against their defining formulas (docs/method.md §4, §8): exact endpoints, strict monotonicity,
 * quadratic striding, ρ-power in t, uniform in λ, ρ-power in γ, and validation.
 */
import { assert, assertClose, assertStrictEquals, assertThrows, describe, test } from "../testing.ts";
import {
  defaultRho,
  explicitGrid,
  GRID_KINDS,
  GridError,
  type GridKind,
  makeGrid,
  reversedGrid,
} from "../../core/grid.ts";
import {
  ddpmDiscreteSchedule,
  type Schedule,
  vpCosineSchedule,
  vpLinearSchedule,
} from "../../core/schedule.ts";

const SCHEDULES: Schedule[] = [vpLinearSchedule(), vpCosineSchedule(), ddpmDiscreteSchedule()];
const STEPS = [1, 2, 3, 5, 10, 15, 50, 1000];

function isGridError(field: string) {
  return (e: unknown) => {
    assert(e instanceof GridError, `expected a GridError, got ${e}`);
    assertStrictEquals(e.field, field);
    assert(e.message.startsWith(`${field}: `), e.message);
    return true;
  };
}

/** Asserts that consecutive differences of f(t_n) are all equal (to a relative tolerance). */
function assertUniformIn(f: (t: number) => number, t: Float64Array, tol: number, what: string): void {
  const steps = t.length - 1, d = (f(t[steps]) - f(t[0])) / steps;
  for (let n = 0; n < steps; n++) {
    assertClose(f(t[n + 1]) - f(t[n]), d, tol * Math.abs(d), `${what} step ${n}`);
  }
}

describe("every grid kind", () => {
  for (const s of SCHEDULES) {
    for (const kind of GRID_KINDS) {
      test(`${s.name}/${kind}: starts at t_max, ends at t_min exactly, strictly decreasing`, () => {
        for (const steps of STEPS) {
          for (const range of [{}, { tMin: 2e-3, tMax: 0.8 }]) {
            const t = makeGrid(s, { kind, steps, ...range });
            assert(t instanceof Float64Array);
            assertStrictEquals(t.length, steps + 1);
            assertStrictEquals(t[0], range.tMax ?? s.tMax, `t_0 with ${steps} steps`);
            assertStrictEquals(t[steps], range.tMin ?? s.tMin, `t_N with ${steps} steps`);
            for (let n = 1; n <= steps; n++) assert(t[n] < t[n - 1], `t_${n} < t_${n - 1} (${steps} steps)`);
          }
        }
      });
    }
  }
});

describe("grid formulas", () => {
  const s = vpLinearSchedule();

  test("uniform: equal steps in t", () => {
    const t = makeGrid(s, { kind: "uniform", steps: 10 });
    assertUniformIn((x) => x, t, 1e-13, "uniform");
    assertClose(t[5], 0.5 * (1 + 1e-3), 1e-16, "midpoint");
  });

  test("quadratic: t_n = (1 + (n/N)(sqrt(t_min) − 1))² with t_max = 1", () => {
    for (const N of [5, 10, 15, 100]) {
      const t = makeGrid(s, { kind: "quadratic", steps: N });
      for (let n = 0; n <= N; n++) {
        const expected = (1 + (n / N) * (Math.sqrt(1e-3) - 1)) ** 2;
        assertClose(t[n], expected, 1e-14 * expected, `t_${n} of ${N}`);
      }
    }
  });

  test("quadratic is the power grid with ρ = 2 (the default ρ of power)", () => {
    for (const s of SCHEDULES) {
      const q = makeGrid(s, { kind: "quadratic", steps: 12 });
      assertStrictEquals(q.join(), makeGrid(s, { kind: "power", steps: 12, rho: 2 }).join());
      assertStrictEquals(q.join(), makeGrid(s, { kind: "power", steps: 12 }).join());
      assertStrictEquals(q.join(), makeGrid(s, { kind: "quadratic", steps: 12, rho: 2 }).join());
    }
  });

  test("power: t_n^{1/ρ} is uniform, t_n = (t_max^{1/ρ} + (n/N)(t_min^{1/ρ} − t_max^{1/ρ}))^ρ", () => {
    for (const rho of [1, 1.5, 2.5, 3, 7]) {
      const t = makeGrid(s, { kind: "power", steps: 10, rho, tMax: 0.9, tMin: 2e-3 });
      assertUniformIn((x) => Math.pow(x, 1 / rho), t, 1e-12, `ρ = ${rho}`);
      const a = Math.pow(0.9, 1 / rho), b = Math.pow(2e-3, 1 / rho);
      assertClose(t[3], Math.pow(a + 0.3 * (b - a), rho), 1e-15, `t_3 at ρ = ${rho}`);
    }
  });

  test("power with ρ = 1 is uniform", () => {
    const u = makeGrid(s, { kind: "uniform", steps: 8 }),
      p = makeGrid(s, { kind: "power", steps: 8, rho: 1 });
    for (let n = 0; n <= 8; n++) assertClose(p[n], u[n], 1e-15, `t_${n}`);
  });

  for (const sched of SCHEDULES) {
    test(`logsnr on ${sched.name}: uniform in λ = −log γ`, () => {
      for (const steps of [5, 10, 40]) {
        const t = makeGrid(sched, { kind: "logsnr", steps });
        assertUniformIn((x) => sched.lambda(x), t, 1e-10, `λ, ${steps} steps`);
        assert(sched.lambda(t[0]) < sched.lambda(t[steps]), "λ increases while sampling");
      }
    });

    test(`edm on ${sched.name}: ρ-power in γ (default ρ = 7)`, () => {
      for (const rho of [undefined, 3, 7]) {
        const r = rho ?? 7;
        const t = makeGrid(sched, { kind: "edm", steps: 10, rho });
        assertUniformIn((x) => Math.pow(sched.gamma(x), 1 / r), t, 1e-10, `γ^{1/ρ}, ρ = ${r}`);
        const g0 = Math.pow(sched.gamma(sched.tMax), 1 / r), g1 = Math.pow(sched.gamma(sched.tMin), 1 / r);
        const g4 = Math.pow(g0 + 0.4 * (g1 - g0), r);
        assertClose(sched.gamma(t[4]), g4, 1e-12 * g4, `γ(t_4), ρ = ${r}`);
      }
    });
  }

  test("default ρ per kind", () => {
    const expected: Record<GridKind, number | undefined> = {
      uniform: undefined,
      quadratic: 2,
      power: 2,
      logsnr: undefined,
      edm: 7,
    };
    for (const kind of GRID_KINDS) assertStrictEquals(defaultRho(kind), expected[kind], kind);
  });
});

describe("grid validation", () => {
  const s = vpLinearSchedule();

  test("steps must be an integer ≥ 1", () => {
    for (const steps of [0, -1, 2.5, NaN, Infinity]) {
      assertThrows(() => makeGrid(s, { kind: "quadratic", steps }), isGridError("steps"), `steps = ${steps}`);
    }
    assertThrows(
      () => makeGrid(s, { kind: "quadratic", steps: "10" as unknown as number }),
      isGridError("steps"),
    );
  });

  test("t range, kind and ρ", () => {
    assertThrows(() => makeGrid(s, { kind: "uniform", steps: 4, tMin: 0 }), isGridError("t_min"));
    assertThrows(() => makeGrid(s, { kind: "uniform", steps: 4, tMin: -1e-3 }), isGridError("t_min"));
    assertThrows(() => makeGrid(s, { kind: "uniform", steps: 4, tMax: 1e-3 }), isGridError("t_max"));
    assertThrows(() => makeGrid(s, { kind: "uniform", steps: 4, tMax: NaN }), isGridError("t_max"));
    assertThrows(() => makeGrid(s, { kind: "cubic" as GridKind, steps: 4 }), isGridError("grid"));
    assertThrows(() => makeGrid(s, { kind: "quadratic", steps: 4, rho: 3 }), isGridError("rho"));
    assertThrows(() => makeGrid(s, { kind: "power", steps: 4, rho: 0 }), isGridError("rho"));
    assertThrows(() => makeGrid(s, { kind: "edm", steps: 4, rho: -7 }), isGridError("rho"));
  });
});

describe("explicit grids", () => {
  test("accepts strictly monotone lists in either direction, exactly as given", () => {
    const down = explicitGrid([1, 0.5, 0.1, 1e-3]);
    assert(down instanceof Float64Array);
    assertStrictEquals(down.join(), "1,0.5,0.1,0.001");
    assertStrictEquals(explicitGrid(new Float64Array([1e-3, 0.2, 1])).join(), "0.001,0.2,1");
  });

  test("duplicates are rejected naming the index", () => {
    assertThrows(() => explicitGrid([1, 0.5, 0.5, 0.1]), isGridError("grid[2]"));
    assertThrows(() => explicitGrid([1, 1, 0.1]), isGridError("grid[1]"));
    assertThrows(() => explicitGrid([1e-3, 0.5, 0.5]), isGridError("grid[2]"));
  });

  test("non-monotone lists are rejected naming the index", () => {
    assertThrows(() => explicitGrid([1, 0.5, 0.7, 0.1]), isGridError("grid[2]"));
    assertThrows(() => explicitGrid([0.1, 0.5, 0.9, 0.8]), isGridError("grid[3]"));
  });

  test("non-finite or non-positive times are rejected naming the index", () => {
    assertThrows(() => explicitGrid([1, 0.5, 0]), isGridError("grid[2]"));
    assertThrows(() => explicitGrid([1, -0.5]), isGridError("grid[1]"));
    assertThrows(() => explicitGrid([NaN, 0.5]), isGridError("grid[0]"));
    assertThrows(() => explicitGrid([1, Infinity]), isGridError("grid[1]"));
  });

  test("fewer than two times are rejected", () => {
    assertThrows(() => explicitGrid([]), isGridError("grid"));
    assertThrows(() => explicitGrid([0.5]), isGridError("grid"));
  });
});

describe("reversedGrid", () => {
  test("reverses into a new increasing grid without touching the input", () => {
    const t = makeGrid(vpLinearSchedule(), { kind: "quadratic", steps: 6 });
    const before = t.join();
    const r = reversedGrid(t);
    assertStrictEquals(t.join(), before);
    assertStrictEquals(r[0], 1e-3);
    assertStrictEquals(r[6], 1);
    for (let n = 0; n <= 6; n++) assertStrictEquals(r[n], t[6 - n]);
    assertStrictEquals(explicitGrid(r).join(), r.join());
  });
});
