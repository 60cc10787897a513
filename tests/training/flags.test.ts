/** The training programs' flags: typed values, and counts that must be integers refused otherwise. */
import { assertEquals, assertThrows, describe, it } from "../testing.ts";
import { parseFlags } from "../../training/common.ts";
import { GraphBuilder } from "../../onnx/proto.ts";
import { Layers } from "../../onnx/layers.ts";

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
