// RaftNode driven by a tiny in-test message pump: the driver contract in its simplest form.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MemoryLogStorage } from "../../src/raft/memory-storage.js";
import { RaftNode, defaultRaftConfig } from "../../src/raft/raft-node.js";
import type { Entry, Message, RaftConfig } from "../../src/raft/types.js";
import { RaftError, SnapshotUnavailableError } from "../../src/raft/types.js";
import { confFromVoters, encodeConfChange } from "../../src/raft/confchange.js";

interface Member {
  node: RaftNode;
  storage: MemoryLogStorage;
  applied: Entry[];
}

function cluster(ids: number[], overrides: Partial<RaftConfig> = {}): Map<number, Member> {
  const members = new Map<number, Member>();
  for (const id of ids) {
    const storage = MemoryLogStorage.withVoters(ids);
    const node = new RaftNode(defaultRaftConfig(id, () => 0, overrides), storage);
    members.set(id, { node, storage, applied: [] });
  }
  return members;
}

// Runs every Ready of every node and delivers every message until the cluster is quiet.
function pump(members: Map<number, Member>): void {
  for (let round = 0; round < 1000; round++) {
    const inbox: Message[] = [];
    for (const member of members.values()) {
      while (member.node.hasReady()) {
        const ready = member.node.ready();
        inbox.push(...ready.messages);
        if (ready.snapshot) member.storage.applySnapshot(ready.snapshot);
        member.storage.append(ready.entries);
        if (ready.hardState) member.storage.setHardState(ready.hardState);
        inbox.push(...ready.messagesAfterPersist);
        member.applied.push(...ready.committedEntries);
        member.node.advance(ready);
      }
    }
    if (inbox.length === 0) return;
    for (const message of inbox) members.get(message.to)?.node.step(message);
  }
  assert.fail("pump did not settle");
}

const text = (s: string) => new TextEncoder().encode(s);
const decode = (entry: Entry) => new TextDecoder().decode(entry.data);

test("three nodes elect a leader and commit proposals in order", () => {
  const members = cluster([1, 2, 3], { preVote: false, checkQuorum: false });
  members.get(1)!.node.campaign();
  pump(members);
  const leader = members.get(1)!.node;
  assert.equal(leader.status().role, "leader");
  assert.equal(members.get(2)!.node.status().lead, 1);
  leader.propose(text("a"));
  leader.propose(text("b"));
  pump(members);
  for (const member of members.values()) {
    const data = member.applied.filter((e) => e.data.length > 0).map(decode);
    assert.deepEqual(data, ["a", "b"]);
    assert.equal(member.node.status().commit, 3); // the leader's empty entry + 2
  }
  assert.throws(() => members.get(2)!.node.propose(text("c")), (e: unknown) => e instanceof RaftError && e.code === "NOT_LEADER");
});

test("an election by ticks alone: the node with the earliest timeout wins", () => {
  const members = new Map<number, Member>();
  for (const id of [1, 2, 3]) {
    const storage = MemoryLogStorage.withVoters([1, 2, 3]);
    // Node 3 draws the shortest timeout.
    const random = () => (id === 3 ? 0 : 0.9);
    members.set(id, { node: new RaftNode(defaultRaftConfig(id, random), storage), storage, applied: [] });
  }
  for (let t = 0; t < 10; t++) for (const m of members.values()) m.node.tick();
  pump(members);
  assert.equal(members.get(3)!.node.status().role, "leader");
  assert.equal(members.get(1)!.node.status().lead, 3);
});

test("a single-node cluster elects itself and commits after persisting", () => {
  const members = cluster([1]);
  members.get(1)!.node.campaign();
  pump(members);
  const node = members.get(1)!.node;
  assert.equal(node.status().role, "leader");
  node.propose(text("x"));
  pump(members);
  assert.deepEqual(members.get(1)!.applied.map(decode), ["", "x"]);
});

// A storage that, like a durable one before its first snapshot, has no snapshot to offer.
class NoInitialSnapshotStorage extends MemoryLogStorage {
  override snapshot() {
    const snapshot = super.snapshot();
    if (snapshot.meta.index === 0) throw new SnapshotUnavailableError("no snapshot yet");
    return snapshot;
  }
}

