// `npm run bench [-- --peers] [--only ferry|nats|rabbitmq] [--quick] [--repeat n] [--phases ...]
// [--drain-batch n]`: starts a local 3-node cluster of each system under test in turn, measures
// send latency, send throughput, receive+ack throughput, failover and server resources, prints a
// table (with Ferry/peer ratios under --peers) and writes bench/results/<date>.json and .svg.
// Only 127.0.0.1 is ever used.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { arch, cpus, loadavg, release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { measureFailover } from "./failover.js";
import { measureFloor } from "./lib/floor.js";
import { run } from "./lib/proc.js";
import { Progress } from "./lib/progress.js";
import { round } from "./lib/samples.js";
import { renderTable, type SystemResult } from "./lib/report.js";
import { type ChartSpec, renderDocument } from "./lib/svg.js";
import { ferrySystem } from "./systems/ferry.js";
import { natsSystem } from "./systems/nats.js";
import { PEERS_SCRIPTS_DIR } from "./systems/peer-clients.js";
import { rabbitmqSystem } from "./systems/rabbitmq.js";
import type { RunningCluster, SystemUnderTest } from "./systems/types.js";
import { measureDrain, measureLatency, measureMemory, measureThroughput, SETTINGS_DEFAULT, type Settings, warmUpDrains } from "./workloads.js";
import { resultPath } from "./lib/results.js";

const INCIDENTS_KEPT = 20; // log lines kept in the result per system and round

const SETTINGS_QUICK: Settings = {
  ...SETTINGS_DEFAULT,
  latencyWarmupCount: 1000,
  latencySampleCount: 2000,
  throughputMessageCount: 20_000,
  throughputDurationMsMax: 20_000,
  drainIdleMs: 3000,
  drainWarmupCount: 5_000,
  drainWarmupRounds: 1,
  failoverBeforeMs: 3000,
  failoverAfterMs: 8000,
};

const REPEAT_MAX = 9;
const DRAIN_BATCH_MAX = 1000; // the nodes' receiveMax default
// The phases a run measures (--phases; all by default): a subset skips the others, for a quicker
// look at one figure (the table leaves the skipped ones empty).
const PHASES = ["latency", "throughput", "drain", "failover"] as const;
type Phase = (typeof PHASES)[number];

const GROUPS: Record<string, SystemUnderTest[]> = {
  ferry: [ferrySystem],
  nats: [natsSystem("default"), natsSystem("always")],
  rabbitmq: [rabbitmqSystem],
};

function parseOptions() {
  const { values } = parseArgs({
    options: {
      peers: { type: "boolean", default: false },
      only: { type: "string" },
      quick: { type: "boolean", default: false },
      repeat: { type: "string", default: "1" },
      phases: { type: "string", default: PHASES.join(",") },
      "drain-batch": { type: "string" },
    },
  });
  const repeat = Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > REPEAT_MAX) throw new Error(`--repeat takes 1..${REPEAT_MAX}, not '${values.repeat}'`);
  if (values.only !== undefined && !(values.only in GROUPS)) {
    throw new Error(`--only takes one of ${Object.keys(GROUPS).join(", ")}, not '${values.only}'`);
  }
  const systems = values.only ? GROUPS[values.only]! : values.peers ? Object.values(GROUPS).flat() : GROUPS.ferry!;
  const phases = new Set(values.phases.split(",").filter((phase) => phase !== ""));
  for (const phase of phases) {
    if (!(PHASES as readonly string[]).includes(phase)) throw new Error(`--phases takes a comma-separated list of ${PHASES.join(", ")}, not '${phase}'`);
  }
  if (phases.has("drain") && !phases.has("throughput")) throw new Error("--phases: the drain drains what the throughput phase sent; name both");
  // Messages per RECEIVE of Ferry's drain consumers (the peers' consumers keep windows of the
  // drain depth and have no batch of their own): the cost of each command (docs/bench.md "Session 21").
  const drainBatch = values["drain-batch"] === undefined ? undefined : Number(values["drain-batch"]);
  if (drainBatch !== undefined && (!Number.isInteger(drainBatch) || drainBatch < 1 || drainBatch > DRAIN_BATCH_MAX)) {
    throw new Error(`--drain-batch takes 1..${DRAIN_BATCH_MAX}, not '${values["drain-batch"]}'`);
  }
  return { peers: values.peers === true, quick: values.quick === true, only: values.only, repeat, systems, phases: phases as Set<Phase>, drainBatch };
}

