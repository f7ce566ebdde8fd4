// The four measurements, written once against the SystemUnderTest interface so every system
// runs the same code: send latency with one request in flight, pipelined send throughput,
// receive+ack throughput, and failover under steady load (kill -9 of the leader).
import type { Progress } from "./lib/progress.js";
import { cpuSeconds, peakRssBytes, sleep, withTimeout } from "./lib/proc.js";
import { type LatencySummary, round, Samples, Timeline } from "./lib/samples.js";
import type { ClusterNode, RunningCluster, Sender } from "./systems/types.js";

export interface Settings {
  bodyBytes: number;
  latencyWarmupCount: number;
  latencySampleCount: number;
  throughputMessageCount: number;
  throughputConnectionCount: number;
  throughputInFlightPerConnection: number;
  throughputDurationMsMax: number;
  drainConsumerCount: number;
  drainBatchSize: number;
  drainDepth: number; // see DrainOptions.depth
  drainIdleMs: number;
  // Messages sent to a mailbox of their own and drained, uncounted, before the measured drain, in
  // drainWarmupRounds rounds of drainWarmupCount each: the drain is the first time a node runs
  // RECEIVE and ACK, and the measured figure is the steady state, as the latency phase's warm-up
  // sends make it for SEND (0: no warm-up).
  drainWarmupCount: number;
  drainWarmupRounds: number;
  failoverConnectionCount: number;
  failoverInFlightPerConnection: number;
  failoverBeforeMs: number;
  failoverAfterMs: number;
  failoverProbeIntervalMs: number;
  sendTimeoutMs: number;
}

// The mailbox (stream subject, queue) the throughput phase fills and the measured drain empties.
const THROUGHPUT_TARGET = "throughput";

// The benchmark's settings (bench/main.ts; --quick cuts the counts). bench:profile and bench:warmup
// start from these too.
export const SETTINGS_DEFAULT: Settings = {
  bodyBytes: 256,
  // Sends of a freshly started cluster before the timed ones (their own figures are kept as the
  // cold ones). 5,000: one-in-flight runs of 20,000 sends per system, p99 per 2,000 in order,
  // show the startup transient: Ferry 6.9 / 4.2 / 2.3 ms, then 1.6-2.1 (V8 compiling the nodes'
  // hot paths); NATS 2.4 / 1.2, then 0.7-1.0; RabbitMQ 3.3 / 1.9, then 1.3-2.0 (docs/bench.md,
  // session 20). 1,000 (until session 19) timed the rest of Ferry's transient.
  latencyWarmupCount: 5000,
  latencySampleCount: 10_000,
  throughputMessageCount: 100_000,
  throughputConnectionCount: 4,
  throughputInFlightPerConnection: 256,
  throughputDurationMsMax: 60_000,
  drainConsumerCount: 2,
  // Messages per RECEIVE of Ferry's consumers: 200, 1 batch ahead (consume()'s prefetch = depth /
  // batch - 1), where until session 39 it was 100 with 3 ahead. The depth is what every system
  // shares; within it, half as many RECEIVEs (each carrying the acks of the batch it replaces)
  // cost the nodes less per message, and the messages requested per round trip are the same 400
  // per consumer (docs/bench.md "Session 39"). `--drain-batch 100` runs the old split.
  drainBatchSize: 200,
  drainDepth: 400, // messages a consumer may hold and have requested (or leased and unacked)
  drainIdleMs: 5000,
  // 6 rounds of 50,000 (20,000 once until session 26): V8 optimizes a function after it has run
  // enough of its own bytecode, so the functions a node runs once per Raft entry or per peer
  // message (hundreds of calls a second) were still being compiled in the measured drain after
  // 20,000: 137-145 TurboFan compilations in it, a third of the nodes' main-thread samples in
  // baseline code. 100,000 (in 1 or 5 rounds) still left 133-137; 300,000 (in 3 or 10 rounds)
  // 50-60, and the drain's server CPU per message was 15-20% lower. In rounds, RECEIVE also goes
  // through the end of a drain (the mailbox running dry: its optimized code had not seen that
  // path and was deoptimized there) several times before the measured drain (docs/bench.md
  // "Session 26"; `npm run bench:warmup` shows each round's rate).
  drainWarmupCount: 50_000,
  drainWarmupRounds: 6,
  failoverConnectionCount: 2,
  failoverInFlightPerConnection: 8,
  failoverBeforeMs: 5000,
  failoverAfterMs: 15_000,
  failoverProbeIntervalMs: 20,
  sendTimeoutMs: 2000,
};

