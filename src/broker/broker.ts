// The broker: mailboxes as a deterministic replicated state machine over an OrderedKv.
//
// apply() executes one committed log entry's commands in order, inside one KV transaction that
// also records the applied index, so the state and the index move together. "Now" is the entry's
// HLC timestamp; nothing here reads a clock, so every replica fed the same entries ends with the
// same bytes. Errors are results with codes and are detected before any write, so a failed
// command changes nothing. Messages, bodies and indexes live in the KV; the heap holds only one
// small counter record per mailbox (bounded by mailboxesMax).
//
// A message is ready (in the ready index, in log order), leased or delayed (in the pending index,
// ordered by when it becomes visible). A RECEIVE first promotes pending entries that came due,
// then leases ready ones in log order. In a "sender-time" mailbox a message is ordered by its
// sender's timestamp instead and held (delayed) until that time plus the reorder window; such
// messages sit after the log-ordered ones in the ready index, by sender time. A message whose expiry has passed counts as gone for every
// command; a bounded sweep at the start of each entry drops or dead-letters it.
import type { AckReply, DeliveredMessage, ErrorReply, ListItem, ListReply, ListRequest, ReceiveReply, SendReply } from "../protocol/api.js";
import { LIST_PAGE_DEFAULT, LIST_PAGE_MAX } from "../protocol/api.js";
import { isValidName } from "../protocol/names.js";
import { assert, unreachable } from "../util/assert.js";
import {
  type AckCommand,
  BROKER_DEFAULTS,
  type BrokerCommand,
  type BrokerConfig,
  type BrokerResult,
  type ExtendCommand,
  type MailboxConfig,
  type MailboxConfigCommand,
  type MailboxConfigReply,
  type PurgeCommand,
  type PurgeReply,
  type ReceiveCommand,
  type SendCommand,
} from "./commands.js";
import { type OrderedKv, prefixEnd } from "./kv.js";
import {
  APPLIED_KEY,
  cursorToSeq,
  DEDUPE_LIST,
  decodeIds,
  decodeIndex,
  decodeMessage,
  decodeMeta,
  decodeIdRecord,
  dedupeListKey,
  EXPIRY,
  encodeIds,
  encodeIndex,
  encodeMessage,
  encodeMeta,
  encodeIdRecord,
  expiryKey,
  hexToKey,
  type IdHolder,
  type IdRecord,
  idRecordKey,
  MESSAGE,
  META,
  type MailboxMeta,
  mailboxPrefix,
  messageKey,
  ORDER,
  orderKey,
  PENDING,
  pendingKey,
  READY,
  readU64Key,
  readyKey,
  SEQ_LENGTH,
  STATE_DELAYED,
  STATE_LEASED,
  STATE_READY,
  type StoredMessage,
  seqOf,
  seqToCursor,
  U64_LENGTH,
  u64Key,
} from "./records.js";
import { readSnapshot, writeSnapshot } from "./snapshot.js";
import {
  clientIdProblem,
  DEAD_LETTER_SUFFIX,
  failure,
  headersProblem,
  idsProblem,
  integerProblem,
  isDeadLetterMailbox,
  mailboxConfigProblem,
  mailboxProblem,
  senderTimeProblem,
} from "./validate.js";

export type { BrokerCommand, BrokerConfig, BrokerResult, MailboxConfig } from "./commands.js";
export { BROKER_DEFAULTS, decodeCommands, encodeCommands, MAILBOX_DEFAULTS } from "./commands.js";

export const DEAD_LETTER_REASON_HEADER = "ferry-dead-letter-reason";
export const DEAD_LETTER_DELIVERIES_HEADER = "ferry-dead-letter-deliveries";
const SCAN_BATCH = 1024;
const TIMESTAMP_LOGICAL_BITS = 16n;

export type DeadLetterReason = "max-deliveries" | "expired";

export function timestampMs(timestamp: bigint): number {
  return Number(timestamp >> TIMESTAMP_LOGICAL_BITS);
}

export function msTimestamp(ms: number): bigint {
  return BigInt(ms) << TIMESTAMP_LOGICAL_BITS;
}

export function assignedId(index: number, number: number): string {
  return `${index.toString(36)}~${number.toString(36)}`;
}

const ASSIGNED_ID_PATTERN = /^([0-9a-z]{1,11})~([0-9a-z]{1,7})$/;

export function parseAssignedId(id: string): { index: number; number: number } | undefined {
  const match = ASSIGNED_ID_PATTERN.exec(id);
  if (match === null) return undefined;
  const index = Number.parseInt(match[1]!, 36);
  const number = Number.parseInt(match[2]!, 36);
  if (!Number.isSafeInteger(index) || index < 1 || number > 0xffffffff || assignedId(index, number) !== id) return undefined;
  return { index, number };
}

export function mergeConfig(config: Partial<BrokerConfig> | undefined): BrokerConfig {
  return { ...BROKER_DEFAULTS, ...config, mailbox: { ...BROKER_DEFAULTS.mailbox, ...config?.mailbox } };
}