// A joining node may start with an empty configuration or with the cluster's current one (which
// does not list it yet); either way it must take the initial configuration from a snapshot before
// it replays conf changes, and the leader must find one to send.
for (const start of [[], [1, 2, 3]]) test(`a joining node (starting with voters=(${start})) learns the initial configuration even when the storage has no snapshot yet`, () => {
  const members = new Map<number, Member>();
  for (const id of [1, 2, 3, 4]) {
    const storage = new NoInitialSnapshotStorage(confFromVoters(id === 4 ? start : [1, 2, 3]));
    members.set(id, { node: new RaftNode(defaultRaftConfig(id, () => 0), storage), storage, applied: [] });
  }
  const leader = members.get(1)!.node;
  leader.campaign();
  pump(members);
  leader.propose(text("before"));
  pump(members);
  leader.proposeConfChange({ transition: "auto", changes: [{ type: "add-learner", nodeId: 4 }] });
  pump(members);
  for (let i = 0; i < 3; i++) {
    leader.tick(); // heartbeats until node 4 caught up
    pump(members);
  }
  const joined = members.get(4)!.node.status();
  assert.deepEqual(joined.conf, { voters: [1, 2, 3], learners: [4], votersOutgoing: [], learnersNext: [], autoLeave: false });
  assert.equal(joined.commit, leader.status().commit);
  assert.deepEqual(members.get(4)!.applied.map(decode).filter((d) => d === "before"), ["before"]);
});

test("limits: uncommitted bytes refuse proposals; committed bytes per Ready split the applying", () => {
  const members = cluster([1, 2, 3], { maxUncommittedBytes: 10, maxCommittedBytesPerReady: 8 });
  const leader = members.get(1)!.node;
  leader.campaign();
  pump(members);
  leader.propose(text("aaaa"));
  leader.propose(text("bbbb"));
  assert.throws(() => leader.propose(text("cccc")), (e: unknown) => e instanceof RaftError && e.code === "PROPOSAL_DROPPED");
  pump(members); // committed and applied: the budget is free again
  leader.propose(text("cccc"));
  leader.propose(text("dddd"));
  // Node 2 persists the four entries and learns they are committed, then applies them 8 bytes
  // (two entries) per Ready.
  const node2 = members.get(2)!;
  pump(members);
  const sizes: number[] = [];
  const restarted = new RaftNode(defaultRaftConfig(2, () => 0, { maxCommittedBytesPerReady: 8 }), node2.storage);
  while (restarted.hasReady()) {
    const ready = restarted.ready();
    sizes.push(ready.committedEntries.length);
    restarted.advance(ready);
  }
  assert.deepEqual(sizes, [3, 2]); // "" + aaaa + bbbb (8 bytes), then cccc + dddd
});

test("the Ready handshake is enforced: one Ready at a time, advanced with itself", () => {
  const members = cluster([1]);
  const node = members.get(1)!.node;
  node.campaign();
  const ready = node.ready();
  assert.equal(node.hasReady(), false);
  assert.throws(() => node.ready(), /before advance/);
  assert.throws(() => node.advance({ ...ready }), /without its ready/);
  node.advance(ready);
  assert.equal(node.hasReady(), true); // the self-vote made it leader: new state to persist
});

test("a node with a committed but unapplied conf change does not campaign until it applied it", () => {
  const storage = MemoryLogStorage.withVoters([1, 2, 3]);
  const change = encodeConfChange({ transition: "auto", changes: [{ type: "add-learner", nodeId: 4 }] });
  storage.append([
    { term: 1, index: 1, type: "normal", data: new Uint8Array() },
    { term: 1, index: 2, type: "conf-change", data: change },
  ]);
  storage.setHardState({ term: 1, vote: 1, commit: 2 });
  const node = new RaftNode(defaultRaftConfig(2, () => 0, { preVote: false }), storage);
  node.campaign();
  assert.equal(node.status().role, "follower");
  const ready = node.ready();
  assert.deepEqual(ready.committedEntries.map((e) => e.index), [1, 2]);
  node.advance(ready);
  assert.deepEqual(node.status().conf.learners, [4]);
  node.campaign();
  assert.equal(node.status().role, "candidate");
});

