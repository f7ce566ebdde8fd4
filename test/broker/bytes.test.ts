// ByteReader.strings (an ACK's ids, a SEND's recipients) reads what string() read one by one,
// whatever the strings: the ASCII run it decodes at once, or not.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { ByteReader, BytesError, ByteWriter } from "../../src/broker/bytes.js";

const text = fc.oneof(
  { arbitrary: fc.stringMatching(/^[0-9a-f-]{36}$/), weight: 6 }, // UUIDs, as ACKs carry
  { arbitrary: fc.string({ maxLength: 20 }), weight: 2 },
  { arbitrary: fc.string({ unit: "grapheme", maxLength: 10 }), weight: 1 },
  { arbitrary: fc.string({ minLength: 120, maxLength: 300 }), weight: 1 }, // lengths over 0x7f
);

function encoded(values: string[], tail: number[]): Uint8Array {
  const writer = new ByteWriter();
  writer.u32(values.length);
  for (const value of values) writer.string(value);
  for (const byte of tail) writer.u8(byte);
  return writer.finish();
}

test("strings() reads what string() reads, and leaves the reader where string() leaves it", () => {
  fc.assert(
    fc.property(fc.array(text, { maxLength: 40 }), fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 3 }), fc.boolean(), (values, tail, asBuffer) => {
      const bytes = encoded(values, tail);
      const data = asBuffer ? Buffer.from(bytes) : bytes.slice();
      const one = new ByteReader(data);
      const expected: string[] = [];
      const count = one.u32();
      for (let i = 0; i < count; i++) expected.push(one.string());
      const all = new ByteReader(data);
      assert.deepEqual(all.strings(all.u32()), expected);
      assert.equal(all.offset, one.offset);
    }),
    { numRuns: 500 },
  );
});

test("strings() of cut-off input throws BytesError, as string() does", () => {
  fc.assert(
    fc.property(fc.array(text, { minLength: 1, maxLength: 20 }), fc.integer({ min: 1, max: 1000 }), (values, cut) => {
      const bytes = encoded(values, []);
      const data = bytes.slice(0, Math.max(4, bytes.length - cut));
      if (data.length === bytes.length) return;
      const reader = new ByteReader(data);
      assert.throws(() => reader.strings(reader.u32()), BytesError);
    }),
    { numRuns: 300 },
  );
  // A count far beyond the input (a corrupt one) throws at the input's end, not on the count.
  const reader = new ByteReader(encoded(["a", "b", "c", "d"], []).slice());
  reader.u32();
  assert.throws(() => reader.strings(0xffffffff), BytesError);
});
