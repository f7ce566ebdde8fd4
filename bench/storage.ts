// Storage benchmark: WAL append throughput and latency with fsync "always", next to the raw
// fdatasync latency of the same disk measured in the same run, and startup (recovery) time.
//
// Usage: node --import tsx bench/storage.ts [--dir <path>] [--duration-ms 1500]
//                                          [--startup-mib 256] [--full-startup] [--startup-only]
// --full-startup builds and recovers a real 1 GiB log; by default a smaller log is recovered and
// the 1 GiB figure is extrapolated linearly (labelled as such). Startup is measured with a warm
// page cache (dropping caches would disturb everything else on the machine).
// Prints a table and writes JSON to bench/results/storage-<date>.json.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { Entry } from "../src/raft/types.js";
import { DiskRaftStorage } from "../src/storage/raft-storage.js";
import { resultPath } from "./lib/results.js";

interface Arguments {
  dir: string;
  durationMs: number;
  startupMiB: number;
  fullStartup: boolean;
  startupOnly: boolean;
}

function parseArguments(argv: string[]): Arguments {
  const result: Arguments = { dir: tmpdir(), durationMs: 1500, startupMiB: 256, fullStartup: false, startupOnly: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === "--dir") result.dir = argv[++i]!;
    else if (flag === "--duration-ms") result.durationMs = Number(argv[++i]);
    else if (flag === "--startup-mib") result.startupMiB = Number(argv[++i]);
    else if (flag === "--full-startup") result.fullStartup = true;
    else if (flag === "--startup-only") result.startupOnly = true; // skip the append runs
    else throw new Error(`unknown flag ${flag}`);
  }
  return result;
}

function percentile(sortedMs: number[], fraction: number): number {
  if (sortedMs.length === 0) return Number.NaN;
  return sortedMs[Math.min(sortedMs.length - 1, Math.floor(fraction * sortedMs.length))]!;
}

// write(100 bytes) + fdatasync through node:fs/promises, into a preallocated file: the floor that
// a batch-1 append cannot beat.
async function rawFdatasync(dir: string, durationMs: number): Promise<{ p50Ms: number; p99Ms: number; count: number }> {
  const path = join(dir, "raw-fdatasync.bin");
  const handle = await open(path, "w+");
  const fileBytes = 64 * 1024 * 1024;
  const zeros = new Uint8Array(1024 * 1024);
  for (let at = 0; at < fileBytes; at += zeros.length) await handle.write(zeros, 0, zeros.length, at);
  await handle.datasync();
  const record = new Uint8Array(128).fill(7);
  const latencies: number[] = [];
  const end = performance.now() + durationMs;
  for (let offset = 0; performance.now() < end && offset + record.length < fileBytes; offset += record.length) {
    const start = performance.now();
    await handle.write(record, 0, record.length, offset);
    await handle.datasync();
    latencies.push(performance.now() - start);
  }
  await handle.close();
  rmSync(path);
  latencies.sort((a, b) => a - b);
  return { p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99), count: latencies.length };
}

function makeBatch(first: number, count: number, data: Uint8Array): Entry[] {
  const batch: Entry[] = new Array(count);
  for (let i = 0; i < count; i++) batch[i] = { index: first + i, term: 1, type: "normal", data };
  return batch;
}

interface AppendResult {
  entrySizeBytes: number;
  batchSize: number;
  inFlight: number;
  entriesPerSecond: number;
  megabytesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  persists: number;
}