export class Broker {
  readonly config: BrokerConfig;
  // Every mailbox that has messages or settings; mirrors the META keys.
  private mailboxes = new Map<string, MailboxMeta>();
  private readonly dirtyMailboxes = new Set<string>();
  private readonly settingsCache = new Map<string, MailboxConfig>();
  // Mailbox counters changed since they were last written (undefined: delete the META key).
  // Written at the end of each apply, or once per commit when the KV groups commits.
  private readonly metaToWrite = new Map<string, MailboxMeta | undefined>();
  private readonly metaPerCommit: boolean;
  private wakeups = new Set<string>();
  private applied = 0;
  // The entry being applied.
  private index = 0;
  private nowMs = 0;
  private messagesInEntry = 0;
  private commandTimestamp = 0n;
  // Client ids whose dedupe record this entry wrote: stored as one list per entry for the sweep.
  private dedupeIdsInEntry: string[] = [];
  // Id records this entry read or wrote (undefined: absent), so that an ACK that found a message
  // by id and then removes it, or a fan-out, reads each record once. Cleared around every apply.
  private readonly idRecords = new Map<string, IdRecord | undefined>();

  constructor(
    private readonly kv: OrderedKv,
    config?: Partial<BrokerConfig>,
  ) {
    this.config = mergeConfig(config);
    this.metaPerCommit = kv.setBeforeCommit !== undefined;
    kv.setBeforeCommit?.(() => this.writeMeta());
    this.reloadState();
  }

  appliedIndex(): number {
    return this.applied;
  }

  apply(index: number, timestamp: bigint, commands: BrokerCommand[]): BrokerResult[] {
    assert(Number.isSafeInteger(index) && index > this.applied, `entry ${index} follows the applied index ${this.applied}`);
    this.index = index;
    this.nowMs = timestampMs(timestamp);
    this.messagesInEntry = 0;
    this.dedupeIdsInEntry = [];
    this.idRecords.clear();
    try {
      const results = this.kv.transaction(() => {
        this.sweepExpiredMessages();
        this.sweepDedupeRecords();
        // Each command gets its own timestamp: the entry's plus its position, so timestamps
        // strictly increase with log order (the leader reserves entry + commands.length).
        const results = commands.map((command, position) => {
          this.commandTimestamp = timestamp + BigInt(position);
          return this.execute(command);
        });
        this.flushMailboxes();
        if (this.dedupeIdsInEntry.length > 0) this.kv.put(dedupeListKey(this.nowMs, index), encodeIds(this.dedupeIdsInEntry));
        this.kv.put(APPLIED_KEY, encodeIndex(index));
        return results;
      });
      this.applied = index;
      this.idRecords.clear();
      return results;
    } catch (error) {
      // A bug (assertion) aborted the transaction: the KV is unchanged, so is the cache after this.
      this.reloadState();
      throw error;
    }
  }

  // LIST: log-ordered messages in log order, then sender-ordered ones by (sender time, seq). A
  // cursor names the last message listed: 24 hex digits (a seq) in the first phase, "s" and 40
  // hex digits (sender time and seq) in the second.
  list(request: ListRequest, now: bigint): ListReply | ErrorReply {
    const problem =
      mailboxProblem(request.mailbox) ??
      (request.limit === undefined ? undefined : integerProblem("limit", request.limit, 1, LIST_PAGE_MAX));
    if (problem !== undefined) return problem;
    const limit = request.limit ?? LIST_PAGE_DEFAULT;
    let after: ListPosition | undefined;
    if (request.cursor !== undefined) {
      after = parseListCursor(request.cursor);
      if (after === undefined) return failure("INVALID", "cursor is malformed");
    }
    const nowMs = timestampMs(now);
    const items: ListItem[] = [];
    let last: ListPosition | undefined;
    // One message beyond the page tells whether there is a next one.
    for (const { position, message } of this.listed(request.mailbox, after, Math.min(SCAN_BATCH, limit + 1))) {
      if (items.length === limit) return { ok: true, items, next: listCursor(last!) };
      last = position;
      if (isLive(message, nowMs)) items.push(listItem(message, nowMs));
    }
    return { ok: true, items };
  }

  // The mailbox's messages in LIST order after a position, read `batch` keys at a time.
  private *listed(mailbox: string, after: ListPosition | undefined, batch: number): Generator<{ position: ListPosition; message: StoredMessage }> {
    const meta = this.mailboxes.get(mailbox);
    if (meta === undefined) return;
    if (after?.phase !== "sender" && meta.senderOrdered < meta.messages) {
      const prefix = mailboxPrefix(MESSAGE, mailbox);
      let start = after === undefined ? prefix : `${prefix}${after.key}\x00`;
      for (;;) {
        const entries = this.kv.scan(start, prefixEnd(prefix), batch);
        if (entries.length === 0) break;
        for (const entry of entries) {
          const message = decodeMessage(entry.value);
          if (message.senderTime === undefined) yield { position: { phase: "log", key: entry.key.slice(prefix.length) }, message };
        }
        start = `${entries[entries.length - 1]!.key}\x00`;
      }
    }
    if (meta.senderOrdered === 0) return;
    const prefix = mailboxPrefix(ORDER, mailbox);
    let start = after?.phase === "sender" ? `${prefix}${after.key}\x00` : prefix;
    for (;;) {
      const entries = this.kv.scan(start, prefixEnd(prefix), batch);
      if (entries.length === 0) return;
      for (const entry of entries) {
        const key = entry.key.slice(prefix.length);
        const message = this.load(mailbox, key.slice(U64_LENGTH));
        yield { position: { phase: "sender", key }, message };
      }
      start = `${entries[entries.length - 1]!.key}\x00`;
    }
  }

