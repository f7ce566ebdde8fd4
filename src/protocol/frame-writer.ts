// Writes binary-protocol frames `{ rid, ...value }` (binary.ts) straight into one growing buffer,
// so a connection answering many requests in one turn builds its output in place and hands the
// socket one slice per flush: no buffer, no object spread and no copy per reply.
//
// The msgpack written is what msgpackr writes for the same values (integers in their smallest
// form, doubles as float64, bigints as int64/uint64, byte arrays as bin, undefined as fixext 0),
// except that maps and strings use their smallest header; any value of another kind (a Date, a
// Map, a class instance, a bigint beyond 64 bits) makes the whole frame go through msgpackr
// instead, so what decodes is always what binary.ts's encodeFrame would have produced.
//
// Invariant: bytes before `start` belong to the socket (handed out by take()) and are never
// written again; a full buffer is replaced, not reused.
import { encodeFrame, FRAME_HEADER_BYTES } from "./binary.js";

export const FRAME_WRITER_CHUNK_BYTES_DEFAULT = 64 * 1024;

const int64Scratch = new BigInt64Array(1);
const int64ScratchBytes = new Uint8Array(int64Scratch.buffer);
const HOST_LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

// Strings up to this length are tried as ASCII copied char by char: cheaper than measuring and
// encoding UTF-8 natively for short ones (must stay below 256, the str8 limit).
const ASCII_COPY_CHARS_MAX = 64;
// Byte ranges up to this length are copied byte by byte: cheaper than a subarray and a native
// set for ids and names.
const COPY_BY_BYTE_MAX = 64;

class UnsupportedValue extends Error {}
const unsupported = new UnsupportedValue("value kind not written by FrameWriter");

// A value that writes its own msgpack: what it writes must decode to what plain() returns, as
// FrameWriter would write plain() (the tests of each such class hold it to the same bytes). Made
// where the value's fields already sit in bytes of the right encoding (a stored message's
// record, src/broker/stored-delivery.ts), so a reply is copied from them instead of being decoded
// into objects and written field by field. A frame that goes to msgpackr instead (a value kind
// FrameWriter does not write) carries plain().
export abstract class SelfEncoded {
  abstract writeTo(writer: FrameWriter): void;
  abstract plain(): unknown;
}

export class FrameWriter {
  private buffer: Buffer;
  private start = 0; // first byte not yet taken
  private position = 0;

  constructor(private readonly chunkBytes: number = FRAME_WRITER_CHUNK_BYTES_DEFAULT) {
    this.buffer = Buffer.allocUnsafe(chunkBytes);
  }

  // Bytes written and not yet taken.
  get pendingBytes(): number {
    return this.position - this.start;
  }

  // Appends the frame of `{ rid, ...value }` (rid an unsigned 32-bit integer, value a plain
  // object without a rid) and returns its payload size in bytes.
  append(rid: number, value: Record<string, unknown>): number {
    const frameOffset = this.position - this.start; // offsets survive replace()
    try {
      this.ensure(FRAME_HEADER_BYTES);
      this.position += FRAME_HEADER_BYTES;
      this.writeMapWithRid(rid, value);
    } catch (error) {
      if (!(error instanceof UnsupportedValue)) throw error;
      this.position = this.start + frameOffset;
      const frame = encodeFrame({ rid, ...(plainOf(value) as Record<string, unknown>) });
      this.ensure(frame.length);
      frame.copy(this.buffer, this.position);
      this.position += frame.length;
    }
    const frameStart = this.start + frameOffset;
    const payloadBytes = this.position - frameStart - FRAME_HEADER_BYTES;
    this.buffer.writeUInt32BE(payloadBytes, frameStart);
    return payloadBytes;
  }

  // Drops the last frame appended (it was over a size limit), given the payload size it returned.
  dropLast(payloadBytes: number): void {
    this.position -= payloadBytes + FRAME_HEADER_BYTES;
  }

