// A node snapshot: the address book (so a node that catches up from a snapshot can reach every
// member) and the broker's snapshot chunks, with their boundaries kept (the broker's restore reads
// chunk by chunk), and the HLC floor: a timestamp at or above every stamp in the state, which a
// node restoring the snapshot observes (it never sees the entries the snapshot replaced).
// Layout: [u32 BE length][JSON {members, lastTimestamp}] then, per chunk, [u32 BE length][chunk].
// Older snapshots hold a bare members array as their JSON (lastTimestamp 0).
import type { MemberAddress } from "./config.js";

export interface DecodedNodeSnapshot {
  members: MemberAddress[];
  lastTimestamp: bigint;
  broker: Uint8Array[];
}

export function encodeNodeSnapshot(members: MemberAddress[], brokerChunks: Iterable<Uint8Array>, lastTimestamp = 0n): Uint8Array {
  return Buffer.concat([...nodeSnapshotParts(members, brokerChunks, lastTimestamp)]);
}

// The bytes of a node snapshot in order, in parts (a length, then its piece): what
// encodeNodeSnapshot concatenates, for a writer that streams them to a file.
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

export function decodeNodeSnapshot(data: Uint8Array): DecodedNodeSnapshot {
  const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const pieces: Buffer[] = [];
  for (let offset = 0; offset < buffer.length; ) {
    if (offset + 4 > buffer.length) throw new Error(`node snapshot: truncated length at byte ${offset}`);
    const length = buffer.readUInt32BE(offset);
    if (offset + 4 + length > buffer.length) throw new Error(`node snapshot: a piece at byte ${offset} runs past the end`);
    pieces.push(buffer.subarray(offset + 4, offset + 4 + length));
    offset += 4 + length;
  }
  if (pieces.length === 0) throw new Error("node snapshot: empty");
  const head = JSON.parse(pieces[0]!.toString("utf8")) as MemberAddress[] | { members: MemberAddress[]; lastTimestamp: string };
  if (Array.isArray(head)) return { members: head, lastTimestamp: 0n, broker: pieces.slice(1) };
  return { members: head.members, lastTimestamp: BigInt(head.lastTimestamp), broker: pieces.slice(1) };
}
