// A node's entry trace: when each log entry reached each stage on this node (proposed, an append
// carrying it arrived, written to the WAL, applied), for `npm run bench:stages`, which lines up
// the traces of a cluster's nodes to show where a request's time goes between the nodes.
//
// Off unless a node is started with FERRY_TRACE_DIR (docs/node.md): the driver then records into
// preallocated arrays (no allocation per event, a fixed capacity; events past it are counted, not
// kept) and the CLI writes them out when the node stops. Times are wall-clock milliseconds with
// sub-millisecond resolution (performance.timeOrigin + performance.now()), so that the traces of
// processes on one host line up.

export const TRACE_EVENTS = ["proposed", "append-received", "written", "apply-start", "apply-end"] as const;
export type TraceEvent = (typeof TRACE_EVENTS)[number];

// An event names a range of entries: `last` is the last index, `count` how many end there
// (a Ready's write or apply, or an append, covers several).
export interface TraceRecord {
  atMs: number;
  event: TraceEvent;
  last: number;
  count: number;
}

export const TRACE_CAPACITY_DEFAULT = 1_000_000;

export class EntryTrace {
  private readonly atMs: Float64Array;
  private readonly events: Uint8Array;
  private readonly lasts: Float64Array;
  private readonly counts: Uint32Array;
  private length = 0;
  private droppedCount = 0;

  constructor(
    readonly capacity = TRACE_CAPACITY_DEFAULT,
    private readonly nowMs: () => number = () => performance.timeOrigin + performance.now(),
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`trace capacity must be a positive integer, got ${capacity}`);
    this.atMs = new Float64Array(capacity);
    this.events = new Uint8Array(capacity);
    this.lasts = new Float64Array(capacity);
    this.counts = new Uint32Array(capacity);
  }

  record(event: TraceEvent, last: number, count: number): void {
    if (this.length === this.capacity) {
      this.droppedCount++;
      return;
    }
    const at = this.length++;
    this.atMs[at] = this.nowMs();
    this.events[at] = TRACE_EVENTS.indexOf(event);
    this.lasts[at] = last;
    this.counts[at] = count;
  }

  get size(): number {
    return this.length;
  }

  get dropped(): number {
    return this.droppedCount;
  }

  records(): TraceRecord[] {
    const records: TraceRecord[] = [];
    for (let at = 0; at < this.length; at++) {
      records.push({ atMs: this.atMs[at]!, event: TRACE_EVENTS[this.events[at]!]!, last: this.lasts[at]!, count: this.counts[at]! });
    }
    return records;
  }

  // One line per event: "<atMs> <event> <last> <count>"; parseTrace reads it back.
  text(): string {
    return this.records()
      .map((record) => `${record.atMs.toFixed(3)} ${record.event} ${record.last} ${record.count}\n`)
      .join("");
  }
}

export function parseTrace(text: string): TraceRecord[] {
  const records: TraceRecord[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const [atMs, event, last, count] = line.split(" ");
    if (!(TRACE_EVENTS as readonly string[]).includes(event ?? "") || Number.isNaN(Number(atMs)) || Number.isNaN(Number(last)) || Number.isNaN(Number(count))) {
      throw new Error(`not a trace line: '${line}'`);
    }
    records.push({ atMs: Number(atMs), event: event as TraceEvent, last: Number(last), count: Number(count) });
  }
  return records;
}