test("a snapshot restored between ready() and advance() wins over older conf changes being applied", () => {
  const storage = MemoryLogStorage.withVoters([1, 2, 3]);
  const node = new RaftNode(defaultRaftConfig(2, () => 0, { preVote: false }), storage);
  const addLearner = encodeConfChange({ transition: "auto", changes: [{ type: "add-learner", nodeId: 4 }] });
  const base = { from: 1, to: 2, term: 1, logTerm: 0, index: 0, commit: 2, reject: false, rejectHint: 0 };
  node.step({ ...base, type: "append", entries: [{ term: 1, index: 1, type: "normal", data: new Uint8Array() }, { term: 1, index: 2, type: "conf-change", data: addLearner }] });
  let ready = node.ready();
  storage.append(ready.entries);
  node.advance(ready);
  ready = node.ready(); // hands out 1 and 2 (add-learner 4) for applying
  assert.deepEqual(ready.committedEntries.map((e) => e.index), [1, 2]);
  // Meanwhile a snapshot at 5 arrives whose configuration has no learner 4 (removed since).
  const conf = { voters: [1, 2, 3], learners: [5], votersOutgoing: [], learnersNext: [], autoLeave: false };
  node.step({ ...base, type: "snapshot", entries: [], snapshot: { meta: { index: 5, term: 1, conf }, data: new Uint8Array() } });
  node.advance(ready);
  assert.deepEqual(node.status().conf.learners, [5]);
});

test("a live follower reads as heard from in status across CheckQuorum's resets; a silent one stops", () => {
  // ferry status showed a live follower as unhealthy now and then (a CI failure): the leader's
  // CheckQuorum clears recentActive every election timeout, and the follower sets it again only
  // when it answers the next heartbeat.
  const members = cluster([1, 2, 3], { preVote: true, checkQuorum: true });
  const leader = members.get(1)!.node;
  leader.campaign();
  pump(members);
  assert.equal(leader.status().role, "leader");
  let clearedSeen = 0;
  for (let tick = 0; tick < 100; tick++) {
    leader.tick();
    // Look before the heartbeats are answered: right after a reset recentActive is false.
    for (const id of [2, 3]) {
      const progress = leader.status().progress.get(id)!;
      if (!progress.recentActive) clearedSeen++;
      assert.equal(progress.heardRecently, true, `follower ${id} at tick ${tick}`);
    }
    pump(members);
  }
  assert.ok(clearedSeen > 0, "the resets happened (the gap the status bridges)");
  // Follower 3 goes silent: within two election timeouts it no longer reads as heard from.
  members.delete(3);
  for (let tick = 0; tick < 2 * 20 + 2; tick++) {
    leader.tick();
    pump(members);
  }
  assert.equal(leader.status().progress.get(3)!.heardRecently, false);
  assert.equal(leader.status().progress.get(2)!.heardRecently, true);
});

test("a fenced node never campaigns, not even on a transfer, and leads again once unfenced", () => {
  const members = cluster([1, 2, 3], { preVote: true, checkQuorum: true });
  const fenced = members.get(1)!.node;
  fenced.setFenced(true);
  fenced.campaign();
  pump(members);
  assert.notEqual(fenced.status().role, "leader");
  for (let tick = 0; tick < 200; tick++) {
    fenced.tick();
    pump(members);
  }
  assert.equal(fenced.status().role, "follower", "ticks alone never make it campaign");
  members.get(2)!.node.campaign();
  pump(members);
  assert.equal(members.get(2)!.node.status().role, "leader", "a fenced node still votes");
  members.get(2)!.node.transferLeadership(1);
  pump(members);
  for (let tick = 0; tick < 40; tick++) {
    members.get(2)!.node.tick();
    pump(members);
  }
  assert.notEqual(fenced.status().role, "leader", "a transfer to a fenced node does not make it lead");
  fenced.setFenced(false);
  members.get(2)!.node.transferLeadership(1);
  pump(members);
  assert.equal(fenced.status().role, "leader");
});

