// The printed table (figures as rows, systems as columns) and, with --peers, Ferry/peer ratios.
import type { DrainResult, DrainWarmupResult, FailoverResult, LatencyResult, MemoryResult, ThroughputResult } from "../workloads.js";

export interface SystemResult {
  name: string;
  label: string;
  durability: string;
  ackSemantics: string;
  version?: string;
  round?: number; // 1.. with --repeat
  skipped?: string; // why the system did not run
  errors: string[]; // phases that failed, with their message
  incidents?: string[]; // the servers' warn/error/fatal log lines (RunningCluster.incidents), at most INCIDENTS_KEPT
  clusterStartMs?: number;
  // 1-minute load averages around this system's run: above the core count, the nodes and the
  // load generator waited for CPU, and the figures say so.
  loadAverageStart?: number;
  loadAverageEnd?: number;
  latency?: LatencyResult;
  throughput?: ThroughputResult;
  drainWarmup?: DrainWarmupResult; // uncounted, before the drain (Settings.drainWarmupCount, drainWarmupRounds)
  drain?: DrainResult;
  memory?: MemoryResult[];
  failover?: FailoverResult;
}

export interface Figure {
  label: string;
  better: "lower" | "higher";
  value: (result: SystemResult) => number | null | undefined;
}

const MEBIBYTE = 1024 * 1024;

export const FIGURES: Figure[] = [
  { label: "send p50 (ms)", better: "lower", value: (result) => result.latency?.latency.p50Ms },
  { label: "send p90 (ms)", better: "lower", value: (result) => result.latency?.latency.p90Ms },
  { label: "send p99 (ms)", better: "lower", value: (result) => result.latency?.latency.p99Ms },
  { label: "send p99.9 (ms)", better: "lower", value: (result) => result.latency?.latency.p999Ms },
  { label: "send max (ms)", better: "lower", value: (result) => result.latency?.latency.maxMs },
  { label: "  cold: warm-up sends' p99 (ms)", better: "lower", value: (result) => result.latency?.warmup?.p99Ms },
  { label: "send throughput (msg/s)", better: "higher", value: (result) => result.throughput?.messagesPerSecond },
  { label: "  its p99 latency (ms)", better: "lower", value: (result) => result.throughput?.latency.p99Ms },
  { label: "receive+ack (msg/s)", better: "higher", value: (result) => result.drain?.messagesPerSecond },
  { label: "failover: writes resume (ms)", better: "lower", value: (result) => result.failover?.writesResumedAfterMs },
  { label: "failover: longest gap (ms)", better: "lower", value: (result) => result.failover?.longestGapMs },
  { label: "  p99 before kill (ms)", better: "lower", value: (result) => result.failover?.latencyBefore.p99Ms },
  { label: "  p99 after resume (ms)", better: "lower", value: (result) => result.failover?.latencyAfter.p99Ms },
  { label: "CPU s / M sends (3 nodes)", better: "lower", value: (result) => result.throughput?.serverCpuSecondsPerMillionMessages },
  { label: "CPU s / M recv+ack (3 nodes)", better: "lower", value: (result) => result.drain?.serverCpuSecondsPerMillionMessages },
  {
    label: "peak RSS, largest node (MiB)",
    better: "lower",
    value: (result) => (result.memory ? Math.round(Math.max(...result.memory.map((node) => node.peakRssBytes)) / MEBIBYTE) : undefined),
  },
  { label: "load generator CPU s (send)", better: "lower", value: (result) => result.throughput?.clientCpuSeconds },
  { label: "load generator CPU s (recv+ack)", better: "lower", value: (result) => result.drain?.clientCpuSeconds },
];

function format(value: number | null | undefined): string {
  if (value === null || value === undefined || Number.isNaN(value)) return "-";
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return value >= 100 ? Math.round(value).toLocaleString("en-US") : String(Math.round(value * 100) / 100);
}

function ratio(ferry: number | null | undefined, peer: number | null | undefined): string {
  if (ferry === null || ferry === undefined || peer === null || peer === undefined || !peer || Number.isNaN(ferry * peer)) return "-";
  return `${(ferry / peer).toFixed(2)}x`;
}

// The median of a figure over the repeated runs of one system (the middle one, or the mean of
// the two middle ones); undefined when no run produced it.
export function medianFigure(runs: SystemResult[], figure: Figure): number | undefined {
  const values = runs
    .map((run) => figure.value(run))
    .filter((value): value is number => typeof value === "number" && !Number.isNaN(value))
    .sort((left, right) => left - right);
  if (values.length === 0) return undefined;
  const middle = Math.floor(values.length / 2);
  return values.length % 2 === 1 ? values[middle]! : (values[middle - 1]! + values[middle]!) / 2;
}

// `runs` holds every run of every system (several per system with --repeat); each cell is the
// median over that system's runs.
export function renderTable(runs: SystemResult[], withRatios: boolean): string {
  const bySystem = new Map<string, SystemResult[]>();
  for (const run of runs) bySystem.set(run.name, [...(bySystem.get(run.name) ?? []), run]);
  const ran = [...bySystem.entries()].filter(([, group]) => group.some((run) => run.skipped === undefined));
  const ferry = ran.find(([name]) => name === "ferry");
  const peers = ran.filter(([name]) => name !== "ferry");
  const header = ["figure", ...ran.map(([name, group]) => (group.length > 1 ? `${name} (median of ${group.length})` : name))];
  if (withRatios && ferry) header.push(...peers.map(([name]) => `ferry/${name}`));
  const rows = FIGURES.map((figure) => {
    const row = [`${figure.label}${figure.better === "lower" ? " ↓" : " ↑"}`, ...ran.map(([, group]) => format(medianFigure(group, figure)))];
    if (withRatios && ferry) row.push(...peers.map(([, group]) => ratio(medianFigure(ferry[1], figure), medianFigure(group, figure))));
    return row;
  });
  const widths = header.map((_, column) => Math.max(...[header, ...rows].map((row) => [...row[column]!].length)));
  const line = (row: string[]) => row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join("  ");
  const out = [line(header), widths.map((width) => "-".repeat(width)).join("  "), ...rows.map(line)];
  out.push("", "↓ lower is better, ↑ higher is better. Durability per system:");
  for (const [name, group] of bySystem) {
    const first = group[0]!;
    const loads = group.filter((run) => run.loadAverageStart !== undefined).map((run) => `${run.loadAverageStart} -> ${run.loadAverageEnd}`);
    const state = first.skipped ? `SKIPPED: ${first.skipped}` : `${first.version}${loads.length ? `, load average ${loads.join(", ")}` : ""}`;
    out.push(`  ${name}: ${first.durability}. Acks: ${first.ackSemantics}. [${state}]`);
    for (const run of group) for (const error of run.errors) out.push(`    error: ${error}`);
  }
  if (withRatios && !ferry) out.push("", "Ferry/peer ratios need Ferry measured in the same run (figures move 20-30% between runs).");
  return out.join("\n");
}
