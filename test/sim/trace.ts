// The readable trace of one simulated run: one line per event, kept in memory.
//
// Tracing is off on the fast path (most seeds pass and nobody reads their trace). A failing seed
// is run a second time with tracing on; the run is a pure function of its seed, so the second
// run takes exactly the same path. Callers pass a closure so a disabled trace formats nothing.

import type { Entry, Message } from "../../src/raft/types.js";

export class Trace {
  readonly lines: string[] = [];
  step = 0;

  constructor(readonly enabled: boolean) {}

  add(text: () => string): void {
    if (this.enabled) this.lines.push(`${String(this.step).padStart(6)} ${text()}`);
  }
}

export function describeMessage(message: Message): string {
  let text = `${message.from}->${message.to} ${message.type} t${message.term}`;
  switch (message.type) {
    case "append":
      text += ` prev=${message.index}/t${message.logTerm} ${describeEntries(message.entries)} commit=${message.commit}`;
      break;
    case "append-response":
    case "heartbeat-response":
    case "vote-response":
    case "prevote-response":
      text += message.reject ? ` reject hint=${message.rejectHint}` : ` ok index=${message.index}`;
      break;
    case "vote":
    case "prevote":
      text += ` last=${message.index}/t${message.logTerm}`;
      break;
    case "heartbeat":
      text += ` commit=${message.commit}`;
      break;
    case "snapshot":
      text += message.snapshot ? ` snap=${message.snapshot.meta.index}/t${message.snapshot.meta.term}` : "";
      break;
    default:
      break;
  }
  return text;
}

export function describeEntries(entries: readonly Entry[]): string {
  if (entries.length === 0) return "[]";
  const first = entries[0]!;
  const last = entries[entries.length - 1]!;
  if (entries.length === 1) return `[${first.index}/t${first.term}]`;
  return `[${first.index}/t${first.term}..${last.index}/t${last.term}]`;
}
