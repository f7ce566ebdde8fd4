// Request deadlines without a timer per request: the driver's tick calls expire(), which fails the
// queued requests past their deadline and the in-flight entries whose oldest request is past it,
// once, and nothing queued or proposed later.
import assert from "node:assert/strict";
import { test } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { InflightProposals, type PendingRequest, ProposalQueue } from "../../src/node/proposals.js";
import { FerryError } from "../../src/protocol/errors.js";

interface Outcome {
  settled: number[];
  failed: string[];
}

function request(name: number, deadlineMs: number, outcome: Outcome): PendingRequest<number, number> {
  return {
    command: name,
    bytes: 1,
    deadlineMs,
    settle: (result) => outcome.settled.push(result),
    fail: (error) => outcome.failed.push(`${name}:${error.code}`),
  };
}

const timeout = () => new FerryError("TIMEOUT", "late");

test("the queue fails its expired requests from the front and keeps the rest for the next batch", () => {
  const outcome: Outcome = { settled: [], failed: [] };
  const queue = new ProposalQueue<number, number>(100);
  for (const [name, deadline] of [[1, 100], [2, 150], [3, 200], [4, 300]] as const) queue.push(request(name, deadline, outcome));
  queue.expire(99, timeout);
  assert.deepEqual(outcome.failed, []);
  queue.expire(150, timeout);
  assert.deepEqual(outcome.failed, ["1:TIMEOUT", "2:TIMEOUT"]);
  assert.equal(queue.length, 2);
  assert.deepEqual(queue.take(10, 100).map((pending) => pending.command), [3, 4]);
});

test("in-flight entries past their deadline fail once; their later results are dropped; younger entries settle", () => {
  const outcome: Outcome = { settled: [], failed: [] };
  const inflight = new InflightProposals<number, number>();
  inflight.add(7, { term: 2, requests: [request(1, 100, outcome), request(2, 100, outcome)] });
  inflight.add(8, { term: 2, requests: [request(3, 500, outcome)] });
  inflight.expire(200, timeout);
  inflight.expire(300, timeout); // already failed: not again
  assert.deepEqual(outcome.failed, ["1:TIMEOUT", "2:TIMEOUT"]);
  inflight.applied(7, 2, () => [10, 20]);
  inflight.applied(8, 2, () => [30]);
  assert.deepEqual(outcome.settled, [30]);
  assert.equal(inflight.size, 0);
});

test("an expired entry overwritten by another leader's entry is not failed a second time", () => {
  const outcome: Outcome = { settled: [], failed: [] };
  const inflight = new InflightProposals<number, number>();
  inflight.add(5, { term: 1, requests: [request(1, 100, outcome)] });
  inflight.expire(100, timeout);
  inflight.applied(5, 3, () => [99]);
  assert.deepEqual(outcome.failed, ["1:TIMEOUT"]);
  assert.deepEqual(outcome.settled, []);
});

// A request taken into an entry is referenced by that entry until it is answered, not by the
// queue: the queue kept every taken one until 1024 had been taken, and under load those (an ACK's
// ids, a SEND's body) survived scavenges and were promoted, ~4 MB per scavenge on a draining
// leader.
test("the queue keeps no reference to a request it handed out", async () => {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const outcome: Outcome = { settled: [], failed: [] };
  const queue = new ProposalQueue<number, number>(100);
  const taken: WeakRef<object>[] = [];
  (() => {
    for (let name = 1; name <= 6; name++) {
      const pending = request(name, 1000, outcome);
      taken.push(new WeakRef(pending));
      queue.push(pending);
    }
    queue.push(request(7, 1000, outcome)); // stays queued: the queue is not empty after the take
    assert.equal(queue.take(3, 100).length, 3); // the batch is dropped at once
    assert.equal(queue.take(3, 100).length, 3);
  })();
  await nextTurn();
  gc();
  assert.deepEqual(
    taken.map((ref) => ref.deref() === undefined),
    [true, true, true, true, true, true],
  );
  assert.equal(queue.length, 1);
  assert.deepEqual(queue.take(10, 100).map((pending) => pending.command), [7]);
});
