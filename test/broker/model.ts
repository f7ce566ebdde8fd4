// A small reference model of the broker: plain arrays, no indexes, no KV. Written from the
// semantics in docs/broker.md, not from broker.ts, so the property test compares two readings of
// the same rules. Error replies are reduced to their code.
import assert from "node:assert/strict";
import type { Broker, BrokerCommand, BrokerConfig, BrokerResult, MailboxConfig } from "../../src/broker/broker.js";
import { assignedId, msTimestamp, DEAD_LETTER_DELIVERIES_HEADER, DEAD_LETTER_REASON_HEADER, mergeConfig, timestampMs } from "../../src/broker/broker.js";
import type { ListItem } from "../../src/protocol/api.js";
import { formatLeaseName, parseLeaseName } from "../../src/protocol/leases.js";
import { isValidName } from "../../src/protocol/names.js";

type State = "ready" | "leased" | "delayed";
interface Message {
  seq: [number, number];
  id: string;
  sender: string;
  timestamp: bigint;
  deliveries: number;
  state: State;
  visibleAtMs: number;
  expiresAtMs: number;
  headers: Record<string, string> | undefined;
  body: Uint8Array;
  senderTime: bigint | undefined; // stored in a sender-time mailbox: its order key
}
interface Mailbox {
  config: Partial<MailboxConfig> | undefined;
  messages: Message[]; // in seq order
  hints: PendingHint[];
}
// The pending index as docs/broker.md describes it, because promoteMax counts its entries, stale
// ones included: a message hidden at SEND has a hint of its own (gone with the message); each
// RECEIVE, NACK with delay and EXTEND lists its ids in one hint that ACK / NACK / EXTEND leave
// stale. Ordered by (visibleAtMs, tag); a batch tag sorts after the entry's message seqs.
interface PendingHint {
  visibleAtMs: number;
  tag: [number, number];
  batch: boolean;
  ids: string[];
}
const BATCH_TAG_BASE = 0x8000_0000;

export type ModelResult = Record<string, unknown>;

// Applies one command as entry `index` at `nowMs` to the broker and to the model, checks that they
// agree (error results by code), and returns the broker's result.
export function applyToBoth(broker: Broker, model: Model, index: number, nowMs: number, command: BrokerCommand): BrokerResult {
  const actual = broker.apply(index, msTimestamp(nowMs), [command]);
  const expected = model.apply(index, msTimestamp(nowMs), [command]);
  assert.deepEqual(actual.map((r) => (r.ok ? r : { ok: false, code: r.code })), expected);
  return actual[0]!;
}

const compareSeq = (a: [number, number], b: [number, number]): number => a[0] - b[0] || a[1] - b[1];
// Delivery and LIST order: log-ordered messages by seq, then sender-ordered by (sender time, seq).
const compareOrder = (a: Message, b: Message): number => {
  if (a.senderTime === undefined || b.senderTime === undefined) {
    if (a.senderTime !== b.senderTime) return a.senderTime === undefined ? -1 : 1;
    return compareSeq(a.seq, b.seq);
  }
  return a.senderTime < b.senderTime ? -1 : a.senderTime > b.senderTime ? 1 : compareSeq(a.seq, b.seq);
};
const inOrder = (messages: Message[]): Message[] => [...messages].sort(compareOrder);
const isDlq = (name: string): boolean => name.endsWith(":dlq");
const validMailbox = (name: unknown): name is string =>
  typeof name === "string" && (isValidName(name) || (isDlq(name) && isValidName(name.slice(0, -4))));
const isInt = (value: unknown, min: number, max: number): boolean =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= min && value <= max;
const error = (code: string): ModelResult => ({ ok: false, code });

export class Model {
  readonly config: BrokerConfig;
  mailboxes = new Map<string, Mailbox>();
  dedupe = new Map<string, bigint>();
  index = 0;
  nowMs = 0;
  timestamp = 0n;
  counter = 0;
  batchCounter = 0;

