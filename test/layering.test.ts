// Imports flow one way (docs/architecture.md), and the pure layers touch no clock, randomness or I/O.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";

// For each folder of src/, the folders of src/ it may import from (besides itself).
const ALLOWED: Record<string, string[]> = {
  util: [],
  protocol: ["util"],
  raft: ["util"],
  clock: ["util"],
  broker: ["util", "protocol", "clock"],
  storage: ["util", "protocol", "raft", "broker"],
  transport: ["util", "protocol", "raft"],
  node: ["util", "protocol", "raft", "clock", "broker", "storage", "transport"],
  server: ["util", "protocol", "node"],
  client: ["util", "protocol"],
  cli: ["util", "protocol", "client", "node", "server", "storage", "transport"],
  "": ["util", "protocol", "client"], // src/index.ts, the public API
};
const PURE = ["raft", "clock", "broker"];
// Things a pure module may not touch: they make a run depend on the world instead of the seed.
const FORBIDDEN_IN_PURE: Array<[RegExp, string]> = [
  [/\bDate\b/, "Date"],
  [/\bMath\.random\b/, "Math.random"],
  [/\b(setTimeout|setInterval|setImmediate|queueMicrotask)\b/, "timers"],
  [/\bperformance\b/, "performance"],
  [/\bprocess\b/, "process"],
  [/\brequire\(/, "require"],
];

function sourceFiles(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) sourceFiles(path, out);
    else if (name.endsWith(".ts")) out.push(path);
  }
  return out;
}

function layerOf(path: string): string {
  const parts = relative("src", path).split("/");
  return parts.length === 1 ? "" : parts[0]!;
}

function importsOf(text: string): string[] {
  const specifiers: string[] = [];
  const pattern = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)|(?:^|\n)\s*import\s+["']([^"']+)["']/g;
  for (const match of text.matchAll(pattern)) specifiers.push((match[1] ?? match[2] ?? match[3])!);
  return specifiers;
}

function stripComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:])\/\/.*$/gm, "$1");
}

function violations(): string[] {
  const found: string[] = [];
  for (const file of sourceFiles("src")) {
    const layer = layerOf(file);
    const allowed = ALLOWED[layer];
    if (allowed === undefined) {
      found.push(`${file}: folder src/${layer} has no entry in the layering table`);
      continue;
    }
    const text = readFileSync(file, "utf8");
    for (const specifier of importsOf(text)) {
      if (specifier.startsWith(".")) {
        const target = layerOf(join(file, "..", specifier));
        if (target !== layer && !allowed.includes(target)) {
          found.push(`${file}: imports src/${target} (${specifier}); src/${layer} may import ${allowed.join(", ") || "nothing"}`);
        }
      } else if (PURE.includes(layer)) {
        if (specifier.startsWith("node:") || !specifier.includes("/") && !specifier.startsWith("@")) {
          found.push(`${file}: pure layer src/${layer} imports package or builtin '${specifier}'`);
        }
      }
    }
    if (PURE.includes(layer)) {
      const code = stripComments(text);
      for (const [pattern, what] of FORBIDDEN_IN_PURE) {
        if (pattern.test(code)) found.push(`${file}: pure layer src/${layer} uses ${what}`);
      }
    }
  }
  return found;
}

test("imports flow one way and pure layers stay pure", () => {
  assert.deepEqual(violations(), []);
});

test("the checker sees a planted violation", () => {
  // Show the check has teeth: the import scanner and the purity patterns catch what they claim to.
  assert.deepEqual(importsOf('import { x } from "../node/driver.js";\nimport "node:fs";'), ["../node/driver.js", "node:fs"]);
  assert.equal(FORBIDDEN_IN_PURE.some(([p]) => p.test(stripComments("const t = Date.now();"))), true);
  assert.equal(FORBIDDEN_IN_PURE.some(([p]) => p.test(stripComments("// Date.now() is not used here"))), false);
  assert.equal(layerOf("src/raft/raft.ts"), "raft");
  assert.equal(layerOf(join("src/raft/raft.ts", "..", "../node/x.js")), "node");
});
