// The Node.js flags a node runs with (NODE_FLAGS_DEFAULT: a larger young generation and first
// old-generation limit, see src/cli/node-flags.ts) are given in three places: `ferry dev` passes them to
// its node processes, and bin/ferry.js's and ./ferry's interpreter lines give them to `ferry start`.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { missingNodeFlags, NODE_FLAGS_DEFAULT } from "../../src/cli/node-flags.js";

const root = fileURLToPath(new URL("../../", import.meta.url));

test("bin/ferry.js and ./ferry run node with the flags ferry dev gives its nodes", () => {
  const flags = NODE_FLAGS_DEFAULT.join(" ");
  const shebang = readFileSync(`${root}bin/ferry.js`, "utf8").split("\n")[0];
  assert.equal(shebang, `#!/usr/bin/env -S node ${flags}`);
  const script = readFileSync(`${root}ferry`, "utf8");
  assert.match(script, new RegExp(`^exec node ${flags} "\\$\\(dirname "\\$0"\\)/bin/ferry\\.js" "\\$@"$`, "m"));
  // The interpreter line works as an executable's (env -S splits it), and so does the script.
  const version = JSON.parse(readFileSync(`${root}package.json`, "utf8")).version as string;
  assert.equal(execFileSync(`${root}bin/ferry.js`, ["--version"]).toString().trim(), version);
  assert.equal(execFileSync(`${root}ferry`, ["--version"]).toString().trim(), version);
});

test("a node started without the flags is told which ones are missing; any value of a flag counts as given", () => {
  assert.deepEqual(missingNodeFlags([]), NODE_FLAGS_DEFAULT);
  assert.deepEqual(missingNodeFlags(NODE_FLAGS_DEFAULT), []);
  assert.deepEqual(missingNodeFlags(["--max-semi-space-size=64"]), ["--initial-old-space-size=256"]);
  assert.deepEqual(missingNodeFlags(["--inspect"], "--max_semi_space_size=16 --initial-old-space-size=512"), []);
  assert.deepEqual(missingNodeFlags(["--initial-old-space-size=256"], "--max-old-space-size=4096"), ["--max-semi-space-size=32"]);
});
