// The WAL record format. Every record is
//
//   0  crc32c  u32  CRC32C of bytes [4, 16 + length): the rest of the header and the payload
//   4  length  u32  payload length in bytes
//   8  type    u8   RecordType (0 is never written, so preallocated zeros never parse as a record)
//   9  zero    u8 + u16
//   12 batch   u32  byte offset in the segment where the write (group-commit batch) holding this
//                   record began; recovery uses it to tell a torn last write from older damage
//   16 payload, then zero padding to a multiple of 8 bytes
//
// Numbers in payloads are little-endian float64 (exact for integers below 2^53), which keeps
// encoding fast and the format simple. Invariant: encode* and decode* are exact inverses.
import { crc32c } from "@node-rs/crc32";
import { pack, unpack } from "msgpackr";
import type { ConfState, Entry, EntryType, HardState } from "../raft/types.js";

export const RECORD_HEADER_BYTES = 16;
export const RECORD_ALIGNMENT_BYTES = 8;
// A bound on one record, so a damaged length field cannot make recovery allocate gigabytes.
export const RECORD_PAYLOAD_BYTES_MAX = 256 * 1024 * 1024;

export const RecordType = {
  segmentHeader: 1,
  entry: 2,
  hardState: 3,
  snapshotMarker: 4,
} as const;
export type RecordType = (typeof RecordType)[keyof typeof RecordType];

const SEGMENT_MAGIC = 0x4c415746; // "FWAL"
export const SEGMENT_FORMAT_VERSION = 1;
export const SEGMENT_HEADER_PAYLOAD_BYTES = 32;
export const ENTRY_PAYLOAD_HEADER_BYTES = 17;
export const HARD_STATE_PAYLOAD_BYTES = 24;

export function recordSizeBytes(payloadBytes: number): number {
  return (RECORD_HEADER_BYTES + payloadBytes + RECORD_ALIGNMENT_BYTES - 1) & ~(RECORD_ALIGNMENT_BYTES - 1);
}

export function entryRecordSizeBytes(entry: Entry): number {
  return recordSizeBytes(ENTRY_PAYLOAD_HEADER_BYTES + entry.data.length);
}

export interface SegmentHeader {
  sequence: number; // the segment's number; consecutive segments have consecutive numbers
  firstIndex: number; // the index the next entry appended in this segment had when it was cut
  previousTerm: number; // the term of entry firstIndex - 1 (0 when none)
}

// A snapshot marker records that the log's history was replaced by a snapshot (reset: an
// InstallSnapshot from the leader), or only notes the latest snapshot and its configuration
// (not reset: a local snapshot, or the carry-forward copy at the start of every segment).
export interface SnapshotMarker {
  index: number;
  term: number;
  conf: ConfState;
  reset: boolean;
}

// Writes records into one preallocated buffer: the unit of one write() call.
export class RecordWriter {
  readonly buffer: Uint8Array;
  private readonly view: DataView;
  offsetBytes = 0;

  constructor(
    capacityBytes: number,
    private readonly batchStartBytes: number, // file offset where buffer will be written
  ) {
    this.buffer = new Uint8Array(capacityBytes);
    this.view = new DataView(this.buffer.buffer);
  }

  // Returns the record's offset within the buffer.
  private begin(type: RecordType, payloadBytes: number): number {
    const start = this.offsetBytes;
    const sizeBytes = recordSizeBytes(payloadBytes);
    if (start + sizeBytes > this.buffer.length) throw new RangeError("RecordWriter: buffer too small");
    this.view.setUint32(start + 4, payloadBytes, true);
    this.buffer[start + 8] = type;
    this.view.setUint32(start + 12, this.batchStartBytes, true);
    return start;
  }

  private finish(start: number, payloadBytes: number): void {
    const end = start + RECORD_HEADER_BYTES + payloadBytes;
    this.view.setUint32(start, crc32c(this.buffer.subarray(start + 4, end)), true);
    this.offsetBytes = start + recordSizeBytes(payloadBytes);
  }

  segmentHeader(header: SegmentHeader): number {
    const start = this.begin(RecordType.segmentHeader, SEGMENT_HEADER_PAYLOAD_BYTES);
    const at = start + RECORD_HEADER_BYTES;
    this.view.setUint32(at, SEGMENT_MAGIC, true);
    this.view.setUint32(at + 4, SEGMENT_FORMAT_VERSION, true);
    this.view.setFloat64(at + 8, header.sequence, true);
    this.view.setFloat64(at + 16, header.firstIndex, true);
    this.view.setFloat64(at + 24, header.previousTerm, true);
    this.finish(start, SEGMENT_HEADER_PAYLOAD_BYTES);
    return start;
  }

  entry(entry: Entry): number {
    const payloadBytes = ENTRY_PAYLOAD_HEADER_BYTES + entry.data.length;
    const start = this.begin(RecordType.entry, payloadBytes);
    const at = start + RECORD_HEADER_BYTES;
    this.view.setFloat64(at, entry.index, true);
    this.view.setFloat64(at + 8, entry.term, true);
    this.buffer[at + 16] = entry.type === "conf-change" ? 1 : 0;
    this.buffer.set(entry.data, at + ENTRY_PAYLOAD_HEADER_BYTES);
    this.finish(start, payloadBytes);
    return start;
  }

