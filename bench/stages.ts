// Where a request's time goes between the nodes during the benchmark's RECEIVE+ACK drain: runs a
// 3-node cluster whose nodes trace when each log entry reached each stage (FERRY_TRACE_DIR,
// src/node/trace.ts), drives the benchmark's pipelined SENDs, its drain warm-up and its measured
// drain (bench/workloads.ts), stops the nodes (they write their traces) and lines the traces up
// per entry (bench/lib/stages.ts): from the leader's proposal to each follower's receipt and
// write, to the leader's apply, whose end is when the entry's answers leave. Prints a table of
// medians and p90s over the measured drain's entries and writes bench/results/stages-<date>.json.
//
//   npm run bench:stages
//   npm run bench:stages -- --messages 50000 --cold   # no drain warm-up (the first drain)
//   npm run bench:stages -- --latency   # the one-in-flight SENDs of the latency phase instead
//
// With --latency the window is the latency phase's timed SENDs (after its warm-up sends): one
// entry per SEND, so the table is where one SEND's time goes, next to the client's own p50.
//
// The nodes' clocks are the host's wall clock read with sub-millisecond resolution: the three
// processes share it. Tracing costs a few array writes per entry; the drain's rate is printed
// for reference, take rates from `npm run bench`.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseTrace, type TraceRecord } from "../src/node/trace.js";
import { sleep } from "./lib/proc.js";
import { Progress } from "./lib/progress.js";
import { resultPath } from "./lib/results.js";
import { entryStages, stagesTable } from "./lib/stages.js";
import { ferrySystem } from "./systems/ferry.js";
import { measureDrain, measureLatency, measureThroughput, SETTINGS_DEFAULT, type Settings, sendAndDrainSettings, warmUpDrains } from "./workloads.js";

const TRACE_WAIT_MS = 15_000;
const NODE_IDS = [1, 2, 3];

const { values: options } = parseArgs({
  options: { messages: { type: "string", default: "100000" }, cold: { type: "boolean", default: false }, latency: { type: "boolean", default: false } },
});
const SETTINGS: Settings = sendAndDrainSettings(options.messages, !options.cold);

function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

const workDir = mkdtempSync(join(tmpdir(), "ferry-bench-stages-"));
const traceDir = join(workDir, "traces");
mkdirSync(traceDir);
process.env.FERRY_TRACE_DIR = traceDir; // the dev cluster's nodes inherit it
const progress = new Progress();
process.stderr.write(`tracing a 3-node cluster in ${workDir} (load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores)\n`);
const cluster = await ferrySystem.start(workDir);
let fromMs = 0;
let toMs = 0;
let measured: { what: string; messages: number; messagesPerSecond: number; clientP50Ms?: number };
try {
  if (options.latency) {
    // The phase's warm-up sends first, outside the window; then its timed sends.
    await measureLatency(cluster, { ...SETTINGS_DEFAULT, latencySampleCount: 1 }, progress);
    fromMs = wallMs();
    const timed = await measureLatency(cluster, { ...SETTINGS_DEFAULT, latencyWarmupCount: 0 }, progress);
    toMs = wallMs();
    const messages = timed.latency.count;
    measured = { what: "SEND, 1 in flight", messages, messagesPerSecond: Math.round(messages / ((toMs - fromMs) / 1000)), clientP50Ms: timed.latency.p50Ms };
  } else {
    const sent = await measureThroughput(cluster, SETTINGS, progress);
    if (SETTINGS.drainWarmupRounds > 0) await warmUpDrains(cluster, SETTINGS, progress);
    fromMs = wallMs();
    const drained = await measureDrain(cluster, SETTINGS, sent.messages, progress);
    toMs = wallMs();
    measured = { what: "RECEIVE+ACK", messages: drained.messages, messagesPerSecond: drained.messagesPerSecond };
  }
} finally {
  await cluster.stop();
}

const traceFile = (id: number) => join(traceDir, `trace-node${id}.txt`);
const deadlineMs = performance.now() + TRACE_WAIT_MS;
while (NODE_IDS.some((id) => !existsSync(traceFile(id))) && performance.now() < deadlineMs) await sleep(200);
const traces = new Map<string, TraceRecord[]>();
for (const id of NODE_IDS) {
  if (!existsSync(traceFile(id))) {
    process.stderr.write(`  no trace from node ${id}: it did not stop gracefully\n`);
    continue;
  }
  traces.set(`node${id}`, parseTrace(readFileSync(traceFile(id), "utf8")));
}

const stages = entryStages(traces, fromMs, toMs);
const messagesPerEntry = stages.entries === 0 ? 0 : measured.messages / stages.entries;
const clientP50 = measured.clientP50Ms === undefined ? "" : `; the client's p50 ${measured.clientP50Ms} ms`;
process.stdout.write(
  `${measured.what}: ${measured.messages} messages at ${measured.messagesPerSecond} msg/s (traced)${clientP50}; ${stages.entries} entries, ` +
    `${stages.commandsPerEntry.toFixed(1)} commands and ${messagesPerEntry.toFixed(0)} messages each\n\n${stagesTable(stages)}\n` +
    `entries in flight on the leader: ${stages.inFlight.meanEntries.toFixed(2)} on average; none for ${stages.inFlight.noneMs.toFixed(0)} of ` +
    `${stages.inFlight.windowMs.toFixed(0)} ms (${((100 * stages.inFlight.noneMs) / Math.max(stages.inFlight.windowMs, 1)).toFixed(0)}%)\n`,
);
const path = resultPath("stages-", ".json");
writeFileSync(
  path,
  `${JSON.stringify({ startedAt: new Date().toISOString(), settings: options.latency ? SETTINGS_DEFAULT : SETTINGS, cpuCount: cpus().length, loadAverage: loadavg(), ...measured, traces: traceDir, stages }, null, 2)}\n`,
);
process.stdout.write(`results: ${path}\ntraces: ${traceDir}\n`);
