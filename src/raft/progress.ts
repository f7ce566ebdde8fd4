// The leader's view of one follower's log: how far it matches (match), what to send next (next),
// and how fast to send (probe / replicate / snapshot), with a bounded window of appends in flight.
//
// Invariants: 0 <= match < next. In probe state at most one append is outstanding until the
// follower answers (or a heartbeat answer resumes it). In replicate state appends are pipelined
// and next moves optimistically; the Inflights window bounds them by count and bytes. In snapshot
// state nothing is sent until the snapshot is reported done or failed.

import { assert } from "../util/assert.js";
import type { ProgressStatus } from "./types.js";

// A ring of the last indexes of appends in flight and their sizes, freed by acknowledgements.
export class Inflights {
  private readonly indexes: number[] = [];
  private readonly sizes: number[] = [];
  private bytes = 0;

  constructor(
    readonly countMax: number,
    readonly bytesMax: number, // 0 = unlimited
  ) {
    assert(countMax > 0, "inflights: countMax must be positive");
  }

  add(index: number, sizeBytes: number): void {
    assert(!this.full(), "inflights: add to a full window");
    const last = this.indexes[this.indexes.length - 1];
    assert(last === undefined || index > last, "inflights: indexes must increase");
    this.indexes.push(index);
    this.sizes.push(sizeBytes);
    this.bytes += sizeBytes;
  }

  // Frees every append whose last index is <= index (the follower acknowledged them).
  freeLE(index: number): void {
    let freed = 0;
    while (freed < this.indexes.length && this.indexes[freed]! <= index) {
      this.bytes -= this.sizes[freed]!;
      freed++;
    }
    this.indexes.splice(0, freed);
    this.sizes.splice(0, freed);
  }

  // Frees the oldest append (a heartbeat answer shows the follower is alive; see the leader).
  freeFirst(): void {
    if (this.indexes.length > 0) this.freeLE(this.indexes[0]!);
  }

  full(): boolean {
    return this.indexes.length >= this.countMax || (this.bytesMax > 0 && this.bytes >= this.bytesMax);
  }

  count(): number {
    return this.indexes.length;
  }

  sizeBytes(): number {
    return this.bytes;
  }

  reset(): void {
    this.indexes.length = 0;
    this.sizes.length = 0;
    this.bytes = 0;
  }
}

export type ProgressState = "probe" | "replicate" | "snapshot";

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = "probe";
  // Probe state: an append was sent and we wait for its answer (or a heartbeat answer).
  probeSent = false;
  pendingSnapshot = 0; // snapshot state: the index of the snapshot being sent
  recentActive = false; // heard from within the last election timeout (CheckQuorum)
  activeBefore = false; // recentActive at the last CheckQuorum reset (see toStatus)
  readonly inflights: Inflights;

  constructor(
    next: number,
    inflightCountMax: number,
    inflightBytesMax: number,
    public learner: boolean,
  ) {
    this.next = next;
    this.inflights = new Inflights(inflightCountMax, inflightBytesMax);
  }

  private resetState(state: ProgressState): void {
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    // After a snapshot, the follower has at least the snapshot: probe right after it.
    if (this.state === "snapshot") {
      const pending = this.pendingSnapshot;
      this.resetState("probe");
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState("probe");
      this.next = this.match + 1;
    }
  }

  // The follower's log ends at lastIndex, below what it acknowledged before (it lost its data):
  // start over from there, in probe mode.
  forgetMatch(lastIndex: number): void {
    this.match = Math.min(this.match, lastIndex);
    this.resetState("probe");
    this.next = this.match + 1;
  }

  becomeReplicate(): void {
    this.resetState("replicate");
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.resetState("snapshot");
    this.pendingSnapshot = snapshotIndex;
  }

  // The follower acknowledged entries up to index. Returns whether match moved forward.
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  // The follower rejected an append whose previous index was `rejected`; matchHint is where it
  // suggests to probe next. Returns false when the rejection is stale (already handled).
  maybeDecreaseTo(rejected: number, matchHint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false; // an old append, answered after a newer accept
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false; // not an answer to the probe we sent last
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }

  // Records an append of `count` entries (sizeBytes) ending at lastIndex just sent.
  sentEntries(count: number, lastIndex: number, sizeBytes: number): void {
    if (this.state === "replicate") {
      if (count > 0) {
        this.next = lastIndex + 1;
        this.inflights.add(lastIndex, sizeBytes);
      }
    } else if (this.state === "probe") {
      this.probeSent = true;
    } else {
      assert(false, `progress: sending entries in state ${this.state}`);
    }
  }

  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflights.full();
      case "snapshot":
        return true;
    }
  }

  toStatus(): ProgressStatus {
    return {
      match: this.match,
      next: this.next,
      state: this.state,
      recentActive: this.recentActive,
      // CheckQuorum clears recentActive every election timeout; a peer answers the next heartbeat
      // (a few ms later) and sets it again. Status shows the peer heard from within the current or
      // the previous period, so a live peer never reads as unreachable in that gap.
      heardRecently: this.recentActive || this.activeBefore,
      learner: this.learner,
      inflightCount: this.inflights.count(),
      pendingSnapshot: this.pendingSnapshot,
    };
  }
}