  constructor(config?: Partial<BrokerConfig>) {
    this.config = mergeConfig(config);
  }

  settings(name: string): MailboxConfig {
    return { ...this.config.mailbox, ...this.mailboxes.get(name)?.config };
  }

  apply(index: number, timestamp: bigint, commands: BrokerCommand[]): ModelResult[] {
    this.index = index;
    this.timestamp = timestamp;
    this.nowMs = timestampMs(timestamp);
    this.counter = 0;
    this.batchCounter = 0;
    this.sweep();
    const results = commands.map((command, position) => {
      this.timestamp = timestamp + BigInt(position); // each command's own timestamp
      return this.execute(command);
    });
    for (const [name, mailbox] of this.mailboxes) {
      if (mailbox.messages.length === 0) mailbox.hints = []; // all stale: dropped
      if (mailbox.messages.length === 0 && mailbox.config === undefined) this.mailboxes.delete(name);
    }
    return results;
  }

  private live(message: Message): boolean {
    return message.expiresAtMs === 0 || message.expiresAtMs > this.nowMs;
  }

  private sweep(): void {
    const due: Array<[string, Message]> = [];
    for (const [name, mailbox] of this.mailboxes) {
      for (const message of mailbox.messages) if (!this.live(message)) due.push([name, message]);
    }
    due.sort(([nameA, a], [nameB, b]) => a.expiresAtMs - b.expiresAtMs || (nameA < nameB ? -1 : nameA > nameB ? 1 : compareSeq(a.seq, b.seq)));
    for (const [name, message] of due.slice(0, this.config.expirySweepMax)) {
      if (this.mailboxes.get(name)?.messages.includes(message)) this.expire(name, message);
    }
  }

  private execute(command: BrokerCommand): ModelResult {
    switch (command.op) {
      case "send":
        return this.send(command);
      case "receive":
        return this.receive(command);
      case "ack":
      case "nack":
      case "extend":
        return this.release(command);
      case "purge":
      case "delete":
        return this.purge(command);
      case "set-mailbox-config":
        return this.setConfig(command);
      default:
        return error("INVALID");
    }
  }

  private mailbox(name: string): Mailbox {
    let mailbox = this.mailboxes.get(name);
    if (mailbox === undefined) {
      mailbox = { config: undefined, messages: [], hints: [] };
      this.mailboxes.set(name, mailbox);
    }
    return mailbox;
  }

  private bytes(name: string): number {
    return (this.mailboxes.get(name)?.messages ?? []).reduce((sum, message) => sum + message.body.length, 0);
  }

