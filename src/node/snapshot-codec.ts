// A node snapshot: the address book (so a node that catches up from a snapshot can reach every
// member) and the broker's snapshot chunks, with their boundaries kept (the broker's restore reads
// chunk by chunk), and the HLC floor: a timestamp at or above every stamp in the state, which a
// node restoring the snapshot observes (it never sees the entries the snapshot replaced).
// Layout: [u32 BE length][JSON {members, lastTimestamp}] then, per chunk, [u32 BE length][chunk].
// Older snapshots hold a bare members array as their JSON (lastTimestamp 0).
import type { SnapshotReader } from "../storage/snapshots.js";
import type { MemberAddress } from "./config.js";

// The bytes of a node snapshot in order, in parts (a length, then its piece), for a writer that
// streams them to a file.
export function* nodeSnapshotParts(members: MemberAddress[], brokerChunks: Iterable<Uint8Array>, lastTimestamp = 0n): Generator<Uint8Array> {
  const piece = function* (bytes: Uint8Array): Generator<Uint8Array> {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length, 0);
    yield length;
    yield bytes;
  };
  yield* piece(Buffer.from(JSON.stringify({ members, lastTimestamp: lastTimestamp.toString() })));
  for (const chunk of brokerChunks) yield* piece(chunk);
}

// A node snapshot read front to back: the head at once, the broker's chunks one at a time as the
// iterable is walked (a chunk is read when it is reached, so nothing holds the whole snapshot).
// Walking it to the end finishes the reader, which checks the data's checksum where it has one.
export function readNodeSnapshot(reader: SnapshotReader): { members: MemberAddress[]; lastTimestamp: bigint; broker: Iterable<Uint8Array> } {
  if (reader.remaining() === 0) throw new Error("node snapshot: empty");
  const head = JSON.parse(Buffer.from(readPiece(reader)).toString("utf8")) as MemberAddress[] | { members: MemberAddress[]; lastTimestamp: string };
  const broker = function* (): Generator<Uint8Array> {
    while (reader.remaining() > 0) yield readPiece(reader);
    reader.finish();
  };
  if (Array.isArray(head)) return { members: head, lastTimestamp: 0n, broker: broker() };
  return { members: head.members, lastTimestamp: BigInt(head.lastTimestamp), broker: broker() };
}

function readPiece(reader: SnapshotReader): Uint8Array {
  const at = reader.remaining();
  if (at < 4) throw new Error(`node snapshot: truncated length ${at} bytes before the end`);
  const lengthBytes = reader.read(4);
  const length = Buffer.from(lengthBytes.buffer, lengthBytes.byteOffset, 4).readUInt32BE(0);
  if (length > reader.remaining()) throw new Error(`node snapshot: a piece ${at} bytes before the end runs past it`);
  return reader.read(length);
}
