/** The training programs' flags: typed values, and counts that must be integers refused otherwise. */
import { assertEquals, assertThrows, describe, it } from "../testing.ts";
import { parseFlags, Segments } from "../../training/common.ts";
import { GraphBuilder } from "../../onnx/proto.ts";
import { Layers } from "../../training/layers.ts";

const DEFAULTS = { steps: 10, lr: 1e-3, out: "x", exportOnly: false };

describe("parseFlags", () => {
  it("reads numbers, strings and booleans into the defaults' keys", () => {
    assertEquals(parseFlags(["--steps", "20", "--lr", "0.5", "--out", "y", "--export-only"], DEFAULTS), {
      steps: 20,
      lr: 0.5,
      out: "y",
      exportOnly: true,
    });
  });

  it("refuses a count that is fractional or below its minimum, naming the flag", () => {
    for (const bad of ["1.5", "0", "-3"]) {
      assertThrows(
        () => parseFlags(["--steps", bad], DEFAULTS, { steps: 1 }),
        Error,
        "--steps: expected an integer ≥ 1",
      );
    }
    assertEquals(parseFlags(["--lr", "0.25"], DEFAULTS, { steps: 1 }).lr, 0.25);
    assertThrows(() => parseFlags(["--steps", "ten"], DEFAULTS), Error, "--steps: not a number");
    assertThrows(() => parseFlags(["--step", "1"], DEFAULTS), Error, "unknown flag --step");
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
    const s = new Segments([seg(0, 100), seg(100, 300), seg(300, 400)], 250, 1);
    assertEquals(s.upTo(250), [seg(0, 100), seg(100, 250)]);
    const all = s.upTo(260);
    assertEquals(all.length, 3);
    assertEquals([all[2].from_step, all[2].to_step, all[2].threads], [250, 260, 1]);
  });
});
