// A growable byte writer and a bounds-checked reader: the building blocks of the broker's
// command and record encodings (little-endian integers, length-prefixed strings and bytes).
// A reader that runs past its end throws BytesError, so a corrupt input never reads garbage.
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

export class BytesError extends Error {
  override name = "BytesError";
}

export class ByteWriter {
  private buffer: Uint8Array;
  private view: DataView;
  length = 0;

  constructor(capacityBytes = 256) {
    this.buffer = new Uint8Array(capacityBytes);
    this.view = new DataView(this.buffer.buffer);
  }

  private reserve(bytes: number): void {
    const needed = this.length + bytes;
    if (needed <= this.buffer.length) return;
    let capacity = this.buffer.length * 2;
    while (capacity < needed) capacity *= 2;
    const grown = new Uint8Array(capacity);
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
    this.view = new DataView(grown.buffer);
  }

  u8(value: number): void {
    this.reserve(1);
    this.buffer[this.length++] = value;
  }
  u16(value: number): void {
    this.reserve(2);
    this.view.setUint16(this.length, value, true);
    this.length += 2;
  }
  u32(value: number): void {
    this.reserve(4);
    this.view.setUint32(this.length, value, true);
    this.length += 4;
  }
  // Non-negative safe integers and "absent" (-1) fit a float64 exactly.
  f64(value: number): void {
    this.reserve(8);
    this.view.setFloat64(this.length, value, true);
    this.length += 8;
  }
  u64(value: bigint): void {
    this.reserve(8);
    this.view.setBigUint64(this.length, value, true);
    this.length += 8;
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
  // ASCII fast path; anything else goes through UTF-8.
  string(value: string): void {
    if (isAscii(value)) {
      this.u32(value.length);
      this.reserve(value.length);
      for (let i = 0; i < value.length; i++) this.buffer[this.length++] = value.charCodeAt(i);
    } else {
      this.bytes(textEncoder.encode(value));
    }
  }
  finish(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }
}

function isAscii(value: string): boolean {
  for (let i = 0; i < value.length; i++) if (value.charCodeAt(i) > 0x7f) return false;
  return true;
}

export class ByteReader {
  private readonly view: DataView;
  offset = 0;

  constructor(private readonly buffer: Uint8Array) {
    this.view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
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
    const value = this.view.getUint16(this.offset, true);
    this.offset += 2;
    return value;
  }
  u32(): number {
    this.need(4);
    const value = this.view.getUint32(this.offset, true);
    this.offset += 4;
    return value;
  }
  f64(): number {
    this.need(8);
    const value = this.view.getFloat64(this.offset, true);
    this.offset += 8;
    return value;
  }
  u64(): bigint {
    this.need(8);
    const value = this.view.getBigUint64(this.offset, true);
    this.offset += 8;
    return value;
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
    let value = "";
    for (let i = 0; i < length; i++) value += String.fromCharCode(this.buffer[this.offset + i]!);
    this.offset += length;
    return value;
  }
}

export function utf8Length(value: string): number {
  return isAscii(value) ? value.length : textEncoder.encode(value).length;
}
