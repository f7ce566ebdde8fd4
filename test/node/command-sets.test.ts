// Log commands newer than some member applies are not proposed (COMMAND_SET, HelloFrame.commands):
// a RECEIVE that carries acks (tag 9, command set 2) goes out as an ACK and a RECEIVE while a
// member says it applies set 1 only, as a node of a version before it would, and such a node
// refuses tag 9 on apply as that version did. Once every member applies set 2 it is one command.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { FerryNode } from "../../src/node/node.js";
import type { ListReply, ReceiveReply } from "../../src/protocol/api.js";
import { waitFor } from "../e2e/tools.js";
import { startInProcessCluster } from "./in-process.js";

const session = { identity: "command-sets-test" };
const MAILBOX = "upgrading";

async function commandsProposed(node: FerryNode): Promise<number> {
  return (await node.metrics.commandsProposed.get()).values[0]?.value ?? 0;
}

async function withCluster(commandSet: (id: number) => number | undefined, body: (nodes: FerryNode[], leader: FerryNode) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), "ferry-command-sets-"));
  const nodes: FerryNode[] = [];
  const fatal: Error[] = [];
  try {
    await startInProcessCluster(root, nodes, {}, (id) => {
      const set = commandSet(id);
      return set === undefined ? {} : { commandSet: set };
    });
    for (const node of nodes) node.onFatal((error) => fatal.push(error));
    const leader = await waitFor("a leader", () => nodes.find((node) => node.raftState().isLeader), 10_000);
    await body(nodes, leader);
    const commit = leader.raftState().commit;
    await waitFor("every node applied every entry", () => fatal.length > 0 || nodes.every((node) => node.raftState().applied >= commit), 10_000);
    assert.deepEqual(
      fatal.map((error) => error.message),
      [],
      "no node failed to apply an entry",
    );
  } finally {
    await Promise.allSettled(nodes.map((node) => node.stop()));
    await rm(root, { recursive: true, force: true });
  }
}

async function sendSix(leader: FerryNode): Promise<void> {
  for (let i = 0; i < 6; i++) await leader.execute({ op: "send", recipients: [MAILBOX], body: new TextEncoder().encode(`m${i}`) }, session);
}

function receive(leader: FerryNode, ack?: string[], ackLeases?: string[]): Promise<ReceiveReply> {
  return leader.execute({ op: "receive", mailbox: MAILBOX, max: 3, ...(ack === undefined ? {} : { ack }), ...(ackLeases === undefined ? {} : { ackLeases }) }, session) as Promise<ReceiveReply>;
}

// Lease names (tag 10, command set 3) while a member applies `set`: the leader turns them into
// the ids their batches leased, proposed as one RECEIVE with acks (set 2) or an ACK and a RECEIVE
// (set 1); the member applies every entry (withCluster).
for (const [set, proposals] of [
  [2, 1],
  [1, 2],
] as const) {
  test(`a RECEIVE's lease names go out as their batches' ids while a member applies command set ${set}`, { timeout: 30_000 }, async () => {
    await withCluster(
      (id) => (id === 3 ? set : undefined),
      async (_nodes, leader) => {
        await sendSix(leader);
        const first = await receive(leader);
        assert.equal(typeof first.lease, "string", "the answer names its lease");
        const before = await commandsProposed(leader);
        const second = await receive(leader, undefined, [first.lease!]);
        assert.deepEqual([second.acked, second.ackedLeases, second.messages.length], [3, 1, 3], "the batch acked by name; the next leased");
        assert.equal(await commandsProposed(leader), before + proposals);
        const third = await receive(leader, [second.messages[0]!.id], [second.lease!, first.lease!]);
        assert.deepEqual([third.acked, third.ackedLeases, third.messages.length], [3, 2, 0], "an id, then the names (one acked before: nothing); answered at once");
        const listed = (await leader.execute({ op: "list", mailbox: MAILBOX }, session)) as ListReply;
        assert.equal(listed.items.length, 0);
      },
    );
  });
}

test("a RECEIVE's acks go out as an ACK before it while a member applies the older command set; that member applies every entry", { timeout: 30_000 }, async () => {
  await withCluster(
    (id) => (id === 3 ? 1 : undefined),
    async (_nodes, leader) => {
      await sendSix(leader);
      const first = await receive(leader);
      assert.equal(first.messages.length, 3);
      const before = await commandsProposed(leader);
      const second = await receive(
        leader,
        first.messages.map((message) => message.id),
      );
      assert.equal(second.acked, 3, "the acks were applied");
      assert.equal(second.messages.length, 3, "then the next messages leased");
      assert.equal(await commandsProposed(leader), before + 2, "an ACK and a RECEIVE");
      const third = await receive(
        leader,
        second.messages.map((message) => message.id),
      );
      assert.deepEqual([third.acked, third.messages.length], [3, 0], "all acked; nothing left, answered at once");
      const listed = (await leader.execute({ op: "list", mailbox: MAILBOX }, session)) as ListReply;
      assert.equal(listed.items.length, 0);
    },
  );
});

test("once every member applies the command set, a RECEIVE and its acks are one command", { timeout: 30_000 }, async () => {
  await withCluster(
    () => undefined,
    async (_nodes, leader) => {
      // Until both followers' connections to the leader said hello, the leader splits.
      await waitFor(
        "a RECEIVE with acks proposed as one command",
        async () => {
          await sendSix(leader);
          const held = (await receive(leader)).messages;
          const before = await commandsProposed(leader);
          const reply = await receive(
            leader,
            held.map((message) => message.id),
          );
          assert.equal(reply.acked, 3);
          if ((await commandsProposed(leader)) !== before + 1) return false;
          // And lease names go out as they are, one command.
          const named = await receive(leader, undefined, [reply.lease!]);
          assert.deepEqual([named.acked, named.ackedLeases], [3, 1]);
          return (await commandsProposed(leader)) === before + 2;
        },
        10_000,
      );
    },
  );
});
