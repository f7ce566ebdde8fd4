// An apply that throws while a Ready's persist is in flight (applyCommittedEarly) is fatal, and the
// Ready it interrupted stops there: no raft advance(), no answer for the failed entry or anything
// after it (cf11ef2). Before that fix the interrupted Ready went on to advance() and could answer
// or snapshot from a broker that had fallen back to its last commit.
//
// Three FerryNodes run in this process on loopback. The leader's broker gets a planted bug: a SEND
// to "boom" throws when it is applied early (inside applyCommittedEarly), and only then, so a boom
// SEND that happens to be applied the ordinary way just succeeds and the next one is tried. Load
// keeps the leader's Readies back to back, so follower acks usually arrive while a persist is in
// flight and commit entries that are then applied early. Requests go straight to the leader's
// FerryNode.execute (what the client server calls), so every answer is known to be the leader's:
// through the client library a retried SEND could be answered by the next leader instead.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { BrokerCommand, BrokerResult } from "../../src/broker/commands.js";
import type { FerryNode } from "../../src/node/node.js";
import { FerryError } from "../../src/protocol/errors.js";
import { sleep } from "../e2e/harness.js";
import { waitFor } from "../e2e/tools.js";
import { startInProcessCluster } from "./in-process.js";

const BOOM = "boom";
const LOAD_WORKERS = 64; // requests kept in flight by the load
const BOOM_ATTEMPTS_MAX = 400; // boom SENDs tried (one every BOOM_EVERY_MS) before giving up
const BOOM_EVERY_MS = 3;
const session = { identity: "early-apply-test" };

// What the test reaches into (TypeScript's `private` is not enforced at run time).
interface BrokerInternals {
  apply(index: number, timestamp: bigint, commands: BrokerCommand[]): BrokerResult[];
  execute(command: BrokerCommand): BrokerResult;
}
interface NodeInternals {
  broker: BrokerInternals;
  raft: { advance(ready: unknown): void };
  applyCommittedEarly(): void;
  shutdown(): Promise<void>;
}

function internals(node: FerryNode): NodeInternals {
  return node as unknown as NodeInternals;
}


function selfLeader(node: FerryNode): number {
  const status = node.status();
  return status.nodes.find((entry) => entry.id === status.self)?.leader ?? 0;
}

