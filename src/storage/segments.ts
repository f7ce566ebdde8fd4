// Segment files of the WAL: `<sequence, 16 digits>.wal` in the data directory, consecutive
// sequence numbers, each starting with a segment-header record. Only the newest (active) segment
// is written; a batch never spans two segments, and a segment is fsynced before the next one is
// started, so after a crash only the active segment can hold a torn write.
//
// The next segment is prepared in the background (file_pipeline in etcd): created as
// `next-segment.tmp`, preallocated by writing zeros (Node has no fallocate; real zeros also mean
// fdatasync of an append does not have to persist a new file size or block allocation), and
// fsynced. A cut then costs a rename and a directory fsync.
import { join } from "node:path";
import { StorageFailedError } from "./errors.js";
import type { FileHandle, FileSystem } from "./fs.js";

export const SEGMENT_FILE_SUFFIX = ".wal";
export const PREPARED_SEGMENT_FILE_NAME = "next-segment.tmp";
const PREALLOCATE_CHUNK_BYTES = 1024 * 1024;

export function segmentFileName(sequence: number): string {
  return `${String(sequence).padStart(16, "0")}${SEGMENT_FILE_SUFFIX}`;
}

export function parseSegmentFileName(name: string): number | undefined {
  const match = /^(\d{16})\.wal$/.exec(name);
  return match ? Number(match[1]) : undefined;
}

export interface Segment {
  sequence: number;
  path: string;
  handle: FileHandle;
  firstIndex: number; // from its header
  endBytes: number; // end of the records written (the next write goes here)
  synced: boolean; // false while a write is not yet fdatasynced (fsync policies other than always)
}

type Prepared = { handle: FileHandle } | { error: unknown };

export class SegmentFiles {
  // Oldest first; the last one is the active segment.
  readonly segments: Segment[] = [];
  private readonly bySequence = new Map<number, Segment>();
  private prepared: Promise<Prepared> | undefined;

  constructor(
    private readonly fs: FileSystem,
    private readonly dir: string,
    private readonly segmentSizeBytes: number,
    private readonly preallocate: boolean,
  ) {}

  get active(): Segment | undefined {
    return this.segments[this.segments.length - 1];
  }

  get(sequence: number): Segment | undefined {
    return this.bySequence.get(sequence);
  }

  add(segment: Segment): void {
    this.segments.push(segment);
    this.bySequence.set(segment.sequence, segment);
  }

  // Starts preparing the next file, unless one is ready or on its way. Never rejects: a failure
  // is kept and reported by the cut that needs the file.
  prepareNext(): void {
    if (this.prepared) return;
    this.prepared = this.createPrepared().then(
      (handle) => ({ handle }),
      (error: unknown) => ({ error }),
    );
  }

  private async createPrepared(): Promise<FileHandle> {
    const handle = await this.fs.open(join(this.dir, PREPARED_SEGMENT_FILE_NAME), "create-truncate");
    try {
      if (this.preallocate) {
        const zeros = new Uint8Array(Math.min(PREALLOCATE_CHUNK_BYTES, this.segmentSizeBytes));
        for (let at = 0; at < this.segmentSizeBytes; at += zeros.length) {
          await handle.write(zeros.subarray(0, Math.min(zeros.length, this.segmentSizeBytes - at)), at);
        }
      }
      await handle.datasync();
      return handle;
    } catch (error) {
      await handle.close().catch(() => undefined);
      await this.fs.unlink(join(this.dir, PREPARED_SEGMENT_FILE_NAME)).catch(() => undefined);
      throw error;
    }
  }

  // Makes the prepared file the new active segment (its header is written by the caller, in the
  // same write as the batch that needed the cut). The previous active segment must be synced.
  async cut(firstIndex: number): Promise<Segment> {
    this.prepareNext();
    const prepared = await this.prepared!;
    this.prepared = undefined;
    if ("error" in prepared) {
      throw new StorageFailedError("could not prepare the next WAL segment", prepared.error);
    }
    const sequence = (this.active?.sequence ?? 0) + 1;
    const path = join(this.dir, segmentFileName(sequence));
    await this.fs.rename(join(this.dir, PREPARED_SEGMENT_FILE_NAME), path);
    await this.fs.fsyncDir(this.dir);
    const segment: Segment = { sequence, path, handle: prepared.handle, firstIndex, endBytes: 0, synced: true };
    this.add(segment);
    this.prepareNext();
    return segment;
  }

  // Deletes the oldest segment (never the active one).
  async removeOldest(): Promise<void> {
    const oldest = this.segments[0];
    if (!oldest || oldest === this.active) return;
    this.segments.shift();
    this.bySequence.delete(oldest.sequence);
    await oldest.handle.close().catch(() => undefined);
    await this.fs.unlink(oldest.path);
  }

  async close(): Promise<void> {
    for (const segment of this.segments) await segment.handle.close().catch(() => undefined);
    const prepared = this.prepared;
    this.prepared = undefined;
    if (prepared) {
      const result = await prepared;
      if ("handle" in result) await result.handle.close().catch(() => undefined);
    }
  }
}
