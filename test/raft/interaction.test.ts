// Transcript tests: every test/raft/testdata/*.txt runs as one test (see interaction.ts).
// FERRY_REWRITE=1 regenerates the expected output; read the diff before committing it.
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { runTranscript } from "./interaction.js";

const directory = join(import.meta.dirname, "testdata");
const rewrite = process.env["FERRY_REWRITE"] === "1";

for (const name of readdirSync(directory).filter((f) => f.endsWith(".txt")).sort()) {
  test(`transcript ${name}`, () => {
    const failures = runTranscript(join(directory, name), rewrite);
    if (!rewrite) assert.deepEqual(failures, [], failures.join("\n\n"));
  });
}
