// DiskRaftStorage: the Raft log on disk. The core reads it through the synchronous LogStorage
// interface; the driver writes each Ready through persist() and learns when it is durable.
//
// Writes: every persist() call is queued; the writer takes everything queued as one batch, encodes
// it into one buffer, does one write and (fsync "always") one fdatasync, then updates the
// in-memory view and resolves the whole batch: group commit. While a batch is on the disk the
// next one accumulates. Reads reflect a persist() once it has resolved, never before.
//
// Reads: the log index (positions and terms of every entry) and the hard state are in memory; the
// most recent entries too (EntryCache, bounded by bytes). An entry evicted from the cache is read
// back synchronously from its segment (readSync): the cold path of a lagging follower only.
//
// After a failed write or fsync the storage refuses everything (StorageFailedError): what reached
// the disk is unknown, so the node must restart and recover from what is really there.
import { performance } from "node:perf_hooks";
import { FerryError } from "../protocol/errors.js";
import {
  CompactedError,
  type ConfState,
  type Entry,
  type HardState,
  type LogStorage,
  type Snapshot,
  type SnapshotMeta,
  type SnapshotSink,
  SnapshotUnavailableError,
} from "../raft/types.js";
import { AssertionError, assert } from "../util/assert.js";
import { ENTRY_CACHE_BYTES_DEFAULT, EntryCache } from "./entry-cache.js";
import { StorageCorruptError, StorageError, StorageFailedError } from "./errors.js";
import type { FileSystem } from "./fs.js";
import type { LogIndex } from "./log-index.js";
import { NodeFileSystem } from "./node-fs.js";
import {
  decodeEntry,
  ENTRY_PAYLOAD_HEADER_BYTES,
  encodeConf,
  entryRecordSizeBytes,
  HARD_STATE_PAYLOAD_BYTES,
  RECORD_HEADER_BYTES,
  readRecord,
  RecordType,
  RecordWriter,
  recordSizeBytes,
  SEGMENT_HEADER_PAYLOAD_BYTES,
  type SnapshotMarker,
  snapshotMarkerSizeBytes,
} from "./record.js";
import { recoverLog } from "./recovery.js";
import { type Preallocation, PREPARED_SEGMENT_FILE_NAME, type Segment, SegmentFiles } from "./segments.js";
import { ReceivedSnapshot, type SnapshotInfo, SnapshotStore, type SnapshotWriter, StoredSnapshot } from "./snapshots.js";

export const SEGMENT_SIZE_BYTES_DEFAULT = 64 * 1024 * 1024;
export const SEGMENT_SIZE_BYTES_MIN = 4 * 1024;
export const SEGMENT_SIZE_BYTES_MAX = 1024 * 1024 * 1024; // offsets are stored as u32
export const ENTRY_SIZE_BYTES_MAX_DEFAULT = 16 * 1024 * 1024;
// Group commit stops adding to a batch past this, so one write's buffer stays bounded.
export const BATCH_SIZE_BYTES_MAX = 32 * 1024 * 1024;
// One synchronous cold read covers at most this many bytes.
const COLD_READ_BYTES_MAX = 4 * 1024 * 1024;

// always: every persist is fdatasynced before it resolves (nothing acknowledged is ever lost).
// intervalMs: resolves after write(); fdatasync every intervalMs (a crash of the machine loses up
//   to that long of acknowledged writes; a crash of the process alone loses nothing).
// never: resolves after write(); only the OS flushes (a machine crash may lose any recent writes).
export type FsyncPolicy = "always" | "never" | { intervalMs: number };

export interface StorageOptions {
  fs?: FileSystem; // default: NodeFileSystem
  fsync?: FsyncPolicy; // default "always"
  segmentSizeBytes?: number; // default 64 MiB
  preallocate?: Preallocation; // how the next segment is preallocated (default "truncate", see segments.ts)
  cacheSizeBytes?: number; // recent entries kept in memory (default 32 MiB)
  entrySizeBytesMax?: number; // largest entry data accepted (default 16 MiB)
  snapshotsRetained?: number; // snapshot files kept (default 2)
  snapshotChunkBytes?: number; // chunk size of readSnapshotChunks (default 1 MiB)
  initialConf?: ConfState; // the configuration of a brand-new node (ignored when the log exists)
}

export interface PersistUpdate {
  hardState?: HardState;
  entries: Entry[];
  snapshot?: Snapshot; // received from the leader: replaces the log up to its index
}

