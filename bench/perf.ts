// Where the machine's CPU goes while a 3-node cluster and the load generator share it, measured
// with Linux perf: `perf record -a -e cpu-clock` over the pipelined SEND and over the RECEIVE+ACK
// drain of bench/workloads.ts (the drain after the benchmark's warm-up drains with --warm), the
// nodes started with --perf-basic-prof so that perf names their JS functions. Prints, per phase, the
// CPU per message of each process (leader, followers, load generator, the rest of the machine)
// split by kind of code (JS by V8 tier, builtins, GC, compiler, runtime, LMDB, libc, kernel) and
// main thread against its other threads, with the idle CPU beside it; then each process's
// busiest symbols. Writes bench/results/perf-<date>.json.
//
//   npm run bench:perf
//   npm run bench:perf -- --warm --messages 200000 [--frequency 2999]
//
// Unlike bench:profile's V8 profiles (bench/lib/perf-samples.ts says why), every figure here is
// time on a CPU. perf comes from bench/install-perf.sh (Debian's linux-perf, root), run first.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type Counts, countSamples, KINDS, OTHERS, topSymbols } from "./lib/perf-samples.js";
import { Progress } from "./lib/progress.js";
import { resultPath } from "./lib/results.js";
import { ferrySystem } from "./systems/ferry.js";
import { measureDrain, measureThroughput, type Settings, sendAndDrainSettings, warmUpDrains } from "./workloads.js";

const { values: options } = parseArgs({
  options: { messages: { type: "string", default: "100000" }, warm: { type: "boolean", default: false }, frequency: { type: "string", default: "2999" } },
});
const SETTINGS: Settings = sendAndDrainSettings(options.messages, options.warm);
const FREQUENCY = Number(options.frequency);
if (!Number.isInteger(FREQUENCY) || FREQUENCY < 100 || FREQUENCY > 20_000) throw new Error(`--frequency takes an integer from 100 to 20000 (Hz), not '${options.frequency}'`);
const PERF_START_MS = 500; // perf record needs a moment to open its events on every CPU
const TOP_SYMBOLS = 15;
const LOAD_GENERATOR = "load generator";

execFileSync("bash", [join(dirname(fileURLToPath(import.meta.url)), "install-perf.sh")], { stdio: "inherit" });

const workDir = mkdtempSync(join(tmpdir(), "ferry-bench-perf-"));
// --perf-basic-prof turns on V8's log too: into the run's directory, not each node's working one.
process.env.FERRY_BENCH_NODE_ARGS = [process.env.FERRY_BENCH_NODE_ARGS, `--perf-basic-prof --no-logfile-per-isolate --logfile=${join(workDir, "v8.log")}`]
  .filter(Boolean)
  .join(" ");

// performance.now() in seconds on CLOCK_MONOTONIC (process.hrtime's clock, and the one perf record
// -k CLOCK_MONOTONIC stamps its samples with; performance.now() counts on it from the process's start).
const MONOTONIC_OFFSET_MS = Number(process.hrtime.bigint()) / 1e6 - performance.now();
function monotonicSeconds(performanceMs: number): number {
  return (performanceMs + MONOTONIC_OFFSET_MS) / 1000;
}

function startPerf(output: string): Promise<ChildProcess> {
  const child = spawn("perf", ["record", "-a", "-k", "CLOCK_MONOTONIC", "-F", String(FREQUENCY), "-e", "cpu-clock", "-o", output], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve, reject) => {
    const started = setTimeout(() => resolve(child), PERF_START_MS);
    child.once("exit", (code) => {
      clearTimeout(started);
      reject(new Error(`perf record exited (${code}) before the phase: ${stderr.trim()}`));
    });
  });
}

function stopPerf(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.removeAllListeners("exit");
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve(); // perf ended during the phase (its samples so far are in the file)
      return;
    }
    child.once("exit", () => resolve());
    child.kill("SIGINT");
  });
}

interface PhaseReport {
  name: string;
  messages: number;
  messagesPerSecond: number;
  seconds: number; // the phase's span: from its clock's start to its last message
  samples: number;
  idleShare: number;
  // µs of CPU per message, by process: total, main thread, other threads, and by kind.
  processes: Record<string, { total: number; mainThread: number; otherThreads: number; kinds: Record<string, number>; topSymbols: Array<[string, number]> }>;
  idleUsPerMessage: number;
}

