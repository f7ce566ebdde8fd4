// InlineIds against a Map model: random adds, moves, deletes and lookups, with real hashes (growth,
// backward-shift deletion), with 4 hash values (every lookup collides and must confirm through
// idAt) and with hashes whose slots sit at the table's end (probe runs wrap around it).
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { InlineIds, type InlineLocation } from "../../src/broker/inline-ids.js";

type Op =
  | { op: "add" | "set"; id: number; list: number; item: number }
  | { op: "delete" | "get"; id: number }
  | { op: "isAt"; id: number; list: number; item: number };

const ids = fc.integer({ min: 0, max: 3000 });
const place = { list: fc.integer({ min: 1, max: 50 }), item: fc.integer({ min: 0, max: 200 }) };
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant("add" as const), id: ids, ...place }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("set" as const), id: ids, ...place }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constantFrom("delete" as const, "get" as const), id: ids }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("isAt" as const), id: ids, ...place }) },
);

function check(testHash: ((id: string) => number) | undefined, ops: Op[]): void {
  const model = new Map<string, InlineLocation>();
  // (list, item) -> id: what the broker's dedupe lists would hold. Each place names one id.
  const places = new Map<string, string>();
  const table = new InlineIds((list, item) => {
    const id = places.get(`${list}/${item}`);
    assert.ok(id !== undefined, `confirmation asks for an item that exists: ${list}/${item}`);
    return id;
  }, testHash);
  for (const o of ops) {
    const id = `id-${o.id}`;
    if (o.op === "add" || o.op === "set") {
      const where = `${o.list}/${o.item}`;
      if (places.has(where) && places.get(where) !== id) continue; // the place belongs to another id
      if (o.op === "add" && model.has(id)) continue; // add() is for ids without a location
      places.set(where, id);
      if (o.op === "add") table.add(id, o.list, o.item);
      else table.set(id, o.list, o.item);
      model.set(id, { list: o.list, item: o.item });
    } else if (o.op === "delete") {
      assert.equal(table.delete(id), model.delete(id));
    } else if (o.op === "get") {
      assert.deepEqual(table.get(id), model.get(id));
    } else if (o.op === "isAt") {
      const at = model.get(id);
      assert.equal(table.isAt(id, o.list, o.item), at !== undefined && at.list === o.list && at.item === o.item);
    }
    assert.equal(table.size, model.size);
  }
  for (const [id, at] of model) {
    assert.deepEqual(table.get(id), at);
    table.deleteAt(id, at.list, at.item);
  }
  assert.equal(table.size, 0);
}

const number = (id: string): number => Number(id.slice(3));

test("InlineIds matches a Map with real hashes", () => {
  fc.assert(fc.property(fc.array(op, { maxLength: 3000 }), (ops) => check(undefined, ops)), { numRuns: 60 });
});

test("InlineIds matches a Map when every hash collides", () => {
  fc.assert(fc.property(fc.array(op, { maxLength: 600 }), (ops) => check((id) => number(id) % 4, ops)), { numRuns: 60 });
});

test("InlineIds matches a Map when probe runs wrap around the table's end", () => {
  // Homes 1016..1023 of the first table (1024 slots): runs continue at slot 0.
  const ids = fc.integer({ min: 0, max: 400 });
  const small: fc.Arbitrary<Op> = fc.oneof(
    { weight: 5, arbitrary: fc.record({ op: fc.constant("add" as const), id: ids, ...place }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constantFrom("delete" as const, "get" as const), id: ids }) },
  );
  fc.assert(fc.property(fc.array(small, { maxLength: 800 }), (ops) => check((id) => 1016 + (number(id) % 8), ops)), { numRuns: 60 });
});

test("InlineIds holds a million ids in typed arrays and finds each", () => {
  const table = new InlineIds((list, item) => `id-${list * 1000 + item}`);
  for (let n = 0; n < 1_000_000; n++) table.add(`id-${1000 + n}`, 1 + Math.floor(n / 1000), n % 1000);
  assert.equal(table.size, 1_000_000);
  for (let n = 0; n < 1_000_000; n += 997) assert.deepEqual(table.get(`id-${1000 + n}`), { list: 1 + Math.floor(n / 1000), item: n % 1000 });
  assert.equal(table.get("id-0"), undefined);
  for (let n = 0; n < 1_000_000; n += 2) table.deleteAt(`id-${1000 + n}`, 1 + Math.floor(n / 1000), n % 1000);
  assert.equal(table.size, 500_000);
  for (let n = 1; n < 1_000_000; n += 1998) assert.ok(table.has(`id-${1000 + n}`));
  for (let n = 0; n < 1_000_000; n += 2002) assert.ok(!table.has(`id-${1000 + n}`));
});

test("InlineIds keeps an entry whose home is after the hole when deleting across the table's end", () => {
  // a..d fill their homes 1020..1023; e (home 1022) wraps to slot 0. Deleting a opens a hole at
  // 1020 that e must not fill: a lookup of e starts at 1022.
  const homes: Record<string, number> = { a: 1020, b: 1021, c: 1022, d: 1023, e: 1022 };
  const order = ["a", "b", "c", "d", "e"];
  const table = new InlineIds((_list, item) => order[item]!, (id) => homes[id]!);
  order.forEach((id, item) => {
    table.add(id, 1, item);
  });
  assert.ok(table.delete("a"));
  assert.deepEqual(
    order.map((id) => table.has(id)),
    [false, true, true, true, true],
  );
});
