#!/usr/bin/env node
// Runs every test/**/*.test.ts file with Node's test runner (TypeScript through tsx).
// Usage: node scripts/run-tests.mjs [path-prefix ...]   (default: all of test/)
//
// A hang must fail the run, not stall CI: every test has a deadline (FERRY_TEST_TIMEOUT_MS, default
// 240 s; the longest test takes ~25 s here), a file whose tests are done exits even if a server or
// timer was left open (--test-force-exit), and the whole run is stopped after FERRY_TEST_RUN_MS
// (default 30 min; all of it takes ~2 min here).
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

function collect(dir, out) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) collect(path, out);
    else if (name.endsWith(".test.ts")) out.push(path);
  }
  return out;
}

const prefixes = process.argv.slice(2);
const files = collect("test", [])
  .filter((f) => prefixes.length === 0 || prefixes.some((p) => f.startsWith(p)))
  .sort();
if (files.length === 0) {
  console.error("run-tests: no test files matched");
  process.exit(1);
}
const testTimeoutMs = Number(process.env.FERRY_TEST_TIMEOUT_MS ?? 240_000);
const runTimeoutMs = Number(process.env.FERRY_TEST_RUN_MS ?? 30 * 60_000);
const result = spawnSync(
  process.execPath,
  [
    "--import",
    "tsx",
    "--test",
    "--test-concurrency=2",
    `--test-timeout=${testTimeoutMs}`,
    "--test-force-exit",
    "--test-reporter=spec",
    ...files,
  ],
  { stdio: "inherit", timeout: runTimeoutMs, killSignal: "SIGKILL" },
);
if (result.error !== undefined || result.signal !== null) {
  console.error(`run-tests: stopped after ${runTimeoutMs} ms (${result.error?.message ?? result.signal}); a test file hung`);
  process.exit(1);
}
process.exit(result.status ?? 1);
