// Where Ferry's CPU goes under the benchmark's load: runs a 3-node cluster with `node --cpu-prof`
// on every node, drives the same pipelined SEND and RECEIVE+ACK workloads as `npm run bench`
// (bench/workloads.ts), stops the nodes gracefully (V8 writes the profiles), and prints, per node
// and phase, the CPU per message by part of Ferry (broker, LMDB, WAL, raft, transport, client
// connections, GC, ...). Writes bench/results/profile-<date>.json, one flame graph per node
// (profile-<date>-<node>.svg) and keeps the raw .cpuprofile files (open them in Chrome DevTools'
// Performance panel or speedscope) in the run's directory, which it prints.
//
//   npm run bench:profile
//   npm run bench:profile -- --messages 100000
//   npm run bench:profile -- --warm     # the benchmark's drain warm-up (unprofiled phase) first
//
// Profiling itself costs some CPU (V8 samples every ~1 ms): compare parts with each other, and
// take absolute throughput from `npm run bench`.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { type CpuProfile, flameGraphSvg, PART_ORDER, partTimes } from "./lib/cpuprofile.js";
import { Progress } from "./lib/progress.js";
import { sleep } from "./lib/proc.js";
import { ferrySystem } from "./systems/ferry.js";
import { measureDrain, measureThroughput, type NodeCpu, type Settings, sendAndDrainSettings, warmUpDrains } from "./workloads.js";
import { RESULTS_DIR, resultStamp } from "./lib/results.js";

const PROFILE_WAIT_MS = 15_000;

const { values: options } = parseArgs({ options: { messages: { type: "string", default: "60000" }, warm: { type: "boolean", default: false } } });
// Without --warm the profile covers the first drain, V8's compiling included; with it, the drain
// after the benchmark's warm-up drains (its steady state: docs/bench.md "Session 26").
const SETTINGS: Settings = sendAndDrainSettings(options.messages, options.warm);

// µs on the monotonic clock V8's profiler uses (CLOCK_MONOTONIC on Linux, as process.hrtime).
function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

interface Phase {
  name: string;
  fromUs: number;
  toUs: number;
  messages: number;
  messagesPerSecond: number;
  cpuUsPerMessage: Map<string, number>; // per node, from /proc: all threads, CPU only
}

// CPU seconds per million messages is µs per message.
function perNode(cpu: NodeCpu[]): Map<string, number> {
  return new Map(cpu.map((node) => [node.node, node.cpuSecondsPerMillionMessages]));
}

const workDir = mkdtempSync(join(tmpdir(), "ferry-bench-profile-"));
const profileDir = join(workDir, "profiles");
mkdirSync(profileDir);
process.env.FERRY_BENCH_NODE_ARGS = `--cpu-prof --cpu-prof-dir=${profileDir}`;
const progress = new Progress();
process.stderr.write(`profiling a 3-node cluster in ${workDir} (load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores)\n`);
const cluster = await ferrySystem.start(workDir);
const phases: Phase[] = [];
let leader = "";
try {
  leader = await cluster.leader("throughput");
  let fromUs = monotonicUs();
  const sent = await measureThroughput(cluster, SETTINGS, progress);
  phases.push({ name: "pipelined SEND", fromUs, toUs: monotonicUs(), messages: sent.messages, messagesPerSecond: sent.messagesPerSecond, cpuUsPerMessage: perNode(sent.serverCpu) });
  if (SETTINGS.drainWarmupRounds > 0) await warmUpDrains(cluster, SETTINGS, progress);
  fromUs = monotonicUs();
  const drained = await measureDrain(cluster, SETTINGS, sent.messages, progress);
  phases.push({ name: "RECEIVE+ACK", fromUs, toUs: monotonicUs(), messages: drained.messages, messagesPerSecond: drained.messagesPerSecond, cpuUsPerMessage: perNode(drained.serverCpu) });
} finally {
  await cluster.stop();
}

// Each node writes its profile as it exits: CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile.
const deadlineMs = performance.now() + PROFILE_WAIT_MS;
const profileFile = (pid: number): string | undefined => readdirSync(profileDir).find((name) => name.split(".")[3] === String(pid) && name.endsWith(".cpuprofile"));
while (cluster.nodes.some((node) => profileFile(node.pid) === undefined) && performance.now() < deadlineMs) await sleep(200);

