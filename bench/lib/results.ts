// Where the benchmarks write their results: bench/results/<prefix><UTC time to the second>.json,
// so that two runs on the same day never overwrite each other (they did when named by the date).
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const RESULTS_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "results");

// 2026-11-25T04:28:37.123Z -> 2026-11-25T04-28-37Z
export function resultStamp(date: Date = new Date()): string {
  return date.toISOString().replace(/\.\d+Z$/, "Z").replace(/:/g, "-");
}

// The path of a new results file (its directory created): `${prefix}${stamp}${suffix}`.
export function resultPath(prefix: string, suffix: string, date: Date = new Date()): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  return join(RESULTS_DIR, `${prefix}${resultStamp(date)}${suffix}`);
}
