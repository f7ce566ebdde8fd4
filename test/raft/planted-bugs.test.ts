// The planted bugs (RaftConfig.bugs) are real branches of the code path: each test shows the
// behaviour with and without the bug, so the simulator's ability to catch them means something.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { MemoryLogStorage } from "../../src/raft/memory-storage.js";
import { RaftNode, defaultRaftConfig } from "../../src/raft/raft-node.js";
import type { Message, PlantedBugs } from "../../src/raft/types.js";
import { InteractionEnv, parseCommand, transcriptCommands } from "./interaction.js";

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

test("commitPreviousTermByCount: an early commit early, and Figure 8's lost committed entry", () => {
  // testdata/figure8-bug.txt, run with and without the bug.
  const path = join(import.meta.dirname, "testdata", "figure8-bug.txt");
  for (const bug of [false, true]) {
    const env = new InteractionEnv();
    for (const command of transcriptCommands(path)) {
      env.run(parseCommand(bug ? command : command.replace(" bug=commitPreviousTermByCount", "")));
      if (command === "status 1") {
        // Node 2 has just acknowledged the term-1 entry 1/2, not yet leader 1's own 3/3: a
        // majority holds 1/2, but only the bug commits it now (§5.4.2).
        const status = env.members.get(1)!.node.status();
        assert.deepEqual([status.role, status.term, status.progress.get(2)?.match], ["leader", 3, 2]);
        assert.equal(status.commit, bug ? 2 : 1, `bug=${bug}`);
      }
    }
    const atIndex2 = (id: number) => env.members.get(id)!.applied.find((e) => e.index === 2);
    const node1 = atIndex2(1);
    const node3 = atIndex2(3);
    assert.equal(node3?.term, 2);
    if (bug) assert.equal(node1?.term, 1, "with the bug node 1 applied 1/2, which node 3 overwrote: safety lost");
    else assert.equal(node1, undefined, "without the bug node 1 never applied the overwritten entry");
  }
});
