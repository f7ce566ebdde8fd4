// The broker's OrderedKv on LMDB (lmdb-js): the production state store.
//
// Group commit: the first transaction() opens one LMDB write transaction; later transaction()
// calls join it; it commits synchronously `commitIntervalMs` later (a timer), after
// `groupTransactionsMax` transactions, or before a read view or a flush. Reads (get/scan) always
// see every write so far, committed or not. Why: a commit writes every B-tree page the group
// dirtied, and with many mailboxes each SEND dirties pages of its own mailbox; the longer the
// group, the more SENDs share a page, so the disk writes approach the payload instead of a few
// pages per message. The state machine's durability comes from the Raft WAL, so a longer group
// only means more WAL to replay after a crash (see flushed()).
//
// Durability: commits use NO_SYNC_FLUSH and lmdb-js's overlappingSync (the default on Linux): the
// pages of the last flushed state are kept until the next flush, so a crash (process or machine)
// reopens the database at a consistent, fully flushed transaction. Not off the event loop, though:
// lmdb-js 3.5's mdb_txn_commit ends the transaction and then fdatasyncs on the calling thread
// (the overlap is with the next transaction of another thread, which Ferry does not have), so
// each group commit (every stateCommitMs) blocks the event loop for one fdatasync of the group's
// pages (seen with strace: docs/bench.md "Session 18"). `flushed()` commits the open group and
// resolves when everything committed is on disk: the node reads broker.appliedIndex(), awaits
// kv.flushed(), and may then compact its WAL up to that index. After a crash the state holds some
// applied index <= the last one (stored in the same transactions as the state), and the node
// replays the WAL after it.
//
// A transaction() that throws (a bug) aborts the whole open group, not only itself: the state
// falls back to the last commit, consistently with the applied index stored in it. The broker
// reloads from there; the node should treat it as fatal.
//
// A commit that LMDB itself refuses (lmdb-js 3.5's freelist integrity check fails now and then
// under delete-heavy load: "freelist entry N had bad/duplicate entries") is rolled back by LMDB
// whole, so the same holds. That one is not a bug of ours and need not be fatal: every operation
// throws StoreCommitError until recover(), the failure listener hears of it at once, and the
// node reloads the broker and re-applies the lost group from its WAL (FerryNode.recoverStore).
//
// Keys are byte strings (see src/broker/kv.ts) stored as their bytes, so LMDB's memcmp order is
// the same order. A custom key encoder writes the string straight into lmdb-js's key buffer and
// reads keys back as strings: no Buffer per get/put/delete (that allocation and copy was ~10% of
// an apply). Values are returned as copies (never a reused buffer): VALUE_ENCODER below.
import { open, type RootDatabase } from "lmdb";
import { KEY_END, type KvEntry, type KvReadView, type OrderedKv, StoreCommitError } from "../broker/kv.js";
import { assert } from "../util/assert.js";

// transactionSync flags: abortable (a throw rolls back), commit before returning, don't wait for
// the flush to disk.
const ABORTABLE = 1;
const SYNCHRONOUS_COMMIT = 2;
const NO_SYNC_FLUSH = 0x10000;
const TRANSACTION_FLAGS = ABORTABLE | SYNCHRONOUS_COMMIT | NO_SYNC_FLUSH;
const CLEAR_BATCH = 10_000;
const NO_OVERWRITE = { noOverwrite: true };

export const GROUP_TRANSACTIONS_MAX = 10_000;
const FREE_PAGES_RETAINED = 0; // lmdb-js's maxFreeSpaceToRetain: see the constructor
export const COMMIT_INTERVAL_MS = 100;

export interface LmdbKvOptions {
  path: string;
  // Address space reserved for the map (virtual; the file grows as needed).
  mapSizeBytes?: number;
  // Test-only: skip fsync entirely (a machine crash may lose or corrupt recent writes).
  noSync?: boolean;
  // false: commit every transaction on its own (one commit per apply).
  groupCommit?: boolean;
  groupTransactionsMax?: number;
  commitIntervalMs?: number; // 0: at the end of the event-loop turn
  // Fault injection for tests: an error returned here fails the commit the way LMDB's own refusal
  // does (the group is aborted through lmdb-js, and the store reports StoreCommitError).
  commitFault?: () => Error | undefined;
  // Test-only: lmdb-js's maxFreeSpaceToRetain (default 0 here, see the constructor; lmdb-js's own
  // default, 75,000, brings its freelist failure back: test/storage/lmdb-freelist.test.ts).
  freePagesRetained?: number;
}

