// Property: whatever is written and wherever the machine crashes (the last, unsynced write lost,
// torn or with a flipped bit), every acknowledged persist survives, and the recovered log is a
// state the writes really passed through (nothing after it is garbage).
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { Entry, HardState } from "../../src/raft/types.js";
import { MemoryFileSystem } from "../../src/storage/memory-fs.js";
import { DiskRaftStorage, type StorageOptions } from "../../src/storage/raft-storage.js";
import { CONF } from "./helpers.js";

interface LogState {
  entries: Array<{ term: number; data: string }>; // entries[i] is index i + 1
  hardState: HardState;
}

// One persist: `back` is how far before lastIndex + 1 it starts (a conflicting suffix); awaited
// ones are acknowledged before the next is issued, the others pile up into group commits.
const operation = fc.record({
  back: fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 5 })),
  count: fc.integer({ min: 0, max: 12 }),
  sizeBytes: fc.integer({ min: 0, max: 300 }),
  awaited: fc.boolean(),
});

function seededRandom(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}

function makeEntries(first: number, count: number, term: number, sizeBytes: number, salt: number): Entry[] {
  const made: Entry[] = [];
  for (let i = 0; i < count; i++) {
    const index = first + i;
    const label = `${index}/${term}/${salt}:`;
    made.push({ index, term, type: "normal", data: new TextEncoder().encode(label.padEnd(Math.max(sizeBytes, label.length), "x")) });
  }
  return made;
}

function applyToModel(state: LogState, hardState: HardState, made: Entry[]): LogState {
  const next = { entries: state.entries.slice(), hardState };
  if (made.length > 0) next.entries.length = made[0]!.index - 1;
  for (const e of made) next.entries.push({ term: e.term, data: new TextDecoder().decode(e.data) });
  return next;
}

// The states a crash may leave: any state at or after the last acknowledged one, and any state
// in the middle of an update (a prefix of its entries, the hard state before it: an update's hard
// state is written after its entries, so a torn write never keeps a commit beyond its entries).
function acceptable(states: LogState[], updates: Array<{ hardState: HardState; entries: Entry[] }>, ackedState: number): LogState[] {
  const result: LogState[] = [];
  for (let k = ackedState; k < states.length; k++) {
    result.push(states[k]!);
    const update = updates[k]; // leads from states[k] to states[k + 1]
    if (!update) continue;
    for (let prefix = 0; prefix <= update.entries.length; prefix++) {
      result.push(applyToModel(states[k]!, states[k]!.hardState, update.entries.slice(0, prefix)));
    }
  }
  return result;
}

function recovered(storage: DiskRaftStorage): LogState {
  const found = storage.entries(1, storage.lastIndex() + 1, Number.POSITIVE_INFINITY);
  return { entries: found.map((e) => ({ term: e.term, data: new TextDecoder().decode(e.data) })), hardState: storage.initialState().hardState };
}

// One round: persists on an open storage, then a crash with the last write unsynced.
interface Round {
  operations: Array<{ back: number; count: number; sizeBytes: number; awaited: boolean }>;
  lastWrite: "drop" | "tear" | "flip";
  seed: number;
}

const round = fc.record({
  operations: fc.array(operation, { minLength: 1, maxLength: 20 }),
  lastWrite: fc.constantFrom("drop" as const, "tear" as const, "flip" as const),
  seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
});

// Runs one round from the recovered state `start`; returns the state recovered after its crash
// and the file system of the next boot.
async function runRound(
  fs: MemoryFileSystem,
  options: StorageOptions,
  start: LogState,
  startTerm: number,
  r: Round,
  salt: number,
): Promise<{ state: LogState; fs: MemoryFileSystem }> {
  const storage = await DiskRaftStorage.open("/data", { ...options, fs });
  assert.deepEqual(recovered(storage), start, "reopening without a crash changes nothing");
  const states: LogState[] = [start];
  const updates: Array<{ hardState: HardState; entries: Entry[] }> = [];
  let acked = 0; // states[acked] is durable
  let term = startTerm;
  for (const [position, op] of r.operations.entries()) {
    const last = states[states.length - 1]!;
    if (position === r.operations.length - 1) fs.holdSyncs(); // the final write is never synced
    const first = Math.max(1, last.entries.length + 1 - op.back);
    if (op.back > 0) term++;
    const made = makeEntries(first, op.count, term, op.sizeBytes, salt + position);
    const hardState = { term, vote: 1, commit: 0 };
    updates.push({ hardState, entries: made });
    states.push(applyToModel(last, hardState, made));
    const stateNumber = states.length - 1;
    const done = storage.persist({ hardState, entries: made }).then(
      () => {
        acked = Math.max(acked, stateNumber);
      },
      () => undefined,
    );
    if (op.awaited && position !== r.operations.length - 1) await done;
  }
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
  const ackedState = acked;
  const rebooted = fs.crash({ lastWrite: r.lastWrite, random: seededRandom(r.seed) });
  const reopened = await DiskRaftStorage.open("/data", { ...options, fs: rebooted });
  const got = recovered(reopened);
  await reopened.close();
  const match = acceptable(states, updates, ackedState).some((candidate) => {
    try {
      assert.deepEqual(got, candidate);
      return true;
    } catch {
      return false;
    }
  });
  assert.ok(match, `recovered ${JSON.stringify(got)} is none of the states at or after acknowledged state ${ackedState}`);
  // The dead storage fails instead of hanging, and cannot touch the rebooted disk.
  await storage.close().catch(() => undefined);
  return { state: got, fs: rebooted };
}

test("crash at any point, several times: acknowledged writes survive, nothing after them is garbage", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(round, { minLength: 1, maxLength: 3 }),
      fc.constantFrom("truncate" as const, "zeros" as const, "none" as const),
      async (rounds, preallocate) => {
        let fs = new MemoryFileSystem();
        const options: StorageOptions = { initialConf: CONF, segmentSizeBytes: 4096, preallocate };
        let state: LogState = { entries: [], hardState: { term: 0, vote: 0, commit: 0 } };
        for (const [number, r] of rounds.entries()) {
          // Terms only grow across rounds, so a round's entries never repeat an earlier round's.
          ({ state, fs } = await runRound(fs, options, state, 1 + number * 100, r, number * 1000));
        }
        // The recovered log keeps working.
        const storage = await DiskRaftStorage.open("/data", { ...options, fs });
        await storage.persist({ entries: makeEntries(storage.lastIndex() + 1, 3, 1000, 10, 99) });
        assert.equal(storage.lastIndex(), state.entries.length + 3);
        await storage.close();
      },
    ),
    { numRuns: 120 },
  );
});
