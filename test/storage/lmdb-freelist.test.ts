// lmdb-js 3.5.6 refuses a commit now and then after delete-heavy groups ("freelist entry N had
// bad/duplicate entries", sometimes a segfault), from the free-page list it carries over from one
// write transaction to the next (docs/node.md "State store commit failures"). LmdbKv opens LMDB
// with maxFreeSpaceToRetain 0, which does not carry it over.
//
// The fixture is the LMDB operations of one replay of a failed benchmark cluster's WAL through the
// broker, with the commit groups of that replay and the values zeroed (the keys, which place the
// pages, kept): with lmdb-js's default it fails at the same commit every time. Each replay runs in
// a child process, since the failure can be a segfault.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

const REPLAY = join(import.meta.dirname, "lmdb-replay.ts");
const OPS = join(import.meta.dirname, "fixtures", "lmdb-freelist-ops.bin.gz");
const LMDB_JS_DEFAULT_RETAINED = 75_000;

// lmdb-js prints whole freelists to stderr when it fails: enough of the output for a message.
const outline = (output: string): string => (output.length > 2000 ? `...${output.slice(-2000)}` : output);

function replay(retained?: number): { status: number | null; signal: string | null; output: string } {
  const dir = mkdtempSync(join(tmpdir(), "ferry-lmdb-freelist-"));
  try {
    const args = ["--import", "tsx", REPLAY, dir, OPS, ...(retained === undefined ? [] : [String(retained)])];
    const child = spawnSync(process.execPath, args, { encoding: "utf8", timeout: 60_000, maxBuffer: 256 * 1024 * 1024 });
    if (child.error) throw child.error;
    return { status: child.status, signal: child.signal, output: `${child.stdout}${child.stderr}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("the recorded operations commit cleanly through LmdbKv as Ferry opens it", { timeout: 120_000 }, () => {
  const { status, signal, output } = replay();
  assert.equal(signal, null, outline(output));
  assert.equal(status, 0, outline(output));
  assert.match(output, /\d+ commits/);
});

test("the same operations with lmdb-js's default free-page retention hit its freelist failure", { timeout: 120_000 }, () => {
  const { status, signal, output } = replay(LMDB_JS_DEFAULT_RETAINED);
  // If this starts to pass, lmdb-js has fixed its freelist: FREE_PAGES_RETAINED may go back to
  // lmdb-js's default (measure bench:apply first).
  assert.ok(status !== 0 || signal !== null, `expected the replay to fail with lmdb-js's default retention; it printed: ${outline(output)}`);
  if (signal === null) assert.ok(/could not commit: .*freelist/.test(output), outline(output));
});