// The settings of a tool that runs the benchmark's pipelined SENDs and then its drain
// (bench:profile, bench:stages): the benchmark's, with `--messages` as the count, and without the
// drain warm-up when `warm` is false (the first, cold drain). Throws on a count below 1,000.
export function sendAndDrainSettings(messagesOption: string | undefined, warm: boolean): Settings {
  const messages = Number(messagesOption);
  if (!Number.isInteger(messages) || messages < 1000) throw new Error(`--messages takes an integer >= 1000, not '${messagesOption}'`);
  return {
    ...SETTINGS_DEFAULT,
    throughputMessageCount: messages,
    throughputDurationMsMax: 120_000,
    ...(warm ? {} : { drainWarmupCount: 0, drainWarmupRounds: 0 }),
    sendTimeoutMs: 10_000,
  };
}

// How much the load generator itself used: it shares the 2 cores with the 3 nodes.
export interface ClientCpu {
  clientCpuSeconds: number;
}

export interface LatencyResult extends ClientCpu {
  leader: string;
  latency: LatencySummary;
  // The warm-up sends' own figures: the cluster just started (Settings.latencyWarmupCount).
  warmup: LatencySummary;
  curve: Array<[number, number]>;
  samplesMs: number[];
}

export interface NodeCpu {
  node: string;
  cpuSeconds: number;
  cpuSecondsPerMillionMessages: number;
}

export interface ThroughputResult extends ClientCpu {
  messages: number;
  errors: number;
  // When the phase's clock started (performance.now()), so that a tool sampling beside it (bench:perf)
  // can take exactly [startedAtMs, startedAtMs + durationMs]: the phase's setup and teardown are
  // outside it.
  startedAtMs: number;
  durationMs: number;
  messagesPerSecond: number;
  latency: LatencySummary;
  ratesPerSecond: number[];
  serverCpu: NodeCpu[];
  serverCpuSecondsPerMillionMessages: number;
}

export type DrainResult = Omit<ThroughputResult, "latency" | "errors"> & { expected: number; placement?: string };

// The uncounted warm-up drains (Settings.drainWarmupCount, drainWarmupRounds): their rates, for
// the record (messagesPerSecond: the last round's).
export interface DrainWarmupResult {
  messages: number;
  messagesPerSecond: number;
  roundRates: number[];
}

export interface FailoverResult {
  killedNode: string;
  newLeader: string;
  killedAtMs: number; // from the start of the phase
  writesResumedAfterMs: number | null; // kill → first acknowledged send issued after the kill
  longestGapMs: number; // longest stretch without any acknowledged send, around the kill
  errors: number;
  latencyBefore: LatencySummary;
  latencyDuring: LatencySummary; // sends issued between the kill and the resumption
  latencyAfter: LatencySummary;
  ratesPerSecond: number[];
}

export interface MemoryResult {
  node: string;
  peakRssBytes: number;
}

function makeBody(bodyBytes: number): Uint8Array {
  const body = new Uint8Array(bodyBytes);
  for (let index = 0; index < bodyBytes; index++) body[index] = 97 + (index % 26);
  return body;
}

function clientCpuSince(start: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(start);
  return round((used.user + used.system) / 1e6);
}

function snapshotCpu(nodes: ClusterNode[]): number[] {
  return nodes.map((node) => cpuSeconds(node.pid));
}

function cpuSince(nodes: ClusterNode[], before: number[], messages: number): NodeCpu[] {
  return nodes.map((node, index) => {
    const used = cpuSeconds(node.pid) - before[index]!;
    return { node: node.name, cpuSeconds: round(used), cpuSecondsPerMillionMessages: round((used / Math.max(1, messages)) * 1e6) };
  });
}

function sumPerMillion(cpu: NodeCpu[]): number {
  return round(cpu.reduce((total, node) => total + node.cpuSecondsPerMillionMessages, 0));
}

export async function measureLatency(cluster: RunningCluster, settings: Settings, progress: Progress): Promise<LatencyResult> {
  await cluster.prepare("latency");
  const leader = await cluster.leader("latency");
  const sender = await cluster.openSender({ target: "latency", node: leader, inFlightMax: 1 });
  const body = makeBody(settings.bodyBytes);
  const total = settings.latencyWarmupCount + settings.latencySampleCount;
  const warmup = new Samples();
  const samples = new Samples();
  const cpuStart = process.cpuUsage();
  progress.start("send latency (1 in flight)", total);
  for (let index = 0; index < total; index++) {
    const startMs = performance.now();
    await sendOnce(sender, body, settings.sendTimeoutMs);
    (index < settings.latencyWarmupCount ? warmup : samples).add(performance.now() - startMs);
    progress.update(index + 1);
  }
  await sender.close();
  const latency = samples.summary();
  progress.end(`p50 ${latency.p50Ms} ms  p99 ${latency.p99Ms} ms  max ${latency.maxMs} ms`);
  return {
    leader,
    latency,
    warmup: warmup.summary(),
    curve: samples.curve(),
    samplesMs: samples.toArray(),
    clientCpuSeconds: clientCpuSince(cpuStart),
  };
}

