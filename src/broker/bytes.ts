// A growable byte writer and a bounds-checked reader: the building blocks of the broker's
// command and record encodings (little-endian integers, length-prefixed strings and bytes).
// A reader that runs past its end throws BytesError, so a corrupt input never reads garbage.
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

export class BytesError extends Error {
  override name = "BytesError";
}

// 64-bit values go through this scratch view and are copied: a DataView per writer (one per
// stored record) was a visible share of an apply's allocations.
const scratch = new Uint8Array(8);
const scratchView = new DataView(scratch.buffer);

// The buffer scratch writers write into (see ByteWriter.scratch); replaced by a larger one when a
// record outgrows it.
let scratchBuffer = new Uint8Array(64 * 1024);

export class ByteWriter {
  private buffer: Uint8Array;
  private readonly shared: boolean;
  length = 0;

  // A number: a writer of its own with that initial capacity; a buffer: see scratch().
  constructor(capacityBytes: number | Uint8Array = 256) {
    this.shared = typeof capacityBytes !== "number";
    this.buffer = typeof capacityBytes === "number" ? new Uint8Array(capacityBytes) : capacityBytes;
  }

  // A writer into one shared module-level buffer: finish() returns a view of it, valid until the
  // next scratch writer is made. For values handed straight to a store that copies them (the
  // broker's OrderedKv.put): a fresh Uint8Array per record was ~20% of an apply's CPU (the
  // allocation, its GC, and lmdb-js resolving each new buffer's address).
  static scratch(capacityBytes: number): ByteWriter {
    if (scratchBuffer.length < capacityBytes) scratchBuffer = new Uint8Array(capacityBytes);
    return new ByteWriter(scratchBuffer);
  }

  private reserve(bytes: number): void {
    const needed = this.length + bytes;
    if (needed <= this.buffer.length) return;
    let capacity = this.buffer.length * 2;
    while (capacity < needed) capacity *= 2;
    const grown = new Uint8Array(capacity);
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
    if (this.shared) scratchBuffer = grown;
  }

  private scratch8(): void {
    this.reserve(8);
    const buffer = this.buffer;
    const at = this.length;
    for (let i = 0; i < 8; i++) buffer[at + i] = scratch[i]!;
    this.length += 8;
  }

  u8(value: number): void {
    this.reserve(1);
    this.buffer[this.length++] = value;
  }
  u16(value: number): void {
    this.reserve(2);
    this.buffer[this.length++] = value & 0xff;
    this.buffer[this.length++] = (value >>> 8) & 0xff;
  }
  u32(value: number): void {
    this.reserve(4);
    const buffer = this.buffer;
    buffer[this.length++] = value & 0xff;
    buffer[this.length++] = (value >>> 8) & 0xff;
    buffer[this.length++] = (value >>> 16) & 0xff;
    buffer[this.length++] = (value >>> 24) & 0xff;
  }
  // Non-negative safe integers and "absent" (-1) fit a float64 exactly.
  f64(value: number): void {
    scratchView.setFloat64(0, value, true);
    this.scratch8();
  }
  u64(value: bigint): void {
    scratchView.setBigUint64(0, value, true);
    this.scratch8();
  }
  bytes(value: Uint8Array): void {
    this.u32(value.length);
    this.raw(value);
  }
  raw(value: Uint8Array): void {
    this.reserve(value.length);
    this.buffer.set(value, this.length);
    this.length += value.length;
  }
  // The characters of a string the caller knows is Latin-1 (ASCII), one byte each, unprefixed.
  latin1(value: string): void {
    this.reserve(value.length);
    const buffer = this.buffer;
    let at = this.length;
    for (let i = 0; i < value.length; i++) buffer[at++] = value.charCodeAt(i);
    this.length = at;
  }
  // ASCII fast path; anything else goes through UTF-8.
  string(value: string): void {
    if (isAscii(value)) {
      this.u32(value.length);
      this.latin1(value);
    } else {
      this.bytes(textEncoder.encode(value));
    }
  }
  // The bytes written; no copy when the initial capacity was exact (a scratch writer: a view).
  finish(): Uint8Array {
    if (this.shared) return this.buffer.subarray(0, this.length);
    return this.length === this.buffer.length ? this.buffer : this.buffer.slice(0, this.length);
  }
}

function isAscii(value: string): boolean {
  for (let i = 0; i < value.length; i++) if (value.charCodeAt(i) > 0x7f) return false;
  return true;
}

// The little-endian u32 at `at` (the caller checked the bounds).
export function u32At(buffer: Uint8Array, at: number): number {
  return (buffer[at]! | (buffer[at + 1]! << 8) | (buffer[at + 2]! << 16) | (buffer[at + 3]! << 24)) >>> 0;
}