  // Resolves with an applied index whose state is durable in the KV (every apply up to it): the
  // node may compact its WAL up to that index. Later applies may continue meanwhile.
  async flush(): Promise<number> {
    const index = this.applied;
    await this.kv.flushed();
    return index;
  }

  takeWakeups(): string[] {
    const mailboxes = [...this.wakeups];
    this.wakeups = new Set();
    return mailboxes;
  }

  nextVisibleAt(mailbox: string): bigint | undefined {
    const prefix = mailboxPrefix(PENDING, mailbox);
    const [first] = this.kv.scan(prefix, prefixEnd(prefix), 1);
    return first === undefined ? undefined : msTimestamp(readU64Key(first.key, prefix.length));
  }

  snapshot(): { index: number; chunks: Iterable<Uint8Array> } {
    const view = this.kv.readView();
    const stored = view.get(APPLIED_KEY);
    const index = stored === undefined ? 0 : decodeIndex(stored);
    assert(index === this.applied, "a read view holds the applied state");
    return { index, chunks: writeSnapshot(view, index) };
  }

  restore(chunks: Iterable<Uint8Array>): void {
    // Pending counters describe the state being replaced: they must not reach the commit.
    this.metaToWrite.clear();
    try {
      this.kv.transaction(() => {
        this.kv.clear();
        readSnapshot(chunks, (key, value) => this.kv.put(key, value));
      });
    } finally {
      this.reloadState();
    }
  }

  // Number of mailboxes (with messages or settings).
  mailboxCount(): number {
    return this.mailboxes.size;
  }

  // The effective settings of a mailbox (cached; the cache follows the META keys).
  mailboxConfig(mailbox: string): MailboxConfig {
    const overrides = this.mailboxes.get(mailbox)?.config;
    if (overrides === undefined) return this.config.mailbox;
    let settings = this.settingsCache.get(mailbox);
    if (settings === undefined) {
      settings = { ...this.config.mailbox, ...overrides };
      this.settingsCache.set(mailbox, settings);
    }
    return settings;
  }

  private reloadState(): void {
    const applied = this.kv.get(APPLIED_KEY);
    this.applied = applied === undefined ? 0 : decodeIndex(applied);
    this.mailboxes = new Map();
    this.dirtyMailboxes.clear();
    this.settingsCache.clear();
    this.metaToWrite.clear();
    this.idRecords.clear();
    for (const entry of this.kv.scan(META, prefixEnd(META), Number.POSITIVE_INFINITY)) {
      this.mailboxes.set(entry.key.slice(META.length), decodeMeta(entry.value));
    }
  }

  private execute(command: BrokerCommand): BrokerResult {
    switch (command?.op) {
      case "send":
        return this.send(command);
      case "receive":
        return this.receive(command);
      case "ack":
        return this.ack(command);
      case "nack":
        return this.nack(command);
      case "extend":
        return this.extend(command);
      case "purge":
      case "delete":
        return this.purge(command);
      case "set-mailbox-config":
        return this.setMailboxConfig(command);
      default:
        return failure("INVALID", `unknown command '${String((command as { op?: unknown })?.op)}'`);
    }
  }

  // SEND --------------------------------------------------------------------------------------

  private sendProblem(command: SendCommand): ErrorReply | undefined {
    const config = this.config;
    if (typeof command.sender !== "string" || !isValidName(command.sender)) return failure("INVALID", "sender name is invalid");
    const recipients = command.recipients;
    if (!Array.isArray(recipients) || recipients.length === 0) return failure("INVALID", "no recipient given");
    if (recipients.length > config.recipientsMax) {
      return failure("TOO_LARGE", `${recipients.length} recipients; the limit is ${config.recipientsMax}`);
    }
    for (const recipient of recipients) {
      const problem = mailboxProblem(recipient);
      if (problem !== undefined) return problem;
    }
    if (recipients.length > 1 && new Set(recipients).size !== recipients.length) return failure("INVALID", "a recipient is named twice");
    if (!(command.body instanceof Uint8Array)) return failure("INVALID", "body must be bytes");
    if (command.body.length > config.bodyBytesMax) {
      return failure("TOO_LARGE", `body is ${command.body.length} bytes; the limit is ${config.bodyBytesMax}`);
    }
    return (
      (command.id === undefined ? undefined : clientIdProblem(command.id, config)) ??
      headersProblem(command.headers, config) ??
      (command.delayMs === undefined ? undefined : integerProblem("delayMs", command.delayMs, 0, config.delayMsMax)) ??
      (command.ttlMs === undefined ? undefined : integerProblem("ttlMs", command.ttlMs, 0, config.ttlMsMax)) ??
      (command.senderTime === undefined ? undefined : senderTimeProblem(command.senderTime, this.nowMs, config))
    );
  }

