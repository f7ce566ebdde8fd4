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
