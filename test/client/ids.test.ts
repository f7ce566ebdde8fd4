// The ids the client library assigns: RFC 9562 UUIDv7, strictly increasing within a process, so
// the cluster's id records of recent SENDs sit next to each other in its ordered store.
import assert from "node:assert/strict";
import { test } from "node:test";
import { uuidv7 } from "../../src/client/ids.js";

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test("an id is a UUIDv7 whose first 48 bits are the Unix milliseconds", () => {
  // Ids never go back in a process, so each test here uses times past the ones before it, relative
  // to this machine's clock (a fixed date would break on a machine whose clock is behind it).
  const ms = Date.now() + 1_000_000;
  const id = uuidv7(ms);
  assert.match(id, UUID_V7);
  assert.equal(Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16), ms);
});

test("ids made in one millisecond and across milliseconds strictly increase, as strings", () => {
  const start = Date.now() + 10_000_000;
  const ids: string[] = [];
  for (let ms = start; ms < start + 5; ms++) for (let i = 0; i < 1000; i++) ids.push(uuidv7(ms));
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i - 1]! < ids[i]!, `${ids[i - 1]} < ${ids[i]}`);
  assert.equal(new Set(ids).size, ids.length);
});

test("a clock that steps back does not reorder ids; a full counter moves the time on by 1 ms", () => {
  const ms = Date.now() + 20_000_000;
  const before = uuidv7(ms);
  const after = uuidv7(ms - 5000);
  assert.ok(before < after);
  // 4096 ids fit one millisecond's counter; the next one carries the following millisecond.
  const ids = Array.from({ length: 5000 }, () => uuidv7(ms));
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i - 1]! < ids[i]!);
  const lastMs = Number.parseInt(ids.at(-1)!.slice(0, 8) + ids.at(-1)!.slice(9, 13), 16);
  assert.equal(lastMs, ms + 1);
});

test("the 62 bits after the variant are random: every hex digit of them varies between ids", () => {
  const ids = Array.from({ length: 2000 }, () => uuidv7());
  for (let position = 20; position < 36; position++) {
    if (position === 23) continue; // the dash
    const digits = new Set(ids.map((id) => id[position]));
    assert.ok(digits.size >= 14, `position ${position}: ${[...digits].join("")}`);
  }
  // The variant digit takes its two random bits: 8, 9, a and b.
  assert.deepEqual(new Set(ids.map((id) => id[19])), new Set(["8", "9", "a", "b"]));
});
