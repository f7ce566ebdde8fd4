// Test processes claim the ports they pick (harness.ts claimPort), so two test files running at
// once never both start a node on the same port.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { claimPort, freePort } from "./harness.js";

test("a claimed port is refused to every later claim, in this process or another, until the claim is stale", () => {
  // Other test files claim ports meanwhile (hundreds in a full run), so a random pick can be taken
  // already (CI run of 1503d1b failed that way): take the first random port not claimed yet.
  let port = 0;
  for (let tries = 0; tries < 1000 && port === 0; tries++) {
    const pick = 10_240 + Math.floor(Math.random() * 20_000);
    if (claimPort(pick)) port = pick;
  }
  assert.notEqual(port, 0, "no unclaimed port in 1000 random picks");
  assert.equal(claimPort(port), false, "claimed twice in one process");
  const script = `import { claimPort } from "./test/e2e/harness.ts"; process.stdout.write(String(claimPort(${port})));`;
  const other = execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8" });
  assert.equal(other, "false", "claimed by another process");
  const old = new Date(Date.now() - 60 * 60 * 1000);
  utimesSync(join(tmpdir(), "ferry-test-port-claims", String(port)), old, old);
  assert.equal(claimPort(port), true, "a claim an hour old is taken over");
});

test("freePort hands out claimed ports: never the same one twice", async () => {
  const ports = new Set<number>();
  for (let i = 0; i < 50; i++) ports.add(await freePort());
  assert.equal(ports.size, 50);
});
