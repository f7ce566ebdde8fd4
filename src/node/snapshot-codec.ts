// A node snapshot: the address book (so a node that catches up from a snapshot can reach every
// member) and the broker's snapshot chunks, with their boundaries kept (the broker's restore reads
// chunk by chunk). Layout: [u32 BE length][members JSON] then, per chunk, [u32 BE length][chunk].
import type { MemberAddress } from "./config.js";

export function encodeNodeSnapshot(members: MemberAddress[], brokerChunks: Iterable<Uint8Array>): Uint8Array {
  const parts: Buffer[] = [];
  const add = (bytes: Uint8Array) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length, 0);
    parts.push(length, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  };
  add(Buffer.from(JSON.stringify(members)));
  for (const chunk of brokerChunks) add(chunk);
  return Buffer.concat(parts);
}

export function decodeNodeSnapshot(data: Uint8Array): { members: MemberAddress[]; broker: Uint8Array[] } {
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
  return { members: JSON.parse(pieces[0]!.toString("utf8")) as MemberAddress[], broker: pieces.slice(1) };
}
