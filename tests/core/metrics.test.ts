import { assertEquals, test } from "../testing.ts";
import { Counter, Gauge, Histogram, MetricsRegistry } from "../../core/metrics.ts";

test("metrics: values read at scrape time (gauge or counter) and declared empty histograms", () => {
  let restarts = 0;
  const r = new MetricsRegistry();
  r.add("up", Gauge.single("Up.", () => 1));
  r.add("restarts_total", Gauge.single("Restarts.", () => restarts, "counter"));
  r.add("calls_total", new Counter("Calls.")).inc({ model: "m", graph: "eps" }, 3);
  r.add("size", new Histogram("Sizes.", [1, 8])).declare();
  restarts = 2;
  assertEquals(
    r.render(),
    [
      "# HELP up Up.",
      "# TYPE up gauge",
      "up 1",
      "# HELP restarts_total Restarts.",
      "# TYPE restarts_total counter",
      "restarts_total 2",
      "# HELP calls_total Calls.",
      "# TYPE calls_total counter",
      'calls_total{graph="eps",model="m"} 3',
      "# HELP size Sizes.",
      "# TYPE size histogram",
      'size_bucket{le="1"} 0',
      'size_bucket{le="8"} 0',
      'size_bucket{le="+Inf"} 0',
      "size_sum 0",
      "size_count 0",
    ].join("\n") + "\n",
  );
});
