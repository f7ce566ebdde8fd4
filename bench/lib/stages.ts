// Lines up the entry traces of a cluster's nodes (src/node/trace.ts) to show where each log
// entry's time went on its way from the leader's proposal to the answers: how long until each
// follower had the append, how long its write took, how long from the first follower's write to
// the leader's apply, and the apply itself. One entry is one sample; a stage's figure is the
// median (and p90) over the entries proposed in a time window (a benchmark phase).
import type { TraceEvent, TraceRecord } from "../../src/node/trace.js";

export interface StageSummary {
  medianMs: number;
  p90Ms: number;
  samples: number;
}

export interface FollowerStages {
  node: string;
  proposedToReceived: StageSummary; // the leader's proposal -> the append carrying it arrived here
  receivedToWritten: StageSummary; // arrived -> written to this follower's WAL (its response can go)
  apply: StageSummary; // this follower's apply of the committed entries that held it
}

export interface EntryStages {
  leader: string;
  entries: number;
  commandsPerEntry: number;
  followers: FollowerStages[];
  leaderWrite: StageSummary; // proposal -> written to the leader's own WAL
  firstWrittenToLeaderApply: StageSummary; // the first follower's write -> the leader starts applying
  leaderApply: StageSummary; // the leader's apply; the answers leave as it ends
  proposedToAnswered: StageSummary; // proposal -> the end of the leader's apply
  inFlight: InFlight;
}

// How many entries the leader had between proposal and answer, over the span from the first
// proposal to the last answer (entries never answered in the traces left out). A pipeline that
// keeps the nodes busy has several; in a lockstep, the leader waits for the clients' next
// requests whenever none is.
export interface InFlight {
  windowMs: number;
  meanEntries: number;
  noneMs: number; // time with no entry in flight
}

// Per node (by name), its trace; the window in the traces' clock (wall-clock ms).
export function entryStages(traces: Map<string, TraceRecord[]>, fromMs: number, toMs: number): EntryStages {
  let leader: string | undefined;
  let proposals: TraceRecord[] = [];
  for (const [node, records] of traces) {
    const proposed = records.filter((record) => record.event === "proposed" && record.atMs >= fromMs && record.atMs <= toMs);
    if (proposed.length > proposals.length) {
      leader = node;
      proposals = proposed;
    }
  }
  if (leader === undefined) throw new Error("no node proposed an entry in the window: no leader to follow");
  proposals.sort((a, b) => a.last - b.last);
  const indices = proposals.map((record) => record.last);
  const proposedAt = proposals.map((record) => record.atMs);
  const leaderRecords = traces.get(leader)!;
  const leaderWritten = coveringTimes(leaderRecords, "written", indices);
  const applyStart = coveringTimes(leaderRecords, "apply-start", indices);
  const applyEnd = coveringTimes(leaderRecords, "apply-end", indices);
  const followers: FollowerStages[] = [];
  const followerWritten: Array<Array<number | undefined>> = [];
  for (const [node, records] of traces) {
    if (node === leader) continue;
    const received = coveringTimes(records, "append-received", indices);
    const written = coveringTimes(records, "written", indices);
    const start = coveringTimes(records, "apply-start", indices);
    const end = coveringTimes(records, "apply-end", indices);
    followerWritten.push(written);
    followers.push({
      node,
      proposedToReceived: summarize(differences(received, proposedAt)),
      receivedToWritten: summarize(differences(written, received)),
      apply: summarize(differences(end, start)),
    });
  }
  const firstWritten = indices.map((_, at) => {
    const times = followerWritten.map((written) => written[at]).filter((time): time is number => time !== undefined);
    return times.length === 0 ? undefined : Math.min(...times);
  });
  return {
    leader,
    entries: indices.length,
    commandsPerEntry: indices.length === 0 ? 0 : proposals.reduce((sum, record) => sum + record.count, 0) / indices.length,
    followers,
    leaderWrite: summarize(differences(leaderWritten, proposedAt)),
    firstWrittenToLeaderApply: summarize(differences(applyStart, firstWritten)),
    leaderApply: summarize(differences(applyEnd, applyStart)),
    proposedToAnswered: summarize(differences(applyEnd, proposedAt)),
    inFlight: inFlight(proposedAt, applyEnd),
  };
}

