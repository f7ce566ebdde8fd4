// A StoredDelivery (a leader's RECEIVE reply message written from its record) must write exactly
// the bytes FrameWriter writes for the plain DeliveredMessage of the same record, read back the
// same fields, and survive a frame that goes to msgpackr.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { decodeMessage, decodeMessageHead, encodeMessage, type StoredMessage } from "../../src/broker/records.js";
import { delivered, StoredDelivery } from "../../src/broker/stored-delivery.js";
import { decodePayload } from "../../src/protocol/binary.js";
import { FrameWriter } from "../../src/protocol/frame-writer.js";

const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: "grapheme", maxLength: 20 }), fc.string({ minLength: 250, maxLength: 300 }));
const headerName = fc.oneof(text, fc.constantFrom("__proto__", "0", "17", "constructor", "toString"));
const storedMessage: fc.Arbitrary<StoredMessage> = fc.record({
  id: fc.oneof(fc.stringMatching(/^[0-9a-z]{1,13}~[0-9a-z]{1,4}$/), fc.stringMatching(/^[A-Za-z0-9._:+=@/-]{1,128}$/)),
  sender: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/), // a name: ASCII, as encodeMessage requires
  timestamp: fc.oneof(fc.bigInt({ min: 0n, max: (1n << 63n) - 1n }), fc.bigInt({ min: 1n << 63n, max: (1n << 64n) - 1n })),
  hiddenUntilMs: fc.constantFrom(0, 1_795_000_000_000),
  expiresAtMs: fc.constantFrom(0, 1_795_000_000_000),
  headers: fc.option(fc.dictionary(headerName, text, { maxKeys: 6 }), { nil: undefined }),
  // Now and then past 64 KiB, where the bin header grows to 4 bytes.
  body: fc.oneof({ arbitrary: fc.uint8Array({ maxLength: 300 }), weight: 9 }, { arbitrary: fc.uint8Array({ minLength: 65_530, maxLength: 65_600 }), weight: 1 }),
  senderTime: fc.option(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { nil: undefined }),
});

function frameOf(rid: number, value: Record<string, unknown>): Buffer {
  const writer = new FrameWriter(256);
  writer.append(rid, value);
  return Buffer.from(writer.take()!);
}

test("a StoredDelivery writes the bytes of the DeliveredMessage it stands for, and reads back its fields", () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(storedMessage, fc.integer({ min: 1, max: 1000 })), { maxLength: 5 }), fc.string({ maxLength: 70 }), (cases, recipient) => {
      const records = cases.map(([message, deliveries]) => {
        const record = encodeMessage(message).slice(); // encodeMessage's bytes are a scratch buffer's
        return { record, deliveries, decoded: decodeMessage(record) };
      });
      const plain = records.map(({ decoded, deliveries }) => delivered(recipient, decoded, deliveries));
      const stored = records.map(({ record, deliveries }) => new StoredDelivery(recipient, deliveries, record, decodeMessageHead(record)));
      assert.deepEqual(frameOf(7, { ok: true, messages: stored }), frameOf(7, { ok: true, messages: plain }));
      for (const [index, message] of stored.entries()) {
        const expected = plain[index]!;
        assert.deepEqual(message.plain(), expected);
        assert.equal(message.id, expected.id);
        assert.equal(message.sender, expected.sender);
        assert.equal(message.recipient, expected.recipient);
        assert.equal(message.timestamp, expected.timestamp);
        assert.equal(message.deliveries, expected.deliveries);
        assert.deepEqual(message.body, expected.body);
        assert.deepEqual(message.headers, expected.headers);
        assert.equal(message.senderTime, expected.senderTime);
      }
    }),
    { numRuns: 200 },
  );
});

test("a frame that goes to msgpackr carries a StoredDelivery's fields", () => {
  const message: StoredMessage = {
    id: "1a~2",
    sender: "alice",
    timestamp: 123_456_789n,
    hiddenUntilMs: 0,
    expiresAtMs: 0,
    headers: { trace: "x" },
    body: new Uint8Array([1, 2, 3]),
    senderTime: undefined,
  };
  const record = encodeMessage(message).slice();
  const stored = new StoredDelivery("bob", 2, record, decodeMessageHead(record));
  // A Date is a value kind FrameWriter hands to msgpackr, with the whole frame.
  const when = new Date(0);
  const frame = frameOf(3, { ok: true, messages: [stored], when });
  const decoded = decodePayload(frame.subarray(4)) as Record<string, unknown>;
  assert.deepEqual(decoded.messages, [{ ...delivered("bob", message, 2), body: Buffer.from([1, 2, 3]) }]);
  assert.deepEqual(decoded.when, when);
});