function isAsciiRange(buffer: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buffer[i]! > 0x7f) return false;
  return true;
}

// Fewer strings than this are read one by one (a SEND's recipient list: no run to share).
const STRINGS_RUN_MIN = 4;

export class ByteReader {
  offset = 0;
  private latin1: Buffer | undefined; // the input as a Buffer, made on the first string()

  constructor(private readonly buffer: Uint8Array) {}

  private toScratch8(): void {
    this.need(8);
    for (let i = 0; i < 8; i++) scratch[i] = this.buffer[this.offset + i]!;
    this.offset += 8;
  }

  private need(bytes: number): void {
    if (this.offset + bytes > this.buffer.length) throw new BytesError(`truncated input at byte ${this.offset}`);
  }
  done(): boolean {
    return this.offset === this.buffer.length;
  }
  u8(): number {
    this.need(1);
    return this.buffer[this.offset++]!;
  }
  u16(): number {
    this.need(2);
    const buffer = this.buffer;
    const value = buffer[this.offset]! | (buffer[this.offset + 1]! << 8);
    this.offset += 2;
    return value;
  }
  u32(): number {
    this.need(4);
    const value = u32At(this.buffer, this.offset);
    this.offset += 4;
    return value;
  }
  f64(): number {
    this.toScratch8();
    return scratchView.getFloat64(0, true);
  }
  u64(): bigint {
    this.toScratch8();
    return scratchView.getBigUint64(0, true);
  }
  skip(bytes: number): void {
    this.need(bytes);
    this.offset += bytes;
  }
  // A view into the input (no copy): stored values are never mutated.
  bytes(): Uint8Array {
    const length = this.u32();
    return this.raw(length);
  }
  raw(length: number): Uint8Array {
    this.need(length);
    const value = this.buffer.subarray(this.offset, this.offset + length);
    this.offset += length;
    return value;
  }
  // `count` strings, as string() reads them one by one. A run of ASCII strings (an ACK's ids)
  // is decoded as one latin1 string and cut into them: one native call instead of one per id
  // (~120 against ~60 ns per UUID, a scratch microbenchmark of an ACK of 100).
  strings(count: number): string[] {
    const values: string[] = [];
    const start = this.offset;
    const buffer = this.buffer;
    let at = start;
    let run = count >= STRINGS_RUN_MIN;
    for (let i = 0; i < count && run; i++) {
      // A length over 0x7f has a byte the latin1 run cannot cut by; a cut-off string is left to
      // string(), which throws where it ends.
      const length = at + 4 <= buffer.length ? u32At(buffer, at) : Number.POSITIVE_INFINITY;
      const end = at + 4 + length;
      run = length <= 0x7f && end <= buffer.length && isAsciiRange(buffer, at + 4, end);
      at = end;
    }
    if (!run) {
      for (let i = 0; i < count; i++) values.push(this.string());
      return values;
    }
    this.latin1 ??= Buffer.isBuffer(buffer) ? buffer : Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    const text = this.latin1.toString("latin1", start, at);
    for (let position = 0; position < text.length; ) {
      const length = text.charCodeAt(position); // the u32's low byte: the others are 0
      values.push(text.substring(position + 4, position + 4 + length));
      position += 4 + length;
    }
    this.offset = at;
    return values;
  }
  string(): string {
    const length = this.u32();
    this.need(length);
    let ascii = true;
    for (let i = 0; i < length; i++) {
      if (this.buffer[this.offset + i]! > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (!ascii) return textDecoder.decode(this.raw(length));
    // One string, where appending character by character allocated a string per character (the
    // largest allocation of an apply: ~1 KB per SEND for its UUID).
    const buffer = this.buffer;
    this.latin1 ??= Buffer.isBuffer(buffer) ? buffer : Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    const value = this.latin1.toString("latin1", this.offset, this.offset + length);
    this.offset += length;
    return value;
  }
}

// Whether the string survives UTF-8 (string -> UTF-8 -> string gives it back): false only for
// lone surrogates, which the encoder turns into U+FFFD; anything but a string answers false (this
// never throws). String.prototype.isWellFormed is ES2024: Node 20 has it, our typings do not.
export function roundTripsUtf8(value: unknown): boolean {
  return typeof value === "string" && (value as string & { isWellFormed(): boolean }).isWellFormed();
}

export function utf8Length(value: string): number {
  return isAscii(value) ? value.length : textEncoder.encode(value).length;
}

// Sets an own property even for names like "__proto__" (a plain assignment would change the
// prototype instead and silently drop the header).
export function setOwn(target: Record<string, string>, name: string, value: string): void {
  Object.defineProperty(target, name, { value, enumerable: true, writable: true, configurable: true });
}
