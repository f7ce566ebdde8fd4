// The node's envelope around a normal Raft entry's data.
//
// Layout: [u8 version=1][u8 kind][u64 BE HLC timestamp][payload]. The leader stamps the timestamp
// when it proposes, so every replica applies the entry with the same "now" (the broker reads no
// clock). kind "commands" carries encoded broker commands; an empty entry (a new leader's no-op)
// has no envelope at all.

export const ENTRY_VERSION = 1;
export const ENTRY_HEADER_BYTES = 10;

export type EntryKind = "commands";
const KIND_CODES: Record<EntryKind, number> = { commands: 1 };

export interface DecodedEntry {
  kind: EntryKind;
  timestamp: bigint;
  payload: Uint8Array;
}

export function encodeEntry(kind: EntryKind, timestamp: bigint, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(ENTRY_HEADER_BYTES + payload.length);
  const view = new DataView(out.buffer);
  out[0] = ENTRY_VERSION;
  out[1] = KIND_CODES[kind];
  view.setBigUint64(2, timestamp);
  out.set(payload, ENTRY_HEADER_BYTES);
  return out;
}

export function decodeEntry(data: Uint8Array): DecodedEntry | undefined {
  if (data.length === 0) return undefined;
  if (data.length < ENTRY_HEADER_BYTES || data[0] !== ENTRY_VERSION || data[1] !== KIND_CODES.commands) {
    throw new Error(`entry envelope not understood (version ${data[0]}, kind ${data[1]}, ${data.length} bytes)`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  return { kind: "commands", timestamp: view.getBigUint64(2), payload: data.subarray(ENTRY_HEADER_BYTES) };
}
