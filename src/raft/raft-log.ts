// The log as the core sees it: persisted entries (LogStorage) followed by unstable ones, plus the
// commit, applying and applied marks.
//
// Invariants: applied <= applying <= committed <= lastIndex. Committed entries are handed out for
// applying only up to what is persisted (persistedLastIndex), so a node never applies an entry a
// crash could make it forget. A committed entry is never truncated.

import { assert } from "../util/assert.js";
import { UnstableLog } from "./log-unstable.js";
import { CompactedError } from "./types.js";
import type { Entry, LogStorage, Snapshot } from "./types.js";

// The size an entry counts for in byte limits (append batching, inflight bytes, Ready limits).
export function entrySizeBytes(entry: Entry): number {
  return entry.data.byteLength;
}

export function entriesSizeBytes(entries: Entry[]): number {
  let total = 0;
  for (const entry of entries) total += entrySizeBytes(entry);
  return total;
}

// Keeps a prefix of entries within maxBytes, but always at least one entry.
export function limitSize(entries: Entry[], maxBytes: number): Entry[] {
  const count = countWithinBytes(entries, 0, entries.length, maxBytes);
  return count === entries.length ? entries : entries.slice(0, count);
}

// How many of source[start, end) fit in maxBytes, given `taken` entries of usedBytes already in
// the batch (a batch holds at least one entry). Stops early, so a small batch of a long log stays
// cheap.
export function countWithinBytes(
  source: Entry[],
  start: number,
  end: number,
  maxBytes: number,
  taken = 0,
  usedBytes = 0,
): number {
  let total = usedBytes;
  let count = 0;
  for (let i = start; i < end; i++) {
    total += entrySizeBytes(source[i]!);
    if (total > maxBytes && count + taken > 0) break;
    count++;
  }
  return count;
}

export class RaftLog {
  readonly unstable: UnstableLog;
  committed: number;
  applying: number; // highest index handed out in a Ready's committedEntries
  applied: number; // highest index the driver confirmed applied (advance)

  constructor(
    readonly storage: LogStorage,
    applied?: number,
  ) {
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    this.unstable = new UnstableLog(last + 1);
    this.committed = first - 1;
    this.applied = Math.max(applied ?? 0, first - 1);
    this.applying = this.applied;
  }

  firstIndex(): number {
    return this.unstable.firstIndex() ?? this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.unstable.lastIndex() ?? this.storage.lastIndex();
  }

  lastTerm(): number {
    const term = this.term(this.lastIndex());
    assert(term !== undefined, "raft log: no term for the last index");
    return term;
  }

  // The term of the entry at index; undefined when it is compacted or beyond the log.
  term(index: number): number | undefined {
    const dummyIndex = this.firstIndex() - 1;
    if (index < dummyIndex || index > this.lastIndex()) return undefined;
    const unstableTerm = this.unstable.term(index);
    if (unstableTerm !== undefined) return unstableTerm;
    try {
      return this.storage.term(index);
    } catch (error) {
      if (error instanceof CompactedError) return undefined;
      throw error;
    }
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  // Whether a log ending at (lastIndex, lastTerm) is at least as up to date as ours (§5.4.1).
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  // The index of the first entry that conflicts with ours (or is new); 0 when all match.
  findConflict(entries: Entry[]): number {
    for (const entry of entries) {
      if (!this.matchTerm(entry.index, entry.term)) return entry.index;
    }
    return 0;
  }

  // The largest index <= index whose term is <= term, and its term (0 when unknown). The leader
  // and follower use it to skip, in one round trip, every entry of a term the other lacks.
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    for (;;) {
      const found = this.term(index);
      if (found === undefined) return { index, term: 0 };
      if (found <= term) return { index, term: found };
      index--;
    }
  }

  // AppendEntries from the leader: returns the last index now known to match, or undefined when
  // the consistency check at (prevIndex, prevTerm) fails.
  maybeAppend(prevIndex: number, prevTerm: number, leaderCommit: number, entries: Entry[]): number | undefined {
    if (!this.matchTerm(prevIndex, prevTerm)) return undefined;
    const lastNewIndex = prevIndex + entries.length;
    const conflict = this.findConflict(entries);
    if (conflict !== 0) {
      assert(conflict > this.committed, `raft log: conflict at ${conflict} <= committed ${this.committed}`);
      this.append(entries.slice(conflict - prevIndex - 1));
    }
    this.commitTo(Math.min(leaderCommit, lastNewIndex));
    return lastNewIndex;
  }

  append(entries: Entry[]): number {
    if (entries.length === 0) return this.lastIndex();
    const after = entries[0]!.index - 1;
    assert(after >= this.committed, `raft log: append after ${after} would overwrite committed ${this.committed}`);
    this.unstable.truncateAndAppend(entries);
    return this.lastIndex();
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    assert(index <= this.lastIndex(), `raft log: commit ${index} beyond last index ${this.lastIndex()}`);
    this.committed = index;
  }

  // The entries [lo, hi), within maxBytes (at least one). Throws CompactedError below firstIndex.
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo >= hi) return [];
    if (lo < this.firstIndex()) throw new CompactedError(`index ${lo} is compacted`);
    assert(hi <= this.lastIndex() + 1, `raft log: slice [${lo}, ${hi}) beyond last ${this.lastIndex()}`);
    const offset = this.unstable.offset;
    let result: Entry[] = [];
    if (lo < offset) {
      result = this.storage.entries(lo, Math.min(hi, offset), maxBytes);
      if (result.length < Math.min(hi, offset) - lo) return result; // size limit reached
    }
    if (hi > offset) {
      const start = Math.max(lo, offset);
      const entries = this.unstable.entries;
      const count = countWithinBytes(entries, start - offset, hi - offset, maxBytes, result.length, entriesSizeBytes(result));
      const fresh = entries.slice(start - offset, start - offset + count);
      result = result.length === 0 ? fresh : [...result, ...fresh];
    }
    return result;
  }

  restore(snapshot: Snapshot): void {
    this.committed = snapshot.meta.index;
    this.unstable.restore(snapshot);
  }

  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }

  // The last index that is durable and belongs to our current log (0 while a snapshot is pending).
  persistedLastIndex(): number {
    if (this.unstable.snapshot !== undefined) return 0;
    return this.unstable.offset - 1;
  }

  nextCommittedEntries(maxBytes: number): Entry[] {
    if (this.unstable.snapshot !== undefined) return [];
    const hi = Math.min(this.committed, this.persistedLastIndex());
    if (this.applying >= hi) return [];
    return this.slice(this.applying + 1, hi + 1, maxBytes);
  }

  hasNextCommittedEntries(): boolean {
    if (this.unstable.snapshot !== undefined) return false;
    return this.applying < Math.min(this.committed, this.persistedLastIndex());
  }

  // Whether an entry between applied and committed matches; reads in pages of pageBytes so a
  // long unapplied stretch on a cold log is not loaded at once, and stops at the first match.
  someCommittedUnapplied(pageBytes: number, predicate: (entry: Entry) => boolean): boolean {
    let next = this.applied + 1;
    while (next <= this.committed) {
      const page = this.slice(next, this.committed + 1, pageBytes);
      if (page.some(predicate)) return true;
      next += page.length;
    }
    return false;
  }

  appliedTo(index: number): void {
    assert(index <= this.committed, `raft log: applied ${index} beyond committed ${this.committed}`);
    this.applied = Math.max(this.applied, index);
    this.applying = Math.max(this.applying, index);
  }
}
