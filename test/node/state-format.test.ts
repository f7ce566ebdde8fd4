// A node refuses a data directory whose state store it cannot read, naming the directory, rather
// than starting and failing in the first apply. The store here is one from before the state
// format record (an old `npm start`'s ./data held one: every node failed its first apply at once,
// on dedupe keys of an older layout). The node must also let go of the directory (its WAL lock)
// so that the operator, or another attempt, can use it.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { StateFormatError } from "../../src/broker/broker.js";
import { APPLIED_KEY, DEDUPE_LIST, encodeIndex, u64Key } from "../../src/broker/records.js";
import { NODE_DEFAULTS, type NodeConfig } from "../../src/node/config.js";
import { FerryNode } from "../../src/node/node.js";
import { LmdbKv } from "../../src/storage/kv-lmdb.js";
import { freePort } from "../e2e/harness.js";

test("a node refuses a state store of an older layout, says which directory to empty, and releases it", { timeout: 30_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ferry-state-format-"));
  try {
    const dataDir = join(root, "node1");
    const old = new LmdbKv({ path: join(dataDir, "state") });
    old.transaction(() => {
      old.put(APPLIED_KEY, encodeIndex(3));
      old.put(`${DEDUPE_LIST}${u64Key(1_000)}01a20f4c-1d80-7000-8000-000000000000`, new Uint8Array(0));
    });
    await old.close();
    const member = { id: 1, peer: `127.0.0.1:${await freePort()}`, client: `127.0.0.1:${await freePort()}` };
    const config: NodeConfig = { ...NODE_DEFAULTS, id: 1, dataDir, clientListen: member.client, peerListen: member.peer, members: [member] };
    await assert.rejects(
      FerryNode.start(config),
      (error: unknown) => error instanceof StateFormatError && error.message.includes(`remove ${dataDir}`) && /before state format versioning/.test(error.message),
    );
    // With only the state store removed, the same directory starts a node: the refused attempt
    // released the WAL's lock (held, a second open fails with StorageLockedError).
    await rm(join(dataDir, "state"), { recursive: true, force: true });
    const node = await FerryNode.start(config);
    await node.stop();
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
