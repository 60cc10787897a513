/**
 * tools/gpu-check.sh (docs/backends.md, "GPU check") on this machine's CPU: the same script that runs on a
 * GPU machine, with GENIE_PROVIDERS=wasm and without the benchmarks, unpacks the prepared Deno and DENO_DIR,
 * serves the reference solves through the worker's HTTP API and must report that they match the CPU
 * references. It needs .gpu/, which tools/gpu-prepare.sh makes (with network): without it the test is
 * ignored.
 */
import { assert, assertEquals, test } from "../testing.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

function prepared(): boolean {
  try {
    return Deno.statSync(`${ROOT}.gpu/ref/solves.json`).isFile && Deno.statSync(`${ROOT}.gpu/deno.xz`).isFile;
  } catch {
    return false;
  }
}

test("gpu-check: the wasm run of tools/gpu-check.sh matches the CPU references", {
  skip: !prepared() && "no .gpu/ (run tools/gpu-prepare.sh)",
}, async () => {
  const out = await Deno.makeTempDir({ prefix: "gpu-check-" });
  try {
    const { code, stdout, stderr } = await new Deno.Command("bash", {
      args: [`${ROOT}tools/gpu-check.sh`, "wasm"],
      env: { OUT: out, GPU_CHECK_BENCH: "0" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
    const report = await Deno.readTextFile(`${out}/gpu.md`);
    assertEquals(code, 0, `${text}\n${report}`);
    assert(/^RESULT: all \d+ solves match/m.test(report), report);
    assert(!report.includes("MISMATCH"), report);
    const files = [...Deno.readDirSync(out)].map((e) => e.name).sort();
    assert(files.length <= 8, `at most 8 files in $OUT: ${files}`);
    assert(files.includes("worker.log") && files.includes("env.log"), `${files}`);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
