// Runs every `// example:` block of docs/client.md against a fresh fake server, so the examples
// in the documentation stay true. `from "ferry"` becomes the source entry point and the default
// seed list becomes the fake server's address.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, test } from "node:test";
import { pathToFileURL } from "node:url";
import { FakeServer } from "./fake-server.js";

const DOC_SEEDS = '"127.0.0.1:12345", "127.0.0.1:12346", "127.0.0.1:12347"';
const entry = pathToFileURL(resolve("src/index.ts")).href;
const directory = mkdtempSync(join(tmpdir(), "ferry-docs-"));
after(() => rmSync(directory, { recursive: true, force: true }));

function examples(markdown: string): Array<{ name: string; code: string }> {
  const found: Array<{ name: string; code: string }> = [];
  for (const match of markdown.matchAll(/```ts\n(\/\/ example: (.+)\n[\s\S]*?)```/g)) found.push({ name: match[2]!, code: match[1]! });
  return found;
}

const blocks = examples(readFileSync("docs/client.md", "utf8"));

test("docs/client.md has runnable examples", () => {
  assert.ok(blocks.length >= 4, `found ${blocks.length}`);
  for (const block of blocks) assert.ok(block.code.includes(DOC_SEEDS), `${block.name} uses the default seeds`);
});

for (const [index, block] of blocks.entries()) {
  test(`docs example: ${block.name}`, async () => {
    const server = await FakeServer.start();
    const code = block.code.replaceAll('from "ferry"', `from ${JSON.stringify(entry)}`).replaceAll(DOC_SEEDS, JSON.stringify(server.address));
    const file = join(directory, `example-${index}.mts`);
    writeFileSync(file, code);
    const log = console.log;
    const lines: string[] = [];
    console.log = (...values: unknown[]) => lines.push(values.map(String).join(" "));
    try {
      await import(pathToFileURL(file).href);
      // The example closed its client: the server sees every connection end.
      for (let waitedMs = 0; server.openConnections > 0; waitedMs += 5) {
        assert.ok(waitedMs < 2000, "the example left a connection open");
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    } finally {
      console.log = log;
      await server.close();
    }
    assert.ok(lines.length > 0, "the example printed something");
  });
}
