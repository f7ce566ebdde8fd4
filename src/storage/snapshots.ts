// Snapshot files: the state machine's image at an applied index, with its Raft metadata.
//
// A file is `snapshot-<index>-<term>.snap`:
//   0  magic u32 | 4 version u32 | 8 meta length u32 | 12 CRC32C of the data u32
//   16 data length f64 | 24 CRC32C of bytes [0, 24) and the meta u32 | 28 zero u32
//   32 meta (msgpack: index, term, conf) | data
// It is written under a temporary name, fsynced, renamed and the directory fsynced, so a crash
// leaves either the whole file or none. The newest `retainCount` (default 2) are kept.
// For InstallSnapshot, readSnapshotChunks streams a file's data and SnapshotReceiver writes
// received chunks to a temporary file that becomes a snapshot only once its checksum is verified.
import { crc32c } from "@node-rs/crc32";
import { pack, unpack } from "msgpackr";
import { join } from "node:path";
import type { ConfState, Snapshot, SnapshotMeta } from "../raft/types.js";
import { SnapshotChecksumError, StorageCorruptError } from "./errors.js";
import { assert } from "../util/assert.js";
import { errorCode, type FileHandle, type FileSystem } from "./fs.js";

export const SNAPSHOTS_RETAINED_DEFAULT = 2;
export const SNAPSHOT_CHUNK_BYTES_DEFAULT = 1024 * 1024;
const SNAPSHOT_MAGIC = 0x504e5346; // "FSNP"
const SNAPSHOT_FORMAT_VERSION = 1;
const SNAPSHOT_HEADER_BYTES = 32;
const SNAPSHOT_META_BYTES_MAX = 1024 * 1024;
const TEMPORARY_SUFFIX = ".tmp";

export interface SnapshotInfo {
  meta: SnapshotMeta;
  path: string;
  dataBytes: number;
  checksum: number; // CRC32C of the data
}

export function snapshotFileName(meta: { index: number; term: number }): string {
  return `snapshot-${String(meta.index).padStart(20, "0")}-${String(meta.term).padStart(20, "0")}.snap`;
}

function parseFileName(name: string): { index: number; term: number } | undefined {
  const match = /^snapshot-(\d{20})-(\d{20})\.snap$/.exec(name);
  return match ? { index: Number(match[1]), term: Number(match[2]) } : undefined;
}

function encodeHeader(meta: SnapshotMeta, dataBytes: number, checksum: number): Uint8Array {
  const c = meta.conf;
  const encodedMeta = pack([meta.index, meta.term, [c.voters, c.learners, c.votersOutgoing, c.learnersNext, c.autoLeave]]);
  const header = new Uint8Array(SNAPSHOT_HEADER_BYTES + encodedMeta.length);
  const view = new DataView(header.buffer);
  view.setUint32(0, SNAPSHOT_MAGIC, true);
  view.setUint32(4, SNAPSHOT_FORMAT_VERSION, true);
  view.setUint32(8, encodedMeta.length, true);
  view.setUint32(12, checksum, true);
  view.setFloat64(16, dataBytes, true);
  header.set(encodedMeta, SNAPSHOT_HEADER_BYTES);
  view.setUint32(24, crc32c(header.subarray(SNAPSHOT_HEADER_BYTES), crc32c(header.subarray(0, 24))), true);
  return header;
}

async function readExactly(handle: FileHandle, position: number, length: number): Promise<Uint8Array> {
  const buffer = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const count = await handle.read(buffer.subarray(done), position + done);
    if (count === 0) break;
    done += count;
  }
  if (done !== length) throw new StorageCorruptError(handle.path, position + done, "snapshot file cut short");
  return buffer;
}