// lmdb-js calls writeKey/readKey with its own (Buffer) key buffers. enableNullTermination exists
// only so that lmdb-js uses this encoder instead of treating keys as Buffers; it changes nothing
// for the unnamed root database (LMDB's default memcmp order either way).
const KEY_ENCODER = {
  enableNullTermination(): void {},
  writeKey(key: string, target: Buffer, start: number): number {
    const written = target.write(key, start, "latin1");
    // A truncated write would store a different key: lmdb-js retries on RangeError.
    if (written !== key.length) throw new RangeError("the key does not fit the key buffer");
    return start + written;
  },
  readKey(source: Buffer, start: number, end: number): string {
    return source.toString("latin1", start, end);
  },
};

// Values are written as given (lmdb-js copies them into its write buffer) and read through
// decode, which copies lmdb-js's reused read buffer into a slice of Node's Buffer pool
// (Buffer.allocUnsafe; larger values get a buffer of their own). With "binary" values alone,
// lmdb-js returned every value read as a Uint8Array with a backing store of its own: a malloc, an
// ArrayBuffer for the garbage collector to track and sweep, and a free, for every message record a
// RECEIVE's scan reads. Having a decoder that copies also makes lmdb-js read gets through its fast
// path (into the reused buffer). A pool slice keeps its 8 KiB slab alive while it lives: fine for
// values that are decoded and dropped within an apply or a reply, as every value read here is.
const VALUE_ENCODER = {
  encode(value: Uint8Array): Uint8Array {
    return value;
  },
  decode(bytes: Buffer): Buffer {
    // lmdb-js sets its reused buffer's length property to the value's size (Buffer#copy would
    // take the whole buffer for the source: a view of the value's bytes instead).
    const size = bytes.length;
    const copy = Buffer.allocUnsafe(size);
    copy.set(new Uint8Array(bytes.buffer, bytes.byteOffset, size));
    return copy;
  },
};

// [start, end) in lmdb-js terms. KEY_END (the only non-byte character a key bound may hold) means
// "no upper bound".
function rangeOptions(start: string, end: string, limit: number, reverse: boolean): Record<string, unknown> {
  const open = end === KEY_END;
  assert(open || end < KEY_END, "a scan bound is a byte string or KEY_END");
  let options: Record<string, unknown>;
  if (reverse) {
    options = { end: start, reverse: true, inclusiveEnd: true };
    if (!open) Object.assign(options, { start: end, exclusiveStart: true });
  } else {
    options = { start: start };
    if (!open) options.end = end;
  }
  if (Number.isFinite(limit)) options.limit = limit;
  return options;
}

type Settle = (value: unknown) => unknown;
interface SyncableDatabase {
  sync(callback: (error?: unknown) => void): void;
}

// The options every open of a store's directory uses, the writer's and a reader thread's
// (LmdbReader) alike, as lmdb-js shares one LMDB environment per path within a process. (Typed
// loosely: maxFreeSpaceToRetain is not in lmdb-js's typings.)
function lmdbOptions(options: LmdbKvOptions): Record<string, unknown> {
  return {
    path: options.path,
    keyEncoder: KEY_ENCODER,
    encoding: "binary" as const,
    encoder: VALUE_ENCODER,
    mapSize: options.mapSizeBytes ?? 64 * 1024 * 1024 * 1024,
    noSync: options.noSync ?? false,
    overlappingSync: !(options.noSync ?? false),
    // lmdb-js 3 keeps the free-page list of one write transaction in memory for the next (up to
    // 75,000 pages by default). That carried-over list is where its freelist check finds
    // duplicates ("freelist entry N had bad/duplicate entries", sometimes a segfault instead)
    // after delete-heavy groups: with 0 the list is read from the store by each transaction
    // that needs it. Replays of a failed cluster's applies with moved commit boundaries
    // (docs/node.md "State store commit failures"): 80 of 700 failed with the default, 0 of
    // 1,100 with 0, at no measurable apply cost (bench:apply).
    maxFreeSpaceToRetain: options.freePagesRetained ?? FREE_PAGES_RETAINED,
  };
}

export class LmdbKv implements OrderedKv {
  private readonly db: RootDatabase<Buffer, string>;
  private readonly groupCommit: boolean;
  private readonly groupTransactionsMax: number;
  private readonly commitIntervalMs: number;
  private inTransaction = false;
  // The open group's LMDB transaction: commit / abort it synchronously (see beginGroup).
  private finishGroup: Settle | undefined;
  private abortGroup: Settle | undefined;
  private groupTransactions = 0;
  private groupBytes = 0; // keys and values put, keys deleted, in the open group
  private commitScheduled = false;
  private commitHolds = 0;
  private failure: unknown;
  private beforeCommit: (() => void) | undefined;
  private failureListener: ((error: StoreCommitError) => void) | undefined;
  private readonly commitFault: (() => Error | undefined) | undefined;

