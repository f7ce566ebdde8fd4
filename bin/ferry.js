#!/usr/bin/env -S node --max-semi-space-size=32 --initial-old-space-size=256
// The `ferry` command. Runs the compiled CLI; `npm ci` builds it (the `prepare` script).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const main = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  console.error("ferry: not built yet; run `npm run build` (npm ci does it) first");
  process.exit(1);
}
await import(main.href);