  private send(command: BrokerCommand & { op: "send" }): ModelResult {
    const c = this.config;
    if (!isValidName(command.sender)) return error("INVALID");
    if (command.recipients.length === 0) return error("INVALID");
    if (command.recipients.length > c.recipientsMax) return error("TOO_LARGE");
    if (!command.recipients.every(validMailbox)) return error("INVALID");
    if (new Set(command.recipients).size !== command.recipients.length) return error("INVALID");
    if (command.body.length > c.bodyBytesMax) return error("TOO_LARGE");
    if (command.id !== undefined) {
      if (command.id.length === 0) return error("INVALID");
      if (command.id.length > c.idLengthMax) return error("TOO_LARGE");
      if (!/^[A-Za-z0-9._:\-+=@/]+$/.test(command.id)) return error("INVALID");
    }
    if (command.headers !== undefined) {
      const entries = Object.entries(command.headers);
      if (entries.length > c.headersCountMax) return error("TOO_LARGE");
      const size = entries.reduce((sum, [k, v]) => sum + new TextEncoder().encode(k + v).length, 0);
      if (size > c.headersBytesMax) return error("TOO_LARGE");
    }
    if (command.delayMs !== undefined && !isInt(command.delayMs, 0, c.delayMsMax)) return error("INVALID");
    if (command.ttlMs !== undefined && !isInt(command.ttlMs, 0, c.ttlMsMax)) return error("INVALID");
    if (command.senderTime !== undefined) {
      if (typeof command.senderTime !== "bigint" || command.senderTime < 0n || command.senderTime >= 2n ** 64n) return error("INVALID");
      if (timestampMs(command.senderTime) - this.nowMs > c.senderTimeAheadMsMax) return error("INVALID");
    }
    if (command.id !== undefined) {
      const first = this.dedupe.get(command.id);
      if (first !== undefined && timestampMs(first) + c.dedupeWindowMs > this.nowMs) {
        return { ok: true, id: command.id, timestamp: first, duplicate: true };
      }
    }
    let created = 0;
    for (const name of command.recipients) {
      const mailbox = this.mailboxes.get(name);
      if (mailbox === undefined) created++;
      const settings = this.settings(name);
      if (command.id !== undefined && mailbox?.messages.some((m) => m.id === command.id)) return error("CONFLICT");
      if (command.body.length > settings.bytesMax) return error("LIMIT");
      if (settings.overflow === "reject" && mailbox !== undefined) {
        if (mailbox.messages.length + 1 > settings.messagesMax) return error("LIMIT");
        if (this.bytes(name) + command.body.length > settings.bytesMax) return error("LIMIT");
      }
    }
    if (created > 0 && this.mailboxes.size + created > c.mailboxesMax) return error("LIMIT");
    const id = command.id ?? assignedId(this.index, this.counter);
    for (const name of command.recipients) {
      const settings = this.settings(name);
      const delayMs = command.delayMs ?? 0;
      const ttlMs = command.ttlMs ?? settings.ttlMs;
      const senderTime = settings.order === "sender-time" ? (command.senderTime ?? this.timestamp) : undefined;
      let visibleAtMs = delayMs > 0 ? this.nowMs + delayMs : 0;
      if (senderTime !== undefined) visibleAtMs = Math.max(visibleAtMs, timestampMs(senderTime) + settings.reorderWindowMs);
      const hidden = visibleAtMs > this.nowMs;
      this.dropOldest(name, command.body.length);
      const seq: [number, number] = [this.index, this.counter++];
      if (hidden) this.mailbox(name).hints.push({ visibleAtMs, tag: seq, batch: false, ids: [id] });
      this.mailbox(name).messages.push({
        seq,
        id,
        sender: command.sender,
        timestamp: this.timestamp,
        deliveries: 0,
        state: hidden ? "delayed" : "ready",
        visibleAtMs: hidden ? visibleAtMs : 0,
        expiresAtMs: ttlMs > 0 ? this.nowMs + ttlMs : 0,
        headers: command.headers === undefined ? undefined : { ...command.headers },
        body: command.body,
        senderTime,
      });
    }
    if (command.id !== undefined) this.dedupe.set(command.id, this.timestamp);
    return { ok: true, id, timestamp: this.timestamp, duplicate: false };
  }

  private dropOldest(name: string, size: number): void {
    const mailbox = this.mailboxes.get(name);
    if (mailbox === undefined) return;
    const settings = this.settings(name);
    while (mailbox.messages.length + 1 > settings.messagesMax || this.bytes(name) + size > settings.bytesMax) mailbox.messages.shift();
  }

  private remove(name: string, message: Message): void {
    const mailbox = this.mailboxes.get(name)!;
    const position = mailbox.messages.indexOf(message);
    if (position < 0) throw new Error("model: removing a message that is not stored");
    mailbox.messages.splice(position, 1);
  }

  private expire(name: string, message: Message): void {
    if (!isDlq(name) && this.settings(name).expiry === "dead-letter") this.deadLetter(name, message, "expired");
    else this.remove(name, message);
  }

