// Request deadlines without a timer per request: the driver's tick calls expire(), which fails the
// queued requests past their deadline and the in-flight entries whose oldest request is past it,
// once, and nothing queued or proposed later.
import assert from "node:assert/strict";
import { test } from "node:test";
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