  // Whether every recipient can take the message; checked for all before anything is written,
  // which makes a fan-out atomic.
  private capacityProblem(command: SendCommand): ErrorReply | undefined {
    let created = 0;
    for (const recipient of command.recipients) {
      const meta = this.mailboxes.get(recipient);
      if (meta === undefined) created++;
      const config = this.mailboxConfig(recipient);
      if (command.id !== undefined && this.idRecord(command.id)?.holders.some((holder) => holder.mailbox === recipient)) {
        return failure("CONFLICT", `message id '${command.id}' is still stored in mailbox ${recipient}`);
      }
      const size = command.body.length;
      if (size > config.bytesMax) return failure("LIMIT", `body of ${size} bytes exceeds mailbox ${recipient}'s capacity of ${config.bytesMax} bytes`);
      if (config.overflow === "reject" && meta !== undefined) {
        if (meta.messages + 1 > config.messagesMax) return failure("LIMIT", `mailbox ${recipient} is full (${config.messagesMax} messages)`);
        if (meta.bytes + size > config.bytesMax) return failure("LIMIT", `mailbox ${recipient} is full (${config.bytesMax} bytes)`);
      }
    }
    if (created > 0 && this.mailboxes.size + created > this.config.mailboxesMax) {
      return failure("LIMIT", `the cluster holds ${this.mailboxes.size} mailboxes; the limit is ${this.config.mailboxesMax}`);
    }
    return undefined;
  }

  private send(command: SendCommand): SendReply | ErrorReply {
    const problem = this.sendProblem(command);
    if (problem !== undefined) return problem;
    if (command.id !== undefined) {
      const first = this.dedupeLookup(command.id);
      if (first !== undefined) return { ok: true, id: command.id, timestamp: first, duplicate: true };
    }
    const capacity = this.capacityProblem(command);
    if (capacity !== undefined) return capacity;
    const firstNumber = this.messagesInEntry;
    const id = command.id ?? assignedId(this.index, firstNumber);
    const delayMs = command.delayMs ?? 0;
    const copies: IdHolder[] = [];
    for (let position = 0; position < command.recipients.length; position++) {
      const recipient = command.recipients[position]!;
      const settings = this.mailboxConfig(recipient);
      const ttlMs = command.ttlMs ?? settings.ttlMs;
      // Sender order: hidden until the reorder window after the sender's stamp has passed, so an
      // earlier-stamped message arriving within the window still goes first.
      const senderTime = settings.order === "sender-time" ? (command.senderTime ?? this.commandTimestamp) : undefined;
      let visibleAtMs = delayMs > 0 ? this.nowMs + delayMs : 0;
      if (senderTime !== undefined) visibleAtMs = Math.max(visibleAtMs, timestampMs(senderTime) + settings.reorderWindowMs);
      const hidden = visibleAtMs > this.nowMs;
      this.makeRoom(recipient, command.body.length);
      // The copies of one SEND take consecutive sequence numbers: findById relies on it.
      assert(this.messagesInEntry === firstNumber + position, "fan-out copies are consecutive");
      const seq = this.nextSeq();
      copies.push({ mailbox: recipient, seq });
      this.store(recipient, seq, {
        id,
        sender: command.sender,
        timestamp: this.commandTimestamp,
        deliveries: 0,
        state: hidden ? STATE_DELAYED : STATE_READY,
        visibleAtMs: hidden ? visibleAtMs : 0,
        expiresAtMs: ttlMs > 0 ? this.nowMs + ttlMs : 0,
        headers: command.headers === undefined ? undefined : { ...command.headers },
        body: command.body,
        idIndexed: command.id !== undefined,
        senderTime,
      });
    }
    if (command.id !== undefined) {
      // A stale record is overwritten: its id stays in an older dedupe list, whose sweep finds
      // this record unexpired and keeps it.
      // Read after the copies are stored (makeRoom may have rewritten other ids' records).
      const holders = [...(this.idRecord(command.id)?.holders ?? []), ...copies];
      this.writeIdRecord(command.id, { dedupeSince: this.commandTimestamp, holders });
      this.dedupeIdsInEntry.push(command.id);
    }
    return { ok: true, id, timestamp: this.commandTimestamp, duplicate: false };
  }

  private nextSeq(): string {
    return seqOf(this.index, this.messagesInEntry++);
  }

  private dedupeLookup(id: string): bigint | undefined {
    const first = this.idRecord(id)?.dedupeSince;
    if (first === undefined) return undefined;
    return timestampMs(first) + this.config.dedupeWindowMs > this.nowMs ? first : undefined;
  }

  private idRecord(id: string): IdRecord | undefined {
    if (this.idRecords.has(id)) return this.idRecords.get(id);
    const value = this.kv.get(idRecordKey(id));
    const record = value === undefined ? undefined : decodeIdRecord(value);
    this.idRecords.set(id, record);
    return record;
  }

  // Records are never mutated once read: writers pass a new one.
  private writeIdRecord(id: string, record: IdRecord): void {
    if (record.dedupeSince === undefined && record.holders.length === 0) {
      this.idRecords.set(id, undefined);
      this.kv.delete(idRecordKey(id));
    } else {
      this.idRecords.set(id, record);
      this.kv.put(idRecordKey(id), encodeIdRecord(record));
    }
  }

  private dropHolder(id: string, mailbox: string, seq: string): void {
    const record = this.idRecord(id);
    if (record === undefined) assert(false, `id ${id} has a record`);
    const holders: IdHolder[] = [];
    let found = false;
    for (const holder of record.holders) {
      if (holder.mailbox !== mailbox) holders.push(holder);
      else found = holder.seq === seq;
    }
    if (!found) assert(false, `the id record of ${id} points at the removed copy in ${mailbox}`);
    this.writeIdRecord(id, { dedupeSince: record.dedupeSince, holders });
  }

