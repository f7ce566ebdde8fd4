// The broker's snapshot stream: every KV entry in key order, in chunks, ending with a checksum.
//
//   chunk 0:   "FERRYSN1" u8 version, f64 applied index
//   chunk 1..: u32 entry count, then per entry: u32 key length, key bytes, u32 value length, value
//   last:      u32 0xffffffff (end mark), u32 CRC-32C of every byte of all chunks before this one
// A reader rejects a stream with a bad header, a truncated entry or a checksum mismatch.
import { assert } from "../util/assert.js";
import { ByteReader, ByteWriter } from "./bytes.js";
import { crc32c } from "./checksum.js";
import { bytesToKey, KEY_END, type KvReadView, keyToBytes } from "./kv.js";

const MAGIC = "FERRYSN1";
const SNAPSHOT_VERSION = 1;
const END_MARK = 0xffffffff;
const CHUNK_ENTRIES_MAX = 1024;
// A chunk ends after the entry that takes it past this size: message records hold bodies of up
// to bodyBytesMax (1 MiB by default) each, so CHUNK_ENTRIES_MAX of them could make a chunk of a
// gigabyte, held in memory while it is written.
const CHUNK_BYTES_TARGET = 1024 * 1024;
const SCAN_ENTRIES = 64; // entries read at a time (each read holds its values in memory)

export class SnapshotError extends Error {
  override name = "SnapshotError";
}

export function* writeSnapshot(view: KvReadView, index: number): Generator<Uint8Array> {
  try {
    let crc = 0;
    const header = new ByteWriter(32);
    for (let i = 0; i < MAGIC.length; i++) header.u8(MAGIC.charCodeAt(i));
    header.u8(SNAPSHOT_VERSION);
    header.f64(index);
    const first = header.finish();
    crc = crc32c(first, crc);
    yield first;
    let start = "";
    for (let done = false; !done; ) {
      const writer = new ByteWriter(64 * 1024);
      writer.u32(0); // the count, written when known
      let count = 0;
      while (count < CHUNK_ENTRIES_MAX && writer.length < CHUNK_BYTES_TARGET) {
        const entries = view.scan(start, KEY_END, Math.min(SCAN_ENTRIES, CHUNK_ENTRIES_MAX - count));
        for (const entry of entries) {
          writer.bytes(keyToBytes(entry.key));
          writer.bytes(entry.value);
          start = `${entry.key}\x00`;
          count++;
          if (writer.length >= CHUNK_BYTES_TARGET) break;
        }
        if (entries.length === 0) {
          done = true;
          break;
        }
      }
      if (count === 0) break;
      const chunk = writer.finish();
      new DataView(chunk.buffer, chunk.byteOffset, 4).setUint32(0, count, true);
      crc = crc32c(chunk, crc);
      yield chunk;
    }
    const trailer = new ByteWriter(8);
    trailer.u32(END_MARK);
    trailer.u32(crc);
    yield trailer.finish();
  } finally {
    view.release();
  }
}

// Feeds each entry to `put` in order, pausing after each chunk it read, and returns the applied
// index; throws SnapshotError on any damage (Broker.restore runs it in one transaction, so a bad
// stream changes nothing; Broker.restoring checks the format and writes the applied index last).
export function* readSnapshotSteps(chunks: Iterable<Uint8Array>, put: (key: string, value: Uint8Array) => void): Generator<void, number, undefined> {
  let crc = 0;
  let index: number | undefined;
  let ended = false;
  for (const chunk of chunks) {
    if (ended) throw new SnapshotError("data after the end of the snapshot");
    try {
      const reader = new ByteReader(chunk);
      if (index === undefined) {
        const magic = bytesToKey(reader.raw(MAGIC.length));
        if (magic !== MAGIC || reader.u8() !== SNAPSHOT_VERSION) throw new SnapshotError("not a Ferry broker snapshot");
        index = reader.f64();
      } else {
        const count = reader.u32();
        if (count === END_MARK) {
          const expected = reader.u32();
          if (expected !== crc) throw new SnapshotError(`snapshot checksum mismatch (${expected} != ${crc})`);
          ended = true;
        } else {
          for (let i = 0; i < count; i++) put(bytesToKey(reader.bytes()), reader.bytes().slice());
        }
      }
      if (!reader.done()) throw new SnapshotError("trailing bytes in a snapshot chunk");
    } catch (error) {
      if (error instanceof SnapshotError) throw error;
      throw new SnapshotError(`corrupt snapshot: ${(error as Error).message}`);
    }
    crc = ended ? crc : crc32c(chunk, crc);
    yield;
  }
  if (!ended || index === undefined) throw new SnapshotError("snapshot is truncated");
  assert(Number.isSafeInteger(index), "snapshot index is an integer");
  return index;
}
