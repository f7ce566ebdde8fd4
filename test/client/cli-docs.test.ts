// docs/cli.md's exit code table is the one the CLI uses: every error code appears once, with the
// exit status exitCodeOf() gives it.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { exitCodeOf } from "../../src/cli/common.js";
import { ERROR_CODES, type ErrorCode } from "../../src/protocol/errors.js";

test("the exit code table of docs/cli.md matches the CLI", () => {
  const documented = new Map<string, number>();
  for (const line of readFileSync("docs/cli.md", "utf8").split("\n")) {
    const row = /^\| (\d+) \| ([^|]+) \|/.exec(line);
    if (row === null) continue;
    for (const code of row[2]!.matchAll(/`([A-Z_]+)`/g)) {
      assert.equal(documented.has(code[1]!), false, `${code[1]} documented twice`);
      documented.set(code[1]!, Number(row[1]));
    }
  }
  for (const code of ERROR_CODES) assert.equal(documented.get(code), exitCodeOf(code as ErrorCode), code);
  assert.equal(documented.size, ERROR_CODES.length);
});
