// bench/lib/prometheus.ts reads a histogram out of a node's /metrics text (as prom-client writes
// it, default labels included) and counts the observations above each bound between two readings.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Histogram, Registry } from "prom-client";
import { readHistogram, sharesAbove } from "../../bench/lib/prometheus.js";

test("reads prom-client's histogram and counts what fell above each bound between two readings", async () => {
  const registry = new Registry();
  registry.setDefaultLabels({ node: "1" });
  const histogram = new Histogram({ name: "ferry_wal_persist_seconds", help: "h", buckets: [0.0005, 0.001, 0.002, 0.005], registers: [registry] });
  new Histogram({ name: "ferry_wal_persist_seconds_other", help: "a name sharing the prefix", buckets: [0.001], registers: [registry] }).observe(9);
  for (const seconds of [0.0001, 0.003]) histogram.observe(seconds); // before the run: not counted
  const before = readHistogram(await registry.metrics(), "ferry_wal_persist_seconds");
  assert.equal(before.get("+Inf"), 2);
  for (const seconds of [0.0002, 0.0004, 0.0007, 0.0015, 0.0015, 0.004, 0.01, 0.0003]) histogram.observe(seconds);
  const after = readHistogram(await registry.metrics(), "ferry_wal_persist_seconds");
  const { count, above } = sharesAbove(before, after, [0.0005, 0.001, 0.002, 0.005]);
  assert.equal(count, 8);
  assert.deepEqual(
    above.map(({ boundSeconds, share }) => [boundSeconds, share]),
    [
      [0.0005, 5 / 8],
      [0.001, 4 / 8],
      [0.002, 2 / 8],
      [0.005, 1 / 8],
    ],
  );
  assert.throws(() => sharesAbove(before, after, [0.25]), /no bucket at 0.25 s/);
  assert.equal(readHistogram(await registry.metrics(), "ferry_missing").size, 0);
});