async function readHeader(handle: FileHandle): Promise<{ meta: SnapshotMeta; dataBytes: number; checksum: number; dataOffset: number }> {
  const fixed = await readExactly(handle, 0, SNAPSHOT_HEADER_BYTES);
  const view = new DataView(fixed.buffer);
  if (view.getUint32(0, true) !== SNAPSHOT_MAGIC || view.getUint32(4, true) !== SNAPSHOT_FORMAT_VERSION) {
    throw new StorageCorruptError(handle.path, 0, "not a snapshot file (bad magic or version)");
  }
  const metaBytes = view.getUint32(8, true);
  if (metaBytes > SNAPSHOT_META_BYTES_MAX) throw new StorageCorruptError(handle.path, 8, "snapshot metadata length too large");
  const encodedMeta = await readExactly(handle, SNAPSHOT_HEADER_BYTES, metaBytes);
  if (crc32c(encodedMeta, crc32c(fixed.subarray(0, 24))) !== view.getUint32(24, true)) {
    throw new StorageCorruptError(handle.path, 0, "snapshot header checksum mismatch");
  }
  const [index, term, c] = unpack(encodedMeta) as [number, number, [number[], number[], number[], number[], boolean]];
  const conf: ConfState = { voters: c[0], learners: c[1], votersOutgoing: c[2], learnersNext: c[3], autoLeave: c[4] };
  return { meta: { index, term, conf }, dataBytes: view.getFloat64(16, true), checksum: view.getUint32(12, true), dataOffset: SNAPSHOT_HEADER_BYTES + metaBytes };
}

export interface SnapshotStoreOptions {
  retainCount?: number;
  chunkBytes?: number;
}

export class SnapshotStore {
  readonly retainCount: number;
  readonly chunkBytes: number;
  private receiveCount = 0;

  constructor(
    private readonly fs: FileSystem,
    readonly dir: string,
    options: SnapshotStoreOptions = {},
  ) {
    this.retainCount = options.retainCount ?? SNAPSHOTS_RETAINED_DEFAULT;
    this.chunkBytes = options.chunkBytes ?? SNAPSHOT_CHUNK_BYTES_DEFAULT;
    if (!Number.isInteger(this.retainCount) || this.retainCount < 1) throw new RangeError(`snapshot retainCount must be >= 1, got ${this.retainCount}`);
    if (!Number.isInteger(this.chunkBytes) || this.chunkBytes < 1) throw new RangeError(`snapshot chunkBytes must be >= 1, got ${this.chunkBytes}`);
  }

  // Snapshot files present, newest first, by name (headers are read only when loading).
  async list(): Promise<Array<{ index: number; term: number; path: string }>> {
    const found: Array<{ index: number; term: number; path: string }> = [];
    for (const name of await this.fs.readdir(this.dir)) {
      const parsed = parseFileName(name);
      if (parsed) found.push({ ...parsed, path: join(this.dir, name) });
    }
    return found.sort((a, b) => b.index - a.index || b.term - a.term);
  }

  // Removes temporary files a crash left behind.
  async removeTemporaryFiles(): Promise<void> {
    for (const name of await this.fs.readdir(this.dir)) {
      if (name.startsWith("snapshot-") && name.endsWith(TEMPORARY_SUFFIX)) await this.fs.unlink(join(this.dir, name));
    }
  }

  async exists(meta: { index: number; term: number }): Promise<boolean> {
    return this.fs.exists(join(this.dir, snapshotFileName(meta)));
  }

  async save(meta: SnapshotMeta, data: Uint8Array): Promise<SnapshotInfo> {
    const receiver = await this.receive(meta, data.length, crc32c(data));
    try {
      await receiver.write(data);
    } catch (error) {
      await receiver.abort();
      throw error;
    }
    return receiver.finish();
  }

  async info(meta: { index: number; term: number }): Promise<SnapshotInfo> {
    const path = join(this.dir, snapshotFileName(meta));
    const handle = await this.fs.open(path, "read");
    try {
      const header = await readHeader(handle);
      return { meta: header.meta, path, dataBytes: header.dataBytes, checksum: header.checksum };
    } finally {
      await handle.close();
    }
  }