function machine() {
  return {
    cpuModel: cpus()[0]?.model ?? "unknown",
    cpuCount: cpus().length,
    memoryBytes: totalmem(),
    kernel: release(),
    arch: arch(),
    node: process.version,
    loadAverageAtStart: loadavg(),
    note: "3 server nodes and the load generator share these cores (and other work on the machine); compare only figures from one run",
  };
}

async function runPhase<T>(result: SystemResult, phase: string, measure: () => Promise<T>): Promise<T | undefined> {
  try {
    return await measure();
  } catch (error) {
    result.errors.push(`${phase}: ${(error as Error).message}`);
    process.stderr.write(`  ${phase} failed: ${(error as Error).message}\n`);
    return undefined;
  }
}

async function benchmark(system: SystemUnderTest, settings: Settings, phases: Set<Phase>, progress: Progress): Promise<SystemResult> {
  const result: SystemResult = { name: system.name, label: system.label, durability: system.durability, ackSemantics: system.ackSemantics, errors: [] };
  process.stderr.write(`\n${system.label}\n`);
  const reason = await system.unavailable();
  if (reason !== undefined) {
    result.skipped = reason;
    progress.note(`skipped: ${reason}`);
    return result;
  }
  result.version = await system.version();
  result.loadAverageStart = round(loadavg()[0]!);
  const workDir = mkdtempSync(join(tmpdir(), `ferry-bench-${system.name}-`));
  const startedMs = performance.now();
  progress.note(`starting a 3-node cluster in ${workDir} (${result.version})`);
  let cluster: RunningCluster | undefined;
  try {
    cluster = await system.start(workDir);
    result.clusterStartMs = Math.round(performance.now() - startedMs);
    await runSystemPhases(cluster, result, settings, phases, progress);
  } catch (error) {
    result.errors.push(`cluster: ${(error as Error).message}`);
    process.stderr.write(`  cluster failed: ${(error as Error).message}\n`);
  } finally {
    await cluster?.stop().catch((error: Error) => result.errors.push(`stop: ${error.message}`));
    const incidents = cluster?.incidents?.() ?? [];
    if (incidents.length > 0) {
      result.incidents = incidents.slice(0, INCIDENTS_KEPT);
      progress.note(`${incidents.length} warn/error/fatal line(s) in the servers' log, first: ${incidents[0]}`);
    }
    // A run whose writes never resumed after the kill, or that failed, keeps its cluster's data
    // and logs (the nodes' own log is ferry-dev.log for Ferry) for a look at what happened.
    // FERRY_BENCH_KEEP=1 keeps every round's (e.g. with FERRY_BENCH_NODE_ARGS="--trace-opt").
    const failed = result.errors.length > 0 || (result.failover !== undefined && result.failover.writesResumedAfterMs === null);
    if (failed) progress.note(`kept ${workDir} (its logs) for a look: the run failed or writes never resumed`);
    else if (process.env.FERRY_BENCH_KEEP === "1") progress.note(`kept ${workDir} (FERRY_BENCH_KEEP=1)`);
    else rmSync(workDir, { recursive: true, force: true });
    result.loadAverageEnd = round(loadavg()[0]!);
  }
  return result;
}

async function runSystemPhases(cluster: RunningCluster, result: SystemResult, settings: Settings, phases: Set<Phase>, progress: Progress): Promise<void> {
  if (phases.has("latency")) result.latency = await runPhase(result, "latency", () => measureLatency(cluster, settings, progress));
  if (phases.has("throughput")) result.throughput = await runPhase(result, "throughput", () => measureThroughput(cluster, settings, progress));
  const sent = result.throughput?.messages ?? 0;
  if (phases.has("drain") && sent > 0) {
    if (settings.drainWarmupCount > 0 && settings.drainWarmupRounds > 0) {
      result.drainWarmup = await runPhase(result, "drain warm-up", () => warmUpDrains(cluster, settings, progress));
    }
    result.drain = await runPhase(result, "drain", () => measureDrain(cluster, settings, sent, progress));
  }
  result.memory = measureMemory(cluster); // before the kill: every node is still there
  if (phases.has("failover")) result.failover = await runPhase(result, "failover", () => measureFailover(cluster, settings, progress));
}

function perSecond(rates: number[]): Array<[number, number]> {
  return rates.map((rate, second) => [second + 0.5, rate]);
}

