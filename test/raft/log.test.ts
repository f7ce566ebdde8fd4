import assert from "node:assert/strict";
import { test } from "node:test";
import { UnstableLog } from "../../src/raft/log-unstable.js";
import { MemoryLogStorage } from "../../src/raft/memory-storage.js";
import { RaftLog, limitSize } from "../../src/raft/raft-log.js";
import type { Entry } from "../../src/raft/types.js";
import { CompactedError } from "../../src/raft/types.js";

function entry(term: number, index: number, data = ""): Entry {
  return { term, index, type: "normal", data: new TextEncoder().encode(data) };
}
const terms = (entries: Entry[]) => entries.map((e) => `${e.term}/${e.index}`);

function storageWith(entries: Entry[]): MemoryLogStorage {
  const storage = MemoryLogStorage.withVoters([1, 2, 3]);
  storage.append(entries);
  return storage;
}

test("memory storage: append overwrites a conflicting suffix; compaction keeps the term", () => {
  const storage = storageWith([entry(1, 1), entry(1, 2), entry(1, 3)]);
  storage.append([entry(2, 2), entry(2, 3), entry(2, 4)]);
  assert.deepEqual(terms(storage.entries(1, 5, Infinity)), ["1/1", "2/2", "2/3", "2/4"]);
  storage.createSnapshot(3, storage.initialState().conf, new Uint8Array([9]));
  storage.compact(3);
  assert.deepEqual([storage.firstIndex(), storage.lastIndex(), storage.term(3)], [4, 4, 2]);
  assert.throws(() => storage.term(2), CompactedError);
  assert.throws(() => storage.entries(3, 5, Infinity), CompactedError);
  assert.equal(storage.snapshot().meta.index, 3);
  // Appending entries that are partly compacted keeps only the new part.
  storage.append([entry(2, 3), entry(3, 4), entry(3, 5)]);
  assert.deepEqual(terms(storage.entries(4, 6, Infinity)), ["3/4", "3/5"]);
});

test("memory storage: entries respect maxBytes but return at least one", () => {
  const storage = storageWith([entry(1, 1, "aaaa"), entry(1, 2, "bbbb"), entry(1, 3, "cccc")]);
  assert.deepEqual(terms(storage.entries(1, 4, 8)), ["1/1", "1/2"]);
  assert.deepEqual(terms(storage.entries(1, 4, 1)), ["1/1"]);
  assert.deepEqual(limitSize([], 0), []);
});