  // The bytes written since the last take (undefined when none). They are the caller's now.
  take(): Buffer | undefined {
    if (this.position === this.start) return undefined;
    const bytes = this.buffer.subarray(this.start, this.position);
    this.start = this.position;
    if (this.buffer.length - this.position < this.chunkBytes / 8) this.replace(0);
    return bytes;
  }

  private writeMapWithRid(rid: number, value: Record<string, unknown>): void {
    if (!isPlainPrototype(Object.getPrototypeOf(value))) throw unsupported;
    this.writeMapHeader(keyCount(value) + 1);
    this.writeString("rid");
    this.writeNumber(rid);
    this.writeFields(value);
  }

  // The keys and values of a plain object, in for...in order (its own enumerable keys).
  private writeFields(record: Record<string, unknown>): void {
    for (const key in record) {
      this.writeString(key);
      this.writeValue(record[key]);
    }
  }

  private writeValue(value: unknown): void {
    switch (typeof value) {
      case "string":
        this.writeString(value);
        return;
      case "number":
        this.writeNumber(value);
        return;
      case "boolean":
        this.ensure(1);
        this.buffer[this.position++] = value ? 0xc3 : 0xc2;
        return;
      case "bigint":
        this.writeBigInt(value);
        return;
      case "undefined":
        this.ensure(3);
        this.buffer[this.position++] = 0xd4;
        this.buffer[this.position++] = 0;
        this.buffer[this.position++] = 0;
        return;
      case "object":
        this.writeObject(value);
        return;
      default:
        throw unsupported;
    }
  }

  private writeObject(value: object | null): void {
    if (value === null) {
      this.ensure(1);
      this.buffer[this.position++] = 0xc0;
      return;
    }
    if (Array.isArray(value)) {
      this.writeArrayHeader(value.length);
      for (const item of value) this.writeValue(item);
      return;
    }
    if (value instanceof SelfEncoded) {
      value.writeTo(this);
      return;
    }
    const prototype = Object.getPrototypeOf(value);
    if (prototype === Uint8Array.prototype || prototype === Buffer.prototype) {
      this.writeBinary(value as Uint8Array);
      return;
    }
    if (!isPlainPrototype(prototype)) throw unsupported;
    const record = value as Record<string, unknown>;
    this.writeMapHeader(keyCount(record));
    this.writeFields(record);
  }

  writeNumber(value: number): void {
    this.ensure(9);
    const buffer = this.buffer;
    if (value >>> 0 === value) {
      if (value < 0x80) buffer[this.position++] = value;
      else if (value < 0x100) {
        buffer[this.position++] = 0xcc;
        buffer[this.position++] = value;
      } else if (value < 0x10000) {
        buffer[this.position++] = 0xcd;
        this.position = buffer.writeUInt16BE(value, this.position);
      } else {
        buffer[this.position++] = 0xce;
        this.position = buffer.writeUInt32BE(value, this.position);
      }
    } else if (value >> 0 === value) {
      if (value >= -0x20) buffer[this.position++] = value & 0xff;
      else if (value >= -0x80) {
        buffer[this.position++] = 0xd0;
        this.position = buffer.writeInt8(value, this.position);
      } else if (value >= -0x8000) {
        buffer[this.position++] = 0xd1;
        this.position = buffer.writeInt16BE(value, this.position);
      } else {
        buffer[this.position++] = 0xd2;
        this.position = buffer.writeInt32BE(value, this.position);
      }
    } else {
      buffer[this.position++] = 0xcb;
      this.position = buffer.writeDoubleBE(value, this.position);
    }
  }

  private writeBigInt(value: bigint): void {
    this.ensure(9);
    if (value < 0x8000000000000000n && value >= -0x8000000000000000n) {
      this.buffer[this.position++] = 0xd3;
      this.writeInt64Bits(value);
    } else if (value < 0x10000000000000000n && value > 0n) {
      this.buffer[this.position++] = 0xcf;
      this.writeInt64Bits(value);
    } else {
      throw unsupported;
    }
  }