  // A stored snapshot whose data is read from its file when asked for (StoredSnapshot). The header
  // is checked here; the data's checksum when it is read.
  async open(meta: { index: number; term: number }): Promise<StoredSnapshot> {
    const path = join(this.dir, snapshotFileName(meta));
    const handle = await this.fs.open(path, "read");
    try {
      const header = await readHeader(handle);
      return new StoredSnapshot(header.meta, handle, header.dataOffset, header.dataBytes, header.checksum);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  // Reads a whole snapshot, its checksum checked (for tests and tools: a node never holds one whole).
  async load(meta: { index: number; term: number }): Promise<Snapshot> {
    const snapshot = await this.open(meta);
    try {
      return { meta: snapshot.meta, data: snapshot.data };
    } finally {
      await snapshot.close();
    }
  }

  // Opens a stored snapshot after reading all its data once to check its checksum, a chunk at a
  // time (nothing holds the whole data): what a node starting up relies on.
  async openVerified(meta: { index: number; term: number }): Promise<StoredSnapshot> {
    const snapshot = await this.open(meta);
    try {
      for await (const _chunk of snapshot.readChunks(this.chunkBytes));
      return snapshot;
    } catch (error) {
      await snapshot.close();
      throw error;
    }
  }

  // Streams the data of a snapshot in chunks of chunkBytes. The checksum is verified as it goes:
  // a mismatch throws instead of yielding the last chunk, so damage is never sent on.
  async *readChunks(meta: { index: number; term: number }, chunkBytes = this.chunkBytes): AsyncGenerator<Uint8Array> {
    const snapshot = await this.open(meta);
    try {
      yield* snapshot.readChunks(chunkBytes);
    } finally {
      await snapshot.close();
    }
  }

  // Starts receiving a snapshot whose data is dataBytes long with the given CRC32C.
  async receive(meta: SnapshotMeta, dataBytes: number, checksum: number): Promise<SnapshotReceiver> {
    const finalPath = join(this.dir, snapshotFileName(meta));
    // The directory is locked by this process, so a leftover file of the same name is stale.
    const temporaryPath = `${finalPath}.${this.receiveCount++}${TEMPORARY_SUFFIX}`;
    const handle = await this.fs.open(temporaryPath, "create-truncate");
    const header = encodeHeader(meta, dataBytes, checksum);
    try {
      await handle.write(header, 0);
    } catch (error) {
      await handle.close();
      await this.fs.unlink(temporaryPath).catch(() => undefined);
      throw error;
    }
    return new SnapshotReceiver(this.fs, this.dir, handle, temporaryPath, finalPath, { meta, dataBytes, checksum, path: finalPath }, header.length);
  }

  // Starts writing a snapshot made here, whose data is streamed in with write(): its size and
  // checksum are known only at finish(), which writes the header. Nothing holds the whole data.
  async create(meta: SnapshotMeta): Promise<SnapshotWriter> {
    const finalPath = join(this.dir, snapshotFileName(meta));
    const temporaryPath = `${finalPath}.${this.receiveCount++}${TEMPORARY_SUFFIX}`;
    const handle = await this.fs.open(temporaryPath, "create-truncate");
    // The header has the same length whatever the data's size and checksum (fixed-width fields).
    return new SnapshotWriter(this.fs, this.dir, handle, temporaryPath, finalPath, meta, encodeHeader(meta, 0, 0).length);
  }

  // Keeps the newest retainCount snapshots; never removes `keep` (the one the log relies on).
  async prune(keep?: { index: number; term: number }): Promise<void> {
    const all = await this.list();
    for (const [position, file] of all.entries()) {
      if (position < this.retainCount) continue;
      if (keep && file.index === keep.index && file.term === keep.term) continue;
      await this.fs.unlink(file.path).catch((error) => {
        if (errorCode(error) !== "ENOENT") throw error;
      });
    }
  }
}

// A snapshot file being written under a temporary name: install() syncs it and renames it into
// place, abort() removes it. What SnapshotReceiver and SnapshotWriter share.
abstract class TemporarySnapshotFile {
  protected closed = false;

  constructor(
    private readonly fs: FileSystem,
    private readonly dir: string,
    protected readonly handle: FileHandle,
    private readonly temporaryPath: string,
    protected readonly finalPath: string,
    protected readonly dataOffset: number,
  ) {}

  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close().catch(() => undefined);
    await this.fs.unlink(this.temporaryPath).catch(() => undefined);
  }

  // Called once everything is written (closed already set): durable, then visible.
  protected async install(): Promise<void> {
    try {
      await this.handle.datasync();
    } catch (error) {
      await this.handle.close().catch(() => undefined);
      await this.fs.unlink(this.temporaryPath).catch(() => undefined);
      throw error;
    }
    await this.handle.close();
    await this.fs.rename(this.temporaryPath, this.finalPath);
    await this.fs.fsyncDir(this.dir);
  }
}

// Writes a snapshot arriving in chunks. Nothing replaces an existing snapshot until finish()
// has verified the byte count and the checksum of everything received.
export class SnapshotReceiver extends TemporarySnapshotFile {
  private receivedBytes = 0;
  private checksum = 0;

