// Keeps docs/protocol.md true: replays its nc transcript against a server with the fake service.
// Lines starting with "> " are typed; the others are the expected replies, in order. Timestamps
// (long runs of digits) vary from run to run and are compared as placeholders.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { LineClient, startServer } from "./helpers.js";

function transcript(): { typed: string[]; expected: string[] } {
  const text = readFileSync(new URL("../../docs/protocol.md", import.meta.url), "utf8");
  const block = /<!-- transcript -->\n```\n([\s\S]*?)\n```/.exec(text);
  assert.ok(block, "docs/protocol.md has a transcript block");
  const lines = block[1]!.split("\n");
  return {
    typed: lines.filter((line) => line.startsWith("> ")).map((line) => line.slice(2)),
    expected: lines.filter((line) => !line.startsWith("> ")),
  };
}

const placeholder = (line: string) => line.replace(/\b\d{12,}\b/g, "<timestamp>");

test("the transcript in docs/protocol.md is what the server says", async () => {
  const { server, port } = await startServer();
  const { typed, expected } = transcript();
  const client = await LineClient.connect(port);
  client.write(typed.map((line) => `${line}\n`).join(""));
  const actual: string[] = [];
  for (let index = 0; index < expected.length; index++) actual.push(await client.line());
  assert.deepEqual(actual.map(placeholder), expected.map(placeholder));
  await client.closed; // the transcript ends with QUIT
  await server.close();
});