  constructor(options: LmdbKvOptions) {
    this.db = open<Buffer, string>(lmdbOptions(options));
    this.groupCommit = options.groupCommit ?? true;
    this.groupTransactionsMax = options.groupTransactionsMax ?? GROUP_TRANSACTIONS_MAX;
    this.commitIntervalMs = options.commitIntervalMs ?? COMMIT_INTERVAL_MS;
    this.commitFault = options.commitFault;
  }

  get(key: string): Uint8Array | undefined {
    this.checkHealthy();
    return this.db.get(key);
  }

  // lmdb-js's reused read buffer (or, for a value too large for it, a buffer of its own), before
  // VALUE_ENCODER's copy: valid until the next read.
  readInPlace<T>(key: string, read: (value: Uint8Array) => T): T | undefined {
    this.checkHealthy();
    const bytes = this.db.getBinaryFast(key);
    // lmdb-js sets the reused buffer's length property to the value's size (see VALUE_ENCODER).
    return bytes === undefined ? undefined : read(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
  }

  scan(start: string, end: string, limit: number, reverse = false): KvEntry[] {
    this.checkHealthy();
    if (limit <= 0 || start >= end) return [];
    const entries: KvEntry[] = [];
    for (const { key, value } of this.db.getRange(rangeOptions(start, end, limit, reverse))) {
      entries.push({ key: key, value });
    }
    return entries;
  }

  put(key: string, value: Uint8Array): void {
    assert(this.inTransaction, "writes happen inside a transaction");
    this.groupBytes += key.length + value.length;
    this.db.putSync(key, value as Buffer);
  }

  // LMDB's MDB_NOOVERWRITE: the insert's own descent finds an existing key.
  putIfAbsent(key: string, value: Uint8Array): boolean {
    assert(this.inTransaction, "writes happen inside a transaction");
    this.groupBytes += key.length + value.length;
    // Typed void, but inside a write transaction lmdb-js returns whether the put happened.
    const stored: unknown = this.db.putSync(key, value as Buffer, NO_OVERWRITE);
    return stored === true;
  }

  delete(key: string): void {
    assert(this.inTransaction, "writes happen inside a transaction");
    this.groupBytes += key.length;
    this.db.removeSync(key);
  }

  transaction<T>(fn: () => T): T {
    this.checkHealthy();
    assert(!this.inTransaction, "transactions do not nest");
    if (this.finishGroup === undefined) this.beginGroup();
    this.inTransaction = true;
    let result: T;
    try {
      result = fn();
    } catch (error) {
      this.abort(error);
      throw error;
    } finally {
      this.inTransaction = false;
    }
    this.groupTransactions++;
    if (!this.groupCommit || this.groupTransactions >= this.groupTransactionsMax) this.commit();
    else this.scheduleCommit();
    return result;
  }

  // The bytes the open group wrote so far (keys and values put, keys deleted): about what its
  // commit will write and sync.
  groupBytesWritten(): number {
    return this.groupBytes;
  }

  setBeforeCommit(hook: (() => void) | undefined): void {
    this.beforeCommit = hook;
  }

  // Commits the open group now (no-op when none is open).
  commit(): void {
    const finish = this.finishGroup;
    if (finish === undefined) return;
    if (this.beforeCommit !== undefined) {
      assert(!this.inTransaction, "a group commits between transactions");
      this.inTransaction = true;
      try {
        this.beforeCommit();
      } catch (error) {
        this.abort(error);
        this.failure = error;
        throw error;
      } finally {
        this.inTransaction = false;
      }
    }
    const fault = this.commitFault?.();
    if (fault !== undefined) {
      this.abort(fault);
      this.commitFailed(fault);
    }
    this.finishGroup = undefined;
    this.abortGroup = undefined;
    this.groupTransactions = 0;
    this.groupBytes = 0;
    try {
      finish(undefined);
    } catch (error) {
      // LMDB aborted the transaction (mdb_txn_commit's failure path): the last commit stands.
      this.commitFailed(error);
    }
  }

  // Whether the store refused a commit and waits for recover().
  get failed(): boolean {
    return this.failure instanceof StoreCommitError;
  }

  // After a StoreCommitError: the store works again, from its last successful commit. Returns
  // false (and changes nothing) when the store is healthy or failed in another way.
  recover(): boolean {
    if (!(this.failure instanceof StoreCommitError)) return false;
    assert(this.finishGroup === undefined, "a failed commit leaves no group open");
    this.failure = undefined;
    return true;
  }

  // `listener` hears of every failed commit when it happens, including those of the timer that
  // commits in the background (whose error would otherwise wait for the next operation).
  setFailureListener(listener: ((error: StoreCommitError) => void) | undefined): void {
    this.failureListener = listener;
  }

  private commitFailed(cause: unknown): never {
    const error = new StoreCommitError(cause);
    this.failure = error;
    this.failureListener?.(error);
    throw error;
  }

  readView(): KvReadView {
    this.checkHealthy();
    this.commit(); // the view must include every write so far
    return readViewOf(this.db);
  }

  // Until the returned function is called, the open group is not committed by its timer (an
  // explicit commit(), readView() or flushed(), or a full group, still commits it): a reader
  // thread that is to see exactly what the last commit holds (the snapshot thread, see
  // src/node/snapshot-thread.ts) opens its read transaction meanwhile.
  holdCommits(): () => void {
    this.commitHolds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.commitHolds--;
    };
  }

