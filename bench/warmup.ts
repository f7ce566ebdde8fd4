// How long a freshly started cluster takes to reach its steady state, per system: the figures
// behind the benchmark's warm-ups (bench/workloads.ts latencyWarmupCount, drainWarmupCount and
// drainWarmupRounds: its defaults, 6 drains of 50,000, are the benchmark's).
//
//   npm run bench:warmup                                  # Ferry: latency, then drains
//   npm run bench:warmup -- --systems ferry,nats,rabbitmq  # the peers too (installed if missing)
//   npm run bench:warmup -- --sends 20000 --window 2000 --drains 6 --drain-messages 50000
//
// Latency: one fresh cluster per system, --sends one-in-flight SENDs through the benchmark's
// adapters, percentiles per --window sends in order. Drains: another fresh cluster, --drains
// rounds of the benchmark's warm-up drain (--drain-messages sent pipelined to one target, then
// drained with the measured drain's settings), the rate of each in order. Prints tables and writes
// bench/results/warmup-<date and time>.json. What it showed (docs/bench.md "Session 20"): Ferry's
// p99 settles after ~4,000 sends, NATS's and RabbitMQ's sooner; warm, Ferry and NATS drain at
// about the same rate.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { run } from "./lib/proc.js";
import { Progress } from "./lib/progress.js";
import { resultPath } from "./lib/results.js";
import { type LatencySummary, Samples } from "./lib/samples.js";
import { ferrySystem } from "./systems/ferry.js";
import { natsSystem } from "./systems/nats.js";
import { PEERS_SCRIPTS_DIR } from "./systems/peer-clients.js";
import { rabbitmqSystem } from "./systems/rabbitmq.js";
import type { SystemUnderTest } from "./systems/types.js";
import { SETTINGS_DEFAULT, type Settings, warmUpDrain } from "./workloads.js";

const SYSTEMS: Record<string, SystemUnderTest> = { ferry: ferrySystem, nats: natsSystem("default"), rabbitmq: rabbitmqSystem };
const SEND_TIMEOUT_MS = 2000;

const { values: options } = parseArgs({
  options: {
    systems: { type: "string", default: "ferry" },
    sends: { type: "string", default: "20000" },
    window: { type: "string", default: "2000" },
    drains: { type: "string", default: "6" },
    "drain-messages": { type: "string", default: "50000" },
  },
});
const systems = options.systems.split(",").map((name) => {
  const system = SYSTEMS[name];
  if (system === undefined) throw new Error(`--systems takes a list of ${Object.keys(SYSTEMS).join(", ")}, not ${name}`);
  return system;
});
const count = (flag: "sends" | "window" | "drains" | "drain-messages"): number => {
  const value = Number(options[flag]);
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`--${flag} must be a whole number, not '${options[flag]}'`);
  return value;
};
const counts = { sends: count("sends"), window: count("window"), drains: count("drains"), drainMessages: count("drain-messages") };
if (counts.window === 0) throw new Error("--window must be above 0");

// The benchmark's drain settings; the warm-up drain sends and drains drainWarmupCount messages.
const DRAIN_SETTINGS: Settings = { ...SETTINGS_DEFAULT, drainWarmupCount: counts.drainMessages };

interface SystemSeries {
  name: string;
  latencyWindows: Array<{ firstSend: number } & LatencySummary>;
  drainRates: number[];
  error?: string;
}

async function withCluster<T>(system: SystemUnderTest, body: (cluster: Awaited<ReturnType<SystemUnderTest["start"]>>) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), `ferry-warmup-${system.name}-`));
  const cluster = await system.start(dir);
  try {
    return await body(cluster);
  } finally {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function latencySeries(system: SystemUnderTest, progress: Progress): Promise<SystemSeries["latencyWindows"]> {
  if (counts.sends === 0) return [];
  return withCluster(system, async (cluster) => {
    await cluster.prepare("latency");
    const sender = await cluster.openSender({ target: "latency", node: await cluster.leader("latency"), inFlightMax: 1 });
    const body = new Uint8Array(DRAIN_SETTINGS.bodyBytes).fill(0x78);
    const windows: SystemSeries["latencyWindows"] = [];
    let samples = new Samples();
    progress.start(`${system.name}: ${counts.sends} sends, 1 in flight`, counts.sends);
    for (let index = 0; index < counts.sends; index++) {
      const startMs = performance.now();
      await sender.send(body, SEND_TIMEOUT_MS);
      samples.add(performance.now() - startMs);
      if (samples.count === counts.window || index === counts.sends - 1) {
        windows.push({ firstSend: index + 1 - samples.count, ...samples.summary() });
        samples = new Samples();
      }
      progress.update(index + 1);
    }
    await sender.close();
    progress.end(`p99 first window ${windows[0]?.p99Ms} ms, last ${windows[windows.length - 1]?.p99Ms} ms`);
    return windows;
  });
}

async function drainSeries(system: SystemUnderTest, progress: Progress): Promise<number[]> {
  if (counts.drains === 0 || counts.drainMessages === 0) return [];
  return withCluster(system, async (cluster) => {
    const rates: number[] = [];
    for (let round = 0; round < counts.drains; round++) rates.push((await warmUpDrain(cluster, DRAIN_SETTINGS, progress)).messagesPerSecond);
    return rates;
  });
}

async function main(): Promise<void> {
  const progress = new Progress();
  if (systems.some((system) => system.name !== "ferry")) {
    const versions = await run(join(PEERS_SCRIPTS_DIR, "install.sh"), [], { timeoutMs: 600_000 });
    progress.note(`peers installed: ${versions.trim().split("\n").join(", ")}`);
  }
  const results: SystemSeries[] = [];
  for (const system of systems) {
    const series: SystemSeries = { name: system.name, latencyWindows: [], drainRates: [] };
    try {
      series.latencyWindows = await latencySeries(system, progress);
      series.drainRates = await drainSeries(system, progress);
    } catch (error) {
      series.error = (error as Error).message;
    }
    results.push(series);
  }
  console.log(`\nSEND p50 / p99 (ms) per ${counts.window} one-in-flight sends, in order, on a freshly started cluster`);
  for (const series of results) {
    const cells = series.latencyWindows.map((window) => `${window.firstSend}+: ${window.p50Ms} / ${window.p99Ms}`);
    console.log(`  ${series.name.padEnd(9)} ${cells.join("  ")}${series.error ? `  (failed: ${series.error})` : ""}`);
  }
  console.log(`\nRECEIVE+ACK msg/s of successive ${counts.drainMessages}-message fills and drains on one fresh cluster`);
  for (const series of results) console.log(`  ${series.name.padEnd(9)} ${series.drainRates.map((rate) => rate.toLocaleString("en-US")).join("  ")}`);
  const file = resultPath("warmup-", ".json");
  writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, ...counts, results }, null, 2)}\n`);
  console.log(`\nresults: ${file}`);
}

await main();
