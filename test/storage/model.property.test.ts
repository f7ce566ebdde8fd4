// Property: under any sequence of appends (with conflicting suffixes), hard states, local and
// received snapshots, compactions and clean restarts, DiskRaftStorage answers every read exactly
// as a simple in-memory model does — from the cache or, when evicted, from the segment files.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { ConfState, Entry, HardState } from "../../src/raft/types.js";
import { MemoryFileSystem } from "../../src/storage/memory-fs.js";
import { DiskRaftStorage, type StorageOptions } from "../../src/storage/raft-storage.js";
import { CONF } from "./helpers.js";

class Model {
  firstIndex = 1;
  previousTerm = 0;
  log: Entry[] = []; // log[i] has index firstIndex + i
  hardState: HardState = { term: 0, vote: 0, commit: 0 };
  snapshot: { index: number; term: number; conf: ConfState; data: number[] } | undefined;
  term = 1;

  get lastIndex(): number {
    return this.firstIndex + this.log.length - 1;
  }

  termAt(index: number): number {
    return index === this.firstIndex - 1 ? this.previousTerm : this.log[index - this.firstIndex]!.term;
  }
}

const step = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant("append" as const), back: fc.nat(6), count: fc.integer({ min: 1, max: 15 }), sizeBytes: fc.nat(200) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("commit" as const), fraction: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("save-snapshot" as const), fraction: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("compact" as const), fraction: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("install" as const), ahead: fc.integer({ min: 1, max: 30 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("restart" as const) }) },
);

function check(storage: DiskRaftStorage, model: Model): void {
  assert.equal(storage.lastIndex(), model.lastIndex);
  const first = storage.firstIndex();
  // After a restart the storage may keep more than the model (whole segments): never less.
  assert.ok(first <= model.firstIndex, `firstIndex ${first} > model ${model.firstIndex}`);
  assert.deepEqual(storage.initialState().hardState, model.hardState);
  assert.equal(storage.term(model.firstIndex - 1), model.previousTerm);
  const got = storage.entries(model.firstIndex, model.lastIndex + 1, Number.POSITIVE_INFINITY);
  assert.deepEqual(
    got.map((e) => [e.index, e.term, Buffer.from(e.data).toString("hex")]),
    model.log.map((e) => [e.index, e.term, Buffer.from(e.data).toString("hex")]),
  );
  if (model.snapshot) {
    assert.equal(storage.snapshot().meta.index, model.snapshot.index);
    assert.deepEqual([...storage.snapshot().data], model.snapshot.data);
  }
}

test("reads always match an in-memory model, across compactions, snapshots and restarts", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 40 }), fc.integer({ min: 0, max: 3000 }), async (steps, cacheSizeBytes) => {
      const fs = new MemoryFileSystem();
      const options: StorageOptions = { fs, initialConf: CONF, segmentSizeBytes: 4096, cacheSizeBytes, preallocate: "none" };
      let storage = await DiskRaftStorage.open("/data", options);
      const model = new Model();
      for (const [position, s] of steps.entries()) {
        if (s.kind === "append") {
          const first = Math.max(model.hardState.commit + 1, model.firstIndex, model.lastIndex + 1 - s.back);
          if (first <= model.lastIndex) model.term++;
          const made: Entry[] = [];
          for (let i = 0; i < s.count; i++) {
            made.push({ index: first + i, term: model.term, type: i % 5 === 4 ? "conf-change" : "normal", data: new Uint8Array(s.sizeBytes).fill((first + i + position) & 0xff) });
          }
          model.hardState = { ...model.hardState, term: model.term };
          await storage.persist({ hardState: model.hardState, entries: made });
          model.log.length = first - model.firstIndex;
          model.log.push(...made);
        } else if (s.kind === "commit") {
          const commit = Math.max(model.hardState.commit, Math.floor(model.hardState.commit + (model.lastIndex - model.hardState.commit) * s.fraction));
          model.hardState = { ...model.hardState, commit };
          await storage.persist({ hardState: model.hardState, entries: [] });
        } else if (s.kind === "save-snapshot") {
          const low = Math.max(model.firstIndex - 1, model.snapshot?.index ?? 0);
          const index = Math.floor(low + (model.hardState.commit - low) * s.fraction);
          if (index <= 0 || index < low || index > model.hardState.commit) continue;
          const data = [index & 0xff, position];
          await storage.saveSnapshot({ index, term: model.termAt(index), conf: CONF }, new Uint8Array(data));
          model.snapshot = { index, term: model.termAt(index), conf: CONF, data };
        } else if (s.kind === "compact") {
          if (!model.snapshot) continue;
          const index = Math.floor(model.firstIndex + (model.snapshot.index + 1 - model.firstIndex) * s.fraction);
          if (index <= model.firstIndex) continue;
          await storage.compact(index);
          model.previousTerm = model.termAt(index - 1);
          model.log = model.log.slice(index - model.firstIndex);
          model.firstIndex = index;
        } else if (s.kind === "install") {
          const index = model.lastIndex + s.ahead;
          model.term++;
          const data = [index & 0xff, position, 7];
          model.hardState = { term: model.term, vote: 0, commit: index };
          await storage.persist({ hardState: model.hardState, entries: [], snapshot: { meta: { index, term: model.term, conf: CONF }, data: new Uint8Array(data) } });
          model.snapshot = { index, term: model.term, conf: CONF, data };
          model.firstIndex = index + 1;
          model.previousTerm = model.term;
          model.log = [];
        } else {
          await storage.close();
          storage = await DiskRaftStorage.open("/data", options);
        }
        check(storage, model);
      }
      await storage.close();
      storage = await DiskRaftStorage.open("/data", options);
      check(storage, model);
      await storage.close();
    }),
    { numRuns: 120 },
  );
});