function sendOnce(sender: Sender, body: Uint8Array, timeoutMs: number): Promise<void> {
  // The adapters time out on their own; this catches one that would not.
  return withTimeout(sender.send(body, timeoutMs), timeoutMs + 1000, "send");
}

export async function measureThroughput(cluster: RunningCluster, settings: Settings, progress: Progress): Promise<ThroughputResult> {
  await cluster.prepare(THROUGHPUT_TARGET);
  const senders = await openPipelinedSenders(cluster, settings, THROUGHPUT_TARGET);
  const body = makeBody(settings.bodyBytes);
  const samples = new Samples();
  const cpuBefore = snapshotCpu(cluster.nodes);
  const cpuStart = process.cpuUsage();
  const startMs = performance.now();
  const timeline = new Timeline(startMs);
  const deadlineMs = startMs + settings.throughputDurationMsMax;
  let issued = 0;
  let acked = 0;
  let errors = 0;
  progress.start("send throughput (pipelined)", settings.throughputMessageCount);
  const worker = async (sender: Sender) => {
    while (issued < settings.throughputMessageCount && performance.now() < deadlineMs) {
      issued++;
      const sentMs = performance.now();
      try {
        await sendOnce(sender, body, settings.sendTimeoutMs);
        const doneMs = performance.now();
        samples.add(doneMs - sentMs);
        timeline.add(doneMs);
        progress.update(++acked);
      } catch {
        errors++;
      }
    }
  };
  const workers = senders.flatMap((sender) => Array.from({ length: settings.throughputInFlightPerConnection }, () => worker(sender)));
  await Promise.all(workers);
  const durationMs = performance.now() - startMs;
  const serverCpu = cpuSince(cluster.nodes, cpuBefore, acked);
  await Promise.all(senders.map((sender) => sender.close()));
  const messagesPerSecond = Math.round((acked * 1000) / durationMs);
  progress.end(`${messagesPerSecond} msg/s  (${acked} acked, ${errors} errors)`);
  return {
    messages: acked,
    errors,
    startedAtMs: startMs,
    durationMs: Math.round(durationMs),
    messagesPerSecond,
    latency: samples.summary(),
    ratesPerSecond: timeline.ratesPerSecond(startMs + durationMs),
    serverCpu,
    serverCpuSecondsPerMillionMessages: sumPerMillion(serverCpu),
    clientCpuSeconds: clientCpuSince(cpuStart),
  };
}

// The throughput phase's connections to the leader of `target`, each with its window of sends.
async function openPipelinedSenders(cluster: RunningCluster, settings: Settings, target: string): Promise<Sender[]> {
  const leader = await cluster.leader(target);
  const senders: Sender[] = [];
  for (let index = 0; index < settings.throughputConnectionCount; index++) {
    senders.push(await cluster.openSender({ target, node: leader, inFlightMax: settings.throughputInFlightPerConnection }));
  }
  return senders;
}

// drainWarmupRounds rounds of warmUpDrain.
export async function warmUpDrains(cluster: RunningCluster, settings: Settings, progress: Progress): Promise<DrainWarmupResult> {
  const roundRates: number[] = [];
  let messages = 0;
  for (let round = 0; round < settings.drainWarmupRounds; round++) {
    const drained = await warmUpDrain(cluster, settings, progress, ` ${round + 1}/${settings.drainWarmupRounds}`);
    messages += drained.messages;
    roundRates.push(drained.messagesPerSecond);
  }
  return { messages, messagesPerSecond: roundRates[roundRates.length - 1] ?? 0, roundRates };
}