  // Drop-oldest: removes the oldest messages until one of `bytes` fits. (Reject was checked.)
  private makeRoom(mailbox: string, bytes: number): void {
    const meta = this.mailboxes.get(mailbox);
    if (meta === undefined) return;
    const config = this.mailboxConfig(mailbox);
    const prefix = mailboxPrefix(MESSAGE, mailbox);
    while (meta.messages + 1 > config.messagesMax || meta.bytes + bytes > config.bytesMax) {
      const [oldest] = this.kv.scan(prefix, prefixEnd(prefix), 1);
      assert(oldest !== undefined, "a mailbox over capacity holds a message");
      this.remove(mailbox, oldest.key.slice(prefix.length), decodeMessage(oldest.value));
    }
  }

  // RECEIVE -----------------------------------------------------------------------------------

  private receive(command: ReceiveCommand): ReceiveReply | ErrorReply {
    const problem =
      mailboxProblem(command.mailbox) ??
      integerProblem("max", command.max, 1, this.config.receiveMax) ??
      (command.visibilityMs === undefined ? undefined : integerProblem("visibilityMs", command.visibilityMs, 1, this.config.visibilityMsMax));
    if (problem !== undefined) return problem;
    const mailbox = command.mailbox;
    if (!this.mailboxes.has(mailbox)) return { ok: true, messages: [] };
    const visibilityMs = command.visibilityMs ?? this.mailboxConfig(mailbox).visibilityMs;
    this.promote(mailbox);
    const messages: DeliveredMessage[] = [];
    const prefix = mailboxPrefix(READY, mailbox);
    const end = prefixEnd(prefix);
    while (messages.length < command.max) {
      const entries = this.kv.scan(prefix, end, command.max - messages.length);
      if (entries.length === 0) break;
      for (const entry of entries) {
        const seq = entry.key.slice(entry.key.length - SEQ_LENGTH);
        const message = this.load(mailbox, seq);
        if (!isLive(message, this.nowMs)) {
          this.expire(mailbox, seq, message);
          continue;
        }
        this.kv.delete(entry.key);
        message.deliveries++;
        message.state = STATE_LEASED;
        message.visibleAtMs = this.nowMs + visibilityMs;
        this.kv.put(pendingKey(mailbox, message.visibleAtMs, seq), EMPTY);
        this.kv.put(messageKey(mailbox, seq), encodeMessage(message));
        messages.push(delivered(mailbox, message));
      }
    }
    return { ok: true, messages };
  }

  // Makes leased and delayed messages whose time has come ready again (at most promoteMax per
  // RECEIVE), dead-lettering those released after their last allowed delivery.
  private promote(mailbox: string): void {
    const prefix = mailboxPrefix(PENDING, mailbox);
    const due = this.kv.scan(prefix, prefix + u64Key(this.nowMs + 1), this.config.promoteMax);
    for (const entry of due) {
      const seq = entry.key.slice(prefix.length + U64_LENGTH);
      const message = this.load(mailbox, seq);
      if (!isLive(message, this.nowMs)) this.expire(mailbox, seq, message);
      else if (message.state === STATE_LEASED && this.exhausted(mailbox, message)) this.deadLetter(mailbox, seq, message, "max-deliveries");
      else this.makeReady(mailbox, seq, message);
    }
  }

  private exhausted(mailbox: string, message: StoredMessage): boolean {
    return !isDeadLetterMailbox(mailbox) && message.deliveries >= this.mailboxConfig(mailbox).deliveriesMax;
  }

  private makeReady(mailbox: string, seq: string, message: StoredMessage): void {
    assert(message.state !== STATE_READY, "only a pending message becomes ready");
    this.kv.delete(pendingKey(mailbox, message.visibleAtMs, seq));
    message.state = STATE_READY;
    message.visibleAtMs = 0;
    this.kv.put(readyKey(mailbox, seq, message.senderTime), EMPTY);
    this.kv.put(messageKey(mailbox, seq), encodeMessage(message));
    this.wakeups.add(mailbox);
  }

  // ACK / NACK / EXTEND -----------------------------------------------------------------------

  private idsCommandProblem(command: AckCommand | ExtendCommand): ErrorReply | undefined {
    return mailboxProblem(command.mailbox) ?? idsProblem(command.ids, this.config);
  }

  // The leased message with this id, or undefined when it is not currently leased.
  private leased(mailbox: string, id: string): { seq: string; message: StoredMessage } | undefined {
    const found = this.findById(mailbox, id);
    if (found === undefined) return undefined;
    const { seq, message } = found;
    if (message.state !== STATE_LEASED || message.visibleAtMs <= this.nowMs || !isLive(message, this.nowMs)) return undefined;
    return { seq, message };
  }