  private deadLetter(name: string, message: Message, reason: string): void {
    this.remove(name, message);
    const target = `${name}:dlq`;
    const settings = this.settings(target);
    if (message.body.length > settings.bytesMax) return;
    const mailbox = this.mailbox(target);
    const previous = mailbox.messages.find((m) => m.id === message.id);
    if (previous !== undefined) this.remove(target, previous);
    while (mailbox.messages.length + 1 > settings.messagesMax || this.bytes(target) + message.body.length > settings.bytesMax) {
      mailbox.messages.shift();
    }
    mailbox.messages.push({
      ...message,
      seq: [this.index, this.counter++],
      deliveries: 0,
      state: "ready",
      visibleAtMs: 0,
      expiresAtMs: settings.ttlMs > 0 ? this.nowMs + settings.ttlMs : 0,
      headers: { ...message.headers, [DEAD_LETTER_REASON_HEADER]: reason, [DEAD_LETTER_DELIVERIES_HEADER]: String(message.deliveries) },
      senderTime: undefined,
    });
  }

  private exhausted(name: string, message: Message): boolean {
    return !isDlq(name) && message.deliveries >= this.settings(name).deliveriesMax;
  }

  private receive(command: BrokerCommand & { op: "receive" }): ModelResult {
    if (!validMailbox(command.mailbox)) return error("INVALID");
    if (!isInt(command.max, 1, this.config.receiveMax)) return error("INVALID");
    if (command.visibilityMs !== undefined && !isInt(command.visibilityMs, 1, this.config.visibilityMsMax)) return error("INVALID");
    // Acks it carries: an ACK's checks and effect first.
    let acked: number | undefined;
    if (command.ack !== undefined) {
      const problem = this.idsProblem(command.ack);
      if (problem !== undefined) return problem;
      acked = (this.release({ op: "ack", mailbox: command.mailbox, ids: command.ack }) as { count: number }).count;
    }
    // Then the batches of lease names: each an ACK of the ids its hint lists (none when the hint is
    // gone); a hint all of whose messages went is dropped.
    if (command.ackLeases !== undefined) {
      const names = command.ackLeases;
      if (names.length === 0 || !names.every((name) => parseLeaseName(name) !== undefined)) return error("INVALID");
      if ((command.ack?.length ?? 0) + names.length > this.config.idsPerRequestMax) return error("TOO_LARGE");
      acked ??= 0;
      for (const name of names) {
        const lease = parseLeaseName(name)!;
        const mailbox = this.mailboxes.get(command.mailbox);
        const hint = mailbox?.hints.find((h) => h.batch && h.visibleAtMs === lease.visibleAtMs && compareSeq(h.tag, [lease.index, BATCH_TAG_BASE + lease.number]) === 0);
        if (hint === undefined) continue;
        const count = (this.release({ op: "ack", mailbox: command.mailbox, ids: hint.ids }) as { count: number }).count;
        if (count === hint.ids.length) mailbox!.hints = mailbox!.hints.filter((h) => h !== hint);
        acked += count;
      }
    }
    const leases = command.ackLeases?.length;
    const withAcked = (result: ModelResult): ModelResult => ({ ...result, ...(acked === undefined ? {} : { acked }), ...(leases === undefined ? {} : { ackedLeases: leases }) });
    const mailbox = this.mailboxes.get(command.mailbox);
    if (mailbox === undefined) return withAcked({ ok: true, messages: [] });
    const visibilityMs = command.visibilityMs ?? this.settings(command.mailbox).visibilityMs;
    const due = this.dueMessages(mailbox);
    for (const message of due) {
      if (!this.live(message)) this.expire(command.mailbox, message);
      else if (message.state === "leased" && this.exhausted(command.mailbox, message)) this.deadLetter(command.mailbox, message, "max-deliveries");
      else {
        message.state = "ready";
        message.visibleAtMs = 0;
      }
    }
    const delivered: ModelResult[] = [];
    for (const message of inOrder(mailbox.messages.filter((m) => m.state === "ready"))) {
      if (delivered.length === command.max) break;
      if (!this.live(message)) {
        this.expire(command.mailbox, message);
        continue;
      }
      message.deliveries++;
      message.state = "leased";
      message.visibleAtMs = this.nowMs + visibilityMs;
      const out: ModelResult = {
        id: message.id,
        sender: message.sender,
        recipient: command.mailbox,
        timestamp: message.timestamp,
        deliveries: message.deliveries,
        body: message.body,
      };
      if (message.headers !== undefined) out.headers = { ...message.headers };
      if (message.senderTime !== undefined) out.senderTime = message.senderTime;
      delivered.push(out);
    }
    if (delivered.length === 0) return withAcked({ ok: true, messages: delivered });
    const lease = formatLeaseName(this.index, this.batchCounter, this.nowMs + visibilityMs);
    this.addBatch(mailbox, this.nowMs + visibilityMs, delivered.map((m) => m.id as string));
    return { ...withAcked({ ok: true, messages: delivered }), lease };
  }

