// The binary client protocol: length-prefixed msgpack frames with request ids.
//
// A binary connection opens with the 5-byte preamble BINARY_PREAMBLE (its first byte is 0x00,
// which no text command starts with, so one port serves both protocols). After it, each frame is
// a 4-byte big-endian payload length followed by that many bytes of msgpack: a request
// `{ rid, ...Request }` from the client, a reply `{ rid, ...Reply | ErrorReply }` from the server.
// Many requests may be in flight on one connection; replies come as soon as each is ready, in any
// order, matched by rid. Integers beyond 2^53 (timestamps) travel as msgpack int64 and decode as
// bigint. The decoder is resumable (feed it any split of the byte stream) and enforces the frame
// size limit before buffering a frame, so a hostile length cannot make it allocate.
import { Packr, RESERVE_START_SPACE } from "msgpackr";
import { readPayload } from "./frame-reader.js";

export const BINARY_PREAMBLE = Uint8Array.from([0x00, 0x46, 0x52, 0x59, 0x01]); // \0 F R Y v1
export const FRAME_HEADER_BYTES = 4;
// Request ids are unsigned integers below 2^32; 0 is reserved for errors not tied to a request.
export const RID_MAX = 0xffff_ffff;
export const FRAME_BYTES_MAX_DEFAULT = 4 * 1024 * 1024;

const packr = new Packr({ useRecords: false, int64AsType: "bigint", mapsAsObjects: true });

export function encodePayload(value: unknown): Buffer {
  return packr.pack(value);
}

// The common shapes go through frame-reader.ts (same result, less work); the rest through msgpackr.
export function decodePayload(payload: Uint8Array): unknown {
  // Bin values are views of the payload's kind: the fast reader makes Buffer views only.
  return Buffer.isBuffer(payload) ? readPayload(payload, unpackWithMsgpackr) : packr.unpack(payload);
}

function unpackWithMsgpackr(payload: Buffer): unknown {
  return packr.unpack(payload);
}

// Encodes one frame (header + msgpack payload). msgpackr leaves room for the header in front of
// the payload it writes (RESERVE_START_SPACE), so the frame is its output, not a copy of it.
export function encodeFrame(value: unknown): Buffer {
  const frame = packr.pack(value, RESERVE_START_SPACE | FRAME_HEADER_BYTES);
  frame.writeUInt32BE(frame.length - FRAME_HEADER_BYTES, 0);
  return frame;
}

export class FrameTooLargeError extends Error {
  override name = "FrameTooLargeError";
}

// Splits a byte stream into frame payloads. push() returns the complete payloads so far;
// it throws FrameTooLargeError when a header announces more than frameBytesMax (framing is then
// lost: the caller must close the connection).
const EMPTY_PAYLOAD = Buffer.alloc(0);

export class FrameDecoder {
  // Unconsumed input: buffered[0] from `offset` on, then the later chunks whole. Consuming moves
  // `offset` rather than slicing, so a frame costs one view (its payload) however many share a read.
  private buffered: Buffer[] = [];
  private offset = 0;
  private bufferedBytes = 0;

  constructor(private readonly frameBytesMax: number = FRAME_BYTES_MAX_DEFAULT) {}

  get pendingBytes(): number {
    return this.bufferedBytes;
  }

  push(chunk: Uint8Array): Buffer[] {
    if (chunk.length > 0) {
      this.buffered.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.bufferedBytes += chunk.length;
    }
    const frames: Buffer[] = [];
    while (this.bufferedBytes >= FRAME_HEADER_BYTES) {
      const length = this.peekLength();
      if (length > this.frameBytesMax) {
        throw new FrameTooLargeError(`frame of ${length} bytes exceeds the limit of ${this.frameBytesMax}`);
      }
      if (this.bufferedBytes < FRAME_HEADER_BYTES + length) break;
      this.skip(FRAME_HEADER_BYTES);
      frames.push(this.take(length));
    }
    return frames;
  }

  private peekLength(): number {
    const first = this.buffered[0]!;
    if (first.length - this.offset >= FRAME_HEADER_BYTES) return first.readUInt32BE(this.offset);
    this.joinFirst(FRAME_HEADER_BYTES);
    return this.buffered[0]!.readUInt32BE(0);
  }

  // Makes buffered[0] hold at least `count` unconsumed bytes (count <= bufferedBytes).
  private joinFirst(count: number): void {
    const first = this.buffered[0]!;
    if (first.length - this.offset >= count) return;
    const joined = Buffer.concat([first.subarray(this.offset), ...this.buffered.slice(1)]);
    this.buffered = [joined];
    this.offset = 0;
  }

  private skip(count: number): void {
    this.joinFirst(count);
    this.consume(count);
  }

  private take(count: number): Buffer {
    // An empty payload may follow a header that ended the buffered bytes: nothing is left to view.
    if (count === 0) return EMPTY_PAYLOAD;
    this.joinFirst(count);
    const out = this.buffered[0]!.subarray(this.offset, this.offset + count);
    this.consume(count);
    return out;
  }

  // buffered[0] holds at least `count` unconsumed bytes.
  private consume(count: number): void {
    this.offset += count;
    this.bufferedBytes -= count;
    if (this.offset === this.buffered[0]!.length) {
      this.buffered.shift();
      this.offset = 0;
    }
  }
}