// Persists of batchSize entries, inFlight at a time (1: latency of one append+fsync; more: group
// commit merges concurrent persists into one write+fsync).
async function appendRun(dir: string, entrySizeBytes: number, batchSize: number, inFlight: number, durationMs: number): Promise<AppendResult> {
  const runDir = mkdtempSync(join(dir, "ferry-bench-wal-"));
  const storage = await DiskRaftStorage.open(runDir, { fsync: "always" });
  const data = new Uint8Array(entrySizeBytes).fill(42);
  let next = 1;
  const latencies: number[] = [];
  const warmupEnd = performance.now() + Math.min(200, durationMs / 5);
  const start = performance.now();
  let measureStart = start;
  let measuredEntries = 0;
  const end = start + durationMs;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const batch = makeBatch(next, batchSize, data);
      next += batchSize;
      const began = performance.now();
      await storage.persist({ entries: batch });
      const now = performance.now();
      if (began >= warmupEnd) {
        latencies.push(now - began);
        measuredEntries += batchSize;
      } else measureStart = now;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  const elapsedSeconds = (performance.now() - measureStart) / 1000;
  await storage.close();
  rmSync(runDir, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  const entriesPerSecond = measuredEntries / elapsedSeconds;
  return {
    entrySizeBytes,
    batchSize,
    inFlight,
    entriesPerSecond,
    megabytesPerSecond: (entriesPerSecond * entrySizeBytes) / (1024 * 1024),
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    persists: latencies.length,
  };
}

interface StartupResult {
  logMiB: number;
  entrySizeBytes: number;
  entries: number;
  segments: number;
  openMs: number;
  openCpuMs: number; // CPU time of this process during open (the machine may be shared)
  extrapolatedOneGiBMs: number | undefined;
}

// Builds a log of logMiB (fsync never, large batches: only its size matters), then times open().
async function startupRun(dir: string, logMiB: number, entrySizeBytes: number): Promise<StartupResult> {
  const runDir = mkdtempSync(join(dir, "ferry-bench-startup-"));
  try {
    const writer = await DiskRaftStorage.open(runDir, { fsync: "never" });
    const data = new Uint8Array(entrySizeBytes).fill(5);
    const total = Math.floor((logMiB * 1024 * 1024) / (entrySizeBytes + 40));
    const batchSize = 4096;
    for (let first = 1; first <= total; first += batchSize) {
      await writer.persist({ entries: makeBatch(first, Math.min(batchSize, total - first + 1), data) });
    }
    await writer.close();
    const cpuBefore = process.cpuUsage();
    const began = performance.now();
    const reader = await DiskRaftStorage.open(runDir, { fsync: "always" });
    const openMs = performance.now() - began;
    const cpu = process.cpuUsage(cpuBefore);
    const openCpuMs = (cpu.user + cpu.system) / 1000;
    const entries = reader.lastIndex();
    await reader.close();
    const segments = (await import("node:fs")).readdirSync(runDir).filter((name) => name.endsWith(".wal")).length;
    return { logMiB, entrySizeBytes, entries, segments, openMs, openCpuMs, extrapolatedOneGiBMs: logMiB < 1024 ? (openMs * 1024) / logMiB : undefined };
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
}

function format(value: number, digits = 2): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "-";
}

async function appendSection(args: Arguments): Promise<{ raw: Awaited<ReturnType<typeof rawFdatasync>>; appends: AppendResult[] }> {
  const raw = await rawFdatasync(args.dir, args.durationMs);
  console.log(`raw write+fdatasync: p50 ${format(raw.p50Ms, 3)} ms, p99 ${format(raw.p99Ms, 3)} ms (${raw.count} samples)`);
  const appends: AppendResult[] = [];
  for (const entrySizeBytes of [100, 1024]) {
    for (const batchSize of [1, 16, 256]) {
      for (const inFlight of [1, 8]) appends.push(await appendRun(args.dir, entrySizeBytes, batchSize, inFlight, args.durationMs));
    }
  }
  console.log("\nentry B | batch | in flight | entries/s  | MB/s   | p50 ms | p99 ms | p50 / raw fdatasync p50");
  console.log("--------|-------|-----------|------------|--------|--------|--------|------------------------");
  for (const r of appends) {
    console.log(
      `${String(r.entrySizeBytes).padStart(7)} | ${String(r.batchSize).padStart(5)} | ${String(r.inFlight).padStart(9)} | ${format(r.entriesPerSecond, 0).padStart(10)} | ${format(r.megabytesPerSecond).padStart(6)} | ${format(r.p50Ms, 3).padStart(6)} | ${format(r.p99Ms, 3).padStart(6)} | ${format(r.p50Ms / raw.p50Ms)}x`,
    );
  }
  return { raw, appends };
}

async function startupSection(args: Arguments): Promise<StartupResult[]> {
  const startup: StartupResult[] = [];
  const logMiB = args.fullStartup ? 1024 : args.startupMiB;
  for (const entrySizeBytes of [1024, 100]) startup.push(await startupRun(args.dir, logMiB, entrySizeBytes));
  console.log("\nstartup (recovery: read + CRC-check every record, rebuild the index), warm page cache");
  for (const s of startup) {
    const extrapolated = s.extrapolatedOneGiBMs === undefined ? "" : `, 1 GiB extrapolated linearly: ${format(s.extrapolatedOneGiBMs, 0)} ms`;
    console.log(`  ${s.logMiB} MiB of ${s.entrySizeBytes}-byte entries (${s.entries} entries, ${s.segments} segments): ${format(s.openMs, 0)} ms (CPU ${format(s.openCpuMs, 0)} ms)${extrapolated}`);
  }
  return startup;
}

function judgeTargets(raw: { p50Ms: number } | undefined, appends: AppendResult[], startup: StartupResult[]): Record<string, unknown> {
  const targets: Record<string, unknown> = {};
  console.log("\ntargets:");
  if (raw) {
    const batch1 = appends.find((r) => r.entrySizeBytes === 100 && r.batchSize === 1 && r.inFlight === 1)!;
    const best256 = Math.max(...appends.filter((r) => r.entrySizeBytes === 100 && r.batchSize === 256).map((r) => r.entriesPerSecond));
    targets.batch1LatencyWithin1_5xRaw = { value: batch1.p50Ms / raw.p50Ms, target: 1.5, met: batch1.p50Ms <= 1.5 * raw.p50Ms };
    targets.entriesPerSecond100BBatch256 = { value: best256, target: 200_000, met: best256 > 200_000 };
    console.log(`  batch-1 p50 / raw fdatasync p50 = ${format(batch1.p50Ms / raw.p50Ms)} (target <= 1.5): ${batch1.p50Ms <= 1.5 * raw.p50Ms ? "met" : "NOT met"}`);
    console.log(`  100-byte entries at batch 256 = ${format(best256, 0)}/s (target > 200000): ${best256 > 200_000 ? "met" : "NOT met"}`);
  }
  const startup1k = startup.find((s) => s.entrySizeBytes === 1024)!;
  const startupOneGiBMs = startup1k.extrapolatedOneGiBMs ?? startup1k.openMs;
  const extrapolated = startup1k.extrapolatedOneGiBMs !== undefined;
  targets.startupOneGiBMs = { value: startupOneGiBMs, cpuMs: (startup1k.openCpuMs * 1024) / startup1k.logMiB, target: 2000, met: startupOneGiBMs < 2000, extrapolated };
  console.log(
    `  startup over 1 GiB (1 KiB entries${extrapolated ? ", extrapolated" : ""}) = ${format(startupOneGiBMs, 0)} ms wall, ${format((startup1k.openCpuMs * 1024) / startup1k.logMiB, 0)} ms CPU (target < 2000): ${startupOneGiBMs < 2000 ? "met" : "NOT met"}`,
  );
  return targets;
}

async function main(): Promise<void> {
  const args = parseArguments(process.argv.slice(2));
  mkdirSync(args.dir, { recursive: true });
  const { loadavg, cpus } = await import("node:os");
  const load = loadavg()[0]!;
  console.log(`storage benchmark in ${args.dir} (fsync always, ${args.durationMs} ms per run; load average ${load.toFixed(1)} on ${cpus().length} CPUs)`);
  const { raw, appends } = args.startupOnly ? { raw: undefined, appends: [] } : await appendSection(args);
  const startup = await startupSection(args);
  const targets = judgeTargets(raw, appends, startup);
  const output = resultPath("storage-", `${args.startupOnly ? "-startup" : ""}.json`);
  const result = { date: new Date().toISOString(), node: process.version, loadAverage: load, cpus: cpus().length, dir: args.dir, durationMs: args.durationMs, rawFdatasync: raw, appends, startup, targets };
  writeFileSync(output, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`\nwrote ${output}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