const progress = new Progress();
process.stderr.write(`perf over a 3-node cluster in ${workDir} (load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores)\n`);
const cluster = await ferrySystem.start(workDir);
const reports: PhaseReport[] = [];
try {
  const leader = await cluster.leader("throughput");
  const names = new Map<number, string>(cluster.nodes.map((node) => [node.pid, `${node.name === leader ? "leader" : "follower"} ${node.clientPort}`]));
  names.set(process.pid, LOAD_GENERATOR);
  const groupOf = (pid: number): string | undefined => names.get(pid);

  const record = async <T extends { messages: number; messagesPerSecond: number; startedAtMs: number; durationMs: number }>(name: string, run: () => Promise<T>): Promise<T> => {
    const data = join(workDir, `${name.replace(/\W+/g, "-")}.data`);
    const perf = await startPerf(data);
    let result: T;
    try {
      result = await run();
    } finally {
      await stopPerf(perf);
    }
    // The phase's own span, from its clock's start to its last message: the samples of perf's
    // start-up, the phase's setup and its teardown (a drain's consumers winding down) are left out.
    const fromSeconds = monotonicSeconds(result.startedAtMs);
    const seconds = result.durationMs / 1000;
    const script = execFileSync("perf", ["script", "-i", data, "-F", "pid,tid,time,ip,sym,dso"], { maxBuffer: 1 << 30, stdio: ["ignore", "pipe", "ignore"] }).toString();
    reports.push(report(name, result, seconds, countSamples(script.split("\n"), groupOf, fromSeconds, fromSeconds + seconds)));
    rmSync(data, { force: true });
    return result;
  };

  const sent = await record("pipelined SEND", () => measureThroughput(cluster, SETTINGS, progress));
  if (SETTINGS.drainWarmupRounds > 0) await warmUpDrains(cluster, SETTINGS, progress);
  await record("RECEIVE+ACK", () => measureDrain(cluster, SETTINGS, sent.messages, progress));
} finally {
  await cluster.stop();
  for (const pid of [...cluster.nodes.map((node) => node.pid), process.pid]) rmSync(`/tmp/perf-${pid}.map`, { force: true });
  rmSync(workDir, { recursive: true, force: true });
}

function report(name: string, result: { messages: number; messagesPerSecond: number }, seconds: number, counts: Counts): PhaseReport {
  const usPerMessage = (samples: number): number => Math.round(((samples / FREQUENCY) * 1e7) / Math.max(1, result.messages)) / 10;
  const processes: PhaseReport["processes"] = {};
  const order = [...counts.groups.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  for (const group of order) {
    const entry = counts.groups.get(group)!;
    processes[group] = {
      total: usPerMessage(entry.main + entry.otherThreads),
      mainThread: usPerMessage(entry.main),
      otherThreads: usPerMessage(entry.otherThreads),
      kinds: Object.fromEntries(KINDS.map((kind) => [kind, usPerMessage(entry.kinds.get(kind) ?? 0)])),
      topSymbols: topSymbols(entry, TOP_SYMBOLS).map(([symbol, samples]) => [symbol, Math.round(((samples / FREQUENCY) * 1e8) / Math.max(1, result.messages)) / 100]),
    };
  }
  return {
    name,
    messages: result.messages,
    messagesPerSecond: result.messagesPerSecond,
    seconds: Math.round(seconds * 1000) / 1000,
    samples: counts.total,
    idleShare: Math.round((1000 * counts.idle) / Math.max(1, counts.total)) / 1000,
    processes,
    idleUsPerMessage: usPerMessage(counts.idle),
  };
}

function rank(group: string): number {
  if (group.startsWith("leader")) return 0;
  if (group.startsWith("follower")) return 1;
  if (group === LOAD_GENERATOR) return 2;
  return group === OTHERS ? 3 : 4;
}

function table(phase: PhaseReport): string {
  const groups = Object.keys(phase.processes);
  const header = ["µs of CPU per message", ...groups, "idle CPU"];
  const lines: string[][] = [];
  for (const kind of KINDS) {
    if (groups.every((group) => phase.processes[group]!.kinds[kind] === 0)) continue;
    lines.push([kind, ...groups.map((group) => phase.processes[group]!.kinds[kind]!.toFixed(1)), ""]);
  }
  lines.push(["main thread", ...groups.map((group) => phase.processes[group]!.mainThread.toFixed(1)), ""]);
  lines.push(["other threads", ...groups.map((group) => phase.processes[group]!.otherThreads.toFixed(1)), ""]);
  lines.push(["total", ...groups.map((group) => phase.processes[group]!.total.toFixed(1)), phase.idleUsPerMessage.toFixed(1)]);
  const widths = header.map((_, column) => Math.max(header[column]!.length, ...lines.map((line) => line[column]!.length)));
  const render = (line: string[]) => line.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join("  ");
  return [
    `${phase.name}: ${phase.messages} messages, ${phase.messagesPerSecond} msg/s under perf (${FREQUENCY} Hz, ${phase.samples} samples over its ${phase.seconds.toFixed(2)} s on ${cpus().length} CPUs; idle ${Math.round(phase.idleShare * 100)}%)`,
    render(header),
    widths.map((width) => "-".repeat(width)).join("  "),
    ...lines.map(render),
  ].join("\n");
}

for (const phase of reports) {
  console.log(`\n${table(phase)}`);
  for (const [group, entry] of Object.entries(phase.processes)) {
    if (group === OTHERS) continue;
    console.log(`\n  ${phase.name}, ${group}: busiest symbols (µs per message)`);
    for (const [symbol, us] of entry.topSymbols) console.log(`    ${us.toFixed(2).padStart(6)}  ${symbol.slice(0, 110)}`);
  }
}
const jsonPath = resultPath("perf-", ".json");
writeFileSync(jsonPath, `${JSON.stringify({ startedAt: new Date().toISOString(), settings: SETTINGS, frequencyHz: FREQUENCY, cpuCount: cpus().length, loadAverage: loadavg(), phases: reports }, null, 1)}\n`);
console.log(`\nresults: ${jsonPath}`);