  private addBatch(mailbox: Mailbox, visibleAtMs: number, ids: string[]): void {
    mailbox.hints.push({ visibleAtMs, tag: [this.index, BATCH_TAG_BASE + this.batchCounter++], batch: true, ids });
  }

  // The messages whose hints come due, examining at most promoteMax hint ids (stale ones count),
  // in (visibleAtMs, seq) order. A hint cut short keeps the ids not examined.
  private dueMessages(mailbox: Mailbox): Message[] {
    const hints = [...mailbox.hints].sort((a, b) => a.visibleAtMs - b.visibleAtMs || compareSeq(a.tag, b.tag));
    const kept: PendingHint[] = [];
    const due = new Set<Message>();
    let budget = this.config.promoteMax;
    for (const hint of hints) {
      if (hint.visibleAtMs > this.nowMs) {
        kept.push(hint);
        continue;
      }
      if (!hint.batch) {
        const message = mailbox.messages.find((m) => compareSeq(m.seq, hint.tag) === 0);
        if (message === undefined) continue; // removed: its hint went with it
        if (budget <= 0) kept.push(hint);
        else {
          budget--;
          due.add(message);
        }
        continue;
      }
      const examined = Math.min(hint.ids.length, Math.max(budget, 0));
      budget -= examined;
      if (examined < hint.ids.length) kept.push({ ...hint, ids: hint.ids.slice(examined) });
      for (const id of hint.ids.slice(0, examined)) {
        const message = mailbox.messages.find((m) => m.id === id);
        // Current only while the message is pending until exactly this time (and was leased).
        if (message !== undefined && message.state !== "ready" && message.visibleAtMs === hint.visibleAtMs && message.deliveries > 0) due.add(message);
      }
    }
    mailbox.hints = kept;
    return [...due].sort((a, b) => a.visibleAtMs - b.visibleAtMs || compareSeq(a.seq, b.seq));
  }

  private idsProblem(ids: string[]): ModelResult | undefined {
    if (ids.length === 0) return error("INVALID");
    if (ids.length > this.config.idsPerRequestMax) return error("TOO_LARGE");
    const lengthMax = Math.max(this.config.idLengthMax, 32);
    if (!ids.every((id) => id.length > 0 && id.length <= lengthMax && /^[\x21-\x7e]+$/.test(id))) return error("INVALID");
    return undefined;
  }