interface NodeReport {
  node: string;
  role: string;
  profile: string;
  flameGraph: string;
  phases: Array<{ phase: string; busyMs: number; idleMs: number; busyUsPerMessage: number; cpuUsPerMessage: number; partsUsPerMessage: Record<string, number> }>;
}

const stamp = resultStamp();
mkdirSync(RESULTS_DIR, { recursive: true });
const reports: NodeReport[] = [];
for (const node of cluster.nodes) {
  const file = profileFile(node.pid);
  if (file === undefined) {
    process.stderr.write(`  no profile from ${node.name} (pid ${node.pid}): it did not exit cleanly\n`);
    continue;
  }
  const profile = JSON.parse(readFileSync(join(profileDir, file), "utf8")) as CpuProfile;
  const role = node.name === leader ? "leader" : "follower";
  const svgPath = join(RESULTS_DIR, `profile-${stamp}-${role}-${node.clientPort}.svg`);
  writeFileSync(svgPath, flameGraphSvg(profile, `Ferry ${role} ${node.name}: busy CPU over both phases (pipelined SEND, then RECEIVE+ACK)`));
  const report: NodeReport = { node: node.name, role, profile: join(profileDir, file), flameGraph: svgPath, phases: [] };
  for (const phase of phases) {
    const times = partTimes(profile, phase.fromUs, phase.toUs);
    report.phases.push({
      phase: phase.name,
      busyMs: Math.round(times.busyUs / 1000),
      idleMs: Math.round(times.idleUs / 1000),
      busyUsPerMessage: round(times.busyUs / phase.messages),
      cpuUsPerMessage: phase.cpuUsPerMessage.get(node.name) ?? Number.NaN,
      partsUsPerMessage: Object.fromEntries(PART_ORDER.map((part) => [part, round((times.parts.get(part) ?? 0) / phase.messages)])),
    });
  }
  reports.push(report);
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}

function table(phase: Phase, nodes: NodeReport[]): string {
  const rows = nodes.map((report) => report.phases.find((entry) => entry.phase === phase.name)!);
  const header = ["µs per message (main thread)", ...nodes.map((report) => `${report.role} ${report.node.split(":")[1]}`)];
  const lines: string[][] = [header];
  for (const part of PART_ORDER) lines.push([part, ...rows.map((row) => row.partsUsPerMessage[part]!.toFixed(1))]);
  lines.push(["busy (total of the above)", ...rows.map((row) => row.busyUsPerMessage.toFixed(1))]);
  lines.push(["CPU from /proc, all threads", ...rows.map((row) => row.cpuUsPerMessage.toFixed(1))]);
  lines.push(["busy share of the phase", ...rows.map((row) => `${Math.round((100 * row.busyMs) / Math.max(1, row.busyMs + row.idleMs))}%`)]);
  const widths = header.map((_, column) => Math.max(...lines.map((line) => line[column]!.length)));
  const render = (line: string[]) => line.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join("  ");
  return [
    `${phase.name}: ${phase.messages} messages, ${phase.messagesPerSecond} msg/s under the profiler`,
    render(header),
    widths.map((width) => "-".repeat(width)).join("  "),
    ...lines.slice(1).map(render),
    "busy = sampled main-thread time not idle; it includes time the OS preempted the node (4 processes share the cores),",
    "so it can exceed the CPU row, which also counts the node's other threads (fsync, LMDB flush, GC helpers).",
  ].join("\n");
}

for (const phase of phases) console.log(`\n${table(phase, reports)}`);
const jsonPath = join(RESULTS_DIR, `profile-${stamp}.json`);
writeFileSync(jsonPath, `${JSON.stringify({ startedAt: new Date().toISOString(), settings: SETTINGS, cpuCount: cpus().length, loadAverage: loadavg(), leader, phases, nodes: reports }, null, 1)}\n`);
console.log(`\nresults: ${jsonPath}`);
for (const report of reports) console.log(`flame graph (${report.role} ${report.node}): ${report.flameGraph}`);
console.log(`raw profiles (Chrome DevTools > Performance > Load profile, or speedscope): ${profileDir}`);