test("memory storage: applySnapshot replaces the log", () => {
  const storage = storageWith([entry(1, 1), entry(1, 2)]);
  const conf = { voters: [1, 2], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
  storage.applySnapshot({ meta: { index: 10, term: 4, conf }, data: new Uint8Array() });
  assert.deepEqual([storage.firstIndex(), storage.lastIndex(), storage.term(10)], [11, 10, 4]);
  assert.deepEqual(storage.initialState().conf.voters, [1, 2]);
});

test("unstable log: stableTo only for the term that was persisted", () => {
  const unstable = new UnstableLog(5);
  unstable.truncateAndAppend([entry(1, 5), entry(1, 6), entry(1, 7)]);
  unstable.stableTo(6, 2); // wrong term: a newer append replaced it; keep everything
  assert.equal(unstable.offset, 5);
  unstable.stableTo(6, 1);
  assert.deepEqual([unstable.offset, terms(unstable.entries)], [7, ["1/7"]]);
  // A conflicting append below the offset replaces all unstable entries.
  unstable.truncateAndAppend([entry(2, 6)]);
  assert.deepEqual([unstable.offset, terms(unstable.entries)], [6, ["2/6"]]);
  unstable.truncateAndAppend([entry(2, 7), entry(2, 8)]);
  unstable.truncateAndAppend([entry(3, 8)]);
  assert.deepEqual(terms(unstable.entries), ["2/6", "2/7", "3/8"]);
});

test("raft log: maybeAppend checks consistency and truncates a conflicting tail", () => {
  const log = new RaftLog(storageWith([entry(1, 1), entry(1, 2), entry(2, 3)]));
  assert.equal(log.maybeAppend(3, 1, 0, [entry(3, 4)]), undefined); // term mismatch at 3
  assert.equal(log.maybeAppend(5, 2, 0, []), undefined); // beyond our log
  assert.equal(log.maybeAppend(2, 1, 2, [entry(3, 3), entry(3, 4)]), 4);
  assert.deepEqual(terms(log.slice(1, 5, Infinity)), ["1/1", "1/2", "3/3", "3/4"]);
  assert.equal(log.committed, 2);
  // Entries we already have do not truncate anything (a duplicate or reordered append).
  assert.equal(log.maybeAppend(1, 1, 2, [entry(1, 2)]), 2);
  assert.equal(log.lastIndex(), 4);
  // Commit never goes beyond the last entry the append vouched for.
  log.maybeAppend(1, 1, 10, [entry(1, 2)]);
  assert.equal(log.committed, 2);
  assert.throws(() => log.append([entry(4, 2)]), /overwrite committed/);
});

test("raft log: up-to-date check compares last term, then last index", () => {
  const log = new RaftLog(storageWith([entry(1, 1), entry(2, 2)]));
  assert.equal(log.isUpToDate(2, 2), true);
  assert.equal(log.isUpToDate(1, 2), false);
  assert.equal(log.isUpToDate(1, 3), true);
  assert.equal(log.isUpToDate(9, 1), false);
});

test("raft log: findConflictByTerm skips entries of newer terms", () => {
  const log = new RaftLog(storageWith([entry(1, 1), entry(1, 2), entry(4, 3), entry(4, 4), entry(5, 5)]));
  assert.deepEqual(log.findConflictByTerm(5, 3), { index: 2, term: 1 });
  assert.deepEqual(log.findConflictByTerm(5, 5), { index: 5, term: 5 });
  assert.deepEqual(log.findConflictByTerm(4, 4), { index: 4, term: 4 });
  assert.deepEqual(log.findConflictByTerm(2, 0), { index: 0, term: 0 });
});

test("raft log: committed entries are handed out only up to what is persisted", () => {
  const log = new RaftLog(storageWith([entry(1, 1), entry(1, 2)]));
  log.append([entry(1, 3), entry(1, 4)]);
  log.commitTo(4);
  assert.deepEqual(terms(log.nextCommittedEntries(Infinity)), ["1/1", "1/2"]);
  (log.storage as MemoryLogStorage).append([entry(1, 3), entry(1, 4)]);
  log.unstable.stableTo(4, 1);
  assert.deepEqual(terms(log.nextCommittedEntries(Infinity)), ["1/1", "1/2", "1/3", "1/4"]);
  log.applying = 2;
  assert.deepEqual(terms(log.nextCommittedEntries(Infinity)), ["1/3", "1/4"]);
});

test("raft log: slice spans storage and unstable entries, with a size limit", () => {
  const log = new RaftLog(storageWith([entry(1, 1, "aa"), entry(1, 2, "bb")]));
  log.append([entry(1, 3, "cc"), entry(1, 4, "dd")]);
  assert.deepEqual(terms(log.slice(2, 5, Infinity)), ["1/2", "1/3", "1/4"]);
  assert.deepEqual(terms(log.slice(2, 5, 4)), ["1/2", "1/3"]);
  assert.deepEqual(terms(log.slice(1, 3, 1)), ["1/1"]);
});

test("raft log: looks for unapplied entries page by page and stops at the first match", () => {
  const entries = [entry(1, 1, "aa"), entry(1, 2, "bb"), entry(1, 3, "cc"), entry(1, 4, "dd")];
  const log = new RaftLog(storageWith(entries));
  log.commitTo(4);
  const seen: number[] = [];
  const found = log.someCommittedUnapplied(2, (e) => {
    seen.push(e.index);
    return e.index === 3;
  });
  assert.equal(found, true);
  assert.deepEqual(seen, [1, 2, 3]);
  log.appliedTo(3);
  assert.equal(log.someCommittedUnapplied(2, (e) => e.index === 3), false);
});
