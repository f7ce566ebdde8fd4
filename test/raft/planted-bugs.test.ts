// The planted bugs (RaftConfig.bugs) are real branches of the code path: each test shows the
// behaviour with and without the bug, so the simulator's ability to catch them means something.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MemoryLogStorage } from "../../src/raft/memory-storage.js";
import { RaftNode, defaultRaftConfig } from "../../src/raft/raft-node.js";
import type { Message, PlantedBugs } from "../../src/raft/types.js";
import { InteractionEnv, parseCommand } from "./interaction.js";

function script(env: InteractionEnv, lines: string): void {
  for (const line of lines.trim().split("\n")) env.run(parseCommand(line));
}

function voteRequest(from: number, to: number, term: number, lastIndex: number, lastTerm: number): Message {
  return { type: "vote", from, to, term, logTerm: lastTerm, index: lastIndex, entries: [], commit: 0, reject: false, rejectHint: 0 };
}

function voter(bugs: PlantedBugs | undefined): RaftNode {
  const config = defaultRaftConfig(2, () => 0, { preVote: false, checkQuorum: false });
  if (bugs) config.bugs = bugs;
  return new RaftNode(config, MemoryLogStorage.withVoters([1, 2, 3]));
}

test("voteBeforePersist: the vote response leaves before the vote is persisted", () => {
  for (const bug of [false, true]) {
    const node = voter(bug ? { voteBeforePersist: true } : undefined);
    node.step(voteRequest(1, 2, 1, 0, 0));
    const ready = node.ready();
    const early = ready.messages.filter((m) => m.type === "vote-response");
    const late = ready.messagesAfterPersist.filter((m) => m.type === "vote-response");
    assert.equal(ready.hardState?.vote, 1);
    assert.deepEqual([early.length, late.length], bug ? [1, 0] : [0, 1]);
  }
});

test("skipVoteLogCheck: a candidate with a shorter log gets the vote", () => {
  for (const bug of [false, true]) {
    const env = new InteractionEnv();
    script(env, `add-nodes 3 voters=(1,2,3)${bug ? " bug=skipVoteLogCheck" : ""}\nlog-level none\ncampaign 1\nstabilize\npartition 1 2 / 3\npropose 1 x\nstabilize\nheal\ncampaign 3\nstabilize`);
    const node3 = env.members.get(3)!.node.status();
    assert.equal(node3.role, bug ? "leader" : "follower", `bug=${bug}`);
  }
});

test("commitPreviousTermByCount: a new leader commits an old-term entry by counting replicas", () => {
  for (const bug of [false, true]) {
    const env = new InteractionEnv();
    // One entry per append (max-msg-bytes=1 and 2-byte data), so the old entry is acknowledged
    // on its own before the new leader's entry.
    script(
      env,
      `add-nodes 3 voters=(1,2,3) max-msg-bytes=1${bug ? " bug=commitPreviousTermByCount" : ""}
log-level none
campaign 1
stabilize
partition 1 2 / 3
propose 1 xx
process-ready 1
deliver-msgs 2
process-ready 2
drop-msgs 1
partition 1 / 2 3
campaign 2
process-ready 2
deliver-msgs 3
process-ready 3
deliver-msgs 2
process-ready 2
deliver-msgs 3
process-ready 3
deliver-msgs 2
process-ready 2
deliver-msgs 3
process-ready 3
deliver-msgs 2`,
    );
    // Node 2 leads term 2; node 3 has just acknowledged the term-1 entry at index 2 (not yet the
    // leader's own entry 2/3). A majority holds 1/2, but only the bug commits it now (§5.4.2).
    const leader = env.members.get(2)!.node.status();
    assert.equal(leader.role, "leader");
    assert.equal(leader.progress.get(3)?.match, 2);
    assert.equal(leader.commit, bug ? 2 : 1, `bug=${bug}`);
  }
});
