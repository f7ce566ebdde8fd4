// FrameWriter must produce frames that decode exactly like binary.ts's encodeFrame({ rid, ...value })
// for every value a reply can hold, including kinds it hands to msgpackr, across buffer growth and
// take() boundaries.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { decodePayload, encodeFrame, FrameDecoder } from "../../src/protocol/binary.js";
import { FrameWriter } from "../../src/protocol/frame-writer.js";

const leaf = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ minLength: 200, maxLength: 400 }),
  fc.integer(),
  fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.bigInt({ min: -(1n << 63n), max: (1n << 64n) - 1n }),
  fc.bigInt({ min: 1n << 64n, max: 1n << 70n }), // beyond msgpack: msgpackr's fallback decides
  fc.uint8Array({ maxLength: 300 }),
  fc.date({ noInvalidDate: true }), // not written by FrameWriter itself: goes through msgpackr (an Invalid Date never equals itself)
);
const value = fc.letrec((tie) => ({
  node: fc.oneof({ depthSize: "small" }, leaf, fc.array(tie("node"), { maxLength: 20 }), fc.dictionary(fc.string({ maxLength: 8 }), tie("node"), { maxKeys: 20 })),
})).node;
const reply = fc.dictionary(
  fc.string({ maxLength: 12 }).filter((key) => key !== "rid" && key !== "__proto__"),
  value,
  { maxKeys: 20 },
);

function decodeAll(bytes: Buffer[]): unknown[] {
  const decoder = new FrameDecoder(1 << 30);
  return bytes.flatMap((chunk) => decoder.push(chunk)).map((payload) => decodePayload(payload));
}

function expected(rid: number, value: Record<string, unknown>): unknown {
  try {
    return decodeAll([encodeFrame({ rid, ...value })])[0];
  } catch (error) {
    return error instanceof Error ? error.constructor : error;
  }
}

test("FrameWriter frames decode like encodeFrame({ rid, ...value }), across growth and takes", () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat({ max: 0xffff_ffff }), reply, fc.boolean()), { maxLength: 12 }), fc.integer({ min: 16, max: 4096 }), (frames, chunkBytes) => {
      const writer = new FrameWriter(chunkBytes);
      const taken: Buffer[] = [];
      const wanted: unknown[] = [];
      for (const [rid, value, takeAfter] of frames) {
        const want = expected(rid, value);
        if (typeof want === "function") {
          assert.throws(() => writer.append(rid, value)); // msgpackr refuses it too
          continue;
        }
        wanted.push(want);
        writer.append(rid, value);
        if (takeAfter) taken.push(Buffer.from(writer.take() ?? Buffer.alloc(0)));
      }
      taken.push(Buffer.from(writer.take() ?? Buffer.alloc(0)));
      assert.equal(writer.pendingBytes, 0);
      assert.deepEqual(decodeAll(taken), wanted);
    }),
    { numRuns: 300 },
  );
});

test("FrameWriter.dropLast removes the frame just appended", () => {
  const writer = new FrameWriter(64);
  writer.append(1, { ok: true });
  const bytes = writer.append(2, { ok: true, blob: new Uint8Array(500) });
  writer.dropLast(bytes);
  writer.append(3, { ok: false, code: "TOO_LARGE" });
  assert.deepEqual(decodeAll([writer.take()!]), [
    { rid: 1, ok: true },
    { rid: 3, ok: false, code: "TOO_LARGE" },
  ]);
});

test("FrameWriter writes strings with their smallest header, ASCII or not, at every length up to 300", () => {
  const writer = new FrameWriter(64);
  for (let length = 0; length <= 300; length++) {
    for (const text of ["u".repeat(length), `${"u".repeat(Math.max(0, length - 1))}é`.slice(-Math.max(length, 1))]) {
      const bytes = Buffer.byteLength(text);
      writer.append(length, { s: text });
      const frame = writer.take()!;
      // header (4) + fixmap (1) + "rid" (4) + rid (1-3) + "s" (2), then the string's header
      const payload = frame.subarray(4);
      assert.deepEqual(decodePayload(payload), { rid: length, s: text });
      const at = payload.length - bytes;
      const header = payload.subarray(0, at).subarray(-(bytes < 32 ? 1 : bytes < 0x100 ? 2 : 3));
      if (bytes < 32) assert.equal(header[0], 0xa0 | bytes);
      else if (bytes < 0x100) assert.deepEqual([...header], [0xd9, bytes]);
      else assert.deepEqual([...header], [0xda, bytes >> 8, bytes & 0xff]);
    }
  }
});