interface InternalUpdate extends PersistUpdate {
  localSnapshot?: Snapshot; // made by this node's state machine: noted, the log is kept
  bootstrapConf?: ConfState; // the configuration of a brand-new node
}

type QueueWork = { kind: "update"; update: InternalUpdate } | { kind: "task"; run: () => Promise<void> };
type QueueItem = QueueWork & { resolve: () => void; reject: (error: unknown) => void };

const EMPTY_CONF: ConfState = { voters: [], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };

function checkPolicy(policy: FsyncPolicy): void {
  if (policy === "always" || policy === "never") return;
  if (typeof policy !== "object" || !Number.isFinite(policy.intervalMs) || policy.intervalMs <= 0) {
    throw new RangeError(`fsync policy must be "always", "never" or { intervalMs > 0 }, got ${JSON.stringify(policy)}`);
  }
}

function checkRange(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${value}`);
}

// What open() found, for the node's log: how long recovery took and whether a torn tail was cut.
export interface RecoveryReport {
  segments: number;
  firstIndex: number;
  lastIndex: number;
  durationMs: number;
  tornTail: { path: string; offsetBytes: number; problem: string } | undefined;
}

export class DiskRaftStorage implements LogStorage {
  recovery: RecoveryReport | undefined;
  private readonly index: LogIndex;
  private readonly cache: EntryCache;
  private hardState: HardState;
  private conf: ConfState;
  // On disk: its data is read when asked for (StoredSnapshot), so memory does not hold it.
  private latestSnapshot: StoredSnapshot | undefined;
  private carryMarker: SnapshotMarker | undefined; // repeated at the start of every segment
  // What the queued (not yet durable) updates will make of the log: persist() checks against it.
  private accepted: { firstIndex: number; lastIndex: number; commit: number };
  private readonly queue: QueueItem[] = [];
  private writing = false;
  private failure: Error | undefined;
  private closed = false;
  private idleWaiters: Array<() => void> = [];
  private syncTimer: ReturnType<typeof setInterval> | undefined;
  private syncQueued = false;

  private constructor(
    private readonly fs: FileSystem,
    readonly dir: string,
    private readonly policy: FsyncPolicy,
    private readonly files: SegmentFiles,
    private readonly snapshots: SnapshotStore,
    private readonly lock: { release(): Promise<void> },
    private readonly segmentSizeBytes: number,
    private readonly entrySizeBytesMax: number,
    recovered: { index: LogIndex; hardState: HardState; latestMarker: SnapshotMarker | undefined; snapshot: StoredSnapshot | undefined },
    cacheSizeBytes: number,
  ) {
    this.index = recovered.index;
    this.cache = new EntryCache(cacheSizeBytes);
    this.cache.clear(this.index.lastIndex + 1);
    this.hardState = recovered.hardState;
    this.latestSnapshot = recovered.snapshot;
    this.conf = recovered.latestMarker?.conf ?? EMPTY_CONF;
    this.carryMarker = recovered.latestMarker ? { ...recovered.latestMarker, reset: false } : undefined;
    this.accepted = { firstIndex: this.index.firstIndex, lastIndex: this.index.lastIndex, commit: this.hardState.commit };
    if (typeof policy === "object") {
      this.syncTimer = setInterval(() => this.queueIntervalSync(), policy.intervalMs);
      this.syncTimer.unref?.();
    }
  }

  // Takes the directory's lock, recovers the log (truncating a torn tail, refusing on damage) and
  // returns storage ready to serve reads and accept writes.
  static async open(dir: string, options: StorageOptions = {}): Promise<DiskRaftStorage> {
    const fs = options.fs ?? new NodeFileSystem();
    const policy = options.fsync ?? "always";
    checkPolicy(policy);
    const segmentSizeBytes = options.segmentSizeBytes ?? SEGMENT_SIZE_BYTES_DEFAULT;
    checkRange("segmentSizeBytes", segmentSizeBytes, SEGMENT_SIZE_BYTES_MIN, SEGMENT_SIZE_BYTES_MAX);
    const cacheSizeBytes = options.cacheSizeBytes ?? ENTRY_CACHE_BYTES_DEFAULT;
    checkRange("cacheSizeBytes", cacheSizeBytes, 0, Number.MAX_SAFE_INTEGER);
    const entrySizeBytesMax = options.entrySizeBytesMax ?? ENTRY_SIZE_BYTES_MAX_DEFAULT;
    checkRange("entrySizeBytesMax", entrySizeBytesMax, 1, 256 * 1024 * 1024 - 64);
    const startedMs = performance.now();
    await fs.mkdir(dir).catch((error: unknown) => {
      throw new StorageFailedError(`could not create the data directory ${dir}`, error);
    });
    const lock = await fs.lock(dir).catch((error: unknown) => {
      throw error instanceof StorageError ? error : new StorageFailedError(`could not lock the data directory ${dir}`, error);
    });
    const files = new SegmentFiles(fs, dir, segmentSizeBytes, options.preallocate ?? "truncate");
    let snapshot: StoredSnapshot | undefined;
    try {
      if (await fs.exists(`${dir}/${PREPARED_SEGMENT_FILE_NAME}`)) await fs.unlink(`${dir}/${PREPARED_SEGMENT_FILE_NAME}`);
      const snapshots = new SnapshotStore(fs, dir, { retainCount: options.snapshotsRetained, chunkBytes: options.snapshotChunkBytes });
      await snapshots.removeTemporaryFiles();
      const recovered = await recoverLog(fs, dir, policy !== "always");
      for (const segment of recovered.segments) files.add(segment);
      snapshot = await chooseSnapshot(snapshots, recovered.markers, recovered.index, dir);
      const storage = new DiskRaftStorage(fs, dir, policy, files, snapshots, lock, segmentSizeBytes, entrySizeBytesMax, { ...recovered, snapshot }, cacheSizeBytes);
      files.prepareNext();
      if (recovered.segments.length === 0) await storage.initialize(options.initialConf);
      storage.recovery = {
        segments: recovered.segments.length,
        firstIndex: storage.firstIndex(),
        lastIndex: storage.lastIndex(),
        durationMs: performance.now() - startedMs,
        tornTail: recovered.tornTail,
      };
      return storage;
    } catch (error) {
      await snapshot?.close().catch(() => undefined);
      await files.close();
      await lock.release();
      // Damage and bugs keep their own errors; an I/O error (EIO, ENOSPC, EACCES) says where it hit.
      if (error instanceof FerryError || error instanceof AssertionError) throw error;
      throw new StorageFailedError(`could not open the write-ahead log in ${dir}`, error);
    }
  }

  // A brand-new log: the first segment, holding the initial configuration when one is given.
  private async initialize(conf: ConfState | undefined): Promise<void> {
    await this.enqueue({ kind: "update", update: { entries: [], bootstrapConf: conf } });
  }

  // Sets the configuration of a brand-new node (equivalent to open's initialConf).
  async bootstrap(conf: ConfState): Promise<void> {
    if (this.index.lastIndex !== 0 || this.latestSnapshot || this.carryMarker) {
      throw new StorageError(`cannot bootstrap ${this.dir}: it already holds a log or a configuration`);
    }
    await this.enqueue({ kind: "update", update: { entries: [], bootstrapConf: conf } });
  }

  // ---- LogStorage (synchronous reads) ----

  initialState(): { hardState: HardState; conf: ConfState } {
    return { hardState: { ...this.hardState }, conf: this.conf };
  }

  firstIndex(): number {
    return this.index.firstIndex;
  }

  lastIndex(): number {
    return this.index.lastIndex;
  }

  term(index: number): number {
    if (index < this.index.firstIndex - 1) throw new CompactedError(`term(${index}): compacted, the log starts at ${this.index.firstIndex}`);
    if (index > this.index.lastIndex) throw new RangeError(`term(${index}): past the last index ${this.index.lastIndex}`);
    return this.index.term(index);
  }

  // The bytes the log holds after `after` (as stored, records included): what a restarted node has
  // applied, or will replay, since its latest snapshot.
  logBytesAfter(after: number): number {
    let bytes = 0;
    for (let index = Math.max(after + 1, this.index.firstIndex); index <= this.index.lastIndex; index++) bytes += this.index.position(index).sizeBytes;
    return bytes;
  }

  snapshot(): StoredSnapshot {
    if (!this.latestSnapshot) throw new SnapshotUnavailableError("no snapshot yet");
    return this.latestSnapshot;
  }

  // Entries [lo, hi): at least one when lo < hi, then as many as keep the sum of their data
  // lengths within maxBytes.
  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo < this.index.firstIndex) throw new CompactedError(`entries(${lo}): compacted, the log starts at ${this.index.firstIndex}`);
    if (hi > this.index.lastIndex + 1 || lo > hi) throw new RangeError(`entries(${lo}, ${hi}): outside [${this.index.firstIndex}, ${this.index.lastIndex + 1}]`);
    const result: Entry[] = [];
    let sizeBytes = 0;
    let next = lo;
    while (next < hi) {
      const cached = this.cache.get(next);
      if (cached) {
        if (result.length > 0 && sizeBytes + cached.data.length > maxBytes) break;
        result.push(cached);
        sizeBytes += cached.data.length;
        next++;
        continue;
      }
      const read = this.readFromDisk(next, Math.min(hi, this.cache.firstIndex > next ? this.cache.firstIndex : hi), maxBytes - sizeBytes);
      for (const entry of read) {
        if (result.length > 0 && sizeBytes + entry.data.length > maxBytes) return result;
        result.push(entry);
        sizeBytes += entry.data.length;
      }
      next += read.length;
    }
    return result;
  }

  // The cold path: reads entries [lo, hi) that are adjacent in one segment with one readSync, at
  // least one and no more bytes than budgetBytes (the caller's maxBytes left) or COLD_READ_BYTES_MAX.
  private readFromDisk(lo: number, hi: number, budgetBytes: number): Entry[] {
    const first = this.index.position(lo);
    const spanBytesMax = Math.min(COLD_READ_BYTES_MAX, Math.max(budgetBytes, 0) + RECORD_HEADER_BYTES + ENTRY_PAYLOAD_HEADER_BYTES);
    let end = first.offsetBytes + first.sizeBytes;
    let last = lo;
    while (last + 1 < hi) {
      const position = this.index.position(last + 1);
      if (position.segment !== first.segment || position.offsetBytes !== recordEnd(end)) break;
      if (position.offsetBytes + position.sizeBytes - first.offsetBytes > spanBytesMax) break;
      end = position.offsetBytes + position.sizeBytes;
      last++;
    }
    const segment = this.files.get(first.segment);
    assert(segment !== undefined, `cold read: segment ${first.segment} of entry ${lo} is not open`);
    const buffer = new Uint8Array(end - first.offsetBytes);
    const count = segment.handle.readSync(buffer, first.offsetBytes);
    const view = new DataView(buffer.buffer);
    const entries: Entry[] = [];
    let offset = 0;
    for (let index = lo; index <= last; index++) {
      const read = readRecord(buffer, view, offset, count);
      if (read.kind !== "record" || read.type !== RecordType.entry) {
        throw new StorageCorruptError(segment.path, first.offsetBytes + offset, `reading entry ${index}: ${read.kind === "bad" ? read.problem : "no entry record"}`);
      }
      const entry = decodeEntry(buffer, view, read.payloadStart, read.payloadBytes, false);
      assert(entry.index === index, `cold read: found entry ${entry.index} where ${index} should be`);
      entries.push(entry);
      offset += read.sizeBytes;
    }
    return entries;
  }

  // ---- Writes ----

  // Persists one Ready's worth. Resolves once durable under the fsync policy.
  persist(update: PersistUpdate): Promise<void> {
    const unusable = this.unusable();
    if (unusable) return Promise.reject(unusable);
    try {
      update = this.accept(update);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.enqueue({ kind: "update", update });
  }

  // Stores a snapshot the state machine made at an applied index, then notes it in the log.
  async saveSnapshot(meta: SnapshotMeta, data: Uint8Array): Promise<void> {
    this.checkSnapshotFits("saveSnapshot", meta);
    await this.snapshots.save(meta, data);
    await this.enqueue({ kind: "update", update: { entries: [], localSnapshot: { meta, data } } });
  }

  // Starts a snapshot the state machine makes at an applied index, streamed to its file chunk by
  // chunk (SnapshotWriter), so that neither the state machine's image nor the file's contents is
  // ever assembled in one piece. Once it is finished, openSnapshot() then adoptSnapshot() make it
  // the latest.
  createSnapshot(meta: SnapshotMeta): Promise<SnapshotWriter> {
    this.checkSnapshotFits("createSnapshot", meta);
    return this.snapshots.create(meta);
  }

  // A stored snapshot as its file (its header checked; its data read and checked when asked for).
  openSnapshot(meta: { index: number; term: number }): Promise<StoredSnapshot> {
    return this.snapshots.open(meta);
  }

  // Makes a snapshot already stored (saveSnapshot, createSnapshot then openSnapshot) the latest and
  // notes it in the log (one that is not newer than the latest is closed). Checks synchronously that it still fits the log: a caller that checked in the same turn
  // knows it will not throw for that.
  adoptSnapshot(snapshot: Snapshot): Promise<void> {
    this.checkSnapshotFits("adoptSnapshot", snapshot.meta);
    return this.enqueue({ kind: "update", update: { entries: [], localSnapshot: snapshot } });
  }

  private checkSnapshotFits(operation: string, meta: SnapshotMeta): void {
    const unusable = this.unusable();
    if (unusable) throw unusable;
    if (meta.index > this.accepted.lastIndex || meta.index < this.index.firstIndex - 1) {
      throw new RangeError(`${operation} at ${meta.index}: outside the log [${this.index.firstIndex - 1}, ${this.accepted.lastIndex}]`);
    }
  }

  // Drops the log before index (index - 1 must be covered by a snapshot). Whole segments whose
  // entries all lie below index are deleted; entries of the segment holding index stay on disk.
  compact(index: number): Promise<void> {
    return this.enqueue({
      kind: "task",
      run: async () => {
        if (index <= this.index.firstIndex) return;
        if (index > this.index.lastIndex + 1) throw new RangeError(`compact(${index}): past the last index ${this.index.lastIndex}`);
        const covered = this.latestSnapshot?.meta.index ?? 0;
        if (index - 1 > covered) throw new RangeError(`compact(${index}): entry ${index - 1} is not covered by a snapshot (latest at ${covered})`);
        this.index.compact(index);
        this.cache.compact(index);
        this.accepted.firstIndex = Math.max(this.accepted.firstIndex, index);
        let removed = false;
        while (this.files.segments.length > 1 && this.files.segments[1]!.firstIndex <= index) {
          await this.files.removeOldest();
          removed = true;
        }
        if (removed) await this.fs.fsyncDir(this.dir);
      },
    });
  }

  // ---- Snapshot streaming (InstallSnapshot) ----

  snapshotInfo(meta: { index: number; term: number }): Promise<SnapshotInfo> {
    return this.snapshots.info(meta);
  }

  readSnapshotChunks(meta: { index: number; term: number }): AsyncIterable<Uint8Array> {
    return this.snapshots.readChunks(meta);
  }

  // A snapshot streamed from the leader, written to its file as its chunks arrive. finish()
  // checks the byte count and the leader's checksum before the file takes its name, and gives a
  // ReceivedSnapshot: a later persist({ snapshot }) of it adopts the file as it is (neither read
  // back nor written again), so the follower's memory never holds the snapshot.
  async receiveSnapshot(meta: SnapshotMeta, dataBytes: number, checksum: number): Promise<SnapshotSink> {
    const receiver = await this.snapshots.receive(meta, dataBytes, checksum);
    return {
      write: (chunk) => receiver.write(chunk),
      finish: async () => {
        await receiver.finish();
        return new ReceivedSnapshot(meta, dataBytes, checksum, this.snapshots);
      },
      abort: () => receiver.abort(),
    };
  }

  // Waits for queued writes, syncs what is not yet synced, releases files and the lock.
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.syncTimer) clearInterval(this.syncTimer);
    await this.waitIdle();
    try {
      const active = this.files.active;
      if (!this.failure && active && !active.synced) await active.handle.datasync();
    } finally {
      await this.latestSnapshot?.close().catch(() => undefined);
      await this.files.close();
      await this.lock.release();
    }
  }

  // ---- The writer ----

  private unusable(): Error | undefined {
    if (this.failure) return this.failure;
    if (this.closed) return new FerryError("SHUTTING_DOWN", `storage ${this.dir} is closed`);
    return undefined;
  }

  // Checks an update against the log as it will be once everything queued is written. Entries
  // below the first index are already covered by a snapshot and are dropped (as MemoryLogStorage
  // does); returns the update to write.
  private accept(update: PersistUpdate): PersistUpdate {
    let { firstIndex, lastIndex } = this.accepted;
    if (update.snapshot) {
      const snapshotIndex = update.snapshot.meta.index;
      assert(snapshotIndex >= this.accepted.commit, `persist: snapshot at ${snapshotIndex} is behind the commit index ${this.accepted.commit}`);
      firstIndex = snapshotIndex + 1;
      lastIndex = snapshotIndex;
    }
    const covered = update.entries.findIndex((entry) => entry.index >= firstIndex);
    if (covered !== 0) update = { ...update, entries: covered === -1 ? [] : update.entries.slice(covered) };
    const entries = update.entries;
    if (entries.length > 0) {
      const first = entries[0]!.index;
      if (first < firstIndex || first > lastIndex + 1) {
        throw new RangeError(`persist: entries start at ${first}, the log holds [${firstIndex}, ${lastIndex}]`);
      }
      assert(first > this.accepted.commit, `persist: entry ${first} would overwrite committed entries (commit ${this.accepted.commit})`);
      for (const [position, entry] of entries.entries()) {
        assert(entry.index === first + position, `persist: entries not contiguous at ${entry.index}`);
        if (entry.data.length > this.entrySizeBytesMax) {
          throw new FerryError("TOO_LARGE", `entry ${entry.index} holds ${entry.data.length} bytes, over entrySizeBytesMax ${this.entrySizeBytesMax}`);
        }
      }
      lastIndex = entries[entries.length - 1]!.index;
    }
    this.accepted = {
      firstIndex,
      lastIndex,
      commit: Math.max(this.accepted.commit, update.hardState?.commit ?? 0, update.snapshot?.meta.index ?? 0),
    };
    return update;
  }

  private enqueue(item: QueueWork): Promise<void> {
    // After close() nothing new starts (a saveSnapshot whose file was still being written ends here).
    const unusable = this.unusable();
    if (unusable) return Promise.reject(unusable);
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ ...item, resolve, reject } as QueueItem);
      if (!this.writing) {
        this.writing = true;
        void this.drain();
      }
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const first = this.queue[0]!;
      if (first.kind === "task") {
        this.queue.shift();
        await first.run().then(first.resolve, first.reject);
        continue;
      }
      const batch = this.takeBatch();
      try {
        if (this.failure) throw this.failure;
        await this.writeBatch(batch.map((item) => item.update));
        for (const item of batch) item.resolve();
      } catch (error) {
        this.fail(error);
        for (const item of batch) item.reject(this.failure);
      }
    }
    this.writing = false;
    for (const waiter of this.idleWaiters.splice(0)) waiter();
  }

  private takeBatch(): Array<QueueItem & { kind: "update" }> {
    const batch: Array<QueueItem & { kind: "update" }> = [];
    let sizeBytes = 0;
    while (this.queue.length > 0 && this.queue[0]!.kind === "update") {
      const item = this.queue[0] as QueueItem & { kind: "update" };
      const itemBytes = item.update.entries.reduce((sum, entry) => sum + entry.data.length, 0);
      if (batch.length > 0 && sizeBytes + itemBytes > BATCH_SIZE_BYTES_MAX) break;
      batch.push(item);
      sizeBytes += itemBytes;
      this.queue.shift();
    }
    return batch;
  }

  private fail(error: unknown): void {
    if (this.failure) return;
    // A failed assertion is a bug and stays one; anything else is the disk's doing.
    this.failure =
      error instanceof StorageError || error instanceof AssertionError ? error : new StorageFailedError(`write-ahead log write failed in ${this.dir}`, error);
    // Everything queued behind the failed batch fails too; it can never become durable.
    for (const item of this.queue.splice(0)) item.reject(this.failure);
  }

  private waitIdle(): Promise<void> {
    if (!this.writing) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private queueIntervalSync(): void {
    const active = this.files.active;
    if (this.syncQueued || this.failure || this.closed || !active || active.synced) return;
    this.syncQueued = true;
    this.enqueue({
      kind: "task",
      run: async () => {
        this.syncQueued = false;
        const segment = this.files.active;
        if (!segment || segment.synced) return;
        try {
          await segment.handle.datasync();
          segment.synced = true;
        } catch (error) {
          this.fail(error);
        }
      },
    }).catch(() => undefined);
  }

  private async writeBatch(updates: InternalUpdate[]): Promise<void> {
    for (const update of updates) {
      const snapshot = update.snapshot;
      if (snapshot && !(await this.snapshots.exists(snapshot.meta))) await this.snapshots.save(snapshot.meta, snapshot.data);
    }
    let sizeBytes = 0;
    for (const update of updates) sizeBytes += updateSizeBytes(update);
    let segment = this.files.active;
    if (sizeBytes === 0 && segment) return; // nothing to write: everything before is durable already
    let carry = false;
    if (!segment || (segment.endBytes + sizeBytes > this.segmentSizeBytes && segment.endBytes > this.carrySizeBytes())) {
      segment = await this.cutSegment(segment);
      carry = true;
      sizeBytes += this.carrySizeBytes();
    }
    const batchStart = segment.endBytes;
    const writer = new RecordWriter(sizeBytes, batchStart);
    if (carry) this.writeCarry(writer, segment);
    const placed: Array<{ update: InternalUpdate; offsets: number[] }> = [];
    for (const update of updates) placed.push({ update, offsets: this.encodeUpdate(writer, update) });
    assert(writer.offsetBytes === sizeBytes, `batch encoded ${writer.offsetBytes} bytes, expected ${sizeBytes}`);
    // "always": one O_DSYNC write, when everything before this batch in the segment is durable
    // already (every batch under "always" is; a new segment is preallocated and synced when cut).
    if (this.policy === "always" && segment.synced) {
      await segment.handle.writeDurable(writer.buffer, batchStart);
    } else {
      await segment.handle.write(writer.buffer, batchStart);
      if (this.policy === "always") {
        await segment.handle.datasync();
        segment.synced = true;
      } else segment.synced = false;
    }
    segment.endBytes += sizeBytes;
    // The snapshots of the batch, as files (data already in memory stays there only while others
    // hold it).
    const stored = new Map<Snapshot, StoredSnapshot>();
    for (const update of updates) {
      for (const snapshot of [update.snapshot, update.localSnapshot]) {
        if (snapshot === undefined || stored.has(snapshot)) continue;
        if (snapshot instanceof StoredSnapshot) {
          stored.set(snapshot, snapshot);
          continue;
        }
        const opened = await this.snapshots.open(snapshot.meta);
        if (!(snapshot instanceof ReceivedSnapshot)) opened.keep(snapshot.data);
        stored.set(snapshot, opened);
      }
    }
    const before = this.latestSnapshot;
    let snapshotChanged = false;
    for (const { update, offsets } of placed) snapshotChanged = this.apply(update, segment, batchStart, offsets, stored) || snapshotChanged;
    for (const opened of new Set([before, ...stored.values()])) {
      if (opened !== undefined && opened !== this.latestSnapshot) await opened.close().catch(() => undefined);
    }
    if (snapshotChanged && this.latestSnapshot) await this.snapshots.prune(this.latestSnapshot.meta);
  }

  // The first records of every segment: its header, then the hard state and the latest snapshot
  // marker, so that the oldest remaining segment alone restores them after compaction.
  private carrySizeBytes(): number {
    let sizeBytes = recordSizeBytes(SEGMENT_HEADER_PAYLOAD_BYTES) + recordSizeBytes(HARD_STATE_PAYLOAD_BYTES);
    if (this.carryMarker) sizeBytes += snapshotMarkerSizeBytes(encodeConf(this.carryMarker.conf));
    return sizeBytes;
  }

  private writeCarry(writer: RecordWriter, segment: Segment): void {
    const previousTerm = this.index.term(this.index.lastIndex);
    writer.segmentHeader({ sequence: segment.sequence, firstIndex: this.index.lastIndex + 1, previousTerm });
    writer.hardState(this.hardState);
    if (this.carryMarker) writer.snapshotMarker(this.carryMarker);
  }

  private async cutSegment(previous: Segment | undefined): Promise<Segment> {
    if (previous && !previous.synced) {
      await previous.handle.datasync();
      previous.synced = true;
    }
    return this.files.cut(this.index.lastIndex + 1);
  }

  // Returns the buffer offset of each entry record. The hard state goes after the entries (as in
  // etcd's WAL): a torn write that keeps a prefix must never keep a commit index beyond the
  // entries it kept (the core refuses to start on commit > lastIndex; found by the simulator).
  private encodeUpdate(writer: RecordWriter, update: InternalUpdate): number[] {
    const snapshot = update.snapshot ?? update.localSnapshot;
    if (snapshot) writer.snapshotMarker({ index: snapshot.meta.index, term: snapshot.meta.term, conf: snapshot.meta.conf, reset: update.snapshot !== undefined });
    if (update.bootstrapConf) writer.snapshotMarker({ index: 0, term: 0, conf: update.bootstrapConf, reset: false });
    const offsets = update.entries.map((entry) => writer.entry(entry));
    if (update.hardState) writer.hardState(update.hardState);
    return offsets;
  }

  // Makes a durable update visible to readers. Returns whether the latest snapshot changed.
  private apply(update: InternalUpdate, segment: Segment, batchStart: number, offsets: number[], stored: Map<Snapshot, StoredSnapshot>): boolean {
    let snapshotChanged = false;
    if (update.snapshot) {
      const meta = update.snapshot.meta;
      this.index.reset(meta.index + 1, meta.term);
      this.cache.clear(meta.index + 1);
      snapshotChanged = this.noteSnapshot(stored.get(update.snapshot)!);
    }
    if (update.localSnapshot) snapshotChanged = this.noteSnapshot(stored.get(update.localSnapshot)!) || snapshotChanged;
    if (update.bootstrapConf) {
      this.conf = update.bootstrapConf;
      this.carryMarker = { index: 0, term: 0, conf: update.bootstrapConf, reset: false };
    }
    if (update.hardState) this.hardState = { ...update.hardState };
    update.entries.forEach((entry, position) => {
      const sizeBytes = RECORD_HEADER_BYTES + ENTRY_PAYLOAD_HEADER_BYTES + entry.data.length;
      this.index.append(entry.index, entry.term, segment.sequence, batchStart + offsets[position]!, sizeBytes);
    });
    this.cache.append(update.entries);
    return snapshotChanged;
  }

  private noteSnapshot(snapshot: StoredSnapshot): boolean {
    if (this.latestSnapshot && this.latestSnapshot.meta.index > snapshot.meta.index) return false;
    this.latestSnapshot = snapshot;
    this.conf = snapshot.meta.conf;
    this.carryMarker = { index: snapshot.meta.index, term: snapshot.meta.term, conf: snapshot.meta.conf, reset: false };
    return true;
  }
}

function recordEnd(endBytes: number): number {
  return (endBytes + 7) & ~7;
}

function updateSizeBytes(update: InternalUpdate): number {
  let sizeBytes = 0;
  const snapshot = update.snapshot ?? update.localSnapshot;
  if (snapshot) sizeBytes += snapshotMarkerSizeBytes(encodeConf(snapshot.meta.conf));
  if (update.bootstrapConf) sizeBytes += snapshotMarkerSizeBytes(encodeConf(update.bootstrapConf));
  if (update.hardState) sizeBytes += recordSizeBytes(HARD_STATE_PAYLOAD_BYTES);
  for (const entry of update.entries) sizeBytes += entryRecordSizeBytes(entry);
  return sizeBytes;
}

// The newest snapshot file the log knows of (a marker names it) whose checksum holds. The log
// must not start after it: entries between it and firstIndex would be lost.
async function chooseSnapshot(snapshots: SnapshotStore, markers: SnapshotMarker[], index: LogIndex, dir: string): Promise<StoredSnapshot | undefined> {
  const known = new Set(markers.filter((marker) => marker.index > 0).map((marker) => `${marker.index}/${marker.term}`));
  let chosen: StoredSnapshot | undefined;
  const problems: string[] = [];
  for (const file of await snapshots.list()) {
    if (!known.has(`${file.index}/${file.term}`)) continue;
    try {
      chosen = await snapshots.openVerified(file); // checked whole, read a chunk at a time
      break;
    } catch (error) {
      if (!(error instanceof StorageCorruptError)) throw error;
      problems.push(error.message);
    }
  }
  const previousTermUnknown = Number.isNaN(index.previousTerm);
  const needed = index.firstIndex - 1;
  if (needed > 0 && (!chosen || chosen.meta.index < needed)) {
    await chosen?.close();
    throw new StorageCorruptError(
      dir,
      0,
      `the log starts at index ${index.firstIndex} but no intact snapshot covers index ${needed}` + (problems.length ? ` (${problems.join("; ")})` : ""),
    );
  }
  if (previousTermUnknown && chosen) {
    if (index.lastIndex >= chosen.meta.index) index.compact(chosen.meta.index + 1);
    else index.reset(chosen.meta.index + 1, chosen.meta.term);
    index.previousTerm = chosen.meta.term;
  }
  return chosen;
}
