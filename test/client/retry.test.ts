// The retry and routing rules, and the backoff bounds, as pure functions.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { backoffDelayMs } from "../../src/client/backoff.js";
import { ConnectionError } from "../../src/client/connection.js";
import { mayRetry, routeAfter } from "../../src/client/retry.js";
import { ERROR_CODES, FerryError } from "../../src/protocol/errors.js";

test("idempotent calls retry every retryable code; others only what proves nothing was applied", () => {
  for (const code of ERROR_CODES) {
    const error = new FerryError(code, "x");
    assert.equal(mayRetry("idempotent", error), error.retryable, code);
    assert.equal(mayRetry("unapplied-only", error), code === "NOT_LEADER" || code === "OVERLOADED", code);
  }
  const unsent = new ConnectionError("refused", "127.0.0.1:1", false);
  const lost = new ConnectionError("lost", "127.0.0.1:1", true);
  assert.equal(mayRetry("unapplied-only", unsent), true);
  assert.equal(mayRetry("unapplied-only", lost), false);
  assert.equal(mayRetry("idempotent", lost), true);
});

test("routing: follow a new leader hint, move on from nodes that cannot serve, stay otherwise", () => {
  const here = "127.0.0.1:1";
  assert.deepEqual(routeAfter(new FerryError("NOT_LEADER", "x", "127.0.0.1:2"), here), { action: "redirect", address: "127.0.0.1:2" });
  assert.deepEqual(routeAfter(new FerryError("NOT_LEADER", "x", here), here), { action: "next-seed" });
  assert.deepEqual(routeAfter(new FerryError("NOT_LEADER", "x"), here), { action: "next-seed" });
  for (const code of ["NO_QUORUM", "UNHEALTHY", "SHUTTING_DOWN"] as const) {
    assert.deepEqual(routeAfter(new FerryError(code, "x"), here), { action: "next-seed" });
  }
  for (const code of ["TIMEOUT", "OVERLOADED", "INVALID"] as const) {
    assert.deepEqual(routeAfter(new FerryError(code, "x"), here), { action: "stay" });
  }
  assert.deepEqual(routeAfter(new ConnectionError("refused", here, false), here), { action: "next-seed" });
  assert.deepEqual(routeAfter(new ConnectionError("lost", here, true), here), { action: "stay" });
});

test("full-jitter backoff stays within [0, min(max, min * 2^attempt))", () => {
  fc.assert(
    fc.property(fc.nat(100), fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 0, max: 100_000 }), fc.double({ min: 0, max: 0.999999, noNaN: true }), (attempt, minMs, extraMs, random) => {
      const maxMs = minMs + extraMs;
      const delay = backoffDelayMs(attempt, minMs, maxMs, () => random);
      assert.ok(delay >= 0 && delay < Math.min(maxMs, minMs * 2 ** attempt) + 1e-9);
      assert.ok(Number.isInteger(delay));
    }),
  );
  // The ceiling grows, then stops at max.
  assert.equal(backoffDelayMs(0, 10, 1000, () => 0.999), 9);
  assert.equal(backoffDelayMs(3, 10, 1000, () => 0.999), 79);
  assert.equal(backoffDelayMs(60, 10, 1000, () => 0.999), 999);
});