  // Whether a holdCommits() is in force.
  commitsHeld(): boolean {
    return this.commitHolds > 0;
  }

  clear(): void {
    assert(this.inTransaction, "clear happens inside a transaction");
    for (;;) {
      const keys = [...this.db.getKeys({ start: "", limit: CLEAR_BATCH })];
      if (keys.length === 0) return;
      for (const key of keys) this.db.removeSync(key);
    }
  }

  // Commits the open group and resolves when everything committed so far is durable on disk.
  async flushed(): Promise<void> {
    this.checkHealthy();
    this.commit();
    await new Promise<void>((resolve, reject) => {
      // env.sync (mdb_env_sync, forced) runs on the libuv pool; not in lmdb-js's typings.
      (this.db as unknown as SyncableDatabase).sync((error?: unknown) => (error ? reject(error) : resolve()));
    });
  }

  async close(): Promise<void> {
    if (this.failure === undefined) await this.flushed();
    await this.db.close();
  }

  // lmdb-js keeps a transactionSync open while its callback's result is pending and settles it
  // through then(): handing it our own thenable lets us commit or abort synchronously, at once.
  private beginGroup(): void {
    this.db.transactionSync(
      () =>
        ({
          // biome-ignore lint/suspicious/noThenProperty: a thenable is exactly what lmdb-js must see here
          then: (fulfilled: Settle, rejected: Settle) => {
            this.finishGroup = fulfilled;
            this.abortGroup = rejected;
          },
        }) as never,
      TRANSACTION_FLAGS as never,
    );
    assert(this.finishGroup !== undefined && this.abortGroup !== undefined, "lmdb-js handed over the open transaction");
  }

  private abort(error: unknown): void {
    const abort = this.abortGroup;
    this.finishGroup = undefined;
    this.abortGroup = undefined;
    this.groupTransactions = 0;
    this.groupBytes = 0;
    try {
      abort?.(error);
    } catch {
      // lmdb-js rethrows the error after aborting; the caller rethrows it anyway.
    }
  }

  private scheduleCommit(): void {
    if (this.commitScheduled) return;
    this.commitScheduled = true;
    const commitLater = (): void => {
      if (this.commitHolds > 0 && this.finishGroup !== undefined) {
        setTimeout(commitLater, Math.max(1, this.commitIntervalMs / 10)).unref();
        return;
      }
      this.commitScheduled = false;
      try {
        this.commit();
      } catch {
        // Kept in this.failure: the next operation throws it.
      }
    };
    if (this.commitIntervalMs === 0) setImmediate(commitLater);
    else setTimeout(commitLater, this.commitIntervalMs).unref();
  }

  private checkHealthy(): void {
    const failure = this.failure;
    if (failure === undefined) return;
    if (failure instanceof StoreCommitError) throw failure;
    throw new Error(`LMDB store failed: ${(failure as Error).message ?? failure}`);
  }
}

// A consistent read of everything committed when it was taken (an LMDB read transaction), until
// release().
function readViewOf(db: RootDatabase<Buffer, string>): KvReadView {
  const transaction = db.useReadTransaction();
  let released = false;
  return {
    get(key: string): Uint8Array | undefined {
      for (const { key: found, value } of db.getRange({ start: key, limit: 1, transaction })) {
        return found === key ? value : undefined;
      }
      return undefined;
    },
    scan(start: string, end: string, limit: number, reverse = false): KvEntry[] {
      if (limit <= 0 || start >= end) return [];
      const entries: KvEntry[] = [];
      for (const { key, value } of db.getRange({ ...rangeOptions(start, end, limit, reverse), transaction })) {
        entries.push({ key: key, value });
      }
      return entries;
    },
    release(): void {
      if (!released) transaction.done();
      released = true;
    },
  };
}

// Read views of a store that an LmdbKv of the same process writes, for another thread (a worker
// thread's own lmdb-js handle on the same LMDB environment). Never writes.
export class LmdbReader {
  private readonly db: RootDatabase<Buffer, string>;

  constructor(options: LmdbKvOptions) {
    this.db = open<Buffer, string>(lmdbOptions(options));
  }

  // What the writer had committed when this is called: lmdb-js hands out a thread's current read
  // transaction until a timer renews it, so it is renewed here first.
  readView(): KvReadView {
    this.db.resetReadTxn();
    return readViewOf(this.db);
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
