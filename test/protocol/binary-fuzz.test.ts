// Fuzzing the binary framing the server relies on: random bytes and mutated valid frames, in any
// chunking, either decode or fail with FrameTooLargeError; the decoder never holds more than one
// frame's worth of bytes; a decoded payload either unpacks or throws (the server then closes).
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { decodePayload, encodeFrame, FRAME_HEADER_BYTES, FrameDecoder, FrameTooLargeError } from "../../src/protocol/binary.js";

const FRAME_BYTES_MAX = 256;

function chunked(stream: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((cut) => cut % (stream.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let start = 0;
  for (const point of [...points, stream.length]) {
    chunks.push(stream.subarray(start, point));
    start = point;
  }
  return chunks;
}

// Feeds every chunk; returns the payloads, or "too large" once the decoder gives up.
function decodeStream(chunks: Buffer[]): Buffer[] | "too large" {
  const decoder = new FrameDecoder(FRAME_BYTES_MAX);
  const payloads: Buffer[] = [];
  for (const chunk of chunks) {
    try {
      payloads.push(...decoder.push(chunk));
    } catch (error) {
      assert.ok(error instanceof FrameTooLargeError);
      return "too large";
    }
    assert.ok(decoder.pendingBytes < FRAME_HEADER_BYTES + FRAME_BYTES_MAX, `pending ${decoder.pendingBytes}`);
  }
  return payloads;
}

test("a frame of 0 bytes whose header ends the input decodes to an empty payload (the fuzz test below found the crash, seed -663918273)", () => {
  const header = Buffer.from([0, 0, 0, 0]);
  assert.deepEqual(decodeStream([header]), [Buffer.alloc(0)]);
  const frame = encodeFrame({ rid: 1, op: "status" });
  assert.deepEqual(decodeStream([Buffer.concat([frame, header])]).length, 2);
  assert.deepEqual(decodeStream([frame, header.subarray(0, 2), header.subarray(2)]).length, 2);
});

const validFrame = fc
  .record({
    rid: fc.nat(),
    op: fc.constantFrom("send", "receive", "ack", "list", "status", "hello"),
    mailbox: fc.string({ maxLength: 10 }),
    body: fc.uint8Array({ maxLength: 40 }),
    max: fc.integer(),
    after: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  })
  .map((value) => encodeFrame(value));

test("fuzz: random bytes in any chunking decode the same way, with bounded buffering", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.array(fc.nat(600), { maxLength: 8 }), (bytes, cuts) => {
      const stream = Buffer.from(bytes);
      const whole = decodeStream([stream]);
      const split = decodeStream(chunked(stream, cuts));
      if (whole === "too large" || split === "too large") {
        // Splitting can only reveal the oversized header earlier or at the same point.
        assert.equal(whole, split);
        return;
      }
      assert.deepEqual(split, whole);
      for (const payload of whole) {
        try {
          decodePayload(payload);
        } catch {
          // undecodable msgpack: the server closes such a connection
        }
      }
    }),
    { numRuns: 1000 },
  );
});

test("fuzz: mutated valid frames never crash the decoder", () => {
  fc.assert(
    fc.property(
      fc.array(validFrame, { minLength: 1, maxLength: 5 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
      fc.array(fc.nat(1000), { maxLength: 6 }),
      (frames, mutations, cuts) => {
        const stream = Buffer.concat(frames);
        for (const [position, value] of mutations) stream[position % stream.length] = value;
        const result = decodeStream(chunked(stream, cuts));
        if (result === "too large") return;
        for (const payload of result) {
          try {
            decodePayload(payload);
          } catch {
            // expected for some mutations
          }
        }
      },
    ),
    { numRuns: 1000 },
  );
});

test("unmutated frames round-trip, bigints included", () => {
  fc.assert(
    fc.property(fc.array(validFrame, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(1000), { maxLength: 6 }), (frames, cuts) => {
      const result = decodeStream(chunked(Buffer.concat(frames), cuts));
      assert.notEqual(result, "too large");
      assert.equal((result as Buffer[]).length, frames.length);
      for (const [index, payload] of (result as Buffer[]).entries()) {
        assert.deepEqual(decodePayload(payload), decodePayload(frames[index]!.subarray(FRAME_HEADER_BYTES)));
      }
    }),
    { numRuns: 300 },
  );
});
