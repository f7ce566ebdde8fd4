// FERRY_TRACE_DIR: a node started with it writes its entry trace (src/node/trace.ts) to
// <dir>/trace-node<id>.txt when it stops gracefully (SIGTERM); `npm run bench:stages` reads it.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { connect } from "../../src/client/index.js";
import { parseTrace } from "../../src/node/trace.js";
import { TestCluster } from "./harness.js";

const traceDir = mkdtempSync(join(tmpdir(), "ferry-trace-dir-"));
let cluster: TestCluster;

before(async () => {
  cluster = await new TestCluster({ nodes: 1, env: { FERRY_TRACE_DIR: traceDir } }).start();
});
after(async () => {
  await cluster?.stop();
  rmSync(traceDir, { recursive: true, force: true });
});

test("a node started with FERRY_TRACE_DIR writes its entry trace when it stops", { timeout: 60_000 }, async () => {
  await cluster.waitForLeader();
  const client = await connect({ seeds: cluster.seeds(), name: "trace" });
  try {
    for (let i = 0; i < 5; i++) await client.send("traced", `m${i}`);
  } finally {
    await client.close();
  }
  const file = join(traceDir, "trace-node1.txt");
  assert.equal(existsSync(file), false, "nothing is written while the node runs");
  await cluster.kill(1, "SIGTERM");
  const records = parseTrace(readFileSync(file, "utf8"));
  const proposed = records.filter((record) => record.event === "proposed");
  assert.equal(proposed.length, 5, "one entry per SEND");
  for (const entry of proposed) {
    for (const event of ["written", "apply-start", "apply-end"] as const) {
      const covering = records.find((record) => record.event === event && record.last >= entry.last && record.last - record.count < entry.last);
      assert.ok(covering !== undefined, `entry ${entry.last} has a '${event}' event`);
      assert.ok(covering.atMs >= entry.atMs, `entry ${entry.last}: '${event}' after its proposal`);
    }
  }
});
