// The printed table (figures as rows, systems as columns) and, with --peers, Ferry/peer ratios.
import type { DrainResult, FailoverResult, LatencyResult, MemoryResult, ThroughputResult } from "../workloads.js";

export interface SystemResult {
  name: string;
  label: string;
  durability: string;
  ackSemantics: string;
  version?: string;
  skipped?: string; // why the system did not run
  errors: string[]; // phases that failed, with their message
  clusterStartMs?: number;
  // 1-minute load averages around this system's run: above the core count, the nodes and the
  // load generator waited for CPU, and the figures say so.
  loadAverageStart?: number;
  loadAverageEnd?: number;
  latency?: LatencyResult;
  throughput?: ThroughputResult;
  drain?: DrainResult;
  memory?: MemoryResult[];
  failover?: FailoverResult;
}

interface Figure {
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

export function renderTable(results: SystemResult[], withRatios: boolean): string {
  const ran = results.filter((result) => result.skipped === undefined);
  const ferry = ran.find((result) => result.name === "ferry");
  const peers = ran.filter((result) => result.name !== "ferry");
  const header = ["figure", ...ran.map((result) => result.name)];
  if (withRatios && ferry) header.push(...peers.map((peer) => `ferry/${peer.name}`));
  const rows = FIGURES.map((figure) => {
    const row = [`${figure.label}${figure.better === "lower" ? " ↓" : " ↑"}`, ...ran.map((result) => format(figure.value(result)))];
    if (withRatios && ferry) row.push(...peers.map((peer) => ratio(figure.value(ferry), figure.value(peer))));
    return row;
  });
  const widths = header.map((_, column) => Math.max(...[header, ...rows].map((row) => [...row[column]!].length)));
  const line = (row: string[]) => row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join("  ");
  const out = [line(header), widths.map((width) => "-".repeat(width)).join("  "), ...rows.map(line)];
  out.push("", "↓ lower is better, ↑ higher is better. Durability per system:");
  for (const result of results) {
    const load = result.loadAverageStart === undefined ? "" : `, load average ${result.loadAverageStart} -> ${result.loadAverageEnd}`;
    const state = result.skipped ? `SKIPPED: ${result.skipped}` : `${result.version}${load}`;
    out.push(`  ${result.name}: ${result.durability}. Acks: ${result.ackSemantics}. [${state}]`);
    for (const error of result.errors) out.push(`    error: ${error}`);
  }
  if (withRatios && !ferry) out.push("", "Ferry/peer ratios need Ferry measured in the same run (figures move 20-30% between runs).");
  return out.join("\n");
}