  constructor(fs: FileSystem, dir: string, handle: FileHandle, temporaryPath: string, finalPath: string, readonly expected: SnapshotInfo, dataOffset: number) {
    super(fs, dir, handle, temporaryPath, finalPath, dataOffset);
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.closed) throw new Error("SnapshotReceiver: write after finish or abort");
    if (this.receivedBytes + chunk.length > this.expected.dataBytes) {
      await this.abort();
      throw new SnapshotChecksumError(`snapshot ${this.finalPath}: received more than the announced ${this.expected.dataBytes} bytes`);
    }
    await this.handle.write(chunk, this.dataOffset + this.receivedBytes);
    this.checksum = crc32c(chunk, this.checksum);
    this.receivedBytes += chunk.length;
  }

  async finish(): Promise<SnapshotInfo> {
    if (this.closed) throw new Error("SnapshotReceiver: finish after finish or abort");
    if (this.receivedBytes !== this.expected.dataBytes || this.checksum !== this.expected.checksum) {
      const problem =
        this.receivedBytes !== this.expected.dataBytes
          ? `received ${this.receivedBytes} of ${this.expected.dataBytes} bytes`
          : `checksum ${this.checksum} does not match the announced ${this.expected.checksum}`;
      await this.abort();
      throw new SnapshotChecksumError(`snapshot ${this.finalPath} rejected: ${problem}`);
    }
    this.closed = true;
    await this.install();
    return this.expected;
  }
}

// Writes a snapshot made by this node, chunk by chunk, to a temporary file; finish() writes the
// header with the size and checksum of what was written, syncs and renames it into place.
export class SnapshotWriter extends TemporarySnapshotFile {
  private writtenBytes = 0;
  private checksum = 0;

  constructor(fs: FileSystem, dir: string, handle: FileHandle, temporaryPath: string, finalPath: string, private readonly meta: SnapshotMeta, dataOffset: number) {
    super(fs, dir, handle, temporaryPath, finalPath, dataOffset);
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.closed) throw new Error("SnapshotWriter: write after finish or abort");
    this.checksum = crc32c(chunk, this.checksum);
    const position = this.dataOffset + this.writtenBytes;
    this.writtenBytes += chunk.length;
    await this.handle.write(chunk, position);
  }

  async finish(): Promise<SnapshotInfo> {
    if (this.closed) throw new Error("SnapshotWriter: finish after finish or abort");
    this.closed = true;
    const header = encodeHeader(this.meta, this.writtenBytes, this.checksum);
    assert(header.length === this.dataOffset, "a snapshot header's length does not depend on the data");
    try {
      await this.handle.write(header, 0);
    } catch (error) {
      this.closed = false;
      await this.abort();
      throw error;
    }
    await this.install();
    return { meta: this.meta, path: this.finalPath, dataBytes: this.writtenBytes, checksum: this.checksum };
  }
}

// A snapshot kept on disk rather than in memory: reader() reads it piece by piece
// (synchronously, the checksum checked at the end), readChunks() streams it, and `data` reads it
// whole when it is asked for and no copy read before is still alive. The transport streams it to
// a follower behind the log and the node restores its state from it piece by piece, so a node's
// memory never holds its latest snapshot, whatever its size. keep() hands over a copy already in
// memory (a small one received inline, or saved from memory), used for as long as something else
// holds it.
export class StoredSnapshot implements Snapshot {
  private cached: WeakRef<Uint8Array> | undefined;

  constructor(
    readonly meta: SnapshotMeta,
    private readonly handle: FileHandle,
    private readonly dataOffset: number,
    readonly dataBytes: number,
    readonly checksum: number,
  ) {}

