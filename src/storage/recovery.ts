// Recovery at open: read every segment in order, verify every record's CRC, rebuild the log
// index, the hard state and the latest snapshot marker.
//
// What is damage and what is a torn write (after etcd's repair.go, made stricter):
// - Only the active (last) segment can hold an unsynced write, because a segment is fsynced
//   before the next is started and a batch never spans segments.
// - In the last segment, a bad record (checksum, length, type, cut short) or a zero header at
//   offset X ends the log there if no later write survived after it: every valid record found
//   further on must belong to the same write (its batch offset <= X). Then the tail is torn: the
//   file is truncated at X and fsynced. A valid record of a later write after X means synced
//   data was damaged: StorageCorruptError.
// - Anywhere else, a bad record is StorageCorruptError, and so is a gap: a missing segment, a
//   header whose first index does not follow the previous segment, an entry past lastIndex + 1.
// - With an fsync policy other than "always" several unsynced writes may be torn in any order, so
//   any damage in the last segment is treated as a torn tail (lenientTail).
import type { HardState } from "../raft/types.js";
import { StorageCorruptError } from "./errors.js";
import { readWholeFile, type FileSystem } from "./fs.js";
import { LogIndex } from "./log-index.js";
import {
  decodeEntryIndexAndTerm,
  decodeHardState,
  decodeSegmentHeader,
  decodeSnapshotMarker,
  RECORD_ALIGNMENT_BYTES,
  RECORD_HEADER_BYTES,
  readRecord,
  RecordType,
  type SnapshotMarker,
} from "./record.js";
import { parseSegmentFileName, type Segment } from "./segments.js";
import { join } from "node:path";

export interface RecoveredLog {
  segments: Segment[];
  index: LogIndex; // previousTerm is NaN when the oldest segment starts by truncating below its header
  hardState: HardState;
  latestMarker: SnapshotMarker | undefined;
  markers: SnapshotMarker[]; // every snapshot marker seen, in log order
  tornTail: { path: string; offsetBytes: number; problem: string } | undefined;
}

interface ReplayState {
  index: LogIndex;
  hardState: HardState;
  latestMarker: SnapshotMarker | undefined;
  markers: SnapshotMarker[];
  segmentsReplayed: number;
  resetSeen: boolean;
}

type Stop = { offsetBytes: number; problem: string | undefined }; // problem undefined: clean end (zeros)

export async function recoverLog(fs: FileSystem, dir: string, lenientTail: boolean): Promise<RecoveredLog> {
  const segments: Segment[] = [];
  try {
    return await recoverSegments(fs, dir, lenientTail, segments);
  } catch (error) {
    for (const segment of segments) await segment.handle.close().catch(() => undefined);
    throw error;
  }
}

async function recoverSegments(fs: FileSystem, dir: string, lenientTail: boolean, segments: Segment[]): Promise<RecoveredLog> {
  const sequences = (await fs.readdir(dir))
    .map((name) => parseSegmentFileName(name))
    .filter((sequence): sequence is number => sequence !== undefined)
    .sort((a, b) => a - b);
  for (let i = 1; i < sequences.length; i++) {
    if (sequences[i] !== sequences[i - 1]! + 1) {
      const missing = join(dir, `${String(sequences[i - 1]! + 1).padStart(16, "0")}.wal`);
      throw new StorageCorruptError(missing, 0, `segment missing: the log jumps from segment ${sequences[i - 1]} to ${sequences[i]}`);
    }
  }
  const state: ReplayState = {
    index: new LogIndex(),
    hardState: { term: 0, vote: 0, commit: 0 },
    latestMarker: undefined,
    markers: [],
    segmentsReplayed: 0,
    resetSeen: false,
  };
  let tornTail: RecoveredLog["tornTail"];
  for (const [position, sequence] of sequences.entries()) {
    const isLast = position === sequences.length - 1;
    const path = join(dir, `${String(sequence).padStart(16, "0")}.wal`);
    const buffer = await readWholeFile(fs, path);
    const stop = replaySegment(state, buffer, path, sequence);
    const endBytes = stop.offsetBytes;
    const damaged = stop.problem !== undefined || !isAllZero(buffer, stop.offsetBytes);
    if (!isLast && stop.problem !== undefined) throw new StorageCorruptError(path, stop.offsetBytes, stop.problem);
    if (isLast && damaged) {
      if (!lenientTail) checkTornTail(buffer, path, stop);
      tornTail = { path, offsetBytes: stop.offsetBytes, problem: stop.problem ?? "data after the end of the log" };
    }
    if (endBytes === 0) {
      // Not even a header survived: a cut that crashed before its first write was synced.
      if (!isLast) throw new StorageCorruptError(path, 0, "segment without a valid header");
      await fs.unlink(path);
      await fs.fsyncDir(dir);
      continue;
    }
    // read-write for all: if an empty last segment is removed, the one before it is appended to.
    const handle = await fs.open(path, "read-write");
    segments.push({ sequence, path, handle, firstIndex: firstIndexOfSegment(buffer), endBytes, synced: true });
    if (isLast && damaged) {
      await handle.truncate(endBytes);
    }
    // What recovery found may be only in the page cache (the process died, not the machine). It
    // becomes durable now, before the node tells anyone it has these entries.
    if (isLast) await handle.datasync();
  }
  return { segments, index: state.index, hardState: state.hardState, latestMarker: state.latestMarker, markers: state.markers, tornTail };
}