  // A message by id. An assigned id "<index>~<n>" names the log position of the SEND's first copy
  // and the copies are consecutive, so a mailbox's copy is the first message at or after that
  // position within the entry: no id index entry is needed for it (one write less per SEND).
  // Client ids and dead letters go through the id index.
  private findById(mailbox: string, id: string): { seq: string; message: StoredMessage } | undefined {
    const position = parseAssignedId(id);
    if (position !== undefined) {
      // The first copy sits exactly at the position (a point read, the common single-recipient
      // case); another recipient's copy is the mailbox's first message after it in the entry.
      const seq = seqOf(position.index, position.number);
      const exact = this.kv.get(messageKey(mailbox, seq));
      if (exact !== undefined) {
        const message = decodeMessage(exact);
        if (message.id === id) return { seq, message };
      } else {
        const prefix = mailboxPrefix(MESSAGE, mailbox);
        const [first] = this.kv.scan(prefix + seq, prefix + seqOf(position.index + 1, 0), 1);
        if (first !== undefined) {
          const message = decodeMessage(first.value);
          if (message.id === id) return { seq: first.key.slice(prefix.length), message };
        }
      }
    }
    const holder = this.idRecord(id)?.holders.find((candidate) => candidate.mailbox === mailbox);
    if (holder === undefined) return undefined;
    return { seq: holder.seq, message: this.load(mailbox, holder.seq) };
  }

  private ack(command: AckCommand): AckReply | ErrorReply {
    const problem = this.idsCommandProblem(command);
    if (problem !== undefined) return problem;
    if (command.delayMs !== undefined) return failure("INVALID", "ACK takes no delay");
    let count = 0;
    for (const id of command.ids) {
      const found = this.leased(command.mailbox, id);
      if (found === undefined) continue;
      this.remove(command.mailbox, found.seq, found.message);
      count++;
    }
    return { ok: true, count };
  }

  private nack(command: AckCommand): AckReply | ErrorReply {
    const problem =
      this.idsCommandProblem(command) ??
      (command.delayMs === undefined ? undefined : integerProblem("delayMs", command.delayMs, 0, this.config.delayMsMax));
    if (problem !== undefined) return problem;
    const delayMs = command.delayMs ?? 0;
    let count = 0;
    for (const id of command.ids) {
      const found = this.leased(command.mailbox, id);
      if (found === undefined) continue;
      const { seq, message } = found;
      count++;
      if (this.exhausted(command.mailbox, message)) this.deadLetter(command.mailbox, seq, message, "max-deliveries");
      else if (delayMs === 0) this.makeReady(command.mailbox, seq, message);
      else {
        this.movePending(command.mailbox, seq, message, this.nowMs + delayMs);
        message.state = STATE_DELAYED;
        this.kv.put(messageKey(command.mailbox, seq), encodeMessage(message));
      }
    }
    return { ok: true, count };
  }

  private extend(command: ExtendCommand): AckReply | ErrorReply {
    const problem =
      this.idsCommandProblem(command) ?? integerProblem("visibilityMs", command.visibilityMs, 1, this.config.visibilityMsMax);
    if (problem !== undefined) return problem;
    let count = 0;
    for (const id of command.ids) {
      const found = this.leased(command.mailbox, id);
      if (found === undefined) continue;
      this.movePending(command.mailbox, found.seq, found.message, this.nowMs + command.visibilityMs);
      this.kv.put(messageKey(command.mailbox, found.seq), encodeMessage(found.message));
      count++;
    }
    return { ok: true, count };
  }

  private movePending(mailbox: string, seq: string, message: StoredMessage, visibleAtMs: number): void {
    this.kv.delete(pendingKey(mailbox, message.visibleAtMs, seq));
    message.visibleAtMs = visibleAtMs;
    this.kv.put(pendingKey(mailbox, visibleAtMs, seq), EMPTY);
  }

  // PURGE / DELETE / settings -----------------------------------------------------------------

  private purge(command: PurgeCommand): PurgeReply | ErrorReply {
    const problem = mailboxProblem(command.mailbox);
    if (problem !== undefined) return problem;
    const meta = this.mailboxes.get(command.mailbox);
    if (meta === undefined) return { ok: true, count: 0 };
    const prefix = mailboxPrefix(MESSAGE, command.mailbox);
    const end = prefixEnd(prefix);
    let count = 0;
    for (;;) {
      const entries = this.kv.scan(prefix, end, SCAN_BATCH);
      if (entries.length === 0) break;
      for (const entry of entries) {
        this.remove(command.mailbox, entry.key.slice(prefix.length), decodeMessage(entry.value));
        count++;
      }
    }
    if (command.op === "delete") {
      meta.config = undefined;
      this.settingsCache.delete(command.mailbox);
      this.dirtyMailboxes.add(command.mailbox);
    }
    return { ok: true, count };
  }

  private setMailboxConfig(command: MailboxConfigCommand): MailboxConfigReply | ErrorReply {
    const problem = mailboxProblem(command.mailbox) ?? mailboxConfigProblem(command.config, this.config);
    if (problem !== undefined) return problem;
    const settings: Partial<MailboxConfig> = {};
    for (const [field, value] of Object.entries(command.config)) {
      if (value !== undefined) (settings as Record<string, unknown>)[field] = value;
    }
    const empty = Object.keys(settings).length === 0;
    let meta = this.mailboxes.get(command.mailbox);
    if (meta === undefined) {
      if (empty) return { ok: true, config: this.mailboxConfig(command.mailbox) };
      if (this.mailboxes.size >= this.config.mailboxesMax) {
        return failure("LIMIT", `the cluster holds ${this.mailboxes.size} mailboxes; the limit is ${this.config.mailboxesMax}`);
      }
      meta = { messages: 0, bytes: 0, config: undefined, senderOrdered: 0 };
      this.mailboxes.set(command.mailbox, meta);
    }
    meta.config = empty ? undefined : settings;
    this.settingsCache.delete(command.mailbox);
    this.dirtyMailboxes.add(command.mailbox);
    return { ok: true, config: this.mailboxConfig(command.mailbox) };
  }