// Sends drainWarmupCount messages to a target of their own (pipelined, as the throughput phase
// does) and drains them with the measured drain's settings. Nothing of it is counted in the drain.
export async function warmUpDrain(cluster: RunningCluster, settings: Settings, progress: Progress, label = ""): Promise<{ messages: number; messagesPerSecond: number }> {
  const target = "drain-warmup";
  await cluster.prepare(target);
  const senders = await openPipelinedSenders(cluster, settings, target);
  const body = makeBody(settings.bodyBytes);
  let issued = 0;
  let sent = 0;
  progress.start(`receive+ack warm-up${label} (not counted)`, settings.drainWarmupCount * 2);
  const worker = async (sender: Sender) => {
    while (issued < settings.drainWarmupCount) {
      issued++;
      await sendOnce(sender, body, settings.sendTimeoutMs).then(() => progress.update(++sent), () => {});
    }
  };
  await Promise.all(senders.flatMap((sender) => Array.from({ length: settings.throughputInFlightPerConnection }, () => worker(sender))));
  await Promise.all(senders.map((sender) => sender.close()));
  let startMs = performance.now();
  let acked = 0;
  let lastAckedMs = startMs;
  const onStart = () => {
    startMs = performance.now();
    lastAckedMs = startMs;
  };
  const drained = await drainWith(cluster, settings, target, sent, onStart, (count) => {
    acked += count;
    lastAckedMs = performance.now();
    progress.update(sent + acked);
  });
  const messagesPerSecond = Math.round((drained * 1000) / Math.max(1, lastAckedMs - startMs));
  progress.end(`${messagesPerSecond} msg/s  (${drained} of ${sent})`);
  return { messages: drained, messagesPerSecond };
}

// Drains `target` with the drain settings (the warm-up and the measured drain alike). onStart:
// the system's setup for it is done (DrainOptions.onStart), the drain's clock starts.
function drainWith(cluster: RunningCluster, settings: Settings, target: string, expected: number, onStart: () => void, onAcked: (count: number) => void): Promise<number> {
  return cluster.drain({
    target,
    expected,
    consumers: settings.drainConsumerCount,
    batch: settings.drainBatchSize,
    depth: settings.drainDepth,
    idleMs: settings.drainIdleMs,
    onStart,
    onAcked,
  });
}

export async function measureDrain(cluster: RunningCluster, settings: Settings, expected: number, progress: Progress): Promise<DrainResult> {
  // The clock and the CPU counts start when the system's setup for the drain is done (onStart).
  let cpuBefore = snapshotCpu(cluster.nodes);
  let cpuStart = process.cpuUsage();
  let startMs = performance.now();
  let timeline = new Timeline(startMs);
  let acked = 0;
  let lastAckedMs = startMs;
  const onStart = () => {
    cpuBefore = snapshotCpu(cluster.nodes);
    cpuStart = process.cpuUsage();
    startMs = performance.now();
    timeline = new Timeline(startMs);
    lastAckedMs = startMs;
  };
  progress.start("receive+ack throughput", expected);
  const drained = await drainWith(cluster, settings, THROUGHPUT_TARGET, expected, onStart, (count) => {
    acked += count;
    lastAckedMs = performance.now();
    timeline.add(lastAckedMs, count);
    progress.update(acked);
  });
  // The rate is over the time until the last ack: consumers may then still wait for a long poll
  // or a fetch to expire, or for the idle timeout, and that is not work.
  const durationMs = lastAckedMs - startMs;
  const serverCpu = cpuSince(cluster.nodes, cpuBefore, drained);
  const messagesPerSecond = Math.round((drained * 1000) / durationMs);
  progress.end(`${messagesPerSecond} msg/s  (${drained} of ${expected})`);
  const placement = await cluster.drainPlacement?.(THROUGHPUT_TARGET).catch((error: unknown) => `unknown (${(error as Error).message})`);
  if (placement !== undefined) progress.note(`drain placement: ${placement}`);
  return {
    ...(placement === undefined ? {} : { placement }),
    expected,
    messages: drained,
    startedAtMs: startMs,
    durationMs: Math.round(durationMs),
    messagesPerSecond,
    ratesPerSecond: timeline.ratesPerSecond(startMs + durationMs),
    serverCpu,
    serverCpuSecondsPerMillionMessages: sumPerMillion(serverCpu),
    clientCpuSeconds: clientCpuSince(cpuStart),
  };
}

export function measureMemory(cluster: RunningCluster): MemoryResult[] {
  return cluster.nodes.map((node) => ({ node: node.name, peakRssBytes: peakRssBytes(node.pid) }));
}

// Asks for the leader until one answers (a new one is being elected right after a kill).
export async function leaderWithin(cluster: RunningCluster, target: string, timeoutMs: number): Promise<string> {
  const deadlineMs = performance.now() + timeoutMs;
  for (;;) {
    try {
      return await withTimeout(cluster.leader(target), 10_000, "leader");
    } catch (error) {
      if (performance.now() > deadlineMs) return `unknown (${(error as Error).message})`;
      await sleep(500);
    }
  }
}