  // The low 64 bits of value, big-endian. Through a typed array: Buffer's writeBig(U)Int64BE
  // allocates intermediate bigints, and every SEND reply carries a timestamp.
  private writeInt64Bits(value: bigint): void {
    int64Scratch[0] = value; // stored modulo 2^64: a uint64 above 2^63 keeps its bits
    const buffer = this.buffer;
    const at = this.position;
    for (let index = 0; index < 8; index++) buffer[at + index] = int64ScratchBytes[HOST_LITTLE_ENDIAN ? 7 - index : index]!;
    this.position = at + 8;
  }

  writeString(value: string): void {
    const length = value.length;
    if (length <= ASCII_COPY_CHARS_MAX) {
      // Short ASCII (keys, names, 36-character UUIDs): copied one char per byte, no native call.
      const headerBytes = length < 32 ? 1 : 2; // fixstr, or str8
      this.ensure(headerBytes + length);
      const buffer = this.buffer;
      let at = this.position + headerBytes;
      let index = 0;
      for (; index < length; index++) {
        const code = value.charCodeAt(index);
        if (code >= 0x80) break;
        buffer[at++] = code;
      }
      if (index === length) {
        if (headerBytes === 1) buffer[this.position] = 0xa0 | length;
        else {
          buffer[this.position] = 0xd9;
          buffer[this.position + 1] = length;
        }
        this.position = at;
        return;
      }
    }
    const bytes = Buffer.byteLength(value, "utf8");
    this.ensure(5 + bytes);
    this.writeStringHeader(bytes);
    this.position += this.buffer.write(value, this.position, bytes, "utf8");
  }

  // The header of a string of `bytes` UTF-8 bytes, in its smallest form (room ensured).
  private writeStringHeader(bytes: number): void {
    const buffer = this.buffer;
    if (bytes < 32) buffer[this.position++] = 0xa0 | bytes;
    else if (bytes < 0x100) {
      buffer[this.position++] = 0xd9;
      buffer[this.position++] = bytes;
    } else if (bytes < 0x10000) {
      buffer[this.position++] = 0xda;
      this.position = buffer.writeUInt16BE(bytes, this.position);
    } else {
      buffer[this.position++] = 0xdb;
      this.position = buffer.writeUInt32BE(bytes, this.position);
    }
  }

  private writeBinary(value: Uint8Array): void {
    const bytes = value.length;
    this.ensure(5 + bytes);
    this.writeBinaryHeader(bytes);
    this.buffer.set(value, this.position);
    this.position += bytes;
  }

  private writeBinaryHeader(bytes: number): void {
    const buffer = this.buffer;
    if (bytes < 0x100) {
      buffer[this.position++] = 0xc4;
      buffer[this.position++] = bytes;
    } else if (bytes < 0x10000) {
      buffer[this.position++] = 0xc5;
      this.position = buffer.writeUInt16BE(bytes, this.position);
    } else {
      buffer[this.position++] = 0xc6;
      this.position = buffer.writeUInt32BE(bytes, this.position);
    }
  }

  // Bytes that are msgpack already (a key written once: msgpackKey), as they are.
  writeEncoded(bytes: Uint8Array): void {
    this.ensure(bytes.length);
    this.copyFrom(bytes, 0, bytes.length);
  }

  // `length` bytes of `source` from `start`, valid UTF-8, as a string (SelfEncoded values).
  writeUtf8From(source: Uint8Array, start: number, length: number): void {
    this.ensure(5 + length);
    this.writeStringHeader(length);
    this.copyFrom(source, start, length);
  }

  // `length` bytes of `source` from `start` as a byte array (SelfEncoded values).
  writeBinaryFrom(source: Uint8Array, start: number, length: number): void {
    this.ensure(5 + length);
    this.writeBinaryHeader(length);
    this.copyFrom(source, start, length);
  }

