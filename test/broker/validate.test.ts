// The table-driven id checks accept exactly what their regular expressions describe.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { BROKER_DEFAULTS } from "../../src/broker/broker.js";
import { CLIENT_ID_PATTERN, clientIdProblem, idsProblem, PRINTABLE_ASCII } from "../../src/broker/validate.js";

const ids = fc.oneof(
  fc.string({ minLength: 1, maxLength: 40 }),
  fc.string({ unit: "binary", minLength: 1, maxLength: 40 }),
  fc.stringMatching(/^[A-Za-z0-9._:\-+=@/~ ]{1,40}$/),
);

test("clientIdProblem accepts an id exactly when it matches the client id pattern", () => {
  fc.assert(
    fc.property(ids, (id) => {
      assert.equal(clientIdProblem(id, BROKER_DEFAULTS) === undefined, CLIENT_ID_PATTERN.test(id), JSON.stringify(id));
    }),
    { numRuns: 3000 },
  );
  assert.equal(clientIdProblem("0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b", BROKER_DEFAULTS), undefined);
  assert.equal(clientIdProblem("a~b", BROKER_DEFAULTS)?.code, "INVALID");
  assert.equal(clientIdProblem("é", BROKER_DEFAULTS)?.code, "INVALID");
});

test("idsProblem accepts ids exactly when each is printable ASCII", () => {
  fc.assert(
    fc.property(fc.array(ids, { minLength: 1, maxLength: 5 }), (list) => {
      assert.equal(idsProblem(list, BROKER_DEFAULTS) === undefined, list.every((id) => PRINTABLE_ASCII.test(id)), JSON.stringify(list));
    }),
    { numRuns: 3000 },
  );
});
