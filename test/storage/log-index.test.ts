// LogIndex against a plain array model: appends (with conflicting suffixes), compactions (which
// move live slots to the front), resets.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { LogIndex } from "../../src/storage/log-index.js";

const operation = fc.oneof(
  fc.record({ kind: fc.constant("append" as const), back: fc.nat(5), count: fc.integer({ min: 1, max: 20 }) }),
  fc.record({ kind: fc.constant("compact" as const), fraction: fc.double({ min: 0, max: 1, noNaN: true }) }),
  fc.record({ kind: fc.constant("reset" as const), ahead: fc.nat(10) }),
);

test("LogIndex matches an array model", () => {
  fc.assert(
    fc.property(fc.array(operation, { maxLength: 60 }), fc.integer({ min: 1, max: 8 }), (operations, capacity) => {
      const index = new LogIndex(capacity);
      let firstIndex = 1;
      let previousTerm = 0;
      let model: Array<{ term: number; offset: number }> = [];
      let counter = 0;
      for (const op of operations) {
        const lastIndex = firstIndex + model.length - 1;
        if (op.kind === "append") {
          const first = Math.max(firstIndex, lastIndex + 1 - op.back);
          model.length = first - firstIndex;
          for (let i = 0; i < op.count; i++) {
            counter++;
            index.append(first + i, counter, counter % 7, counter * 8, counter + 16);
            model.push({ term: counter, offset: counter * 8 });
          }
        } else if (op.kind === "compact") {
          const to = Math.floor(firstIndex + (lastIndex + 1 - firstIndex) * op.fraction);
          index.compact(to);
          if (to > firstIndex) {
            previousTerm = model[to - 1 - firstIndex]!.term;
            model = model.slice(to - firstIndex);
            firstIndex = to;
          }
        } else {
          firstIndex = lastIndex + 1 + op.ahead;
          previousTerm = ++counter;
          index.reset(firstIndex, previousTerm);
          model = [];
        }
        assert.equal(index.firstIndex, firstIndex);
        assert.equal(index.lastIndex, firstIndex + model.length - 1);
        assert.equal(index.term(firstIndex - 1), previousTerm);
        model.forEach((slot, position) => {
          assert.equal(index.term(firstIndex + position), slot.term);
          assert.equal(index.position(firstIndex + position).offsetBytes, slot.offset);
        });
      }
    }),
    { numRuns: 300 },
  );
});
