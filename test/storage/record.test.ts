// The record format: every type round-trips, and any single flipped bit is detected.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  decodeEntry,
  decodeHardState,
  decodeSegmentHeader,
  decodeSnapshotMarker,
  readRecord,
  RecordType,
  RecordWriter,
  recordSizeBytes,
} from "../../src/storage/record.js";

const conf = { voters: [1, 2, 3], learners: [4], votersOutgoing: [1, 2], learnersNext: [5], autoLeave: true };

function write(fill: (writer: RecordWriter) => void, capacityBytes = 4096, batchStartBytes = 128): { buffer: Uint8Array; view: DataView; end: number } {
  const writer = new RecordWriter(capacityBytes, batchStartBytes);
  fill(writer);
  return { buffer: writer.buffer, view: new DataView(writer.buffer.buffer), end: writer.offsetBytes };
}

test("each record type round-trips", () => {
  const data = new Uint8Array([0, 1, 2, 250, 255]);
  const { buffer, view, end } = write((w) => {
    w.segmentHeader({ sequence: 7, firstIndex: 1001, previousTerm: 4 });
    w.entry({ index: 1001, term: 5, type: "normal", data });
    w.entry({ index: 1002, term: 5, type: "conf-change", data: new Uint8Array(0) });
    w.hardState({ term: 5, vote: 3, commit: 999 });
    w.snapshotMarker({ index: 900, term: 4, conf, reset: true });
  });
  const found: unknown[] = [];
  for (let offset = 0; offset < end; ) {
    const read = readRecord(buffer, view, offset, end);
    assert.equal(read.kind, "record");
    if (read.kind !== "record") break;
    assert.equal(read.batchStartBytes, 128);
    assert.equal(offset % 8, 0, "records are 8-byte aligned");
    if (read.type === RecordType.segmentHeader) found.push(decodeSegmentHeader(view, read.payloadStart));
    if (read.type === RecordType.entry) {
      const entry = decodeEntry(buffer, view, read.payloadStart, read.payloadBytes, true);
      found.push({ ...entry, data: [...entry.data] });
    }
    if (read.type === RecordType.hardState) found.push(decodeHardState(view, read.payloadStart));
    if (read.type === RecordType.snapshotMarker) found.push(decodeSnapshotMarker(buffer, view, read.payloadStart, read.payloadBytes));
    offset += read.sizeBytes;
  }
  assert.deepEqual(found, [
    { sequence: 7, firstIndex: 1001, previousTerm: 4 },
    { index: 1001, term: 5, type: "normal", data: [0, 1, 2, 250, 255] },
    { index: 1002, term: 5, type: "conf-change", data: [] },
    { term: 5, vote: 3, commit: 999 },
    { index: 900, term: 4, conf, reset: true },
  ]);
  assert.deepEqual(readRecord(buffer, view, end, buffer.length), { kind: "zero" });
});

test("any single flipped bit in a record is detected", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 100 }), fc.nat(), (data, bitSeed) => {
      const { buffer, view, end } = write((w) => w.entry({ index: 42, term: 3, type: "normal", data }));
      const payloadEnd = 16 + 17 + data.length; // the padding after it is not covered
      const bit = bitSeed % (payloadEnd * 8);
      buffer[bit >> 3]! ^= 1 << (bit & 7);
      const read = readRecord(buffer, view, 0, end);
      assert.notEqual(read.kind, "record", `bit ${bit} flipped went unnoticed`);
    }),
    { numRuns: 500 },
  );
});

test("a record cut short is bad, and record sizes are padded to 8 bytes", () => {
  const { buffer, view, end } = write((w) => w.hardState({ term: 1, vote: 1, commit: 1 }));
  assert.equal(end, recordSizeBytes(24));
  assert.equal(recordSizeBytes(24), 40);
  assert.equal(recordSizeBytes(25), 48);
  for (let limit = 1; limit < 16 + 24; limit++) assert.equal(readRecord(buffer, view, 0, limit).kind, "bad", `limit ${limit}`);
});