export function inFlight(proposedAt: number[], answeredAt: Array<number | undefined>): InFlight {
  const changes: Array<[number, number]> = [];
  for (let at = 0; at < proposedAt.length; at++) {
    const answered = answeredAt[at];
    if (answered === undefined || answered < proposedAt[at]!) continue;
    changes.push([proposedAt[at]!, 1], [answered, -1]);
  }
  if (changes.length === 0) return { windowMs: 0, meanEntries: 0, noneMs: 0 };
  changes.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const fromMs = changes[0]![0];
  let count = 0;
  let lastMs = fromMs;
  let entryMs = 0;
  let noneMs = 0;
  for (const [atMs, change] of changes) {
    if (count === 0) noneMs += atMs - lastMs;
    entryMs += count * (atMs - lastMs);
    lastMs = atMs;
    count += change;
  }
  const windowMs = lastMs - fromMs;
  return { windowMs: round(windowMs), meanEntries: windowMs === 0 ? 0 : round(entryMs / windowMs), noneMs: round(noneMs) };
}

// For each index, the time of the first `event` record whose range (last - count, last] holds it
// (undefined when none does: an entry the node never saw, or a trace that ended early).
export function coveringTimes(records: TraceRecord[], event: TraceEvent, indices: number[]): Array<number | undefined> {
  const ranges = records.filter((record) => record.event === event).sort((a, b) => a.last - b.last || a.atMs - b.atMs);
  const countMax = ranges.reduce((most, range) => Math.max(most, range.count), 0);
  const times: Array<number | undefined> = [];
  let next = 0;
  for (const index of indices) {
    while (next < ranges.length && ranges[next]!.last < index) next++;
    let found: number | undefined;
    // Every range ending at or after the index that also starts at or before it: the earliest.
    for (let at = next; at < ranges.length && ranges[at]!.last - countMax < index; at++) {
      const range = ranges[at]!;
      if (range.last - range.count >= index) continue;
      if (found === undefined || range.atMs < found) found = range.atMs;
    }
    times.push(found);
  }
  return times;
}

function differences(later: Array<number | undefined>, earlier: Array<number | undefined>): number[] {
  const result: number[] = [];
  for (let at = 0; at < later.length; at++) {
    const end = later[at];
    const start = earlier[at];
    if (end !== undefined && start !== undefined && end >= start) result.push(end - start);
  }
  return result;
}

export function summarize(valuesMs: number[]): StageSummary {
  if (valuesMs.length === 0) return { medianMs: Number.NaN, p90Ms: Number.NaN, samples: 0 };
  const sorted = [...valuesMs].sort((a, b) => a - b);
  const at = (fraction: number) => sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))]!;
  return { medianMs: round(at(0.5)), p90Ms: round(at(0.9)), samples: sorted.length };
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}

// The stages as a table: one row per stage, one column per node (followers first).
export function stagesTable(stages: EntryStages): string {
  const cell = (summary: StageSummary | undefined) => (summary === undefined || summary.samples === 0 ? "" : `${summary.medianMs.toFixed(2)} / ${summary.p90Ms.toFixed(2)}`);
  const header = ["ms per entry, median / p90", ...stages.followers.map((follower) => `follower ${follower.node}`), `leader ${stages.leader}`];
  const rows: string[][] = [
    header,
    ["proposal -> append arrives", ...stages.followers.map((follower) => cell(follower.proposedToReceived)), ""],
    ["append arrives -> written (response goes)", ...stages.followers.map((follower) => cell(follower.receivedToWritten)), ""],
    ["apply of the entries committed meanwhile", ...stages.followers.map((follower) => cell(follower.apply)), ""],
    ["proposal -> written to its own WAL", ...stages.followers.map(() => ""), cell(stages.leaderWrite)],
    ["first follower written -> leader applies", ...stages.followers.map(() => ""), cell(stages.firstWrittenToLeaderApply)],
    ["leader's apply (answers leave at its end)", ...stages.followers.map(() => ""), cell(stages.leaderApply)],
    ["proposal -> answered", ...stages.followers.map(() => ""), cell(stages.proposedToAnswered)],
  ];
  const widths = header.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const render = (row: string[]) => row.map((text, column) => (column === 0 ? text.padEnd(widths[column]!) : text.padStart(widths[column]!))).join("  ");
  return [render(rows[0]!), widths.map((width) => "-".repeat(width)).join("  "), ...rows.slice(1).map(render)].join("\n");
}