function firstIndexOfSegment(buffer: Uint8Array): number {
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  return decodeSegmentHeader(view, RECORD_HEADER_BYTES)!.firstIndex;
}

// Applies the records of one segment; returns where and why reading stopped.
function replaySegment(state: ReplayState, buffer: Uint8Array, path: string, sequence: number): Stop {
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  let offset = 0;
  let batchStart = -1;
  while (offset < buffer.length) {
    const read = readRecord(buffer, view, offset, buffer.length);
    if (read.kind === "zero") return { offsetBytes: offset, problem: undefined };
    if (read.kind === "bad") return { offsetBytes: offset, problem: read.problem };
    // A record either starts a write or continues the one before it; anything else is left
    // over from an older write (the file was not truncated) and ends the log like damage.
    if (read.batchStartBytes !== offset && read.batchStartBytes !== batchStart) {
      return { offsetBytes: offset, problem: "record from an older write" };
    }
    batchStart = read.batchStartBytes;
    if ((offset === 0) !== (read.type === RecordType.segmentHeader)) {
      if (offset === 0) return { offsetBytes: 0, problem: "segment does not start with a header" };
      throw new StorageCorruptError(path, offset, "segment header in the middle of a segment");
    }
    applyRecord(state, read.type, buffer, view, read.payloadStart, read.payloadBytes, path, offset, sequence);
    offset += read.sizeBytes;
  }
  return { offsetBytes: offset, problem: undefined };
}

function applyRecord(
  state: ReplayState,
  type: RecordType,
  buffer: Uint8Array,
  view: DataView,
  at: number,
  payloadBytes: number,
  path: string,
  offset: number,
  sequence: number,
): void {
  const index = state.index;
  switch (type) {
    case RecordType.segmentHeader: {
      const header = decodeSegmentHeader(view, at);
      if (!header) throw new StorageCorruptError(path, offset, "segment header with a wrong magic number or format version");
      if (header.sequence !== sequence) throw new StorageCorruptError(path, offset, `segment header says sequence ${header.sequence}, file name says ${sequence}`);
      if (state.segmentsReplayed === 0) index.reset(header.firstIndex, header.previousTerm);
      else if (header.firstIndex !== index.lastIndex + 1) {
        throw new StorageCorruptError(path, offset, `segment starts at index ${header.firstIndex} but the log before it ends at ${index.lastIndex}`);
      }
      state.segmentsReplayed++;
      return;
    }
    case RecordType.entry: {
      const entry = decodeEntryIndexAndTerm(view, at);
      if (entry.index < index.firstIndex) {
        // Only the oldest segment left after compaction may reach below its header (a suffix
        // truncated right after the cut); the snapshot supplies the term before it (see open).
        if (state.segmentsReplayed !== 1 || state.resetSeen) {
          throw new StorageCorruptError(path, offset, `entry ${entry.index} below the first index ${index.firstIndex}`);
        }
        index.reset(entry.index, Number.NaN);
      }
      if (entry.index > index.lastIndex + 1) throw new StorageCorruptError(path, offset, `entry ${entry.index} leaves a gap after ${index.lastIndex}`);
      index.append(entry.index, entry.term, { segment: sequence, offsetBytes: offset, sizeBytes: RECORD_HEADER_BYTES + payloadBytes });
      return;
    }
    case RecordType.hardState:
      state.hardState = decodeHardState(view, at);
      return;
    case RecordType.snapshotMarker: {
      const marker = decodeSnapshotMarker(buffer, view, at, payloadBytes);
      if (marker.reset) {
        index.reset(marker.index + 1, marker.term);
        state.resetSeen = true;
      }
      state.latestMarker = marker;
      state.markers.push(marker);
      return;
    }
  }
}

// Throws unless the damage at stop is a torn last write: no record of a later write after it.
function checkTornTail(buffer: Uint8Array, path: string, stop: Stop): void {
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const from = stop.offsetBytes;
  for (let offset = from + RECORD_ALIGNMENT_BYTES; offset + RECORD_HEADER_BYTES <= buffer.length; offset += RECORD_ALIGNMENT_BYTES) {
    if (buffer[offset + 8] === 0) continue; // cheap skip: type 0 is never a record
    const read = readRecord(buffer, view, offset, buffer.length);
    if (read.kind === "record" && read.batchStartBytes > from) {
      throw new StorageCorruptError(
        path,
        from,
        `${stop.problem ?? "zeroed record"}, followed by a valid record written later (at offset ${offset}), so this is not a torn final write`,
      );
    }
  }
}

const ZERO_CHUNK = new Uint8Array(64 * 1024);

function isAllZero(buffer: Uint8Array, from: number): boolean {
  for (let at = from; at < buffer.length; at += ZERO_CHUNK.length) {
    const end = Math.min(buffer.length, at + ZERO_CHUNK.length);
    if (Buffer.compare(buffer.subarray(at, end), ZERO_CHUNK.subarray(0, end - at)) !== 0) return false;
  }
  return true;
}