test("entries persisted while a new leader replaced their suffix are not handed out again", () => {
  // Found by the simulator over the real WAL: the prefix that stayed came back in the next Ready,
  // at or below the commit index by then, and DiskRaftStorage refused it.
  const storage = MemoryLogStorage.withVoters([1, 2, 3]);
  const node = new RaftNode(defaultRaftConfig(2, () => 0, { preVote: false }), storage);
  const entry = (index: number, term: number): Entry => ({ index, term, type: "normal", data: new Uint8Array() });
  const base = { from: 1, to: 2, term: 1, logTerm: 0, index: 0, commit: 0, reject: false, rejectHint: 0 };
  node.step({ ...base, type: "append", entries: [entry(1, 1), entry(2, 1), entry(3, 1)] });
  const persisting = node.ready();
  assert.deepEqual(persisting.entries.map((e) => e.index), [1, 2, 3]);
  // While 1..3 are being persisted, leader 3 of term 2 replaces 2..3 and commits 1.
  node.step({ ...base, from: 3, term: 2, logTerm: 1, index: 1, commit: 1, type: "append", entries: [entry(2, 2)] });
  storage.append(persisting.entries);
  node.advance(persisting);
  const next = node.ready();
  assert.deepEqual(next.entries.map((e) => `${e.index}/t${e.term}`), ["2/t2"]);
  assert.equal(next.hardState?.commit, 1);
});

test("a follower that lost its log (wiped, same id) is probed from its real end and catches up", () => {
  const members = cluster([1, 2, 3], { preVote: false, checkQuorum: false });
  members.get(1)!.node.campaign();
  pump(members);
  const leader = members.get(1)!.node;
  for (const word of ["a", "b", "c"]) leader.propose(text(word));
  pump(members);
  const before = leader.status().progress.get(3)!.match;
  assert.ok(before >= 4);
  // Node 3's disk is wiped: it restarts with an empty log and the initial configuration.
  const storage = MemoryLogStorage.withVoters([1, 2, 3]);
  members.set(3, { node: new RaftNode(defaultRaftConfig(3, () => 0, { preVote: false, checkQuorum: false }), storage), storage, applied: [] });
  for (let tick = 0; tick < 5; tick++) {
    leader.tick();
    pump(members);
  }
  assert.equal(members.get(3)!.storage.lastIndex(), leader.status().lastIndex, "the wiped follower has the whole log again");
  assert.deepEqual(members.get(3)!.applied.filter((e) => e.data.length > 0).map(decode), ["a", "b", "c"]);
});

test("takeCommitted hands out, while a Ready is outstanding, what committed since and this node persisted", () => {
  const members = cluster([1, 2, 3], { preVote: false, checkQuorum: false });
  members.get(1)!.node.campaign();
  pump(members);
  const leader = members.get(1)!;
  assert.deepEqual(leader.node.takeCommitted(), [], "nothing while no Ready is outstanding");
  // Persists a follower's Readies and returns what it answers.
  const follow = (messages: Message[]): Message[] => {
    const out: Message[] = [];
    for (const message of messages) {
      const member = members.get(message.to)!;
      member.node.step(message);
      while (member.node.hasReady()) {
        const ready = member.node.ready();
        member.storage.append(ready.entries);
        if (ready.hardState) member.storage.setHardState(ready.hardState);
        out.push(...ready.messages, ...ready.messagesAfterPersist);
        member.node.advance(ready);
      }
    }
    return out.filter((message) => message.to === 1);
  };
  const persist = (ready: ReturnType<RaftNode["ready"]>): void => {
    leader.storage.append(ready.entries);
    if (ready.hardState) leader.storage.setHardState(ready.hardState);
  };
  leader.node.propose(text("a"));
  const first = leader.node.ready();
  const answersForA = follow(first.messages);
  persist(first);
  leader.node.advance(first);
  leader.node.propose(text("b"));
  const second = leader.node.ready(); // b is being persisted (outstanding); a is not committed yet
  assert.deepEqual(second.committedEntries, []);
  for (const message of answersForA) leader.node.step(message);
  assert.deepEqual(leader.node.takeCommitted().map(decode), ["a"], "a committed meanwhile: apply it now");
  assert.deepEqual(leader.node.takeCommitted(), [], "handed out once");
  // The followers persist b and answer: b commits on their disks, but not yet on the leader's.
  for (const message of follow(second.messages)) leader.node.step(message);
  assert.equal(leader.node.status().commit, 3);
  assert.deepEqual(leader.node.takeCommitted(), [], "never an entry this node has not persisted");
  persist(second);
  leader.node.advance(second);
  const third = leader.node.ready();
  assert.deepEqual(third.committedEntries.map(decode), ["b"], "the next Ready does not hand out a again");
  leader.node.advance(third);
  assert.equal(leader.node.status().applied, 3);
});
