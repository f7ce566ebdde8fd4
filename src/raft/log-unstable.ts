// Entries (and at most one snapshot) this node has accepted but the driver has not yet persisted.
//
// Invariants: entries are contiguous from `offset`; when a snapshot is pending, offset equals
// snapshot.index + 1. Entries leave only when the driver confirms they are durable (stableTo),
// and only if the entry at that index still has the term that was persisted (a conflicting
// append may have replaced it meanwhile).

import type { Entry, Snapshot } from "./types.js";

export class UnstableLog {
  snapshot: Snapshot | undefined;
  entries: Entry[] = [];
  offset: number; // index of entries[0]

  constructor(offset: number) {
    this.offset = offset;
  }

  firstIndex(): number | undefined {
    return this.snapshot === undefined ? undefined : this.snapshot.meta.index + 1;
  }

  lastIndex(): number | undefined {
    if (this.entries.length > 0) return this.offset + this.entries.length - 1;
    return this.snapshot?.meta.index;
  }

  term(index: number): number | undefined {
    if (index < this.offset) {
      if (this.snapshot !== undefined && this.snapshot.meta.index === index) return this.snapshot.meta.term;
      return undefined;
    }
    const last = this.lastIndex();
    if (last === undefined || index > last) return undefined;
    return this.entries[index - this.offset]!.term;
  }

  // The driver persisted entries up to index (whose term was `term`).
  stableTo(index: number, term: number): void {
    const found = this.term(index);
    if (found === undefined || found !== term) return; // replaced meanwhile: keep the new ones
    if (index < this.offset) return; // only the snapshot matched; handled by stableSnapshotTo
    this.entries = this.entries.slice(index + 1 - this.offset);
    this.offset = index + 1;
  }

  stableSnapshotTo(index: number): void {
    if (this.snapshot !== undefined && this.snapshot.meta.index === index) this.snapshot = undefined;
  }

  restore(snapshot: Snapshot): void {
    this.offset = snapshot.meta.index + 1;
    this.entries = [];
    this.snapshot = snapshot;
  }

  // Appends entries, replacing any suffix from entries[0].index on.
  truncateAndAppend(entries: Entry[]): void {
    const first = entries[0]!.index;
    const end = this.offset + this.entries.length;
    if (first === end) {
      for (const entry of entries) this.entries.push(entry);
    } else if (first <= this.offset) {
      // The new entries replace everything unstable (the driver will overwrite storage too).
      this.offset = first;
      this.entries = [...entries];
    } else {
      this.entries = [...this.entries.slice(0, first - this.offset), ...entries];
    }
  }
}