  // Reads the data front to back in pieces of the caller's choosing, from the copy in memory if
  // one is alive, else from the file. finish() checks that everything was read and, for the file,
  // the checksum of what was read.
  reader(): SnapshotReader {
    const cached = this.cached?.deref();
    if (cached !== undefined) return new MemorySnapshotReader(cached);
    let position = 0;
    let checksum = 0;
    const path = this.handle.path;
    return {
      remaining: () => this.dataBytes - position,
      read: (bytes: number): Uint8Array => {
        if (bytes > this.dataBytes - position) throw new StorageCorruptError(path, this.dataOffset + position, `snapshot data ends before a piece of ${bytes} bytes`);
        const piece = new Uint8Array(bytes);
        for (let done = 0; done < bytes; ) {
          const count = this.handle.readSync(piece.subarray(done), this.dataOffset + position + done);
          if (count === 0) throw new StorageCorruptError(path, this.dataOffset + position + done, "snapshot file cut short");
          done += count;
        }
        checksum = crc32c(piece, checksum);
        position += bytes;
        return piece;
      },
      finish: (): void => {
        assert(position === this.dataBytes, "a snapshot reader finishes at the end of the data");
        if (checksum !== this.checksum) throw new StorageCorruptError(path, this.dataOffset, "snapshot data checksum mismatch");
      },
    };
  }

  // The data in chunks of chunkBytes, read from the file as they are asked for. The checksum is
  // checked as it goes: a mismatch throws instead of yielding the last chunk. Once the snapshot is
  // superseded its file is closed, and reading fails.
  async *readChunks(chunkBytes: number): AsyncGenerator<Uint8Array> {
    let checksum = 0;
    for (let done = 0; done < this.dataBytes; ) {
      const chunk = await readExactly(this.handle, this.dataOffset + done, Math.min(chunkBytes, this.dataBytes - done));
      checksum = crc32c(chunk, checksum);
      done += chunk.length;
      if (done === this.dataBytes && checksum !== this.checksum) {
        throw new StorageCorruptError(this.handle.path, this.dataOffset, "snapshot data checksum mismatch");
      }
      yield chunk;
    }
  }

  get data(): Uint8Array {
    const cached = this.cached?.deref();
    if (cached !== undefined) return cached;
    const reader = this.reader();
    const data = reader.read(this.dataBytes);
    reader.finish();
    this.cached = new WeakRef(data);
    return data;
  }

  keep(data: Uint8Array): void {
    assert(data.length === this.dataBytes, "a kept snapshot copy is the stored snapshot's data");
    this.cached = new WeakRef(data);
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

// Sequential, synchronous reads of a snapshot's data (StoredSnapshot.reader, or bytes in memory).
export interface SnapshotReader {
  remaining(): number;
  read(bytes: number): Uint8Array; // the next `bytes` bytes; throws past the end
  finish(): void; // after the last read: throws if the data turned out damaged
}

export class MemorySnapshotReader implements SnapshotReader {
  private position = 0;

  constructor(private readonly data: Uint8Array) {}

  remaining(): number {
    return this.data.length - this.position;
  }

  read(bytes: number): Uint8Array {
    if (bytes > this.remaining()) throw new Error(`snapshot data ends before a piece of ${bytes} bytes`);
    this.position += bytes;
    return this.data.subarray(this.position - bytes, this.position);
  }

  finish(): void {
    assert(this.position === this.data.length, "a snapshot reader finishes at the end of the data");
  }
}

// A snapshot received from the leader and written to its file (DiskRaftStorage.receiveSnapshot):
// persist() adopts the file as it is. Its data is read through the storage's latest snapshot once
// it is adopted (readChunks streams it before that); it never comes whole into memory.
export class ReceivedSnapshot implements Snapshot {
  constructor(
    readonly meta: SnapshotMeta,
    readonly dataBytes: number,
    readonly checksum: number,
    private readonly store: SnapshotStore,
  ) {}

  get data(): Uint8Array {
    throw new Error(`snapshot ${this.meta.index}/${this.meta.term} was received to its file: read it through the storage's snapshot()`);
  }

  readChunks(chunkBytes: number): AsyncGenerator<Uint8Array> {
    return this.store.readChunks(this.meta, chunkBytes);
  }
}
