// The broker's OrderedKv on LMDB (lmdb-js): the production state store.
//
// Durability without blocking the event loop: each apply is one synchronous LMDB write
// transaction committed with NO_SYNC_FLUSH, so the commit returns as soon as the transaction is
// visible (later reads see it at once) and does not wait for fsync. lmdb-js's overlappingSync
// (on by default on Linux) flushes committed transactions from a background thread and keeps the
// pages of the last flushed state intact until the next flush, so a crash (process or machine)
// reopens the database at the last *flushed* transaction, consistent, never torn. `flushed()`
// resolves when everything committed before the call is on disk: the node reads
// broker.appliedIndex(), awaits flushed(), and may then compact its WAL up to that index. After a
// crash the state holds some applied index <= the last one, and the node replays the WAL after it.
//
// Keys are byte strings (see src/broker/kv.ts) stored as their bytes, so LMDB's memcmp order is
// the same order. Values are returned as copies (never a reused buffer).
import { open, type RootDatabase } from "lmdb";
import { KEY_END, type KvEntry, type KvReadView, type OrderedKv } from "../broker/kv.js";
import { assert } from "../util/assert.js";

// transactionSync flags: abortable (a throw rolls back), commit before returning, don't wait for
// the flush to disk.
const ABORTABLE = 1;
const SYNCHRONOUS_COMMIT = 2;
const NO_SYNC_FLUSH = 0x10000;
const TRANSACTION_FLAGS = ABORTABLE | SYNCHRONOUS_COMMIT | NO_SYNC_FLUSH;
const CLEAR_BATCH = 10_000;

export interface LmdbKvOptions {
  path: string;
  // Map size grows automatically in lmdb-js; this is the initial size.
  mapSizeBytes?: number;
  // Test-only: skip fsync entirely (a machine crash may lose or corrupt recent writes).
  noSync?: boolean;
}

const toBytes = (key: string): Buffer => Buffer.from(key, "latin1");
const toKey = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");

// [start, end) in lmdb-js terms. KEY_END (the only non-byte character a key bound may hold) means
// "no upper bound".
function rangeOptions(start: string, end: string, limit: number, reverse: boolean): Record<string, unknown> {
  const open = end === KEY_END;
  assert(open || end < KEY_END, "a scan bound is a byte string or KEY_END");
  let options: Record<string, unknown>;
  if (reverse) {
    options = { end: toBytes(start), reverse: true, inclusiveEnd: true };
    if (!open) Object.assign(options, { start: toBytes(end), exclusiveStart: true });
  } else {
    options = { start: toBytes(start) };
    if (!open) options.end = toBytes(end);
  }
  if (Number.isFinite(limit)) options.limit = limit;
  return options;
}

export class LmdbKv implements OrderedKv {
  private readonly db: RootDatabase<Buffer, Buffer>;
  private inTransaction = false;

  constructor(options: LmdbKvOptions) {
    this.db = open<Buffer, Buffer>({
      path: options.path,
      keyEncoding: "binary",
      encoding: "binary",
      mapSize: options.mapSizeBytes ?? 256 * 1024 * 1024,
      noSync: options.noSync ?? false,
      overlappingSync: !(options.noSync ?? false),
    });
  }

  get(key: string): Uint8Array | undefined {
    return this.db.get(toBytes(key));
  }

  scan(start: string, end: string, limit: number, reverse = false): KvEntry[] {
    if (limit <= 0 || start >= end) return [];
    const entries: KvEntry[] = [];
    for (const { key, value } of this.db.getRange(rangeOptions(start, end, limit, reverse))) {
      entries.push({ key: toKey(key), value });
    }
    return entries;
  }

  put(key: string, value: Uint8Array): void {
    assert(this.inTransaction, "writes happen inside a transaction");
    this.db.putSync(toBytes(key), value as Buffer);
  }

  delete(key: string): void {
    assert(this.inTransaction, "writes happen inside a transaction");
    this.db.removeSync(toBytes(key));
  }

  transaction<T>(fn: () => T): T {
    assert(!this.inTransaction, "transactions do not nest");
    this.inTransaction = true;
    try {
      return this.db.transactionSync(fn, TRANSACTION_FLAGS as never);
    } finally {
      this.inTransaction = false;
    }
  }

  readView(): KvReadView {
    const transaction = this.db.useReadTransaction();
    const db = this.db;
    let released = false;
    return {
      get(key: string): Uint8Array | undefined {
        for (const { key: found, value } of db.getRange({ start: toBytes(key), limit: 1, transaction })) {
          return toKey(found) === key ? value : undefined;
        }
        return undefined;
      },
      scan(start: string, end: string, limit: number, reverse = false): KvEntry[] {
        if (limit <= 0 || start >= end) return [];
        const entries: KvEntry[] = [];
        for (const { key, value } of db.getRange({ ...rangeOptions(start, end, limit, reverse), transaction })) {
          entries.push({ key: toKey(key), value });
        }
        return entries;
      },
      release(): void {
        if (!released) transaction.done();
        released = true;
      },
    };
  }

  clear(): void {
    assert(this.inTransaction, "clear happens inside a transaction");
    for (;;) {
      const keys = [...this.db.getKeys({ limit: CLEAR_BATCH })];
      if (keys.length === 0) return;
      for (const key of keys) this.db.removeSync(key);
    }
  }

  // Resolves when every transaction committed before the call is durable on disk.
  async flushed(): Promise<void> {
    await this.db.flushed;
  }

  async close(): Promise<void> {
    await this.db.flushed;
    await this.db.close();
  }
}
