// The clock exchange end to end, wired the way the node does it: each node's raw clock (a
// SkewedClock) feeds both its transport's `now` and its NodeClock; transport samples go to
// NodeClock.addSample; discipline() runs periodically. One node starts 400 ms ahead.
import assert from "node:assert/strict";
import { test } from "node:test";
import { NodeClock } from "../../src/clock/node-clock.js";
import { median } from "../../src/clock/offset-estimator.js";
import { SkewedClock } from "../../src/clock/skewed-clock.js";
import { readClockSkewFromEnv } from "../../src/transport/clock-env.js";
import { PeerTransport } from "../../src/transport/peer-transport.js";
import { waitFor } from "./helpers.js";

interface WiredNode {
  id: number;
  raw: SkewedClock;
  clock: NodeClock;
  transport: PeerTransport;
}

async function startWired(id: number, offsetMs: number): Promise<WiredNode> {
  const raw = new SkewedClock(Date.now, { offsetMs });
  const rawNowMs = () => raw.nowMs();
  const clock = new NodeClock(rawNowMs, { rejoinAfterMs: 200 });
  const transport = await PeerTransport.start({
    selfId: id,
    clusterId: "wiring",
    secret: "s",
    listen: { host: "127.0.0.1", port: 0 },
    peers: new Map(),
    clockProbeIntervalMs: 10,
    now: rawNowMs,
    onMessages: () => {},
    onClockSample: (from, sample) => clock.addSample(from, sample),
  });
  return { id, raw, clock, transport };
}

test("a node 400 ms ahead is measured, fenced, stepped into line and rejoins", async () => {
  const nodes = [await startWired(1, 0), await startWired(2, 3), await startWired(3, 400)];
  const ahead = nodes[2]!;
  try {
    for (const node of nodes) {
      node.transport.setPeers(new Map(nodes.filter((o) => o !== node).map((o) => [o.id, `127.0.0.1:${o.transport.address().port}`])));
    }
    await waitFor("samples from every peer", () => nodes.every((node) => node.clock.status().peers.length === 2));
    const reports = nodes.map((node) => node.clock.discipline());
    assert.equal(reports[2]!.healthy, false);
    assert.equal(reports[2]!.action, "step");
    assert.ok(Math.abs(reports[2]!.offsetMs! - 400) < 20, `measured offset ${reports[2]!.offsetMs}`);
    assert.ok(reports[0]!.healthy && reports[1]!.healthy);
    // After the step the three disciplined clocks agree with the median raw clock.
    const medianMs = median(nodes.map((node) => node.raw.nowMs()));
    for (const node of nodes) assert.ok(Math.abs(node.clock.disciplined.nowMs() - medianMs) < 20);
    // The guard holds the node fenced for the rejoin period, then lets it back.
    await waitFor("rejoin", () => ahead.clock.discipline().healthy);
    assert.match(ahead.clock.status().reason, /rejoined/);
  } finally {
    await Promise.all(nodes.map((node) => node.transport.close()));
  }
});

test("FERRY_CLOCK_OFFSET_MS and FERRY_CLOCK_DRIFT_PPM are read as numbers; nonsense is refused", () => {
  assert.deepEqual(readClockSkewFromEnv({}), { offsetMs: 0, driftPpm: 0 });
  assert.deepEqual(readClockSkewFromEnv({ FERRY_CLOCK_OFFSET_MS: "-300", FERRY_CLOCK_DRIFT_PPM: "50.5" }), { offsetMs: -300, driftPpm: 50.5 });
  assert.throws(() => readClockSkewFromEnv({ FERRY_CLOCK_OFFSET_MS: "soon" }), /FERRY_CLOCK_OFFSET_MS/);
});