test("a broker error during an early apply fails the leader before it advances or answers past the failed entry", { timeout: 30_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ferry-early-apply-"));
  const nodes: FerryNode[] = [];
  const shutdowns: Promise<void>[] = [];
  let loadRunning = true;
  try {
    await startInProcessCluster(root, nodes, { requestTimeoutMs: 3_000 });
    await waitFor("a leader all three nodes agree on", () => {
      const leaders = nodes.map(selfLeader);
      return leaders[0] !== 0 && leaders.every((id) => id === leaders[0]);
    }, 10_000);
    const leader = nodes.find((node) => node.raftState().isLeader);
    assert.ok(leader, "the agreed leader is one of the three nodes");
    const inner = internals(leader);

    // Keep hold of the leader's shutdown (fail() starts it without waiting) so cleanup can await it.
    const shutdown = inner.shutdown;
    inner.shutdown = function (this: NodeInternals) {
      const done = shutdown.call(this);
      shutdowns.push(done);
      return done;
    };
    const fatal: Error[] = [];
    leader.onFatal((error) => fatal.push(error));

    // Whether the leader is inside applyCommittedEarly right now.
    let early = false;
    const applyCommittedEarly = inner.applyCommittedEarly;
    inner.applyCommittedEarly = function (this: NodeInternals) {
      early = true;
      try {
        applyCommittedEarly.call(this);
      } finally {
        early = false;
      }
    };

    // The planted bug, on the leader's broker only. The entry each request's SEND went into is
    // recorded (by its body) as the broker is handed it.
    const entryOf = new Map<string, number>();
    let applying = 0;
    let planted: { index: number; body: string } | undefined;
    const broker = inner.broker;
    const apply = broker.apply;
    broker.apply = function (this: BrokerInternals, index, timestamp, commands) {
      applying = index;
      for (const command of commands) if (command.op === "send") entryOf.set(new TextDecoder().decode(command.body), index);
      return apply.call(this, index, timestamp, commands);
    };
    const execute = broker.execute;
    broker.execute = function (this: BrokerInternals, command) {
      if (command.op === "send" && command.recipients.includes(BOOM)) {
        if (planted === undefined && early) planted = { index: applying, body: new TextDecoder().decode(command.body) };
        if (planted?.index === applying) throw new Error(`planted broker bug: entry ${applying} sends to ${BOOM}`);
      }
      return execute.call(this, command);
    };

    // advance() after the planted throw would hand the failed Ready back to the raft core as done.
    let advancesAfterThrow = 0;
    const raft = inner.raft;
    const advance = raft.advance;
    raft.advance = function (this: NodeInternals["raft"], ready) {
      if (planted !== undefined) advancesAfterThrow++;
      return advance.call(this, ready);
    };

    // Every request, by body: "ok" or the error code the leader answered with.
    const outcomes = new Map<string, string>();
    const send = (mailbox: string, body: string): Promise<void> =>
      leader.execute({ op: "send", recipients: [mailbox], body: new TextEncoder().encode(body) }, session).then(
        () => void outcomes.set(body, "ok"),
        (error: unknown) => void outcomes.set(body, error instanceof FerryError ? error.code : String(error)),
      );
    const booms: Promise<void>[] = [];
    let loadSent = 0;
    const workers = Array.from({ length: LOAD_WORKERS }, async () => {
      while (loadRunning) {
        const body = `load-${loadSent++}`;
        await send("load", body);
        // A stopped node rejects at once, in a microtask: without a pause the workers would
        // never let the event loop (and so the test) go on.
        if (outcomes.get(body) !== "ok") await sleep(5);
      }
    });
    await sleep(100); // the load gets going

    const startedMs = Date.now();
    let boomSent = 0;
    while (planted === undefined && fatal.length === 0 && boomSent < BOOM_ATTEMPTS_MAX) {
      booms.push(send(BOOM, `boom-${boomSent++}`));
      await sleep(BOOM_EVERY_MS);
    }
    const hit = planted;
    const firedMs = Date.now() - startedMs;
    // With the fix the leader fails within one persist; without it, it may never fail.
    await waitFor("the leader to fail", () => fatal.length > 0, 2_000).catch(() => {});
    loadRunning = false;
    await Promise.all(workers);
    await Promise.all(booms); // all settle by requestTimeoutMs at the latest
    const applied = leader.raftState().applied;
    // OKs from the leader for SENDs in the failed entry or after it (or in no entry it applied).
    const answeredPast = hit === undefined ? [] : [...outcomes].filter(([body, outcome]) => outcome === "ok" && !((entryOf.get(body) ?? Number.POSITIVE_INFINITY) < hit.index)).map(([body]) => body);
    const diagnostics = `boom SENDs ${boomSent} over ${firedMs} ms, load SENDs ${loadSent}, planted ${JSON.stringify(hit)}, fatal ${fatal.length}, advances after the throw ${advancesAfterThrow}, applied ${applied}, OKs past the failed entry ${answeredPast.length}`;
    console.log(`early-apply-failure: ${diagnostics}`);

    assert.ok(hit, `a boom SEND was applied early within ${BOOM_ATTEMPTS_MAX} attempts (${diagnostics})`);
    assert.equal(fatal.length, 1, `the leader failed once, fatally (${diagnostics})`);
    assert.match(fatal[0]!.message, /planted broker bug/);
    assert.equal(leader.health().healthy, false, "the failed leader reports itself unhealthy (stopping)");
    assert.equal(advancesAfterThrow, 0, "the Ready interrupted by the failed early apply was not advanced");
    assert.ok(applied < hit.index, `the leader's applied index ${applied} stays below the failed entry ${hit.index}`);
    assert.notEqual(outcomes.get(hit.body), "ok", "the SEND in the failed entry got no OK");
    assert.deepEqual(answeredPast, [], `nothing in or after entry ${hit.index} got an OK from the leader`);
  } finally {
    loadRunning = false;
    await Promise.allSettled(nodes.map((node) => node.stop()));
    await Promise.allSettled(shutdowns);
    await rm(root, { recursive: true, force: true });
  }
});
