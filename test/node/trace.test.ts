// The entry trace (src/node/trace.ts): what it records, its bound, its text form; and that a
// running cluster's nodes record each entry's stages when given one (FERRY_TRACE_DIR).
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { FerryNode } from "../../src/node/node.js";
import { EntryTrace, parseTrace } from "../../src/node/trace.js";
import { entryStages } from "../../bench/lib/stages.js";
import { waitFor } from "../e2e/tools.js";
import { startInProcessCluster } from "./in-process.js";

test("EntryTrace records events with its clock, keeps at most its capacity and counts the rest", () => {
  let now = 1000.25;
  const trace = new EntryTrace(2, () => now);
  trace.record("proposed", 7, 3);
  now = 1001.5;
  trace.record("written", 7, 1);
  trace.record("apply-end", 7, 1); // over capacity
  assert.equal(trace.size, 2);
  assert.equal(trace.dropped, 1);
  assert.deepEqual(trace.records(), [
    { atMs: 1000.25, event: "proposed", last: 7, count: 3 },
    { atMs: 1001.5, event: "written", last: 7, count: 1 },
  ]);
  assert.deepEqual(parseTrace(trace.text()), trace.records());
  assert.throws(() => new EntryTrace(0), RangeError);
});

test("parseTrace refuses a line that is not a trace event", () => {
  assert.throws(() => parseTrace("12.5 proposed 3 1\n12.6 shipped 3 1\n"), /not a trace line: '12.6 shipped 3 1'/);
  assert.throws(() => parseTrace("x written 3 1\n"), /not a trace line/);
});

test("the nodes of a running cluster trace each entry from proposal to apply", { timeout: 60_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ferry-trace-"));
  const nodes: FerryNode[] = [];
  const traces = new Map<number, EntryTrace>();
  try {
    await startInProcessCluster(root, nodes, {}, (id) => {
      const trace = new EntryTrace(10_000);
      traces.set(id, trace);
      return { trace };
    });
    const leader = await waitFor("a leader", () => nodes.find((node) => node.raftState().isLeader));
    const fromMs = performance.timeOrigin + performance.now();
    const session = { identity: "trace-test" };
    for (let i = 0; i < 20; i++) {
      const reply = await leader.execute({ op: "send", recipients: ["traced"], body: new TextEncoder().encode(`m${i}`) }, session);
      assert.equal(reply.ok, true);
    }
    // Followers apply an entry once the next append or heartbeat tells them of its commit.
    const lastIndex = () => Math.max(...[...traces.values()].flatMap((trace) => trace.records().filter((r) => r.event === "proposed").map((r) => r.last)));
    await waitFor("every node applied the last entry", () => [...traces.values()].every((trace) => trace.records().some((r) => r.event === "apply-end" && r.last >= lastIndex())));
    const toMs = performance.timeOrigin + performance.now();
    const byName = new Map([...traces].map(([id, trace]) => [`node${id}`, trace.records()]));
    const stages = entryStages(byName, fromMs, toMs);
    assert.equal(stages.leader, `node${leader.config.id}`);
    assert.equal(stages.entries, 20, "one entry per SEND, one in flight");
    assert.equal(stages.commandsPerEntry, 1);
    assert.equal(stages.followers.length, 2);
    for (const follower of stages.followers) {
      assert.equal(follower.proposedToReceived.samples, 20, `${follower.node} traced the arrival of every entry`);
      assert.equal(follower.receivedToWritten.samples, 20, `${follower.node} traced the write of every entry`);
    }
    // The leader answers a SEND only once it applied it, after a follower wrote it.
    assert.equal(stages.proposedToAnswered.samples, 20);
    assert.equal(stages.firstWrittenToLeaderApply.samples, 20);
    assert.ok(stages.proposedToAnswered.medianMs >= stages.leaderApply.medianMs);
  } finally {
    await Promise.all(nodes.map((node) => node.stop().catch(() => {})));
    await rm(root, { recursive: true, force: true });
  }
});
