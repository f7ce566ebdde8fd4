// Reads a binary-protocol payload (binary.ts) without msgpackr for the values frames carry in
// practice: maps with ASCII string keys, ASCII strings, integers (int64 as bigint), float64, nil,
// booleans, bin and arrays. It exists because msgpackr's unpack costs more per small frame than
// the rest of a request's decoding: a DataView and an extra property on every source buffer, and
// a native string-extraction call for any frame over ~180 bytes.
//
// Invariant: the result is exactly what msgpackr's unpack (binary.ts's options) returns for the
// same bytes. Anything this reader does not handle itself (a non-ASCII string, an ext type, a
// float32, a non-string key, nesting deeper than DEPTH_MAX, truncated or trailing bytes) sends the
// whole payload to msgpackr instead, which then decodes it or throws as before. Bin values are
// views into the payload, as msgpackr's are.

export const READER_DEPTH_MAX = 32;
const SHORT_STRING_BYTES_MAX = 16; // strings up to this length come from the cache
const STRING_CACHE_SIZE = 512;

class Unhandled extends Error {}
const unhandled = new Unhandled("payload not handled by the fast reader");

// Short strings seen recently (keys, ops, mailbox names), so a frame does not build them again.
// An entry is used only when its characters equal the bytes, so a collision costs a miss.
const stringCache: Array<string | undefined> = new Array(STRING_CACHE_SIZE).fill(undefined);

let source: Buffer = Buffer.alloc(0);
let position = 0;
let end = 0;

// Decodes the payload, or returns `fallback(payload)` when the fast reader does not handle it.
export function readPayload(payload: Buffer, fallback: (payload: Buffer) => unknown): unknown {
  source = payload;
  position = 0;
  end = payload.length;
  try {
    const value = read(0);
    if (position === end) return value;
  } catch (error) {
    if (!(error instanceof Unhandled)) throw error;
  } finally {
    source = EMPTY;
  }
  return fallback(payload);
}

const EMPTY = Buffer.alloc(0);

function need(bytes: number): void {
  if (position + bytes > end) throw unhandled;
}

function read(depth: number): unknown {
  need(1);
  const token = source[position++]!;
  if (token < 0x80) return token; // positive fixint
  if (token < 0x90) return readMap(token - 0x80, depth);
  if (token < 0xa0) return readArray(token - 0x90, depth);
  if (token < 0xc0) return readString(token - 0xa0);
  if (token >= 0xe0) return token - 0x100; // negative fixint
  switch (token) {
    case 0xc0:
      return null;
    case 0xc2:
      return false;
    case 0xc3:
      return true;
    case 0xc4:
      need(1);
      return readBin(source[position++]!);
    case 0xc5:
      need(2);
      position += 2;
      return readBin(source.readUInt16BE(position - 2));
    case 0xc6:
      need(4);
      position += 4;
      return readBin(source.readUInt32BE(position - 4));
    case 0xcb:
      need(8);
      position += 8;
      return source.readDoubleBE(position - 8);
    case 0xcc:
      need(1);
      return source[position++];
    case 0xcd:
      need(2);
      position += 2;
      return source.readUInt16BE(position - 2);
    case 0xce:
      need(4);
      position += 4;
      return source.readUInt32BE(position - 4);
    case 0xcf:
      need(8);
      int64Load();
      return uint64Scratch[0];
    case 0xd0:
      need(1);
      position += 1;
      return source.readInt8(position - 1);
    case 0xd1:
      need(2);
      position += 2;
      return source.readInt16BE(position - 2);
    case 0xd2:
      need(4);
      position += 4;
      return source.readInt32BE(position - 4);
    case 0xd3:
      need(8);
      int64Load();
      return int64Scratch[0];
    case 0xd9:
      need(1);
      return readString(source[position++]!);
    case 0xda:
      need(2);
      position += 2;
      return readString(source.readUInt16BE(position - 2));
    case 0xdb:
      need(4);
      position += 4;
      return readString(source.readUInt32BE(position - 4));
    case 0xdc:
      need(2);
      position += 2;
      return readArray(source.readUInt16BE(position - 2), depth);
    case 0xdd:
      need(4);
      position += 4;
      return readArray(source.readUInt32BE(position - 4), depth);
    case 0xde:
      need(2);
      position += 2;
      return readMap(source.readUInt16BE(position - 2), depth);
    case 0xdf:
      need(4);
      position += 4;
      return readMap(source.readUInt32BE(position - 4), depth);
    default:
      throw unhandled; // ext types (undefined, records, ...), float32, never-used
  }
}

// 64-bit integers (every message's timestamp) through typed arrays over one scratch: one bigint
// made per value, where Buffer's readBig(U)Int64BE makes several (~35 against ~13 ns).
const int64Scratch = new BigInt64Array(1);
const uint64Scratch = new BigUint64Array(int64Scratch.buffer);
const int64ScratchBytes = new Uint8Array(int64Scratch.buffer);
const HOST_LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

// The 8 big-endian bytes at position into the scratch, in host order; position passes them.
function int64Load(): void {
  for (let index = 0; index < 8; index++) int64ScratchBytes[HOST_LITTLE_ENDIAN ? 7 - index : index] = source[position + index]!;
  position += 8;
}

function readMap(count: number, depth: number): Record<string, unknown> {
  if (depth >= READER_DEPTH_MAX || count > end - position) throw unhandled; // each entry takes 2+ bytes
  const object: Record<string, unknown> = {};
  for (let i = 0; i < count; i++) {
    need(1);
    const token = source[position++]!;
    let key: string;
    if (token >= 0xa0 && token < 0xc0) key = readString(token - 0xa0);
    else if (token === 0xd9) {
      need(1);
      key = readString(source[position++]!);
    } else throw unhandled; // msgpackr stringifies other keys its own way
    // As msgpackr does: a map never sets an object's prototype.
    object[key === "__proto__" ? "__proto_" : key] = read(depth + 1);
  }
  return object;
}

function readArray(count: number, depth: number): unknown[] {
  if (depth >= READER_DEPTH_MAX || count > end - position) throw unhandled; // each item takes 1+ byte
  const array = new Array<unknown>(count);
  for (let i = 0; i < count; i++) array[i] = read(depth + 1);
  return array;
}

function readBin(length: number): Buffer {
  need(length);
  position += length;
  return source.subarray(position - length, position);
}

// ASCII only: msgpackr's decoding of other UTF-8 (and of invalid UTF-8) stays the reference.
function readString(length: number): string {
  need(length);
  const start = position;
  const stop = start + length;
  for (let index = start; index < stop; index++) if (source[index]! >= 0x80) throw unhandled;
  position = stop;
  if (length > SHORT_STRING_BYTES_MAX) return source.toString("latin1", start, stop);
  if (length === 0) return "";
  const slot = (length * 31 + source[start]! * 7 + source[stop - 1]! * 3 + (length > 2 ? source[start + 1]! : 0)) % STRING_CACHE_SIZE;
  const cached = stringCache[slot];
  if (cached !== undefined && cached.length === length && matches(cached, start)) return cached;
  const string = source.toString("latin1", start, stop);
  stringCache[slot] = string;
  return string;
}

function matches(string: string, start: number): boolean {
  for (let index = 0; index < string.length; index++) if (string.charCodeAt(index) !== source[start + index]) return false;
  return true;
}