  // The unsigned 64-bit little-endian integer at `start` of `source`, as writeBigInt writes it
  // (int64 below 2^63, uint64 from there), without making the bigint (SelfEncoded values).
  writeU64LEFrom(source: Uint8Array, start: number): void {
    this.ensure(9);
    const buffer = this.buffer;
    buffer[this.position++] = source[start + 7]! < 0x80 ? 0xd3 : 0xcf;
    for (let index = 7; index >= 0; index--) buffer[this.position++] = source[start + index]!;
  }

  // (Room ensured by the caller.)
  private copyFrom(source: Uint8Array, start: number, length: number): void {
    const buffer = this.buffer;
    if (length <= COPY_BY_BYTE_MAX) {
      for (let index = 0; index < length; index++) buffer[this.position + index] = source[start + index]!;
    } else {
      buffer.set(source.subarray(start, start + length), this.position);
    }
    this.position += length;
  }

  private writeArrayHeader(count: number): void {
    this.ensure(5);
    if (count < 16) this.buffer[this.position++] = 0x90 | count;
    else if (count < 0x10000) {
      this.buffer[this.position++] = 0xdc;
      this.position = this.buffer.writeUInt16BE(count, this.position);
    } else {
      this.buffer[this.position++] = 0xdd;
      this.position = this.buffer.writeUInt32BE(count, this.position);
    }
  }

  writeMapHeader(count: number): void {
    this.ensure(5);
    if (count < 16) this.buffer[this.position++] = 0x80 | count;
    else if (count < 0x10000) {
      this.buffer[this.position++] = 0xde;
      this.position = this.buffer.writeUInt16BE(count, this.position);
    } else {
      this.buffer[this.position++] = 0xdf;
      this.position = this.buffer.writeUInt32BE(count, this.position);
    }
  }

  private ensure(bytes: number): void {
    if (this.position + bytes > this.buffer.length) this.replace(bytes);
  }

  // A new buffer with room for `bytes` more, holding the bytes not yet taken (the old one may
  // still be on its way to the socket).
  private replace(bytes: number): void {
    const pending = this.position - this.start;
    const next = Buffer.allocUnsafe(Math.max(this.chunkBytes, 2 * (pending + bytes)));
    this.buffer.copy(next, 0, this.start, this.position);
    this.buffer = next;
    this.start = 0;
    this.position = pending;
  }
}

// The msgpack of a short ASCII string (a map key), for writeEncoded.
export function msgpackKey(key: string): Uint8Array {
  const writer = new FrameWriter(64);
  writer.writeString(key);
  return Uint8Array.from(writer.take()!);
}

// The value with every SelfEncoded in it replaced by its plain() (for msgpackr).
function plainOf(value: unknown): unknown {
  if (value instanceof SelfEncoded) return value.plain();
  if (Array.isArray(value)) return value.map(plainOf);
  if (typeof value !== "object" || value === null || !isPlainPrototype(Object.getPrototypeOf(value))) return value;
  const plain: Record<string, unknown> = {};
  for (const key in value) {
    // defineProperty: an own "__proto__" (a header name) stays a key.
    Object.defineProperty(plain, key, { value: plainOf((value as Record<string, unknown>)[key]), enumerable: true, writable: true, configurable: true });
  }
  return plain;
}

// A plain object's: the only objects written as maps.
function isPlainPrototype(prototype: unknown): boolean {
  return prototype === Object.prototype || prototype === null;
}

// The number of keys `for...in` visits on a plain object (its own enumerable ones: nothing on
// Object.prototype is enumerable), counted without the array Object.keys makes: a RECEIVE reply
// of 100 messages made 101 of them.
function keyCount(record: object): number {
  let count = 0;
  for (const _key in record) count++;
  return count;
}
