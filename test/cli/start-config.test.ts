// `ferry start` settings: flag, environment, config file and default, and what is refused.
import assert from "node:assert/strict";
import { test } from "node:test";
import { resolveConfig } from "../../src/cli/node-start.js";
import { NODE_DEFAULTS } from "../../src/node/config.js";

test("--state-commit-ms comes from the flag, else FERRY_STATE_COMMIT_MS, else the default; 0 is refused", () => {
  assert.equal(resolveConfig({ id: "1" }).stateCommitMs, NODE_DEFAULTS.stateCommitMs);
  assert.equal(resolveConfig({ id: "1", stateCommitMs: "250" }).stateCommitMs, 250);
  process.env.FERRY_STATE_COMMIT_MS = "40";
  try {
    assert.equal(resolveConfig({ id: "1" }).stateCommitMs, 40);
    assert.equal(resolveConfig({ id: "1", stateCommitMs: "250" }).stateCommitMs, 250, "the flag wins");
  } finally {
    delete process.env.FERRY_STATE_COMMIT_MS;
  }
  assert.throws(() => resolveConfig({ id: "1", stateCommitMs: "0" }), /stateCommitMs must be positive/);
  assert.throws(() => resolveConfig({ id: "1", stateCommitMs: "soon" }), /must be a number/);
  assert.throws(() => resolveConfig({ id: "1", stateCommitMs: "2.5" }), /stateCommitMs must be a whole number of ms up to 60000/);
  assert.throws(() => resolveConfig({ id: "1", stateCommitMs: "3000000000" }), /stateCommitMs must be a whole number of ms up to 60000/);
});

test("--snapshot-bytes-max comes from the flag, else FERRY_SNAPSHOT_BYTES_MAX, else 64 GiB; 0 is refused", () => {
  assert.equal(resolveConfig({ id: "1" }).snapshotBytesMax, 64 * 1024 * 1024 * 1024);
  assert.equal(resolveConfig({ id: "1", snapshotBytesMax: "1048576" }).snapshotBytesMax, 1048576);
  process.env.FERRY_SNAPSHOT_BYTES_MAX = "2048";
  try {
    assert.equal(resolveConfig({ id: "1" }).snapshotBytesMax, 2048);
  } finally {
    delete process.env.FERRY_SNAPSHOT_BYTES_MAX;
  }
  assert.throws(() => resolveConfig({ id: "1", snapshotBytesMax: "0" }), /snapshotBytesMax must be positive/);
});

test("the config file's broker object sets the broker's limits, checked at start; its limits object sets the server's", async () => {
  const { mkdtempSync, writeFileSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { resolveServerLimits } = await import("../../src/cli/node-start.js");
  const { SERVER_LIMITS_DEFAULT } = await import("../../src/server/limits.js");
  const dir = mkdtempSync(join(tmpdir(), "ferry-start-config-"));
  const file = (name: string, content: unknown): string => {
    const path = join(dir, name);
    writeFileSync(path, JSON.stringify(content));
    return path;
  };
  const good = file("good.json", { broker: { bodyBytesMax: 65536, mailbox: { visibilityMs: 5000 } }, limits: { bodyBytesMax: 65536, connectionsMax: 10 } });
  const config = resolveConfig({ id: "1", config: good });
  assert.equal(config.broker?.bodyBytesMax, 65536);
  assert.equal(config.broker?.mailbox?.visibilityMs, 5000);
  assert.equal(config.broker?.mailbox?.deliveriesMax, 5, "the other mailbox defaults stay");
  assert.deepEqual(resolveServerLimits({ config: good }), { ...SERVER_LIMITS_DEFAULT, bodyBytesMax: 65536, connectionsMax: 10 });
  assert.deepEqual(resolveServerLimits({}), SERVER_LIMITS_DEFAULT);
  assert.equal(resolveConfig({ id: "1" }).broker?.bodyBytesMax, 1024 * 1024, "without a file: the defaults");
  assert.throws(() => resolveConfig({ id: "1", config: file("typo.json", { broker: { bodyBytes: 1 } }) }), /unknown broker setting 'bodyBytes'/);
  assert.throws(() => resolveConfig({ id: "1", config: file("zero.json", { broker: { mailboxesMax: 0 } }) }), /mailboxesMax must be an integer from 1/);
  assert.throws(() => resolveServerLimits({ config: file("limits-typo.json", { limits: { bodyBytes: 1 } }) }), /unknown server limit 'bodyBytes'/);
  assert.throws(() => resolveServerLimits({ config: file("limits-array.json", { limits: [1] }) }), /limits must be an object/);
});