  hardState(state: HardState): number {
    const start = this.begin(RecordType.hardState, HARD_STATE_PAYLOAD_BYTES);
    const at = start + RECORD_HEADER_BYTES;
    this.view.setFloat64(at, state.term, true);
    this.view.setFloat64(at + 8, state.vote, true);
    this.view.setFloat64(at + 16, state.commit, true);
    this.finish(start, HARD_STATE_PAYLOAD_BYTES);
    return start;
  }

  snapshotMarker(marker: SnapshotMarker, encodedConf = encodeConf(marker.conf)): number {
    const payloadBytes = 17 + encodedConf.length;
    const start = this.begin(RecordType.snapshotMarker, payloadBytes);
    const at = start + RECORD_HEADER_BYTES;
    this.view.setFloat64(at, marker.index, true);
    this.view.setFloat64(at + 8, marker.term, true);
    this.buffer[at + 16] = marker.reset ? 1 : 0;
    this.buffer.set(encodedConf, at + 17);
    this.finish(start, payloadBytes);
    return start;
  }
}

export function encodeConf(conf: ConfState): Uint8Array {
  return pack([conf.voters, conf.learners, conf.votersOutgoing, conf.learnersNext, conf.autoLeave]);
}

export function snapshotMarkerSizeBytes(encodedConf: Uint8Array): number {
  return recordSizeBytes(17 + encodedConf.length);
}

function decodeConf(bytes: Uint8Array): ConfState {
  const [voters, learners, votersOutgoing, learnersNext, autoLeave] = unpack(bytes) as [number[], number[], number[], number[], boolean];
  return { voters, learners, votersOutgoing, learnersNext, autoLeave };
}

// The outcome of reading the record at an offset.
export type RecordRead =
  | { kind: "record"; type: RecordType; payloadStart: number; payloadBytes: number; batchStartBytes: number; sizeBytes: number }
  | { kind: "zero" } // a zero header: preallocated space, the end of written data
  | { kind: "bad"; problem: string }; // a header or checksum that does not hold, or a record cut short

const KNOWN_TYPES = new Set<number>(Object.values(RecordType));

export function readRecord(buffer: Uint8Array, view: DataView, offset: number, limit: number): RecordRead {
  if (offset + RECORD_HEADER_BYTES > limit) {
    for (let at = offset; at < limit; at++) if (buffer[at] !== 0) return { kind: "bad", problem: "record header cut short" };
    return { kind: "zero" };
  }
  const type = buffer[offset + 8]!;
  if (type === 0) {
    for (let at = offset; at < offset + RECORD_HEADER_BYTES; at++) if (buffer[at] !== 0) return { kind: "bad", problem: "record type 0" };
    return { kind: "zero" };
  }
  const storedCrc = view.getUint32(offset, true);
  const payloadBytes = view.getUint32(offset + 4, true);
  if (!KNOWN_TYPES.has(type)) return { kind: "bad", problem: `unknown record type ${type}` };
  if (payloadBytes > RECORD_PAYLOAD_BYTES_MAX) return { kind: "bad", problem: `record length ${payloadBytes} over the maximum` };
  const payloadStart = offset + RECORD_HEADER_BYTES;
  if (payloadStart + payloadBytes > limit) return { kind: "bad", problem: "record cut short by the end of the file" };
  const actualCrc = crc32c(buffer.subarray(offset + 4, payloadStart + payloadBytes));
  if (actualCrc !== storedCrc) return { kind: "bad", problem: "checksum mismatch" };
  return {
    kind: "record",
    type: type as RecordType,
    payloadStart,
    payloadBytes,
    batchStartBytes: view.getUint32(offset + 12, true),
    sizeBytes: recordSizeBytes(payloadBytes),
  };
}

export function decodeSegmentHeader(view: DataView, at: number): SegmentHeader | undefined {
  if (view.getUint32(at, true) !== SEGMENT_MAGIC || view.getUint32(at + 4, true) !== SEGMENT_FORMAT_VERSION) return undefined;
  return { sequence: view.getFloat64(at + 8, true), firstIndex: view.getFloat64(at + 16, true), previousTerm: view.getFloat64(at + 24, true) };
}

const ENTRY_TYPES: EntryType[] = ["normal", "conf-change"];

export function decodeEntry(buffer: Uint8Array, view: DataView, at: number, payloadBytes: number, copy: boolean): Entry {
  const body = buffer.subarray(at + ENTRY_PAYLOAD_HEADER_BYTES, at + payloadBytes);
  return {
    index: view.getFloat64(at, true),
    term: view.getFloat64(at + 8, true),
    type: ENTRY_TYPES[buffer[at + 16]!] ?? "normal",
    data: copy ? body.slice() : body,
  };
}

export function decodeEntryIndexAndTerm(view: DataView, at: number): { index: number; term: number } {
  return { index: view.getFloat64(at, true), term: view.getFloat64(at + 8, true) };
}

export function decodeHardState(view: DataView, at: number): HardState {
  return { term: view.getFloat64(at, true), vote: view.getFloat64(at + 8, true), commit: view.getFloat64(at + 16, true) };
}

export function decodeSnapshotMarker(buffer: Uint8Array, view: DataView, at: number, payloadBytes: number): SnapshotMarker {
  return {
    index: view.getFloat64(at, true),
    term: view.getFloat64(at + 8, true),
    reset: buffer[at + 16] === 1,
    conf: decodeConf(buffer.subarray(at + 17, at + payloadBytes)),
  };
}