  private release(command: BrokerCommand & { op: "ack" | "nack" | "extend" }): ModelResult {
    if (!validMailbox(command.mailbox)) return error("INVALID");
    const problem = this.idsProblem(command.ids);
    if (problem !== undefined) return problem;
    if (command.op === "ack" && command.delayMs !== undefined) return error("INVALID");
    if (command.op === "nack" && command.delayMs !== undefined && !isInt(command.delayMs, 0, this.config.delayMsMax)) return error("INVALID");
    if (command.op === "extend" && !isInt(command.visibilityMs, 1, this.config.visibilityMsMax)) return error("INVALID");
    let count = 0;
    const moved: string[] = [];
    for (const id of command.ids) {
      const message = this.mailboxes.get(command.mailbox)?.messages.find((m) => m.id === id);
      if (message === undefined || message.state !== "leased" || message.visibleAtMs <= this.nowMs || !this.live(message)) continue;
      count++;
      if (command.op === "ack") this.remove(command.mailbox, message);
      else if (command.op === "extend") {
        message.visibleAtMs = this.nowMs + command.visibilityMs;
        moved.push(id);
      }
      else if (this.exhausted(command.mailbox, message)) this.deadLetter(command.mailbox, message, "max-deliveries");
      else if ((command.delayMs ?? 0) === 0) {
        message.state = "ready";
        message.visibleAtMs = 0;
      } else {
        message.state = "delayed";
        message.visibleAtMs = this.nowMs + command.delayMs!;
        moved.push(id);
      }
    }
    const mailbox = this.mailboxes.get(command.mailbox);
    if (mailbox !== undefined && moved.length > 0) {
      this.addBatch(mailbox, command.op === "extend" ? this.nowMs + command.visibilityMs : this.nowMs + command.delayMs!, moved);
    }
    return { ok: true, count };
  }

  private purge(command: BrokerCommand & { op: "purge" | "delete" }): ModelResult {
    if (!validMailbox(command.mailbox)) return error("INVALID");
    const mailbox = this.mailboxes.get(command.mailbox);
    if (mailbox === undefined) return { ok: true, count: 0 };
    const count = mailbox.messages.length;
    mailbox.messages = [];
    if (command.op === "delete") mailbox.config = undefined;
    return { ok: true, count };
  }

  private setConfig(command: BrokerCommand & { op: "set-mailbox-config" }): ModelResult {
    if (!validMailbox(command.mailbox)) return error("INVALID");
    const s = command.config;
    const c = this.config;
    const numbers: Array<[number | undefined, number, number]> = [
      [s.visibilityMs, 1, c.visibilityMsMax],
      [s.deliveriesMax, 1, 1_000_000],
      [s.messagesMax, 1, Number.MAX_SAFE_INTEGER],
      [s.bytesMax, 1, Number.MAX_SAFE_INTEGER],
      [s.ttlMs, 0, c.ttlMsMax],
      [s.reorderWindowMs, 0, c.reorderWindowMsMax],
    ];
    if (numbers.some(([value, min, max]) => value !== undefined && !isInt(value, min, max))) return error("INVALID");
    if (s.overflow !== undefined && s.overflow !== "reject" && s.overflow !== "drop-oldest") return error("INVALID");
    if (s.expiry !== undefined && s.expiry !== "drop" && s.expiry !== "dead-letter") return error("INVALID");
    if (s.order !== undefined && s.order !== "log" && s.order !== "sender-time") return error("INVALID");
    const settings = Object.fromEntries(Object.entries(s).filter(([, value]) => value !== undefined));
    const empty = Object.keys(settings).length === 0;
    if (!this.mailboxes.has(command.mailbox)) {
      if (empty) return { ok: true, config: this.settings(command.mailbox) };
      if (this.mailboxes.size >= c.mailboxesMax) return error("LIMIT");
    }
    this.mailbox(command.mailbox).config = empty ? undefined : settings;
    return { ok: true, config: this.settings(command.mailbox) };
  }

  // LIST of the whole mailbox (no pagination), at the model's current time.
  list(name: string, nowMs: number): ListItem[] {
    return inOrder(this.mailboxes.get(name)?.messages ?? [])
      .filter((m) => m.expiresAtMs === 0 || m.expiresAtMs > nowMs)
      .map((m) => ({
        id: m.id,
        sender: m.sender,
        timestamp: m.timestamp,
        state: m.state === "ready" || m.visibleAtMs <= nowMs ? "ready" : m.state,
        deliveries: m.deliveries,
        bytes: m.body.length,
        ...(m.senderTime === undefined ? {} : { senderTime: m.senderTime }),
      }));
  }

  mailboxNames(): string[] {
    return [...this.mailboxes.keys()].sort();
  }
}
