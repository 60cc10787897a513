import { assertEquals, assertThrows, test } from "../testing.ts";
import { serveOptions } from "../../gpu-worker/main.ts";

test("serveOptions: flags override the environment, tuning knobs are parsed", () => {
  const o = serveOptions(["--port", "9000", "--threads", "2", "--spin", "off"], {
    GENIE_WORKER_PORT: "8000",
    GENIE_WORKER_SPIN: "on",
    GENIE_WORKER_MAX_QUEUE: "12",
  });
  assertEquals(o.port, 9000);
  assertEquals(o.intraOpThreads, 2);
  assertEquals(o.spinning, false);
  assertEquals(o.maxQueue, 12);
  assertEquals(serveOptions([], { GENIE_WORKER_SPIN: "on" }).spinning, true);
  assertEquals(serveOptions([], {}).spinning, undefined);
  // the same on/off words as the edge's settings, in any case
  assertEquals(serveOptions([], { GENIE_WORKER_SPIN: " Yes " }).spinning, true);
  assertEquals(serveOptions(["--spin", "OFF"], {}).spinning, false);
  // auto (the default) leaves the choice to the inference thread: undefined
  assertEquals(serveOptions(["--spin", "auto"], { GENIE_WORKER_SPIN: "on" }).spinning, undefined);
  assertEquals(serveOptions([], { GENIE_WORKER_SPIN: " AUTO " }).spinning, undefined);
  // or a policy by name for every session
  assertEquals(serveOptions([], { GENIE_WORKER_SPIN: "brief" }).spinning, "brief");
  assertEquals(serveOptions(["--spin", "Run"], {}).spinning, "run");
  // the fair-scheduling quantum
  assertEquals(serveOptions(["--quantum-ms", "5"], { GENIE_WORKER_QUANTUM_MS: "50" }).quantumMs, 5);
  assertEquals(serveOptions([], { GENIE_WORKER_QUANTUM_MS: "50" }).quantumMs, 50);
  assertEquals(serveOptions([], {}).quantumMs, undefined);
  assertThrows(() => serveOptions(["--quantum-ms", "0"], {}), /--quantum-ms: must be positive/);
});

test("serveOptions: a bad value names its flag", () => {
  assertThrows(() => serveOptions(["--spin", "sometimes"], {}), Error, "--spin");
  assertThrows(() => serveOptions([], { GENIE_WORKER_SPIN: "fast" }), Error, "GENIE_WORKER_SPIN");
  assertThrows(() => serveOptions([], { GENIE_WORKER_THREADS: "-1" }), Error, "--threads");
  assertThrows(() => serveOptions(["--port", "70000"], {}), Error, "--port");
  assertThrows(() => serveOptions([], { GENIE_SIGNATURE_WINDOW_S: "0" }), Error, "GENIE_SIGNATURE_WINDOW_S");
  assertThrows(
    () => serveOptions([], { GENIE_SIGNATURE_WINDOW_S: "soon" }),
    Error,
    "GENIE_SIGNATURE_WINDOW_S",
  );
});

test("serveOptions: GENIE_SIGNATURE_WINDOW_S sets the signature window", () => {
  assertEquals(serveOptions([], { GENIE_SIGNATURE_WINDOW_S: "15" }).signatureWindowS, 15);
  assertEquals(serveOptions([], {}).signatureWindowS, undefined);
});