  // Expiry, dead letters, sweeps --------------------------------------------------------------

  private expire(mailbox: string, seq: string, message: StoredMessage): void {
    if (!isDeadLetterMailbox(mailbox) && this.mailboxConfig(mailbox).expiry === "dead-letter") {
      this.deadLetter(mailbox, seq, message, "expired");
    } else {
      this.remove(mailbox, seq, message);
    }
  }

  // Moves a message to "<mailbox>:dlq" as a new ready message (new log position, delivery count
  // reset, the reason in a header). A full dead-letter mailbox drops its oldest messages whatever
  // its overflow policy, so dead-lettering never fails; it is exempt from mailboxesMax.
  private deadLetter(mailbox: string, seq: string, message: StoredMessage, reason: DeadLetterReason): void {
    assert(!isDeadLetterMailbox(mailbox), "dead-letter mailboxes do not dead-letter");
    this.remove(mailbox, seq, message);
    const target = mailbox + DEAD_LETTER_SUFFIX;
    const config = this.mailboxConfig(target);
    if (message.body.length > config.bytesMax) return;
    const previous = this.findById(target, message.id);
    if (previous !== undefined) this.remove(target, previous.seq, previous.message);
    if (!this.mailboxes.has(target)) this.mailboxes.set(target, { messages: 0, bytes: 0, config: undefined, senderOrdered: 0 });
    const meta = this.mailboxes.get(target)!;
    const prefix = mailboxPrefix(MESSAGE, target);
    while (meta.messages + 1 > config.messagesMax || meta.bytes + message.body.length > config.bytesMax) {
      const [oldest] = this.kv.scan(prefix, prefixEnd(prefix), 1);
      assert(oldest !== undefined, "a full dead-letter mailbox holds a message");
      this.remove(target, oldest.key.slice(prefix.length), decodeMessage(oldest.value));
    }
    const targetSeq = this.nextSeq();
    const record = this.idRecord(message.id);
    const holders = [...(record?.holders ?? []), { mailbox: target, seq: targetSeq }];
    this.writeIdRecord(message.id, { dedupeSince: record?.dedupeSince, holders });
    this.store(target, targetSeq, {
      ...message,
      deliveries: 0,
      state: STATE_READY,
      visibleAtMs: 0,
      expiresAtMs: config.ttlMs > 0 ? this.nowMs + config.ttlMs : 0,
      headers: { ...message.headers, [DEAD_LETTER_REASON_HEADER]: reason, [DEAD_LETTER_DELIVERIES_HEADER]: String(message.deliveries) },
      idIndexed: true,
      senderTime: undefined, // dead letters are in the order of dead-lettering
    });
  }

  private sweepExpiredMessages(): void {
    const due = this.kv.scan(EXPIRY, EXPIRY + u64Key(this.nowMs + 1), this.config.expirySweepMax);
    for (const entry of due) {
      const key = entry.key;
      const mailbox = key.slice(EXPIRY.length + U64_LENGTH, key.length - SEQ_LENGTH - 1);
      const seq = key.slice(key.length - SEQ_LENGTH);
      // An earlier expiry in this sweep may have removed it (a dead letter replaces its own id).
      const value = this.kv.get(messageKey(mailbox, seq));
      if (value !== undefined) this.expire(mailbox, seq, decodeMessage(value));
    }
  }

  // Drops the dedupe records of the lists whose entry time left the window, oldest list first,
  // whole lists until dedupeSweepMax ids were looked at (so at most that plus one entry's ids).
  // A record re-recorded since (its id was stale when sent again) is younger and stays.
  private sweepDedupeRecords(): void {
    const horizonMs = this.nowMs - this.config.dedupeWindowMs;
    if (horizonMs < 0) return;
    let budget = this.config.dedupeSweepMax;
    const end = DEDUPE_LIST + u64Key(horizonMs + 1);
    while (budget > 0) {
      const due = this.kv.scan(DEDUPE_LIST, end, Math.min(budget, SCAN_BATCH));
      if (due.length === 0) return;
      for (const entry of due) {
        if (budget <= 0) return;
        this.kv.delete(entry.key);
        for (const id of decodeIds(entry.value)) {
          budget--;
          const record = this.idRecord(id);
          if (record?.dedupeSince !== undefined && timestampMs(record.dedupeSince) <= horizonMs) {
            this.writeIdRecord(id, { dedupeSince: undefined, holders: record.holders });
          }
        }
      }
    }
  }

  // Storage of one message --------------------------------------------------------------------

  private load(mailbox: string, seq: string): StoredMessage {
    const value = this.kv.get(messageKey(mailbox, seq));
    if (value === undefined) assert(false, `message ${seqToCursor(seq)} of ${mailbox} is stored`);
    return decodeMessage(value);
  }

