import { assert, assertEquals, assertMatch, assertThrows, describe, it } from "../testing.ts";
import { main, parseArgs, UsageError } from "../../onnx/cli.ts";
import { decodeModel, encodeModel } from "../../onnx/proto.ts";
import { buildUNet } from "../../bench/unet_fixture.ts";

describe("onnx/cli", () => {
  it("parses jvp and features commands", () => {
    assertEquals(parseArgs(["jvp", "--model", "a.onnx", "--out", "b.onnx"]), {
      command: "jvp",
      model: "a.onnx",
      out: "b.onnx",
      tensors: [],
    });
    const f = parseArgs([
      "features",
      "--model=a.onnx",
      "--tensor",
      "h",
      "temb",
      "--tensor",
      "z,w",
      "--out",
      "b",
    ]);
    assertEquals(f.tensors, ["h", "temb", "z", "w"]);
    assertEquals(parseArgs(["jvp", "--model", "a", "--out", "b", "--wrt", "x,t"]).wrt, ["x", "t"]);
  });

  it("names the bad flag in a one-line error", () => {
    const bad: [string[], RegExp][] = [
      [["jvp", "--out", "b"], /--model: is required/],
      [["jvp", "--model", "a"], /--out: is required/],
      [["jvp", "--model"], /--model: missing value/],
      [["jvp", "--model", "a", "--out", "b", "--tensor", "h"], /--tensor: unknown flag/],
      [["features", "--model", "a", "--out", "b"], /--tensor: is required/],
      [["features", "--model", "a", "b", "--out", "c", "--tensor", "h"], /b: unexpected argument/],
      [["grad", "--model", "a"], /unknown command 'grad'/],
    ];
    for (const [args, message] of bad) {
      const e = (() => {
        try {
          parseArgs(args);
        } catch (e) {
          return e;
        }
      })();
      assert(e instanceof UsageError, args.join(" "));
      assertMatch((e as Error).message, message);
      assert(!(e as Error).message.includes("\n"));
    }
    assertThrows(() => parseArgs([]), UsageError);
  });

  it("writes jvp and features models, and exits 2 on bad arguments", async () => {
    const dir = await Deno.makeTempDir();
    const model = `${dir}/unet.onnx`;
    await Deno.writeFile(model, encodeModel(buildUNet()));
    const silence = (f: () => Promise<number>) => {
      const [log, error] = [console.log, console.error];
      console.log = console.error = () => {};
      return f().finally(() => ([console.log, console.error] = [log, error]));
    };
    assertEquals(await silence(() => main(["jvp", "--model", model, "--out", `${dir}/jvp.onnx`])), 0);
    assertEquals(decodeModel(await Deno.readFile(`${dir}/jvp.onnx`)).graph!.output!.map((o) => o.name), [
      "eps",
      "jvp",
    ]);
    const featureArgs = [
      "features",
      "--model",
      model,
      "--tensor",
      "features",
      "temb",
      "--out",
      `${dir}/f.onnx`,
    ];
    assertEquals(await silence(() => main(featureArgs)), 0);
    assertEquals(decodeModel(await Deno.readFile(`${dir}/f.onnx`)).graph!.output!.length, 3);
    assertEquals(
      await silence(() => main(["jvp", "--model", `${dir}/missing.onnx`, "--out", `${dir}/x`])),
      2,
    );
    assertEquals(await silence(() => main(["jvp", "--model", model, "--out", `${dir}/x`, "--wrt", "y"])), 2);
    assertEquals(
      await silence(() => main(["features", "--model", model, "--tensor", "nope", "--out", `${dir}/x`])),
      2,
    );
    await Deno.remove(dir, { recursive: true });
  });

  it("runs as `deno task jvp` with exit status 2 and a one-line error on bad flags", async () => {
    if ((await Deno.permissions.query({ name: "run" })).state !== "granted") return;
    const root = new URL("../../", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["task", "-q", "jvp", "--model"],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 2);
    const firstLine = new TextDecoder().decode(out.stderr).split("\n").find((l) => l.startsWith("error:"));
    assertMatch(firstLine ?? "", /^error: --model: missing value$/);
    assertEquals(new TextDecoder().decode(out.stderr).trim().split("\n").length, 1);
  });
});
