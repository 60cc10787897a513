/** The training programs' flags: typed values, and counts that must be integers refused otherwise. */
import { assertEquals, assertThrows, describe, it } from "../testing.ts";
import { gradFormulation, parseTrainingFlags, Segments } from "../../training/common.ts";
import { GraphBuilder } from "../../onnx/proto.ts";
import { Layers } from "../../training/layers.ts";
import { UsageError } from "../../core/flags.ts";
import { DISTILL_DEFAULTS, focusOf, headArchitecture } from "../../training/distill/flags.ts";

const DEFAULTS = { steps: 10, lr: 1e-3, out: "x", exportOnly: false };

describe("parseTrainingFlags", () => {
  it("reads numbers, strings and booleans into the defaults' keys", () => {
    assertEquals(
      parseTrainingFlags(["--steps", "20", "--lr", "0.5", "--out", "y", "--export-only"], DEFAULTS),
      {
        steps: 20,
        lr: 0.5,
        out: "y",
        exportOnly: true,
      },
    );
    const words = parseTrainingFlags(["--export-only", "false", "--steps=3"], {
      ...DEFAULTS,
      exportOnly: true,
    });
    assertEquals([words.exportOnly, words.steps], [false, 3]);
  });

  it("refuses a count that is fractional or below its minimum, naming the flag", () => {
    for (
      const [bad, message] of [["1.5", "expected an integer"], ["0", "must be ≥ 1"], ["-3", "must be ≥ 1"]]
    ) {
      assertThrows(
        () => parseTrainingFlags(["--steps", bad], DEFAULTS, { steps: 1 }),
        Error,
        `--steps: ${message}`,
      );
    }
    assertEquals(parseTrainingFlags(["--lr", "0.25"], DEFAULTS, { steps: 1 }).lr, 0.25);
    assertThrows(() => parseTrainingFlags(["--steps", "ten"], DEFAULTS), Error, "--steps: expected a number");
    assertThrows(() => parseTrainingFlags(["--step", "1"], DEFAULTS), Error, "--step: unknown flag");
  });
});

describe("distill's head and focus flags", () => {
  const base = { ...DISTILL_DEFAULTS, targets: 1000 };
  it("an even --kernel and a --stride that does not divide the image are refused, naming the flag", () => {
    const size = [28, 28] as const;
    assertThrows(() => headArchitecture({ ...base, kernel: 2 }, size), UsageError, "--kernel: 2 is even");
    assertThrows(
      () => headArchitecture({ ...base, stride: 3 }, size),
      UsageError,
      "--stride: 3 does not divide",
    );
    assertEquals(headArchitecture({ ...base, kernel: 3, depth: 4, stride: 4, derived: true }, size), {
      width: base.width,
      depth: 4,
      kernel: 3,
      stride: 4,
      derived: true,
    });
  });
  it("--focus needs --targets, a probability and a range of t", () => {
    assertEquals(focusOf({ ...base, focus: 0 }), undefined);
    assertEquals(focusOf({ ...base, focus: 0.7 }), { p: 0.7, from: 0.25, to: 0.85 });
    assertThrows(
      () => focusOf({ ...base, focus: 0.7, targets: 0 }),
      UsageError,
      "--focus: favours times within",
    );
    assertThrows(() => focusOf({ ...base, focus: 1.5 }), UsageError, "--focus: 1.5 is not a probability");
    assertThrows(
      () => focusOf({ ...base, focus: 0.5, focusFrom: 0.9, focusTo: 0.2 }),
      UsageError,
      "--focus-from: [0.9, 0.2) is not a range",
    );
  });
});

describe("Layers.groupNorm", () => {
  it("refuses channels that do not split into its groups", () => {
    const L = new Layers(new GraphBuilder("g", { opset: 17 }), 1, 4);
    assertThrows(() => L.groupNorm("h", 6, "norm"), Error, "norm: 6 channels do not split into 4 groups");
  });
});

describe("training segments", () => {
  it("a resumed run keeps the segments before its checkpoint (cut there) and appends its own", () => {
    const seg = (from_step: number, to_step: number) => ({
      from_step,
      to_step,
      threads: 2,
      seconds: 1,
      started: "a",
      finished: "b",
    });
    // the second segment was recorded at step 300, but the checkpoint resumed from is at 250
    const s = new Segments([seg(0, 100), seg(100, 300), seg(300, 400)], 250, 1, 2);
    assertEquals(s.upTo(250), [seg(0, 100), seg(100, 250)]);
    const all = s.upTo(260);
    assertEquals(all.length, 3);
    assertEquals([all[2].from_step, all[2].to_step, all[2].threads, all[2].formulation], [250, 260, 1, 2]);
  });

  it("--formulation names a gradient formulation (1, 2 or 3)", () => {
    assertEquals([gradFormulation(1), gradFormulation(2), gradFormulation(3)], [1, 2, 3]);
    assertThrows(
      () => gradFormulation(4),
      UsageError,
      "--formulation: 4 is not a gradient formulation (1, 2, 3)",
    );
  });
});