  private store(mailbox: string, seq: string, message: StoredMessage): void {
    let meta = this.mailboxes.get(mailbox);
    if (meta === undefined) {
      meta = { messages: 0, bytes: 0, config: undefined, senderOrdered: 0 };
      this.mailboxes.set(mailbox, meta);
    }
    this.kv.put(messageKey(mailbox, seq), encodeMessage(message));
    if (message.state === STATE_READY) {
      this.kv.put(readyKey(mailbox, seq, message.senderTime), EMPTY);
      this.wakeups.add(mailbox);
    } else {
      this.kv.put(pendingKey(mailbox, message.visibleAtMs, seq), EMPTY);
    }
    if (message.expiresAtMs > 0) this.kv.put(expiryKey(message.expiresAtMs, mailbox, seq), EMPTY);
    if (message.senderTime !== undefined) {
      this.kv.put(orderKey(mailbox, message.senderTime, seq), EMPTY);
      meta.senderOrdered++;
    }
    meta.messages++;
    meta.bytes += message.body.length;
    this.dirtyMailboxes.add(mailbox);
  }

  private remove(mailbox: string, seq: string, message: StoredMessage): void {
    const meta = this.mailboxes.get(mailbox);
    if (meta === undefined || meta.messages <= 0) assert(false, `mailbox ${mailbox} holds the removed message`);
    this.kv.delete(messageKey(mailbox, seq));
    if (message.state === STATE_READY) this.kv.delete(readyKey(mailbox, seq, message.senderTime));
    else this.kv.delete(pendingKey(mailbox, message.visibleAtMs, seq));
    if (message.idIndexed) this.dropHolder(message.id, mailbox, seq);
    if (message.expiresAtMs > 0) this.kv.delete(expiryKey(message.expiresAtMs, mailbox, seq));
    if (message.senderTime !== undefined) {
      this.kv.delete(orderKey(mailbox, message.senderTime, seq));
      meta.senderOrdered--;
    }
    meta.messages--;
    meta.bytes -= message.body.length;
    this.dirtyMailboxes.add(mailbox);
  }

  // Writes the counters of the mailboxes this entry touched; forgets empty mailboxes without
  // settings, so the mailbox count is the number of mailboxes that hold something.
  private flushMailboxes(): void {
    for (const mailbox of this.dirtyMailboxes) {
      const meta = this.mailboxes.get(mailbox);
      assert(meta !== undefined, "a dirty mailbox is known");
      if (meta.messages === 0 && meta.config === undefined) {
        assert(meta.bytes === 0, "an empty mailbox holds no bytes");
        this.mailboxes.delete(mailbox);
        this.metaToWrite.set(mailbox, undefined);
      } else {
        this.metaToWrite.set(mailbox, meta);
      }
    }
    this.dirtyMailboxes.clear();
    if (!this.metaPerCommit) this.writeMeta();
  }

  // Inside a transaction (the apply's, or the KV's group right before it commits). The counters
  // written are those of the last applied entry, which the same commit holds.
  private writeMeta(): void {
    for (const [mailbox, meta] of this.metaToWrite) {
      if (meta === undefined) this.kv.delete(META + mailbox);
      else this.kv.put(META + mailbox, encodeMeta(meta));
    }
    this.metaToWrite.clear();
  }
}

const EMPTY = new Uint8Array(0);

// Where a LIST page ended: a seq in the log-ordered phase, or sender time + seq in the sender one.
interface ListPosition {
  phase: "log" | "sender";
  key: string;
}

function listCursor(position: ListPosition): string {
  return position.phase === "log" ? seqToCursor(position.key) : `s${seqToCursor(position.key)}`;
}

function parseListCursor(cursor: string): ListPosition | undefined {
  const phase = cursor.startsWith("s") ? "sender" : "log";
  const key = phase === "sender" ? hexToKey(cursor.slice(1), U64_LENGTH + SEQ_LENGTH) : cursorToSeq(cursor);
  return key === undefined ? undefined : { phase, key };
}

function isLive(message: StoredMessage, nowMs: number): boolean {
  return message.expiresAtMs === 0 || message.expiresAtMs > nowMs;
}

function delivered(mailbox: string, message: StoredMessage): DeliveredMessage {
  const result: DeliveredMessage = {
    id: message.id,
    sender: message.sender,
    recipient: mailbox,
    timestamp: message.timestamp,
    deliveries: message.deliveries,
    body: message.body,
  };
  if (message.headers !== undefined) result.headers = message.headers;
  if (message.senderTime !== undefined) result.senderTime = message.senderTime;
  return result;
}

function listItem(message: StoredMessage, nowMs: number): ListItem {
  const item: ListItem = {
    id: message.id,
    sender: message.sender,
    timestamp: message.timestamp,
    state: stateAt(message, nowMs),
    deliveries: message.deliveries,
    bytes: message.body.length,
  };
  if (message.senderTime !== undefined) item.senderTime = message.senderTime;
  return item;
}

function stateAt(message: StoredMessage, nowMs: number): ListItem["state"] {
  if (message.state === STATE_READY || message.visibleAtMs <= nowMs) return "ready";
  if (message.state === STATE_LEASED) return "leased";
  if (message.state === STATE_DELAYED) return "delayed";
  return unreachable(message.state as never, "message state");
}

