// Real processes, real disk: a writer is killed with SIGKILL at random instants; after each kill
// the log must hold every index the writer reported synced, byte for byte, and reopen cleanly
// (the dead writer's LOCK is stale and taken over). Iterations: STORAGE_CRASH_ITERATIONS
// (default 30; run with 300 for a long soak).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { DiskRaftStorage } from "../../src/storage/raft-storage.js";
import { CRASH_SEGMENT_SIZE_BYTES, crashEntryData } from "./crash-writer.js";

const ITERATIONS = Number(process.env.STORAGE_CRASH_ITERATIONS ?? 30);
const WRITER = join(import.meta.dirname, "crash-writer.ts");

function seededRandom(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state / 2 ** 31;
  };
}

// Runs the writer until killDelayMs after it is ready, then SIGKILLs it. Returns the highest
// index it reported synced (or the index it started from).
function runAndKill(dir: string, term: number, killDelayMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", WRITER, dir, String(term)], { stdio: ["ignore", "pipe", "pipe"] });
    let synced = -1;
    let buffered = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) {
        const [word, index] = line.split(" ");
        if (word === "ready") {
          synced = Math.max(synced, Number(index));
          setTimeout(() => child.kill("SIGKILL"), killDelayMs);
        } else if (word === "synced") synced = Math.max(synced, Number(index));
      }
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on("exit", (code, signal) => {
      if (signal === "SIGKILL") resolve(synced);
      else reject(new Error(`writer exited with ${code ?? signal}: ${stderr}`));
    });
  });
}

test(`kill -9 at random instants (${ITERATIONS} times): every index reported synced is on disk and intact`, async () => {
  const dir = mkdtempSync(join(tmpdir(), "ferry-crash-"));
  const random = seededRandom(20261124);
  let syncedMax = 0;
  try {
    for (let iteration = 1; iteration <= ITERATIONS; iteration++) {
      const reported = await runAndKill(dir, iteration, Math.floor(random() * 120));
      syncedMax = Math.max(syncedMax, reported);
      const storage = await DiskRaftStorage.open(dir, { segmentSizeBytes: CRASH_SEGMENT_SIZE_BYTES });
      try {
        assert.ok(storage.lastIndex() >= syncedMax, `iteration ${iteration}: lastIndex ${storage.lastIndex()} < reported synced ${syncedMax}`);
        for (const entry of storage.entries(1, storage.lastIndex() + 1, Number.POSITIVE_INFINITY)) {
          assert.deepEqual(entry.data, crashEntryData(entry.index, entry.term), `iteration ${iteration}: entry ${entry.index} damaged`);
        }
        syncedMax = storage.lastIndex(); // recovery fsyncs what it found, so all of it must stay
      } finally {
        await storage.close();
      }
    }
    assert.ok(syncedMax > 0, "the writer got something synced");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
