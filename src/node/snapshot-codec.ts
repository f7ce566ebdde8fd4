// A node snapshot: the address book (so a node that catches up from a snapshot can reach every
// member) followed by the broker's snapshot chunks. Layout: [u32 BE members JSON length][JSON][broker bytes].
import type { MemberAddress } from "./config.js";

export function encodeNodeSnapshot(members: MemberAddress[], brokerChunks: Iterable<Uint8Array>): Uint8Array {
  const json = Buffer.from(JSON.stringify(members));
  const parts: Buffer[] = [Buffer.alloc(4), json];
  parts[0]!.writeUInt32BE(json.length, 0);
  for (const chunk of brokerChunks) parts.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  return Buffer.concat(parts);
}

export function decodeNodeSnapshot(data: Uint8Array): { members: MemberAddress[]; broker: Uint8Array[] } {
  const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const length = buffer.readUInt32BE(0);
  const members = JSON.parse(buffer.subarray(4, 4 + length).toString("utf8")) as MemberAddress[];
  return { members, broker: [buffer.subarray(4 + length)] };
}
