// Failover under steady load: senders connected to a node that survives keep a closed-loop load
// going, a probe sends every few milliseconds regardless of the load (so a fresh request is
// always outstanding), and the leader of the stream/queue/log is killed with SIGKILL. The figure
// "writes resumed after" is the time from the kill to the first acknowledged send that was
// issued after the kill; the longest gap is the longest stretch with no acknowledgement at all.
import type { Progress } from "./lib/progress.js";
import { sleep } from "./lib/proc.js";
import { type LatencySummary, round, Samples, Timeline } from "./lib/samples.js";
import type { RunningCluster, Sender } from "./systems/types.js";
import { type FailoverResult, leaderWithin, type Settings } from "./workloads.js";

const PROBES_IN_FLIGHT_MAX = 200;
const RETRY_PAUSE_MS = 10; // after a failed send, so a node that refuses at once is not spun on
const GAP_WINDOW_BEFORE_KILL_MS = 1000;
const LEADER_WAIT_MS = 30_000;

interface SendEvent {
  issuedMs: number;
  completedMs: number;
  ok: boolean;
}

export async function measureFailover(cluster: RunningCluster, settings: Settings, progress: Progress): Promise<FailoverResult> {
  await cluster.prepare("failover");
  const leader = await cluster.leader("failover");
  const survivor = cluster.nodes.find((node) => node.name !== leader) ?? cluster.nodes[0]!;
  const senders: Sender[] = [];
  for (let index = 0; index < settings.failoverConnectionCount + 1; index++) {
    senders.push(await cluster.openSender({ target: "failover", node: survivor.name, inFlightMax: settings.failoverInFlightPerConnection }));
  }
  const body = new Uint8Array(settings.bodyBytes).fill(102);
  const events: SendEvent[] = [];
  const startMs = performance.now();
  const killAtMs = startMs + settings.failoverBeforeMs;
  const endMs = killAtMs + settings.failoverAfterMs;
  const record = async (sender: Sender) => {
    const issuedMs = performance.now();
    let ok = true;
    try {
      await sender.send(body, settings.sendTimeoutMs);
    } catch {
      ok = false;
    }
    events.push({ issuedMs, completedMs: performance.now(), ok });
    return ok;
  };
  const worker = async (sender: Sender) => {
    while (performance.now() < endMs) if (!(await record(sender))) await sleep(RETRY_PAUSE_MS);
  };
  const probe = async (sender: Sender) => {
    const outstanding: Array<Promise<boolean>> = [];
    let inFlight = 0;
    while (performance.now() < endMs) {
      if (inFlight < PROBES_IN_FLIGHT_MAX) {
        inFlight++;
        outstanding.push(record(sender).finally(() => inFlight--));
      }
      await sleep(settings.failoverProbeIntervalMs);
    }
    await Promise.all(outstanding);
  };
  const loadSenders = senders.slice(1);
  const running = [
    probe(senders[0]!),
    ...loadSenders.flatMap((sender) => Array.from({ length: settings.failoverInFlightPerConnection }, () => worker(sender))),
  ];
  progress.start(`failover (kill -9 ${leader})`, endMs - startMs);
  let killedAtMs = Number.NaN;
  while (performance.now() < endMs) {
    if (Number.isNaN(killedAtMs) && performance.now() >= killAtMs) {
      killedAtMs = performance.now();
      cluster.kill(leader);
    }
    progress.update(performance.now() - startMs);
    await sleep(50);
  }
  await Promise.all(running);
  await Promise.allSettled(senders.map((sender) => sender.close()));
  const newLeader = await leaderWithin(cluster, "failover", LEADER_WAIT_MS);
  const result = summarize(events, startMs, killedAtMs, settings);
  progress.end(
    `writes resumed after ${result.writesResumedAfterMs ?? "never"} ms, longest gap ${result.longestGapMs} ms, new leader ${newLeader}`,
  );
  return { killedNode: leader, newLeader, ...result };
}

function summarize(events: SendEvent[], startMs: number, killedAtMs: number, settings: Settings) {
  const succeeded = events.filter((event) => event.ok).sort((left, right) => left.completedMs - right.completedMs);
  const resumed = succeeded.find((event) => event.issuedMs >= killedAtMs);
  const resumedAtMs = resumed?.completedMs ?? Number.POSITIVE_INFINITY;
  const timeline = new Timeline(startMs);
  for (const event of succeeded) timeline.add(event.completedMs);
  const before = new Samples();
  const during = new Samples();
  const after = new Samples();
  const warmedUpMs = startMs + Math.min(1000, settings.failoverBeforeMs / 2);
  for (const event of succeeded) {
    const latencyMs = event.completedMs - event.issuedMs;
    if (event.issuedMs < killedAtMs) {
      if (event.issuedMs >= warmedUpMs) before.add(latencyMs);
    } else if (event.issuedMs < resumedAtMs) during.add(latencyMs);
    else after.add(latencyMs);
  }
  return {
    killedAtMs: Math.round(killedAtMs - startMs),
    writesResumedAfterMs: resumed ? Math.round(resumed.completedMs - killedAtMs) : null,
    longestGapMs: Math.round(longestGap(succeeded, killedAtMs - GAP_WINDOW_BEFORE_KILL_MS, startMs + settings.failoverBeforeMs + settings.failoverAfterMs)),
    errors: events.length - succeeded.length,
    latencyBefore: before.summary(),
    latencyDuring: during.summary() satisfies LatencySummary,
    latencyAfter: after.summary(),
    ratesPerSecond: timeline.ratesPerSecond(startMs + settings.failoverBeforeMs + settings.failoverAfterMs),
  };
}

// The longest interval in [fromMs, toMs] containing no completion of a successful send.
function longestGap(succeeded: SendEvent[], fromMs: number, toMs: number): number {
  let previousMs = fromMs;
  let longestMs = 0;
  for (const event of succeeded) {
    if (event.completedMs < fromMs || event.completedMs > toMs) continue;
    longestMs = Math.max(longestMs, event.completedMs - previousMs);
    previousMs = event.completedMs;
  }
  return round(Math.max(longestMs, toMs - previousMs));
}
