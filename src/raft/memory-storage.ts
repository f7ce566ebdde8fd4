// An in-memory LogStorage (like etcd's MemoryStorage): what the simulator and tests persist into,
// and a reference for the durable storage's semantics.
//
// Invariants: entries are contiguous from snapshot.index + 1; the entry at snapshot.index exists
// only as the snapshot's (index, term). The driver writes here after persisting a Ready (append,
// setHardState, applySnapshot) and when it makes a snapshot of its state machine
// (createSnapshot, compact).

import { assert } from "../util/assert.js";
import { confFromVoters } from "./confchange.js";
import { countWithinBytes } from "./raft-log.js";
import { CompactedError } from "./types.js";
import type { ConfState, Entry, HardState, LogStorage, NodeId, Snapshot } from "./types.js";

export class MemoryLogStorage implements LogStorage {
  private hardState: HardState = { term: 0, vote: 0, commit: 0 };
  private snap: Snapshot;
  // The last compacted entry (index and term only); log[0].index === compacted.index + 1.
  private compacted: { index: number; term: number };
  private log: Entry[] = [];

  // Starts empty with the given configuration: how a brand-new cluster is bootstrapped (every
  // node gets the same initial conf).
  constructor(conf: ConfState) {
    this.snap = { meta: { index: 0, term: 0, conf: cloneConf(conf) }, data: new Uint8Array(0) };
    this.compacted = { index: 0, term: 0 };
  }

  static withVoters(voters: NodeId[], learners: NodeId[] = []): MemoryLogStorage {
    return new MemoryLogStorage(confFromVoters(voters, learners));
  }

  // The configuration is the snapshot's: a node restarting from this storage starts applying
  // after the snapshot (RaftConfig.applied unset).
  initialState(): { hardState: HardState; conf: ConfState } {
    return { hardState: { ...this.hardState }, conf: cloneConf(this.snap.meta.conf) };
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo <= this.compacted.index) throw new CompactedError(`index ${lo} is compacted`);
    assert(hi <= this.lastIndex() + 1, `memory storage: entries [${lo}, ${hi}) beyond last ${this.lastIndex()}`);
    const offset = this.compacted.index + 1;
    const count = countWithinBytes(this.log, lo - offset, hi - offset, maxBytes);
    return this.log.slice(lo - offset, lo - offset + count);
  }

  term(index: number): number {
    if (index < this.compacted.index) throw new CompactedError(`index ${index} is compacted`);
    if (index === this.compacted.index) return this.compacted.term;
    const entry = this.log[index - this.compacted.index - 1];
    assert(entry !== undefined, `memory storage: no entry at ${index} (last ${this.lastIndex()})`);
    return entry.term;
  }

  firstIndex(): number {
    return this.compacted.index + 1;
  }

  lastIndex(): number {
    return this.compacted.index + this.log.length;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  hardStateForTest(): HardState {
    return { ...this.hardState };
  }

  // --- writes, called by the driver after it persisted them ---

  setHardState(hardState: HardState): void {
    this.hardState = { ...hardState };
  }

  // Appends entries; a conflicting suffix from entries[0].index on is replaced.
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = entries[0]!.index;
    assert(first <= this.lastIndex() + 1, `memory storage: gap before ${first} (last ${this.lastIndex()})`);
    // Entries at or below the compaction point are already covered: skip them.
    const skip = Math.max(0, this.compacted.index + 1 - first);
    if (skip >= entries.length) return;
    // Truncate the conflicting suffix in place, then append: no copy of the whole log.
    this.log.length = entries[skip]!.index - this.compacted.index - 1;
    for (let i = skip; i < entries.length; i++) this.log.push(entries[i]!);
  }

  // Replaces the whole log with a snapshot received from the leader.
  applySnapshot(snapshot: Snapshot): void {
    // Older than ours: nothing to do. An equal index is taken: a joining node replaces its empty
    // initial configuration with the cluster's (a snapshot at index 0).
    if (snapshot.meta.index < this.snap.meta.index) return;
    this.snap = { meta: { ...snapshot.meta, conf: cloneConf(snapshot.meta.conf) }, data: snapshot.data };
    this.compacted = { index: snapshot.meta.index, term: snapshot.meta.term };
    this.log = [];
  }

  // Records a snapshot of the state machine at an applied index; compact() then drops entries.
  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    assert(index >= this.snap.meta.index, `memory storage: snapshot ${index} older than ${this.snap.meta.index}`);
    assert(index <= this.lastIndex(), `memory storage: snapshot ${index} beyond last ${this.lastIndex()}`);
    this.snap = { meta: { index, term: this.term(index), conf: cloneConf(conf) }, data };
    return this.snap;
  }

  // Discards entries up to index (which a snapshot must cover, so lagging followers can catch up).
  compact(index: number): void {
    if (index <= this.compacted.index) return;
    assert(index <= this.snap.meta.index, `memory storage: compact ${index} beyond snapshot ${this.snap.meta.index}`);
    const term = this.term(index);
    this.log = this.log.slice(index - this.compacted.index);
    this.compacted = { index, term };
  }
}

function cloneConf(conf: ConfState): ConfState {
  return {
    voters: [...conf.voters],
    learners: [...conf.learners],
    votersOutgoing: [...conf.votersOutgoing],
    learnersNext: [...conf.learnersNext],
    autoLeave: conf.autoLeave,
  };
}
