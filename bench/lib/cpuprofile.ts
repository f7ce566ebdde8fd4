// Reading V8 .cpuprofile files (node --cpu-prof): where a node's CPU time goes, by part of Ferry,
// and an SVG flame graph. Used by bench/profile.ts; no dependency.
//
// A sample is charged to the part that owns the innermost Ferry frame on its stack (src/broker,
// the LMDB store, the WAL, src/raft, ...): lmdb-js, msgpackr and Node's own frames count for the
// Ferry code that called them. Garbage collection, idle time and V8's "(program)" are their own
// rows. Samples can be limited to a time window (µs on the monotonic clock V8 and
// process.hrtime share on Linux), so one profile yields a row per benchmark phase.
import { escapeXml } from "./svg.js";

export interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number; // µs
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

// Most specific first: the first pattern a frame's URL matches names its part.
export const PARTS: Array<[part: string, pattern: RegExp]> = [
  ["LMDB state store", /\/src\/storage\/kv-lmdb\.|\/dist\/storage\/kv-lmdb\./],
  ["WAL (raft storage)", /\/(src|dist)\/storage\//],
  ["broker (apply, list)", /\/(src|dist)\/broker\//],
  ["raft core", /\/(src|dist)\/raft\//],
  ["clock", /\/(src|dist)\/clock\//],
  ["peer transport", /\/(src|dist)\/transport\//],
  ["client connections", /\/(src|dist)\/(server|protocol)\//],
  ["node driver", /\/(src|dist)\/(node|util)\//],
];
const GC = "garbage collector";
const IDLE = "idle";
const OTHER = "runtime, not under Ferry code";

export interface PartTimes {
  busyUs: number;
  idleUs: number;
  parts: Map<string, number>; // µs per part (GC and OTHER included), busy only
}

function partOfUrl(url: string): string | undefined {
  for (const [part, pattern] of PARTS) if (pattern.test(url)) return part;
  return undefined;
}

// The part of every profile node: that of its innermost Ferry frame.
function partsByNode(profile: CpuProfile): Map<number, string> {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parts = new Map<number, string>();
  const visit = (id: number, inherited: string): void => {
    const node = byId.get(id)!;
    const name = node.callFrame.functionName;
    let part = partOfUrl(node.callFrame.url) ?? inherited;
    if (name === "(garbage collector)") part = GC;
    else if (name === "(idle)") part = IDLE;
    parts.set(id, part);
    for (const child of node.children ?? []) visit(child, part);
  };
  visit(profile.nodes[0]!.id, OTHER);
  return parts;
}

// Times per part for the samples taken in [fromUs, toUs).
export function partTimes(profile: CpuProfile, fromUs = Number.NEGATIVE_INFINITY, toUs = Number.POSITIVE_INFINITY): PartTimes {
  const parts = partsByNode(profile);
  const times: PartTimes = { busyUs: 0, idleUs: 0, parts: new Map() };
  let at = profile.startTime;
  for (let index = 0; index < profile.samples.length; index++) {
    const delta = profile.timeDeltas[index] ?? 0;
    at += delta;
    if (at < fromUs || at >= toUs) continue;
    const part = parts.get(profile.samples[index]!) ?? OTHER;
    if (part === IDLE) {
      times.idleUs += delta;
      continue;
    }
    times.busyUs += delta;
    times.parts.set(part, (times.parts.get(part) ?? 0) + delta);
  }
  return times;
}

export const PART_ORDER = [...PARTS.map(([part]) => part), GC, OTHER];

// Flame graph ------------------------------------------------------------------------------------

interface Frame {
  name: string;
  part: string;
  selfUs: number;
  totalUs: number;
  children: Map<string, Frame>;
}

const PART_COLORS: Record<string, string> = {
  "LMDB state store": "#e6842a",
  "WAL (raft storage)": "#c9a227",
  "broker (apply, list)": "#4c9a2a",
  "raft core": "#2a6ebb",
  clock: "#7f7f7f",
  "peer transport": "#8e44ad",
  "client connections": "#17a2a2",
  "node driver": "#5b7bd5",
  [GC]: "#d62728",
  [OTHER]: "#b0b0b0",
};

function frameName(callFrame: CallFrame): string {
  const file = callFrame.url.split("/").slice(-2).join("/");
  return `${callFrame.functionName || "(anonymous)"}${file ? ` ${file}:${callFrame.lineNumber + 1}` : ""}`;
}

// The call tree of the busy samples, call sites of one function merged.
function callTree(profile: CpuProfile): Frame {
  const parts = partsByNode(profile);
  const selfUs = new Map<number, number>();
  for (let index = 0; index < profile.samples.length; index++) {
    const id = profile.samples[index]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0));
  }
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const root: Frame = { name: "all busy time", part: OTHER, selfUs: 0, totalUs: 0, children: new Map() };
  const visit = (id: number, into: Frame): void => {
    const node = byId.get(id)!;
    if (node.callFrame.functionName === "(idle)") return;
    const name = frameName(node.callFrame);
    let frame = into.children.get(name);
    if (frame === undefined) {
      frame = { name, part: parts.get(id) ?? OTHER, selfUs: 0, totalUs: 0, children: new Map() };
      into.children.set(name, frame);
    }
    frame.selfUs += selfUs.get(id) ?? 0;
    for (const child of node.children ?? []) visit(child, frame);
  };
  for (const child of byId.get(profile.nodes[0]!.id)!.children ?? []) visit(child, root);
  const total = (frame: Frame): number => {
    frame.totalUs = frame.selfUs;
    for (const child of frame.children.values()) frame.totalUs += total(child);
    return frame.totalUs;
  };
  total(root);
  return root;
}

const WIDTH = 1400;
const ROW_HEIGHT = 17;
const CHAR_WIDTH = 6.6;
const MIN_WIDTH = 0.6;
const LEGEND_PER_ROW = 5;
const LEGEND_COLUMN_WIDTH = 250;

// An icicle-style flame graph (callers above callees), widths by busy time, colours by part.
// Hover a box for its name and times.
export function flameGraphSvg(profile: CpuProfile, title: string): string {
  const root = callTree(profile);
  const boxes: string[] = [];
  let depthMax = 0;
  const draw = (frame: Frame, x: number, depth: number): void => {
    const width = (frame.totalUs / root.totalUs) * WIDTH;
    if (width < MIN_WIDTH) return;
    depthMax = Math.max(depthMax, depth);
    const y = 40 + depth * ROW_HEIGHT;
    const percent = ((100 * frame.totalUs) / root.totalUs).toFixed(1);
    const label = width > 40 ? escapeXml(frame.name.slice(0, Math.floor((width - 6) / CHAR_WIDTH))) : "";
    boxes.push(
      `<g><title>${escapeXml(frame.name)}: ${(frame.totalUs / 1000).toFixed(0)} ms (${percent}% of busy), self ${(frame.selfUs / 1000).toFixed(0)} ms; ${frame.part}</title>` +
        `<rect x="${x.toFixed(1)}" y="${y}" width="${width.toFixed(1)}" height="${ROW_HEIGHT - 1}" fill="${PART_COLORS[frame.part] ?? "#b0b0b0"}" rx="1"/>` +
        (label ? `<text x="${(x + 3).toFixed(1)}" y="${y + 12}">${label}</text>` : "") +
        "</g>",
    );
    let childX = x;
    for (const child of [...frame.children.values()].sort((a, b) => b.totalUs - a.totalUs)) {
      draw(child, childX, depth + 1);
      childX += (child.totalUs / root.totalUs) * WIDTH;
    }
  };
  draw(root, 0, 0);
  const legendY = 40 + (depthMax + 2) * ROW_HEIGHT;
  const legend = Object.entries(PART_COLORS)
    .map(([part, color], index) => {
      const x = 10 + (index % LEGEND_PER_ROW) * LEGEND_COLUMN_WIDTH;
      const y = legendY + Math.floor(index / LEGEND_PER_ROW) * ROW_HEIGHT;
      return `<rect x="${x}" y="${y}" width="12" height="12" fill="${color}"/><text x="${x + 16}" y="${y + 10}">${escapeXml(part)}</text>`;
    })
    .join("");
  const height = legendY + Math.ceil(Object.keys(PART_COLORS).length / LEGEND_PER_ROW) * ROW_HEIGHT + 20;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH + 20}" height="${height}" font-family="monospace" font-size="11">`,
    `<title>${escapeXml(title)}</title>`,
    `<text x="10" y="22" font-size="15">${escapeXml(title)}</text>`,
    `<g transform="translate(10,0)">${boxes.join("")}</g>`,
    legend,
    "</svg>",
  ].join("\n");
}
