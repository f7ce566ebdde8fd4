// The fast payload reader (src/protocol/frame-reader.ts) must decode exactly as msgpackr does:
// any value msgpackr can encode, and any bytes at all, give the same value or the same failure.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { Packr } from "msgpackr";
import { decodePayload, encodePayload } from "../../src/protocol/binary.js";

// The reference: the options binary.ts gives msgpackr.
const reference = new Packr({ useRecords: false, int64AsType: "bigint", mapsAsObjects: true });

function outcome(decode: () => unknown): { value: unknown } | { error: true } {
  try {
    return { value: decode() };
  } catch {
    return { error: true };
  }
}

// assert.deepStrictEqual compares Dates by getTime() with ===, so two Invalid Dates (a timestamp
// extension of the wrong length decodes to one) would never compare equal. Dates become marks
// that only equal marks of the same time, NaN included.
class DateMark {
  constructor(readonly time: string) {}
}
function comparable(value: unknown): unknown {
  if (value instanceof Date) return new DateMark(String(value.getTime()));
  if (Array.isArray(value)) return value.map(comparable);
  if (value !== null && typeof value === "object" && !Buffer.isBuffer(value)) {
    const copy: Record<string, unknown> = Object.create(Object.getPrototypeOf(value));
    for (const name of Object.keys(value)) Object.defineProperty(copy, name, { value: comparable((value as Record<string, unknown>)[name]), enumerable: true, writable: true, configurable: true });
    return copy;
  }
  return value;
}

function assertSameAsMsgpackr(payload: Buffer): void {
  const expected = outcome(() => comparable(reference.unpack(Buffer.from(payload))));
  const actual = outcome(() => comparable(decodePayload(payload)));
  if ("error" in expected) assert.ok("error" in actual, "msgpackr throws, the reader must too");
  else assert.deepStrictEqual(actual, expected);
}

const key = fc.oneof(fc.constantFrom("rid", "op", "body", "__proto__", "recipients", "x".repeat(40)), fc.string({ maxLength: 20 }), fc.string({ unit: "grapheme", maxLength: 5 }));
const leaf = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.bigInt({ min: -(1n << 63n), max: (1n << 64n) - 1n }),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.string({ maxLength: 70 }),
  fc.string({ unit: "grapheme", maxLength: 10 }),
  fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
);
const value = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: "small" }, leaf, fc.array(tie("value"), { maxLength: 5 }), fc.dictionary(key, tie("value"), { maxKeys: 5 })),
})).value;

test("frame reader: every encodable value decodes as msgpackr decodes it", () => {
  fc.assert(fc.property(value, (item) => assertSameAsMsgpackr(encodePayload(item))), { numRuns: 2000 });
});

test("frame reader: requests as clients send them", () => {
  const send = { rid: 7, op: "send", recipients: ["bench", "b-2"], body: Buffer.alloc(256, 97), id: "0190f0f0-aaaa-7bbb-8ccc-dddddddddddd", senderTime: 1n << 62n };
  const decoded = decodePayload(encodePayload(send)) as typeof send;
  assert.deepStrictEqual(decoded, send);
  assert.ok(Buffer.isBuffer(decoded.body));
  assertSameAsMsgpackr(encodePayload({ rid: 1, op: "hello", __proto__: { sender: "x" } }));
  assertSameAsMsgpackr(encodePayload(JSON.parse('{"__proto__": {"polluted": true}, "op": "send"}')));
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

test("frame reader: timestamp extensions, valid or of the wrong length, decode as msgpackr's Dates do", () => {
  // CI once drew [0xd4, 0xff, 0x00]: a 1-byte timestamp, an Invalid Date on both sides.
  assertSameAsMsgpackr(Buffer.from([0xd4, 0xff, 0x00]));
  assert.ok(Number.isNaN((decodePayload(Buffer.from([0xd4, 0xff, 0x00])) as Date).getTime()));
  assertSameAsMsgpackr(Buffer.from([0xd6, 0xff, 0, 0, 0, 1]));
  assertSameAsMsgpackr(Buffer.from([0xd7, 0xff, 0, 0, 0, 0, 0, 0, 0, 1]));
  assert.throws(() => assert.deepStrictEqual(comparable(new Date(1)), comparable(new Date(2))));
  assert.throws(() => assert.deepStrictEqual(comparable(new Date(Number.NaN)), comparable(new Date(0))));
});

test("frame reader: truncated, trailing and random bytes fail or decode as msgpackr does", () => {
  fc.assert(
    fc.property(value, fc.nat(), fc.uint8Array({ maxLength: 3 }), (item, cut, extra) => {
      const bytes = encodePayload(item);
      assertSameAsMsgpackr(bytes.subarray(0, cut % (bytes.length + 1)));
      assertSameAsMsgpackr(Buffer.concat([bytes, extra]));
    }),
    { numRuns: 1000 },
  );
  fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => assertSameAsMsgpackr(Buffer.from(bytes))), { numRuns: 3000 });
});

test("frame reader: deep nesting is left to msgpackr", () => {
  let nested: unknown = 1;
  for (let depth = 0; depth < 100; depth++) nested = depth % 2 === 0 ? [nested] : { a: nested };
  assertSameAsMsgpackr(encodePayload(nested));
});