// Plots show the last run of each system (the JSON keeps every run).
function charts(results: SystemResult[]): ChartSpec[] {
  const last = new Map(results.map((result) => [result.name, result]));
  const ran = [...last.values()].filter((result) => result.skipped === undefined);
  return [
    {
      title: "SEND latency, 1 in flight, 256-byte bodies (percentile plot)",
      xLabel: "percentile",
      yLabel: "latency (ms, log scale)",
      x: "nines",
      y: "log",
      series: ran.filter((result) => result.latency).map((result) => ({ label: result.name, points: result.latency!.curve })),
    },
    {
      title: "Acked sends per second around failover (dashed: kill -9 of the leader)",
      xLabel: "seconds since the start of the phase",
      yLabel: "msg/s",
      x: "linear",
      y: "linear",
      series: ran
        .filter((result) => result.failover)
        .map((result) => ({
          label: result.name,
          points: perSecond(result.failover!.ratesPerSecond),
          markerX: result.failover!.killedAtMs / 1000,
        })),
    },
    {
      title: "Pipelined SEND (solid) and RECEIVE+ACK (dotted) per second",
      xLabel: "seconds since the start of the phase",
      yLabel: "msg/s",
      x: "linear",
      y: "linear",
      series: ran.flatMap((result) => [
        ...(result.throughput ? [{ label: `${result.name} send`, points: perSecond(result.throughput.ratesPerSecond) }] : []),
        ...(result.drain ? [{ label: `${result.name} recv+ack`, points: perSecond(result.drain.ratesPerSecond), dashed: true }] : []),
      ]),
    },
  ];
}

// Installs the peers and their clients when missing (idempotent: quick when all is there).
async function ensurePeersInstalled(systems: SystemUnderTest[], progress: Progress): Promise<void> {
  if (systems.every((system) => system.name === "ferry")) return;
  try {
    const versions = await run(join(PEERS_SCRIPTS_DIR, "install.sh"), [], { timeoutMs: 600_000 });
    progress.note(`peers installed: ${versions.trim().split("\n").join(", ")}`);
  } catch (error) {
    progress.note(`could not install the peers (they will be skipped): ${(error as Error).message}`);
  }
}

async function main(): Promise<void> {
  const options = parseOptions();
  const base = options.quick ? SETTINGS_QUICK : SETTINGS_DEFAULT;
  const settings = options.drainBatch === undefined ? base : { ...base, drainBatchSize: options.drainBatch };
  const startedAt = new Date();
  const progress = new Progress();
  const results: SystemResult[] = [];
  const machineInfo = machine(); // the load average before the run adds its own
  if (machineInfo.loadAverageAtStart[0]! > machineInfo.cpuCount / 2) {
    progress.note(
      `warning: load average ${machineInfo.loadAverageAtStart[0]!.toFixed(1)} on ${machineInfo.cpuCount} cores before the run: other work competes with the clusters, figures will be low and noisy`,
    );
  }
  await ensurePeersInstalled(options.systems, progress);
  const floor = await measureFloor();
  progress.note(
    `floor: fdatasync of a 4 KiB append p50 ${floor.fdatasyncAppend4KiB.p50Ms} ms, loopback round trip p50 ${floor.loopbackRoundTrip256Bytes.p50Ms} ms`,
  );
  // Rounds interleave the systems, so drifting load on the shared machine spreads over all of them.
  const skipped = new Set<string>();
  for (let round = 1; round <= options.repeat; round++) {
    if (options.repeat > 1) process.stderr.write(`\n== round ${round} of ${options.repeat}\n`);
    for (const system of options.systems) {
      if (skipped.has(system.name)) continue;
      const result = await benchmark(system, settings, options.phases, progress);
      result.round = round;
      if (result.skipped !== undefined) skipped.add(system.name);
      results.push(result);
    }
  }
  const table = renderTable(results, options.peers);
  process.stdout.write(`\n${table}\n`);
  process.stdout.write(
    `\nFloor on this machine: fdatasync of a 4 KiB append p50 ${floor.fdatasyncAppend4KiB.p50Ms} ms (p99 ${floor.fdatasyncAppend4KiB.p99Ms}), 256-byte loopback round trip p50 ${floor.loopbackRoundTrip256Bytes.p50Ms} ms.\n`,
  );
  const jsonPath = resultPath("", ".json", startedAt);
  const svgPath = resultPath("", ".svg", startedAt);
  const report = {
    startedAt: startedAt.toISOString(),
    argv: process.argv.slice(2),
    quick: options.quick,
    repeat: options.repeat,
    phases: [...options.phases],
    settings,
    machine: machineInfo,
    floor,
    results,
  };
  writeFileSync(jsonPath, `${JSON.stringify(report, null, 1)}\n`);
  const caption = `${startedAt.toISOString()} — ${machineInfo.cpuCount} cores shared by 3 nodes + load generator — ${settings.bodyBytes}-byte bodies`;
  writeFileSync(svgPath, renderDocument(charts(results), caption));
  process.stdout.write(`\nresults: ${jsonPath}\nplots:   ${svgPath}\n`);
}

await main();
