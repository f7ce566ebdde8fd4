// The broker: mailboxes as a deterministic replicated state machine over an OrderedKv.
//
// apply() executes one committed log entry's commands in order, inside one KV transaction that
// also records the applied index, so the state and the index move together. "Now" is the entry's
// HLC timestamp; nothing here reads a clock, so every replica fed the same entries ends with the
// same bytes. Errors are results with codes and are detected before any write, so a failed
// command changes nothing. Messages, bodies and indexes live in the KV; the heap holds one small
// counter record per mailbox (bounded by mailboxesMax) and the counters and state records written
// since the KV's last commit (bounded by its group), which reach the KV with that commit.
//
// A message is ready, leased or delayed (in the pending index, ordered by when it becomes
// visible). Ready messages are fresh (log-ordered, never leased: the message records after the
// mailbox's fresh cursor) or in the ready index (they came back, or are sender-ordered). A RECEIVE
// first promotes pending entries that came due, then leases ready ones in log order. A message's
// record (with the body) is written once; its delivery state lives in a small state record from
// its first lease on. In a "sender-time" mailbox a message is ordered by its
// sender's timestamp instead and held (delayed) until that time plus the reorder window; such
// messages sit after the log-ordered ones in the ready index, by sender time. A message whose expiry has passed counts as gone for every
// command; a bounded sweep at the start of each entry drops or dead-letters it.
import type { AckReply, DeliveredMessage, ErrorReply, ListItem, ListReply, ListRequest, ReceiveReply, SendReply } from "../protocol/api.js";
import { LIST_PAGE_DEFAULT, LIST_PAGE_MAX } from "../protocol/api.js";
import { formatLeaseName, type LeaseName, parseLeaseName } from "../protocol/leases.js";
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
import { MessageBlocks, type RecordStream } from "./message-blocks.js";
import { delivered, StoredDelivery } from "./stored-delivery.js";
import { FreshHeads, type FreshHead, type HeadQueue } from "./fresh-heads.js";
import { IdFilter, InlineIds } from "./inline-ids.js";
import { bytesToKey, KEY_END, type KvEntry, type KvReadView, keyToBytes, type OrderedKv, prefixEnd, StoreCommitError } from "./kv.js";
import {
  APPLIED_KEY,
  cursorToSeq,
  DEDUPE,
  DEDUPE_LIST,
  decodeDedupeList,
  decodeFormat,
  decodeIdRecord,
  decodeIndex,
  decodeMessage,
  decodeMessageHead,
  decodeMeta,
  decodePendingIds,
  decodeState,
  dedupeListKey,
  EXPIRY,
  encodeDedupeList,
  encodeFormat,
  encodeIdRecord,
  encodeIndex,
  encodeMessage,
  encodeMeta,
  encodePendingIds,
  encodeState,
  expiryKey,
  FORMAT_KEY,
  hexToKey,
  type IdHolder,
  type IdRecord,
  idRecordKey,
  isPendingBatchTag,
  type ListedRecord,
  type MailboxMeta,
  META,
  type MessageState,
  mailboxPrefix,
  ORDER,
  orderKey,
  PENDING,
  pendingBatchTag,
  pendingKey,
  READY,
  readU64Key,
  readyKey,
  SENDER_READY_MARK,
  SEQ_LENGTH,
  STATE_DELAYED,
  STATE_FORMAT,
  STATE_LEASED,
  STATE_READY,
  type StateCode,
  type MessageHead,
  type StoredMessage,
  seqOf,
  seqToCursor,
  stateKey,
  U64_LENGTH,
  u64Key,
} from "./records.js";
import { readSnapshotSteps, writeSnapshot } from "./snapshot.js";
import {
  clientIdProblem,
  DEAD_LETTER_SUFFIX,
  failure,
  headersProblem,
  idsProblem,
  integerProblem,
  isDeadLetterMailbox,
  leaseNamesProblem,
  mailboxConfigProblem,
  mailboxProblem,
  senderTimeProblem,
} from "./validate.js";

export type { BrokerCommand, BrokerConfig, BrokerResult, MailboxConfig } from "./commands.js";
export { BROKER_DEFAULTS, decodeCommands, encodeCommands, MAILBOX_DEFAULTS } from "./commands.js";

export const DEAD_LETTER_REASON_HEADER = "ferry-dead-letter-reason";
export const DEAD_LETTER_DELIVERIES_HEADER = "ferry-dead-letter-deliveries";
const SCAN_BATCH = 1024;
// Client ids read between pauses of reloading() (~10 ms of work each, see there).
const RELOAD_STEP_ITEMS = 4096;
const TIMESTAMP_LOGICAL_BITS = 16n;

export type DeadLetterReason = "max-deliveries" | "expired";

// A state store, or a snapshot of one, in another record layout than this Ferry's (format
// undefined: records but no format record, written before it existed; "damaged": a format record
// that does not decode). Ferry does not migrate: a refused store means an empty data directory
// (the node catches up from its peers); a refused snapshot, nodes running Ferrys of different
// formats.
export type StoredFormat = number | undefined | "damaged";

export class StateFormatError extends Error {
  override name = "StateFormatError";
  constructor(
    readonly format: StoredFormat,
    readonly source: "store" | "snapshot",
    readonly dataDir?: string,
    options?: ErrorOptions,
  ) {
    super(StateFormatError.describe(format, source, dataDir), options);
  }

  // The same error, naming the node's data directory.
  inDirectory(dataDir: string): StateFormatError {
    return new StateFormatError(this.format, this.source, dataDir, { cause: this });
  }

  private static describe(format: StoredFormat, source: "store" | "snapshot", dataDir: string | undefined): string {
    const written =
      format === undefined
        ? "was written by a Ferry from before state format versioning"
        : format === "damaged"
          ? "has a damaged format record"
          : `was written in state format ${format}`;
    const reads = `this Ferry reads state format ${STATE_FORMAT} only`;
    if (source === "snapshot") {
      const where = dataDir === undefined ? "a snapshot" : `the snapshot stored in ${dataDir}/raft`;
      return `${where} ${written}; ${reads}: every node of a cluster must run a Ferry that reads the same state format`;
    }
    const where = dataDir === undefined ? "the state store" : `the state store in ${dataDir}`;
    return `${where} ${written}; ${reads}: start the node with an empty data directory${dataDir === undefined ? "" : ` (remove ${dataDir})`} and it catches up from its peers, or run the version that wrote it`;
  }
}

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

// The snapshot chunks of a read view of a broker's store that holds exactly the state after entry
// `index` (Broker.snapshot's own view, or one a reader thread took of the committed store: see
// src/node/snapshot-thread.ts); undefined, the view released, when it holds another index.
export function snapshotOfView(view: KvReadView, index: number): Iterable<Uint8Array> | undefined {
  const stored = view.get(APPLIED_KEY);
  if ((stored === undefined ? 0 : decodeIndex(stored)) !== index) {
    view.release();
    return undefined;
  }
  return writeSnapshot(view, index);
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
  // State records written or deleted since the last commit, by mailbox and id, written with the
  // counters (writeDeferred). A message leased and acked within one group commit, the usual case
  // for a consumer that keeps up, then never writes its state record to the store. Keyed by the
  // strings at hand rather than by the record's key: building and hashing that key for each
  // lookup cost more than the lookup.
  private readonly statesToWrite = new Map<string, Map<string, StateWrite>>();
  // The last mailbox whose writes were looked up, and its map: a command touches one mailbox, so
  // a lease or an ACK then costs no lookup in the map of mailboxes.
  private statesMailbox: string | undefined;
  private statesOfMailbox: Map<string, StateWrite> | undefined;
  // Lower bounds of the times in the expiry index and of the dedupe lists' entry times (undefined:
  // unknown, look). A sweep whose bound is still in the future has nothing to do and skips its
  // scan: at one command per entry the two scans were a visible share of an apply. Puts lower
  // them; a sweep that got through everything due reads the first key again. They only skip scans
  // that would find nothing, so the state is the same with or without them.
  private expiryFloorMs: number | undefined;
  private dedupeFloorMs: number | undefined;
  // The same per mailbox for the two scans every RECEIVE starts with (a drain ran ~2 of them per
  // RECEIVE on every node, each a cursor over the state store): a lower bound of the times of the
  // mailbox's pending keys (absent: unknown; Infinity: none), and the mailboxes whose log-ordered
  // ready index is known to be empty. Pending puts lower the bound and ready puts drop the
  // mailbox from the set; a promote that scanned reads the first pending key again. Forgotten
  // with the other caches (reloading) and with the mailbox.
  private readonly pendingFloorMs = new Map<string, number>();
  private readonly noneReturned = new Set<string>();
  private wakeups = new Set<string>();
  private applied = 0;
  private formatStored = false; // the store holds FORMAT_KEY (written with the first apply)
  // The entry being applied.
  private index = 0;
  private indexKey = u64Key(0); // the prefix of this entry's seqs
  private nowMs = 0;
  private messagesInEntry = 0;
  // Pending batch keys this entry wrote (their tags number them).
  private pendingBatchesInEntry = 0;
  private commandTimestamp = 0n;
  private replies = true; // whether this entry's results are read (see apply)
  // The dedupe list entry `listingEntry` writes (one per entry, for the sweep): the client ids in
  // order, each with its record (inline: an id recorded within the window) or undefined (a
  // reference to its id record), and each id's position.
  private listingEntry = 0;
  private listedIds: string[] = [];
  private listedRecords: ListedRecord[] = [];
  private readonly listedAt = new Map<string, number>();
  private listKeyOfEntry = "";
  // Client ids whose record is inline in a dedupe list: where (entry index of the list, item).
  // Such an id has no "\x07" id record: a SEND with a new client id writes nothing of its own,
  // its record goes out with the entry's list. The sweep moves a record that still has live
  // holders when its window ends into an id record. Rebuilt from the lists whenever the state is
  // loaded (a later list's item supersedes an earlier one's), so it is a function of the store
  // like everything else. Bounded by dedupeIdsInMemoryMax: past it, new ids get their id record
  // at once, as before.
  private readonly inline = new InlineIds((list, item) => this.listedItem(list, item)[0]);
  // Which ids may have an id record ("\x07"): a new client id, the usual case, reads nothing.
  private readonly storedIds = new IdFilter();
  // The keys of the stored dedupe lists by entry index, and the lists this apply decoded.
  private readonly listKeys = new Map<number, string>();
  private readonly decodedLists = new Map<number, Array<[string, ListedRecord]>>();
  // Id records this entry read or wrote (undefined: absent), so that an ACK that found a message
  // by id and then removes it, or a fan-out, reads each record once. Cleared around every apply.
  private readonly idRecords = new Map<string, IdRecord | undefined>();
  // The heads of the records after each mailbox's fresh cursor, for a replica's RECEIVE.
  private readonly freshHeads: FreshHeads;
  // The message records, in blocks (message-blocks.ts).
  private readonly blocks: MessageBlocks;

  constructor(
    private readonly kv: OrderedKv,
    config?: Partial<BrokerConfig>,
  ) {
    this.config = mergeConfig(config);
    this.freshHeads = new FreshHeads(this.config.freshHeadsInMemoryMax);
    this.blocks = new MessageBlocks(kv, this.config.messageBlockBytesMax);
    this.metaPerCommit = kv.setBeforeCommit !== undefined;
    kv.setBeforeCommit?.(() => this.writeDeferred());
    this.reload();
  }

  appliedIndex(): number {
    return this.applied;
  }

  // Applies one entry's commands in one transaction and returns their results. replies false: no
  // one reads the results (a replica's apply, a re-apply), so RECEIVE's lists no messages and its
  // records are read only as far as the delivery state needs (no sender, headers or body). The
  // state is the same either way.
  apply(index: number, timestamp: bigint, commands: BrokerCommand[], replies = true): BrokerResult[] {
    assert(Number.isSafeInteger(index) && index > this.applied, `entry ${index} follows the applied index ${this.applied}`);
    this.replies = replies;
    this.index = index;
    this.indexKey = u64Key(index);
    this.nowMs = timestampMs(timestamp);
    this.messagesInEntry = 0;
    this.pendingBatchesInEntry = 0;
    this.beginList(index, dedupeListKey(this.nowMs, index));
    this.decodedLists.clear();
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
        if (this.listedIds.length > 0) {
          this.kv.put(this.listKeyOfEntry, encodeDedupeList(this.listedIds, this.listedRecords));
          this.listKeys.set(index, this.listKeyOfEntry);
          if (this.dedupeFloorMs !== undefined) this.dedupeFloorMs = Math.min(this.dedupeFloorMs, this.nowMs);
        }
        this.kv.put(APPLIED_KEY, encodeIndex(index));
        if (!this.formatStored) {
          this.kv.put(FORMAT_KEY, encodeFormat(STATE_FORMAT));
          this.formatStored = true; // an abort reloads it from the store
        }
        return results;
      });
      this.applied = index;
      this.idRecords.clear();
      return results;
    } catch (error) {
      // A bug (assertion) aborted the transaction: the KV is unchanged, so is the cache after this.
      // A failed commit (StoreCommitError) rolled back a whole group of applies: the store refuses
      // every read until its owner recovers it and calls reload().
      if (!(error instanceof StoreCommitError)) this.reload();
      throw error;
    }
  }

  // An entry without commands or a time of its own (a membership change, an empty entry): only
  // the applied index moves. No sweep runs: sweeps take their time from the log, and a node's own
  // clock (what such entries were applied with before) would make replicas sweep differently.
  advance(index: number): void {
    assert(Number.isSafeInteger(index) && index > this.applied, `entry ${index} follows the applied index ${this.applied}`);
    try {
      this.kv.transaction(() => {
        this.kv.put(APPLIED_KEY, encodeIndex(index));
        if (!this.formatStored) {
          this.kv.put(FORMAT_KEY, encodeFormat(STATE_FORMAT));
          this.formatStored = true;
        }
      });
      this.applied = index;
    } catch (error) {
      this.reload();
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
    for (const { position, seq, message } of this.listed(request.mailbox, after, Math.min(SCAN_BATCH, limit + 1))) {
      if (items.length === limit) return { ok: true, items, next: listCursor(last!) };
      last = position;
      if (isLive(message, nowMs)) items.push(listItem(message, this.stateOf(request.mailbox, seq, message), nowMs));
    }
    return { ok: true, items };
  }

  // The mailbox's messages in LIST order after a position, read `batch` keys at a time.
  private *listed(mailbox: string, after: ListPosition | undefined, batch: number): Generator<{ position: ListPosition; seq: string; message: StoredMessage }> {
    const meta = this.mailboxes.get(mailbox);
    if (meta === undefined) return;
    if (after?.phase !== "sender" && meta.senderOrdered < meta.messages) {
      let start = after === undefined ? "" : after.key;
      for (;;) {
        const records = this.blocks.scan(mailbox, start, batch);
        if (records.length === 0) break;
        for (const { seq, value } of records) {
          const message = decodeMessage(value);
          if (message.senderTime === undefined) yield { position: { phase: "log", key: seq }, seq, message };
        }
        start = records[records.length - 1]!.seq;
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
        const seq = key.slice(U64_LENGTH);
        yield { position: { phase: "sender", key }, seq, message: this.load(mailbox, seq) };
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

  // When a message of the mailbox may next become visible, if before `beforeMs` (default: ever).
  // Skips stale pending entries (ids acked, NACKed or extended since) by reading their state
  // records, at most promoteMax ids; past that it answers the time of the key it stopped at, which
  // may be early: the waiter's RECEIVE then consumes every key due by that time, so each early
  // wake-up removes at least promoteMax stale ids (no busy loop). A waiter passes the end of its
  // wait as `beforeMs`: keys due after it, stale or not, cannot change how long it waits, and a
  // drained mailbox's stale keys of leases acked meanwhile (due a visibility timeout later) are
  // then not read at every empty RECEIVE.
  nextVisibleAt(mailbox: string, beforeMs?: number): bigint | undefined {
    const prefix = mailboxPrefix(PENDING, mailbox);
    const end = beforeMs === undefined ? prefixEnd(prefix) : prefix + u64Key(Math.max(0, Math.ceil(beforeMs)));
    let budget = this.config.promoteMax;
    let start = prefix;
    for (;;) {
      const entries = this.kv.scan(start, end, SCAN_BATCH);
      for (const entry of entries) {
        const visibleAtMs = readU64Key(entry.key, prefix.length);
        if (!isPendingBatchTag(entry.key, prefix.length + U64_LENGTH)) return msTimestamp(visibleAtMs);
        for (const id of decodePendingIds(entry.value)) {
          if (budget-- <= 0 || this.pendingEntry(mailbox, id, visibleAtMs) !== undefined) return msTimestamp(visibleAtMs);
        }
      }
      if (entries.length < SCAN_BATCH) return undefined;
      start = `${entries[entries.length - 1]!.key}\x00`;
    }
  }

  snapshot(): { index: number; chunks: Iterable<Uint8Array> } {
    const view = this.kv.readView();
    const chunks = snapshotOfView(view, this.applied);
    assert(chunks !== undefined, "a read view holds the applied state");
    return { index: this.applied, chunks };
  }

  // Replaces the state with a snapshot's in one transaction: a damaged snapshot, or one of
  // another layout, changes nothing.
  restore(chunks: Iterable<Uint8Array>): void {
    this.forgetPendingWrites();
    try {
      this.kv.transaction(() => {
        this.kv.clear();
        const records = this.restoreRecords(chunks);
        while (records.next().done !== true);
        this.finishRestore(records);
      });
    } finally {
      this.reload();
    }
  }

  // The same a chunk at a time: each step of the generator puts one chunk's records in a
  // transaction of its own, so that the caller can yield to its event loop between steps (the
  // state store's group stays open across them). The state is cleared first and the applied
  // index written last, with the format check: until then the store holds no applied index, so a
  // node stopped or crashed halfway (or whose group committed meanwhile) restores from its stored
  // snapshot again when it starts. A damaged or foreign snapshot throws at the end and aborts the
  // store's open group: the old state if nothing was committed since the clear, else a store
  // without an applied index. Nothing may apply, read or snapshot the state until the generator
  // is done; closed early, it reloads what the store holds. The in-memory indexes of the restored
  // state are rebuilt in steps too (reloading).
  *restoring(chunks: Iterable<Uint8Array>): Generator<void, void, undefined> {
    this.forgetPendingWrites();
    let restored = false;
    try {
      this.kv.transaction(() => this.kv.clear());
      const records = this.restoreRecords(chunks);
      while (!this.kv.transaction(() => records.next().done === true)) yield;
      this.kv.transaction(() => this.finishRestore(records));
      restored = true;
    } finally {
      if (!restored) this.reload();
    }
    let reloaded = false;
    try {
      yield* this.reloading();
      reloaded = true;
    } finally {
      if (!reloaded) this.reload(); // closed early: the indexes are made whole at once
    }
  }

  // Pending counters and states describe the state being replaced: they must not reach the commit.
  private forgetPendingWrites(): void {
    this.metaToWrite.clear();
    this.forgetStateWrites();
    this.blocks.reset();
  }

  // Puts a snapshot's records but the applied index, a chunk per step; the applied index is kept
  // on the generator for finishRestore.
  private restoreRecords(chunks: Iterable<Uint8Array>): Generator<void, number, undefined> & { applied?: Uint8Array } {
    const records: Generator<void, number, undefined> & { applied?: Uint8Array } = readSnapshotSteps(chunks, (key, value) => {
      if (key === APPLIED_KEY) records.applied = value;
      else this.kv.put(key, value);
    });
    return records;
  }

  private finishRestore(records: { applied?: Uint8Array }): void {
    if (records.applied !== undefined) this.kv.put(APPLIED_KEY, records.applied);
    this.checkFormat("snapshot"); // a snapshot of another layout aborts the restore
  }

  // Client ids whose dedupe record is inline in a dedupe list (see `inline`).
  dedupeIdsInMemory(): number {
    return this.inline.size;
  }

  // Heads of messages not yet received held for RECEIVE (fresh-heads.ts).
  freshHeadsInMemory(): number {
    return this.freshHeads.size;
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

  // Forgets every cache and starts again from the store (after an aborted apply, a restore, or a
  // refused commit once the store's owner recovered it); appliedIndex() says where.
  reload(): void {
    const steps = this.reloading();
    while (steps.next().done !== true);
  }

  // The same, pausing every RELOAD_STEP_ITEMS client ids read (restoring() runs it at the end of
  // a restore: for a 341 MB snapshot of client-id messages, one go held the event loop 1.2 s).
  // Until it is done the in-memory indexes are partial: nothing may apply, read or snapshot.
  private *reloading(): Generator<void, void, undefined> {
    this.formatStored = this.checkFormat("store");
    const applied = this.kv.get(APPLIED_KEY);
    this.applied = applied === undefined ? 0 : decodeIndex(applied);
    this.mailboxes = new Map();
    this.freshHeads.clear();
    this.dirtyMailboxes.clear();
    this.settingsCache.clear();
    this.metaToWrite.clear();
    this.forgetStateWrites();
    this.blocks.reset();
    this.idRecords.clear();
    this.expiryFloorMs = undefined;
    this.dedupeFloorMs = undefined;
    this.pendingFloorMs.clear();
    this.noneReturned.clear();
    for (const entry of this.kv.scan(META, prefixEnd(META), Number.POSITIVE_INFINITY)) {
      this.mailboxes.set(entry.key.slice(META.length), decodeMeta(entry.value));
    }
    this.beginList(0, "");
    this.inline.clear();
    this.listKeys.clear();
    this.decodedLists.clear();
    let items = 0;
    for (const { key, value } of this.scanPrefix(DEDUPE_LIST)) {
      const list = readU64Key(key, DEDUPE_LIST.length + U64_LENGTH);
      this.listKeys.set(list, key); // before the lookups below: they may read earlier lists
      const ids = decodeDedupeList(value);
      ids.forEach(([id, inline], item) => {
        if (inline === undefined) return;
        // The item of the later entry supersedes (list keys sort by time first, and entry times
        // never decrease along the log, but the index is what decides).
        const at = this.inline.get(id);
        if (at === undefined) this.inline.add(id, list, item);
        else if (at.list <= list) this.inline.set(id, list, item);
      });
      if ((items += ids.length) >= RELOAD_STEP_ITEMS) {
        items = 0;
        yield;
      }
    }
    yield* this.storedIdSteps();
  }

  // Every entry whose key starts with `prefix`, read SCAN_BATCH at a time.
  private *scanPrefix(prefix: string): Generator<KvEntry> {
    const end = prefixEnd(prefix);
    for (let start = prefix; ; ) {
      const entries = this.kv.scan(start, end, SCAN_BATCH);
      yield* entries;
      if (entries.length < SCAN_BATCH) return;
      start = `${entries[entries.length - 1]!.key}\x00`;
    }
  }

  // Refills the filter with the ids of the stored id records (at load, and when it saturates).
  private rebuildStoredIds(): void {
    const steps = this.storedIdSteps();
    while (steps.next().done !== true);
  }

  private *storedIdSteps(): Generator<void, void, undefined> {
    this.storedIds.clear();
    let items = 0;
    for (const { key } of this.scanPrefix(DEDUPE)) {
      this.storedIds.add(key.slice(DEDUPE.length));
      if (++items >= RELOAD_STEP_ITEMS) {
        items = 0;
        yield;
      }
    }
    this.storedIds.rebuilt();
  }

  // An id record was written: the filter learns its id (and is rebuilt once saturated).
  private noteIdRecord(id: string): void {
    this.storedIds.add(id);
    if (this.storedIds.saturated) this.rebuildStoredIds();
  }

  // Starts the dedupe list of entry `index` (0: none), empty.
  private beginList(index: number, key: string): void {
    this.listingEntry = index;
    this.listKeyOfEntry = key;
    this.listedIds = [];
    this.listedRecords = [];
    this.listedAt.clear();
  }

  // Whether the store holds the format record; throws StateFormatError when it holds records of
  // another layout (or records but no format record: written before it existed).
  private checkFormat(source: "store" | "snapshot"): boolean {
    const stored = this.kv.get(FORMAT_KEY);
    if (stored === undefined) {
      if (this.kv.scan("", KEY_END, 1).length > 0) throw new StateFormatError(undefined, source);
      return false;
    }
    const format = decodeFormat(stored);
    if (format !== STATE_FORMAT) throw new StateFormatError(format ?? "damaged", source);
    return true;
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
  // idIsNew: the SEND's client id had no record (so no stored copy to conflict with).
  private capacityProblem(command: SendCommand, idIsNew: boolean): ErrorReply | undefined {
    let created = 0;
    for (const recipient of command.recipients) {
      const meta = this.mailboxes.get(recipient);
      if (meta === undefined) created++;
      const config = this.mailboxConfig(recipient);
      if (command.id !== undefined && !idIsNew && this.idRecord(command.id)?.holders.some((holder) => holder.mailbox === recipient && this.holds(holder))) {
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
    // A client id seen for the first time (the usual case) claims its id record in the same
    // lookup that finds it absent; otherwise the record decides (a duplicate, or a stale record
    // from before the window that this SEND replaces). `copies` (client ids only): where the
    // copies go, the id record's holders; the loop below stores them at those seqs.
    const firstNumber = this.messagesInEntry;
    const copies = command.id === undefined ? undefined : this.holdersFrom(firstNumber, command.recipients);
    const claimed = copies !== undefined && this.claimId(command.id!, copies);
    if (command.id !== undefined && !claimed) {
      const first = this.dedupeLookup(command.id);
      if (first !== undefined) return { ok: true, id: command.id, timestamp: first, duplicate: true };
    }
    const capacity = this.capacityProblem(command, claimed);
    if (capacity !== undefined) {
      if (claimed) this.unclaim(command.id!);
      return capacity;
    }
    const id = command.id ?? assignedId(this.index, firstNumber);
    const delayMs = command.delayMs ?? 0;
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
      const seq = this.nextSeq(copies?.[position]?.seq);
      this.store(recipient, seq, {
        id,
        sender: command.sender,
        timestamp: this.commandTimestamp,
        hiddenUntilMs: hidden ? visibleAtMs : 0,
        expiresAtMs: ttlMs > 0 ? this.nowMs + ttlMs : 0,
        headers: command.headers === undefined ? undefined : { ...command.headers },
        body: command.body,
        senderTime,
      });
    }
    if (command.id !== undefined && !claimed) {
      // A stale record is overwritten: its id stays in an older dedupe list, whose sweep finds
      // this record unexpired and keeps it. Holders whose copy is gone are dropped here (they are
      // left stale when a copy is removed; only an id re-sent after its window has any).
      // Read after the copies are stored (makeRoom may have removed copies).
      const record = this.idRecord(command.id);
      const holders = record === undefined || record.holders.length === 0 ? copies! : [...this.liveHolders(record), ...copies!];
      this.writeIdRecord(command.id, { dedupeSince: this.commandTimestamp, holders });
      this.relist(command.id);
    }
    return { ok: true, id, timestamp: this.commandTimestamp, duplicate: false };
  }

  // The next message's seq; `made`: the one holdersFrom already made for it.
  private nextSeq(made?: string): string {
    const number = this.messagesInEntry++;
    return made ?? seqOf(this.index, number, this.indexKey);
  }

  // The copies a SEND will store, one per recipient: the consecutive seqs from message `first`.
  private holdersFrom(first: number, recipients: readonly string[]): IdHolder[] {
    const holders: IdHolder[] = [];
    for (let position = 0; position < recipients.length; position++) {
      holders.push({ mailbox: recipients[position]!, seq: seqOf(this.index, first + position, this.indexKey) });
    }
    return holders;
  }

  // Records the client id of a SEND about to store its copies when it has no record yet: true
  // when it did. `holders` are the seqs the copies will take (holdersFrom the next message). The
  // record goes inline into this entry's dedupe list (no write of its own) while
  // dedupeIdsInMemoryMax allows, else into an id record.
  private claimId(id: string, holders: IdHolder[]): boolean {
    if (this.idRecords.get(id) !== undefined || this.inline.has(id)) return false;
    const record: IdRecord = { dedupeSince: this.commandTimestamp, holders };
    if (this.inline.size < this.config.dedupeIdsInMemoryMax) {
      if (!this.idRecords.has(id) && this.storedIds.mightHave(id)) {
        const stored = this.kv.get(idRecordKey(id));
        if (stored !== undefined) {
          this.idRecords.set(id, decodeIdRecord(stored));
          return false;
        }
      }
      assert(!this.listedAt.has(id), `${id}, without a record, is not listed yet`);
      this.inline.add(id, this.listingEntry, this.listItem(id, record));
    } else {
      if (!this.kv.putIfAbsent(idRecordKey(id), encodeIdRecord(record))) return false;
      this.noteIdRecord(id);
      this.listItem(id, undefined);
    }
    this.idRecords.set(id, record);
    return true;
  }

  // Takes back claimId (the SEND failed after claiming).
  private unclaim(id: string): void {
    const item = this.listedIds.length - 1;
    assert(this.listedIds[item] === id, "the id unclaimed is the last one listed");
    const inline = this.listedRecords[item] !== undefined;
    this.listedIds.pop();
    this.listedRecords.pop();
    this.listedAt.delete(id);
    this.idRecords.set(id, undefined);
    if (inline) this.inline.deleteAt(id, this.listingEntry, item);
    else this.kv.delete(idRecordKey(id));
  }

  // Lists an id in this entry's dedupe list (or replaces its item): its position.
  private listItem(id: string, record: ListedRecord): number {
    const at = this.listedAt.get(id);
    if (at !== undefined) {
      this.listedRecords[at] = record;
      return at;
    }
    const item = this.listedIds.length;
    this.listedAt.set(id, item);
    this.listedIds.push(id);
    this.listedRecords.push(record);
    return item;
  }

  // An item of a dedupe list: this entry's, or a stored one (decoded once per apply).
  private listedItem(list: number, item: number): [string, ListedRecord] {
    if (list === this.listingEntry) return [this.listedIds[item]!, this.listedRecords[item]];
    let items = this.decodedLists.get(list);
    if (items === undefined) {
      const key = this.listKeys.get(list);
      const value = key === undefined ? undefined : this.kv.get(key);
      if (value === undefined) assert(false, `the dedupe list of entry ${list} is stored`);
      items = decodeDedupeList(value);
      this.decodedLists.set(list, items);
    }
    const found = items[item];
    if (found === undefined) assert(false, `the dedupe list of entry ${list} has an item ${item}`);
    return found;
  }

  private dedupeLookup(id: string): bigint | undefined {
    const first = this.idRecord(id)?.dedupeSince;
    if (first === undefined) return undefined;
    return timestampMs(first) + this.config.dedupeWindowMs > this.nowMs ? first : undefined;
  }

  private idRecord(id: string): IdRecord | undefined {
    if (this.idRecords.has(id)) return this.idRecords.get(id);
    let record: IdRecord | undefined;
    const at = this.inline.get(id);
    if (at !== undefined) {
      record = this.listedItem(at.list, at.item)[1];
      if (record === undefined) assert(false, `the dedupe list of entry ${at.list} holds the record of ${id}`);
    } else if (this.storedIds.mightHave(id)) {
      const value = this.kv.get(idRecordKey(id));
      record = value === undefined ? undefined : decodeIdRecord(value);
    }
    this.idRecords.set(id, record);
    return record;
  }

  // Records are never mutated once read: writers pass a new one. A record inline in a dedupe list
  // stays inline, in this entry's list (an older list's item is superseded: the last item for an
  // id decides); any other is the id record. An empty record (no dedupe, no holders) is deleted.
  private writeIdRecord(id: string, record: IdRecord): void {
    const empty = record.dedupeSince === undefined && record.holders.length === 0;
    this.idRecords.set(id, empty ? undefined : record);
    if (this.inline.has(id)) {
      // Inline records leave their list only with the sweep (which deletes the list) or unclaim.
      assert(!empty, `the inline record of ${id} is not emptied in place`);
      this.inline.set(id, this.listingEntry, this.listItem(id, record));
    } else if (empty) {
      this.kv.delete(idRecordKey(id));
    } else {
      this.kv.put(idRecordKey(id), encodeIdRecord(record));
      this.noteIdRecord(id);
    }
  }

  // Lists an id in this entry's dedupe list, so that the sweep looks at its record a window later
  // (an inline record is listed where it is).
  private relist(id: string): void {
    if (!this.inline.has(id)) this.listItem(id, undefined);
  }

  // Whether the copy a holder entry names is still stored (seqs are never reused, so a record at
  // that position is that copy). Removing a copy leaves its holder entry stale.
  private holds(holder: IdHolder): boolean {
    return this.blocks.get(holder.mailbox, holder.seq) !== undefined;
  }

  private liveHolders(record: IdRecord): IdHolder[] {
    return record.holders.filter((holder) => this.holds(holder));
  }

  // Drop-oldest: removes the oldest messages until one of `bytes` fits. (Reject was checked.)
  private makeRoom(mailbox: string, bytes: number): void {
    const meta = this.mailboxes.get(mailbox);
    if (meta === undefined) return;
    const config = this.mailboxConfig(mailbox);
    while (meta.messages + 1 > config.messagesMax || meta.bytes + bytes > config.bytesMax) this.removeOldest(mailbox);
  }

  private removeOldest(mailbox: string): void {
    const [oldest] = this.blocks.scan(mailbox, "", 1);
    assert(oldest !== undefined, "a mailbox over capacity holds a message");
    this.remove(mailbox, this.stateOf(mailbox, oldest.seq, decodeMessage(oldest.value)));
  }

  // RECEIVE -----------------------------------------------------------------------------------

  private receive(command: ReceiveCommand): ReceiveReply | ErrorReply {
    const problem =
      mailboxProblem(command.mailbox) ??
      integerProblem("max", command.max, 1, this.config.receiveMax) ??
      (command.visibilityMs === undefined ? undefined : integerProblem("visibilityMs", command.visibilityMs, 1, this.config.visibilityMsMax));
    if (problem !== undefined) return problem;
    if (command.ack !== undefined) {
      const acksProblem = idsProblem(command.ack, this.config);
      if (acksProblem !== undefined) return acksProblem;
    }
    if (command.ackLeases !== undefined) {
      const leasesProblem = leaseNamesProblem(command.ackLeases, command.ack?.length ?? 0, this.config);
      if (leasesProblem !== undefined) return leasesProblem;
    }
    const mailbox = command.mailbox;
    // Acks first (as an ACK of the mailbox would), then the lease: one command, one entry.
    let acked = command.ack === undefined ? undefined : this.ackIds(mailbox, command.ack);
    if (command.ackLeases !== undefined) acked = (acked ?? 0) + this.ackLeases(mailbox, command.ackLeases);
    const meta = this.mailboxes.get(mailbox);
    if (meta === undefined) return withAcks({ ok: true, messages: [] }, acked, command.ackLeases);
    const visibilityMs = command.visibilityMs ?? this.mailboxConfig(mailbox).visibilityMs;
    this.promote(mailbox);
    const messages: DeliveredMessage[] = [];
    const visibleAtMs = this.nowMs + visibilityMs;
    // Log-ordered ready messages: those that came back (ready index) merged by seq with the fresh
    // records after the cursor. Records the cursor passes without leasing them (held, delayed or
    // sender-ordered at SEND) are tracked by the pending and ready indexes.
    const readyPrefix = mailboxPrefix(READY, mailbox);
    const returned = new KeyStream(this.kv, readyPrefix, readyPrefix + SENDER_READY_MARK, this.noneReturned.has(mailbox));
    const freshBefore = meta.freshAfter; // the cursor moves past every fresh record it reads
    // A replica that builds no reply takes the heads of the records after the cursor from memory
    // when it has them (fresh-heads.ts); otherwise the records are read.
    const heads = this.freshHeads.of(mailbox);
    const fresh = new FreshRecords(this.replies ? undefined : heads, this.blocks.stream(mailbox, freshBefore));
    // The ids leased; the messages themselves only when the reply is read (see apply).
    const ids: string[] = [];
    while (ids.length < command.max) {
      const batch = command.max - ids.length;
      let found = fresh.peek();
      while (found && (fresh.hiddenUntilMs !== 0 || fresh.senderOrdered)) {
        meta.freshAfter = fresh.seq;
        fresh.next();
        found = fresh.peek();
      }
      const back = returned.peek(batch);
      let held: Held;
      let message: StoredMessage | undefined;
      let record: Uint8Array | undefined; // the fresh record (its head read above), decoded for the reply only
      let head: MessageHead | undefined;
      if (found && (back === undefined || fresh.seq < back.key.slice(readyPrefix.length))) {
        const seq = fresh.seq;
        meta.freshAfter = seq;
        held = freshState(seq, fresh.id, 0, fresh.expiresAtMs, fresh.bytes, undefined);
        record = fresh.record;
        head = fresh.head;
        fresh.next();
      } else if (back !== undefined) {
        returned.next();
        const seq = back.key.slice(readyPrefix.length);
        message = this.load(mailbox, seq);
        held = this.stateOf(mailbox, seq, message);
      } else {
        break;
      }
      if (!isLive(held, this.nowMs)) {
        this.expire(mailbox, held, message);
        continue;
      }
      this.lease(mailbox, held, visibleAtMs);
      ids.push(held.id);
      if (!this.replies) continue;
      if (record !== undefined && command.recordReplies === true) messages.push(new StoredDelivery(mailbox, held.deliveries, record, head ?? decodeMessageHead(record)));
      else messages.push(delivered(mailbox, message ?? decodeMessage(record!, head), held.deliveries));
    }
    if (returned.foundNone) this.noneReturned.add(mailbox);
    // The heads follow the cursor; unknown ones are known (none) once the scan passed the last record.
    if (heads !== undefined) this.freshHeads.passed(heads, meta.freshAfter);
    else if (fresh.ended) this.freshHeads.reset(mailbox);
    // Then sender-ordered ready messages, by sender time (a mailbox without any has no such key).
    // senderOrdered is read first: every RECEIVE reads it, so the optimized code has its type
    // feedback (read only after a short batch, it was first read when a mailbox ran dry, and V8
    // threw away RECEIVE's optimized code there: seen with --trace-deopt at the end of a drain).
    const senderPrefix = readyPrefix + SENDER_READY_MARK;
    const end = prefixEnd(senderPrefix);
    while (meta.senderOrdered > 0 && ids.length < command.max) {
      const entries = this.kv.scan(senderPrefix, end, command.max - ids.length);
      if (entries.length === 0) break;
      for (const entry of entries) {
        const seq = entry.key.slice(entry.key.length - SEQ_LENGTH);
        const message = this.load(mailbox, seq);
        const held = this.stateOf(mailbox, seq, message);
        if (!isLive(held, this.nowMs)) {
          this.expire(mailbox, held, message);
          continue;
        }
        this.lease(mailbox, held, visibleAtMs);
        ids.push(held.id);
        if (this.replies) messages.push(delivered(mailbox, message, held.deliveries));
      }
    }
    if (meta.freshAfter !== freshBefore) this.dirtyMailboxes.add(mailbox);
    const reply = withAcks({ ok: true, messages }, acked, command.ackLeases);
    if (ids.length > 0) {
      const lease = this.writePendingBatch(mailbox, visibleAtMs, ids);
      if (this.replies) reply.lease = lease;
    }
    return reply;
  }

  // The caller writes the pending batch key of what it leased (writePendingBatch).
  private lease(mailbox: string, held: Held, visibleAtMs: number): void {
    assert(held.state === STATE_READY, "only a ready message is leased");
    if (held.stored || held.senderTime !== undefined) this.kv.delete(readyKey(mailbox, held.seq, held.senderTime));
    held.deliveries++;
    held.state = STATE_LEASED;
    held.visibleAtMs = visibleAtMs;
    this.writeState(mailbox, held);
  }

  // Makes leased and delayed messages whose time has come ready again, dead-lettering those
  // released after their last allowed delivery. Walks the due pending keys in key order and
  // examines at most promoteMax ids per RECEIVE, stale ones included (a key cut short is written
  // back with the ids not examined). The messages found are handled in (visibleAt, seq) order,
  // which fixes the order of dead letters whatever keys they were listed in.
  private promote(mailbox: string): void {
    const floorMs = this.pendingFloorMs.get(mailbox);
    if (floorMs !== undefined && floorMs > this.nowMs) return; // nothing is due yet
    const prefix = mailboxPrefix(PENDING, mailbox);
    const end = prefix + u64Key(this.nowMs + 1);
    const found: Held[] = [];
    const seen = new Set<string>();
    let budget = this.config.promoteMax;
    while (budget > 0) {
      const due = this.kv.scan(prefix, end, Math.min(budget, SCAN_BATCH));
      for (const entry of due) {
        if (budget <= 0) break;
        const visibleAtMs = readU64Key(entry.key, prefix.length);
        let held: Held | undefined;
        if (!isPendingBatchTag(entry.key, prefix.length + U64_LENGTH)) {
          budget--;
          this.kv.delete(entry.key);
          held = this.sendPendingState(mailbox, entry.key.slice(prefix.length + U64_LENGTH), bytesToKey(entry.value), visibleAtMs);
          if (held !== undefined && !seen.has(held.id)) {
            seen.add(held.id);
            found.push(held);
          }
          continue;
        }
        const ids = decodePendingIds(entry.value);
        const examined = Math.min(ids.length, budget);
        budget -= examined;
        if (examined < ids.length) this.kv.put(entry.key, encodePendingIds(ids.slice(examined)));
        else this.kv.delete(entry.key);
        for (let i = 0; i < examined; i++) {
          const id = ids[i]!;
          if (seen.has(id)) continue;
          held = this.pendingEntry(mailbox, id, visibleAtMs);
          if (held === undefined) continue;
          seen.add(id);
          found.push(held);
        }
      }
      if (due.length < SCAN_BATCH) break;
    }
    if (found.length > 1) found.sort((a, b) => a.visibleAtMs - b.visibleAtMs || (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
    for (const held of found) {
      if (!isLive(held, this.nowMs)) this.expire(mailbox, held);
      else if (held.state === STATE_LEASED && this.exhausted(mailbox, held)) this.deadLetter(mailbox, held, "max-deliveries");
      else this.makeReady(mailbox, held);
    }
    this.pendingFloorMs.set(mailbox, this.firstTimeMs(prefix));
  }

  // A pending key of `mailbox` at `visibleAtMs` is put.
  private pendingAt(mailbox: string, visibleAtMs: number): void {
    const floorMs = this.pendingFloorMs.get(mailbox);
    if (floorMs !== undefined && visibleAtMs < floorMs) this.pendingFloorMs.set(mailbox, visibleAtMs);
  }

  // One pending key for the ids a command leased or moved to `visibleAtMs`; returns its lease name.
  private writePendingBatch(mailbox: string, visibleAtMs: number, ids: string[]): string {
    this.pendingAt(mailbox, visibleAtMs);
    const number = this.pendingBatchesInEntry++;
    this.kv.put(pendingKey(mailbox, visibleAtMs, pendingBatchTag(this.index, number)), encodePendingIds(ids));
    return formatLeaseName(this.index, number, visibleAtMs);
  }

  private exhausted(mailbox: string, held: Held): boolean {
    return !isDeadLetterMailbox(mailbox) && held.deliveries >= this.mailboxConfig(mailbox).deliveriesMax;
  }

  // Its pending entry is left stale (promote deleted it already, when it came due).
  private makeReady(mailbox: string, held: Held): void {
    assert(held.state !== STATE_READY, "only a pending message becomes ready");
    held.state = STATE_READY;
    held.visibleAtMs = 0;
    this.noneReturned.delete(mailbox);
    this.kv.put(readyKey(mailbox, held.seq, held.senderTime), EMPTY);
    this.writeState(mailbox, held);
    this.wakeups.add(mailbox);
  }

  // ACK / NACK / EXTEND -----------------------------------------------------------------------

  private idsCommandProblem(command: AckCommand | ExtendCommand): ErrorReply | undefined {
    return mailboxProblem(command.mailbox) ?? idsProblem(command.ids, this.config);
  }

  // The leased message with this id, or undefined when it is not currently leased: one read of
  // the small state record (a message never leased has none).
  private leased(mailbox: string, id: string): Held | undefined {
    const held = this.readState(mailbox, id);
    if (held === undefined) return undefined;
    if (held.state !== STATE_LEASED || held.visibleAtMs <= this.nowMs || !isLive(held, this.nowMs)) return undefined;
    return held;
  }

  // A stored message by id (dead-lettering replaces an earlier copy in the target). An assigned
  // id "<index>~<n>" names the log position of the SEND's first copy and the copies are
  // consecutive, so a mailbox's copy is the first message at or after that position within the
  // entry. Client ids and dead letters go through the id record's holders.
  private findById(mailbox: string, id: string): { seq: string; message: StoredMessage } | undefined {
    const position = parseAssignedId(id);
    if (position !== undefined) {
      // The first copy sits exactly at the position (a point read, the common single-recipient
      // case); another recipient's copy is the mailbox's first message after it in the entry.
      const seq = seqOf(position.index, position.number);
      const exact = this.blocks.get(mailbox, seq);
      if (exact !== undefined) {
        const message = decodeMessage(exact);
        if (message.id === id) return { seq, message };
      } else {
        const [first] = this.blocks.scan(mailbox, seq, 1);
        if (first !== undefined && first.seq < seqOf(position.index + 1, 0)) {
          const message = decodeMessage(first.value);
          if (message.id === id) return { seq: first.seq, message };
        }
      }
    }
    for (const holder of this.idRecord(id)?.holders ?? []) {
      if (holder.mailbox !== mailbox) continue;
      const value = this.blocks.get(mailbox, holder.seq);
      if (value !== undefined) return { seq: holder.seq, message: decodeMessage(value) };
    }
    return undefined;
  }

  private ack(command: AckCommand): AckReply | ErrorReply {
    const problem = this.idsCommandProblem(command);
    if (problem !== undefined) return problem;
    if (command.delayMs !== undefined) return failure("INVALID", "ACK takes no delay");
    return { ok: true, count: this.ackIds(command.mailbox, command.ids) };
  }

  // Removes the messages of `ids` that are currently leased; returns how many.
  private ackIds(mailbox: string, ids: readonly string[]): number {
    let count = 0;
    for (const id of ids) {
      const held = this.leased(mailbox, id);
      if (held === undefined) continue;
      this.remove(mailbox, held);
      count++;
    }
    return count;
  }

  // Acks the batches of these (valid) lease names: each as an ACK of the ids its pending batch key
  // lists, so those still leased are removed (a key gone, having come due or been acked by name
  // before, acks nothing). A key whose messages were all removed is deleted; one with others is
  // left, stale where they were acked, NACKed or leased again, for promote to pass over.
  private ackLeases(mailbox: string, names: readonly string[]): number {
    let count = 0;
    for (const name of names) {
      const key = leaseKey(mailbox, parseLeaseName(name)!);
      const value = this.kv.get(key);
      if (value === undefined) continue;
      const ids = decodePendingIds(value);
      const removed = this.ackIds(mailbox, ids);
      if (removed === ids.length) this.kv.delete(key);
      count += removed;
    }
    return count;
  }

  // The ids the batches of these lease names leased, as the store lists them now (none for a name
  // that is not one or whose key is gone): what an ACK of them in place of the names acks, for a
  // node that turns names into ids (COMMAND_SET_LEASE_ACKS). Reads the state; writes nothing.
  leaseIds(mailbox: string, names: readonly string[]): string[] {
    const ids: string[] = [];
    if (mailboxProblem(mailbox) !== undefined) return ids;
    for (const name of names) {
      const lease = parseLeaseName(name);
      const value = lease === undefined ? undefined : this.kv.get(leaseKey(mailbox, lease));
      if (value !== undefined) ids.push(...decodePendingIds(value));
    }
    return ids;
  }

  private nack(command: AckCommand): AckReply | ErrorReply {
    const problem =
      this.idsCommandProblem(command) ??
      (command.delayMs === undefined ? undefined : integerProblem("delayMs", command.delayMs, 0, this.config.delayMsMax));
    if (problem !== undefined) return problem;
    const delayMs = command.delayMs ?? 0;
    const delayed: string[] = [];
    let count = 0;
    for (const id of command.ids) {
      const held = this.leased(command.mailbox, id);
      if (held === undefined) continue;
      count++;
      if (this.exhausted(command.mailbox, held)) this.deadLetter(command.mailbox, held, "max-deliveries");
      else if (delayMs === 0) this.makeReady(command.mailbox, held);
      else delayed.push(this.movePending(command.mailbox, held, STATE_DELAYED, this.nowMs + delayMs));
    }
    if (delayed.length > 0) this.writePendingBatch(command.mailbox, this.nowMs + delayMs, delayed);
    return { ok: true, count };
  }

  private extend(command: ExtendCommand): AckReply | ErrorReply {
    const problem =
      this.idsCommandProblem(command) ?? integerProblem("visibilityMs", command.visibilityMs, 1, this.config.visibilityMsMax);
    if (problem !== undefined) return problem;
    const moved: string[] = [];
    for (const id of command.ids) {
      const held = this.leased(command.mailbox, id);
      if (held === undefined) continue;
      moved.push(this.movePending(command.mailbox, held, STATE_LEASED, this.nowMs + command.visibilityMs));
    }
    if (moved.length > 0) this.writePendingBatch(command.mailbox, this.nowMs + command.visibilityMs, moved);
    return { ok: true, count: moved.length };
  }

  // Moves a leased message to a new visibleAt; the caller lists the returned id in one pending
  // batch key for the command, and the old entry goes stale.
  private movePending(mailbox: string, held: Held, state: StateCode, visibleAtMs: number): string {
    held.state = state;
    held.visibleAtMs = visibleAtMs;
    this.writeState(mailbox, held);
    return held.id;
  }

  // PURGE / DELETE / settings -----------------------------------------------------------------

  private purge(command: PurgeCommand): PurgeReply | ErrorReply {
    const problem = mailboxProblem(command.mailbox);
    if (problem !== undefined) return problem;
    const meta = this.mailboxes.get(command.mailbox);
    if (meta === undefined) return { ok: true, count: 0 };
    let count = 0;
    for (;;) {
      const records = this.blocks.scan(command.mailbox, "", SCAN_BATCH);
      if (records.length === 0) break;
      for (const { seq, value } of records) {
        this.remove(command.mailbox, this.stateOf(command.mailbox, seq, decodeMessage(value)));
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
      meta = newMeta();
      this.mailboxes.set(command.mailbox, meta);
      this.freshHeads.reset(command.mailbox);
    }
    meta.config = empty ? undefined : settings;
    this.settingsCache.delete(command.mailbox);
    this.dirtyMailboxes.add(command.mailbox);
    return { ok: true, config: this.mailboxConfig(command.mailbox) };
  }

  // Expiry, dead letters, sweeps --------------------------------------------------------------

  private expire(mailbox: string, held: Held, message?: StoredMessage): void {
    if (!isDeadLetterMailbox(mailbox) && this.mailboxConfig(mailbox).expiry === "dead-letter") {
      this.deadLetter(mailbox, held, "expired", message);
    } else {
      this.remove(mailbox, held);
    }
  }

  // Moves a message to "<mailbox>:dlq" as a new ready message (new log position, delivery count
  // reset, the reason in a header). A full dead-letter mailbox drops its oldest messages whatever
  // its overflow policy, so dead-lettering never fails; it is exempt from mailboxesMax.
  private deadLetter(mailbox: string, held: Held, reason: DeadLetterReason, loaded?: StoredMessage): void {
    assert(!isDeadLetterMailbox(mailbox), "dead-letter mailboxes do not dead-letter");
    const message = loaded ?? this.load(mailbox, held.seq);
    this.remove(mailbox, held);
    const target = mailbox + DEAD_LETTER_SUFFIX;
    const config = this.mailboxConfig(target);
    if (message.body.length > config.bytesMax) return;
    const previous = this.findById(target, message.id);
    if (previous !== undefined) this.remove(target, this.stateOf(target, previous.seq, previous.message));
    if (!this.mailboxes.has(target)) {
      this.mailboxes.set(target, newMeta());
      this.freshHeads.reset(target);
    }
    const meta = this.mailboxes.get(target)!;
    while (meta.messages + 1 > config.messagesMax || meta.bytes + message.body.length > config.bytesMax) this.removeOldest(target);
    const targetSeq = this.nextSeq();
    const record = this.idRecord(message.id);
    const holders = [...(record === undefined ? [] : this.liveHolders(record)), { mailbox: target, seq: targetSeq }];
    this.writeIdRecord(message.id, { dedupeSince: record?.dedupeSince, holders });
    // Listed, so that a sweep one window later finds the record and drops it once unheld.
    this.relist(message.id);
    this.store(target, targetSeq, {
      ...message,
      hiddenUntilMs: 0,
      expiresAtMs: config.ttlMs > 0 ? this.nowMs + config.ttlMs : 0,
      headers: { ...message.headers, [DEAD_LETTER_REASON_HEADER]: reason, [DEAD_LETTER_DELIVERIES_HEADER]: String(held.deliveries) },
      senderTime: undefined, // dead letters are in the order of dead-lettering
    });
  }

  private sweepExpiredMessages(): void {
    if (this.expiryFloorMs !== undefined && this.expiryFloorMs > this.nowMs) return;
    const due = this.kv.scan(EXPIRY, EXPIRY + u64Key(this.nowMs + 1), this.config.expirySweepMax);
    for (const entry of due) {
      const key = entry.key;
      const mailbox = key.slice(EXPIRY.length + U64_LENGTH, key.length - SEQ_LENGTH - 1);
      const seq = key.slice(key.length - SEQ_LENGTH);
      // An earlier expiry in this sweep may have removed it (a dead letter replaces its own id).
      const value = this.blocks.get(mailbox, seq);
      if (value === undefined) continue;
      const message = decodeMessage(value);
      this.expire(mailbox, this.stateOf(mailbox, seq, message), message);
    }
    if (due.length < this.config.expirySweepMax) this.expiryFloorMs = this.firstTimeMs(EXPIRY);
  }

  // The time in the first key of an index keyed by a time after its 1-byte prefix (Infinity: empty).
  private firstTimeMs(prefix: string): number {
    const [first] = this.kv.scan(prefix, prefixEnd(prefix), 1);
    return first === undefined ? Number.POSITIVE_INFINITY : readU64Key(first.key, prefix.length);
  }

  // Walks the dedupe lists whose entry time left the window, oldest list first, whole lists until
  // dedupeSweepMax ids were looked at (so at most that plus one entry's ids). A record
  // re-recorded since (its id was stale when sent again) is younger: its newer list handles it.
  // Otherwise the record stops deduping; it is dropped when no copy it names is still stored, else
  // kept (for CONFLICT) with the live holders and listed again, to be looked at a window later.
  private sweepDedupeRecords(): void {
    const horizonMs = this.nowMs - this.config.dedupeWindowMs;
    if (horizonMs < 0) return;
    if (this.dedupeFloorMs !== undefined && this.dedupeFloorMs > horizonMs) return;
    let budget = this.config.dedupeSweepMax;
    const end = DEDUPE_LIST + u64Key(horizonMs + 1);
    while (budget > 0) {
      const due = this.kv.scan(DEDUPE_LIST, end, Math.min(budget, SCAN_BATCH));
      if (due.length === 0) {
        // Everything due was swept (lists written by this entry lower the bound as they are put).
        this.dedupeFloorMs = this.firstTimeMs(DEDUPE_LIST);
        return;
      }
      for (const entry of due) {
        if (budget <= 0) return;
        this.kv.delete(entry.key);
        const list = readU64Key(entry.key, DEDUPE_LIST.length + U64_LENGTH);
        // Kept decoded while it is swept: lookups of other ids may confirm items of it.
        const items = this.decodedLists.get(list) ?? decodeDedupeList(entry.value);
        this.decodedLists.set(list, items);
        for (let item = 0; item < items.length; item++) {
          const [id, inline] = items[item]!;
          budget--;
          if (inline !== undefined) {
            // The record, when it is still inline in this list: its window ended; it becomes an id
            // record while a copy it names is stored (for CONFLICT), else it is gone.
            if (!this.inline.isAt(id, list, item)) continue;
            this.inline.deleteAt(id, list, item);
            const holders = this.liveHolders(inline);
            if (holders.length === 0) {
              this.idRecords.set(id, undefined); // it never had an id record
            } else {
              this.writeIdRecord(id, { dedupeSince: undefined, holders });
              this.relist(id);
            }
            continue;
          }
          if (this.inline.has(id)) continue; // inline in a younger list, which handles it
          const record = this.idRecord(id);
          if (record === undefined) continue;
          if (record.dedupeSince !== undefined && timestampMs(record.dedupeSince) > horizonMs) continue;
          const holders = this.liveHolders(record);
          if (holders.length > 0) this.relist(id);
          if (record.dedupeSince !== undefined || holders.length !== record.holders.length) this.writeIdRecord(id, { dedupeSince: undefined, holders });
        }
        this.listKeys.delete(list);
        this.decodedLists.delete(list);
      }
    }
  }

  // Storage of one message --------------------------------------------------------------------

  private load(mailbox: string, seq: string): StoredMessage {
    const value = this.blocks.get(mailbox, seq);
    if (value === undefined) assert(false, `message ${seqToCursor(seq)} of ${mailbox} is stored`);
    return decodeMessage(value);
  }

  // The delivery state of a stored message: its state record, or (none) the state it was stored
  // in. Only a message the fresh cursor passed, or one hidden or sender-ordered at SEND, can have
  // a state record; the others are fresh and cost no read.
  private stateOf(mailbox: string, seq: string, message: StoredMessage): Held {
    const freshAfter = this.mailboxes.get(mailbox)?.freshAfter ?? "";
    if (seq <= freshAfter || message.hiddenUntilMs > 0 || message.senderTime !== undefined) {
      const held = this.readState(mailbox, message.id);
      if (held !== undefined) {
        assert(held.seq === seq, `the state record of ${message.id} in ${mailbox} is its message's`);
        return held;
      }
    }
    return freshStateOf(seq, message);
  }

  // The message a per-message pending key (tag = seq, value = id) names: hidden since its SEND
  // (no state record), or, in a store written before batch keys, a pending state record (a stale
  // one, which such stores may hold, is skipped).
  private sendPendingState(mailbox: string, seq: string, id: string, visibleAtMs: number): Held | undefined {
    const held = this.readState(mailbox, id);
    if (held === undefined) return freshStateOf(seq, this.load(mailbox, seq));
    return held.seq === seq && held.state !== STATE_READY && held.visibleAtMs === visibleAtMs ? held : undefined;
  }

  // The message with this id when a batch key's entry at `visibleAtMs` is current: its state
  // record is leased or delayed until exactly then. Otherwise (acked, removed, NACKed, extended,
  // leased again since) the entry is stale: undefined.
  private pendingEntry(mailbox: string, id: string, visibleAtMs: number): Held | undefined {
    const held = this.readState(mailbox, id);
    if (held === undefined) return undefined;
    return held.state !== STATE_READY && held.visibleAtMs === visibleAtMs ? held : undefined;
  }

  // The state record of a message (from the writes not yet stored, else the store). A record
  // from the writes not yet stored comes with that write, so that writing or deleting it again
  // (a lease then its ACK, the usual case) needs no second lookup.
  private readState(mailbox: string, id: string): Held | undefined {
    const pending = this.pendingStates(mailbox, false)?.get(id);
    if (pending !== undefined) return pending.state === undefined ? undefined : heldFrom(pending.state, id, pending);
    const value = this.kv.get(stateKey(mailbox, id));
    return value === undefined ? undefined : heldFrom(decodeState(value), id, undefined);
  }

  private writeState(mailbox: string, held: Held): void {
    const state = stateRecord(held);
    if (held.write !== undefined) {
      held.write.state = state;
    } else {
      const states = this.pendingStates(mailbox, true)!;
      // Looked up even for a message never written (stored false): state records are keyed by
      // mailbox and id, and another message of the mailbox with the same client id (sent again
      // after the dedupe window, while the first is still stored) may have a write here, a delete
      // of its record above all, which this write must keep (inStore). Skipping the lookup for
      // such messages (d201b4d) lost that delete: a stale state record stayed in the store, or
      // not, depending on where the group commits fell (the replicas diverged; found by the
      // property test that compares stores with different commit boundaries).
      const pending = states.get(held.id);
      if (pending !== undefined) {
        pending.state = state; // keeps its inStore
        held.write = pending;
      } else {
        // held.stored: a record exists in the store (it is not among the writes).
        const write: StateWrite = { state, inStore: held.stored };
        states.set(held.id, write);
        held.write = write;
      }
    }
    held.stored = true;
  }

  private deleteState(mailbox: string, held: Held): void {
    const pending = held.write ?? this.pendingStates(mailbox, true)!.get(held.id);
    if (pending === undefined) {
      this.pendingStates(mailbox, true)!.set(held.id, { state: undefined, inStore: true });
    } else if (pending.inStore) {
      pending.state = undefined;
    } else {
      // Written since the last commit and never stored: nothing to delete in the store.
      this.pendingStates(mailbox, true)!.delete(held.id);
    }
    held.write = undefined;
  }

  // The writes not yet stored of a mailbox (create: make the map if there is none).
  private pendingStates(mailbox: string, create: boolean): Map<string, StateWrite> | undefined {
    if (mailbox === this.statesMailbox && this.statesOfMailbox !== undefined) return this.statesOfMailbox;
    let states = this.statesToWrite.get(mailbox);
    if (states === undefined) {
      if (!create) return undefined;
      states = new Map();
      this.statesToWrite.set(mailbox, states);
    }
    this.statesMailbox = mailbox;
    this.statesOfMailbox = states;
    return states;
  }

  private forgetStateWrites(): void {
    this.statesToWrite.clear();
    this.statesMailbox = undefined;
    this.statesOfMailbox = undefined;
  }

  // Stores a new message: a hidden one in the pending index, a sender-ordered ready one in the
  // ready index; a log-ordered ready one needs no index key (it is after the fresh cursor).
  private store(mailbox: string, seq: string, message: StoredMessage): void {
    let meta = this.mailboxes.get(mailbox);
    if (meta === undefined) {
      meta = newMeta();
      this.mailboxes.set(mailbox, meta);
      if (!this.replies) this.freshHeads.reset(mailbox); // a leader's are forgotten just below
    }
    assert(seq > meta.freshAfter, "a new message is after the fresh cursor");
    this.blocks.put(mailbox, seq, encodeMessage(message));
    // Only a replica's RECEIVE reads the heads (one that builds replies scans the records): a leader
    // does not keep them (they cost a SEND ~0.3 µs), a follower does.
    if (this.replies) this.freshHeads.forget(mailbox);
    else this.freshHeads.append(mailbox, seq, message.id, message.hiddenUntilMs, message.expiresAtMs, message.senderTime !== undefined, message.body.length);
    if (message.hiddenUntilMs > 0) {
      this.pendingAt(mailbox, message.hiddenUntilMs);
      this.kv.put(pendingKey(mailbox, message.hiddenUntilMs, seq), keyToBytes(message.id));
    } else {
      if (message.senderTime !== undefined) {
        this.noneReturned.delete(mailbox);
        this.kv.put(readyKey(mailbox, seq, message.senderTime), EMPTY);
      }
      this.wakeups.add(mailbox);
    }
    if (message.expiresAtMs > 0) {
      this.kv.put(expiryKey(message.expiresAtMs, mailbox, seq), EMPTY);
      if (this.expiryFloorMs !== undefined) this.expiryFloorMs = Math.min(this.expiryFloorMs, message.expiresAtMs);
    }
    if (message.senderTime !== undefined) {
      this.kv.put(orderKey(mailbox, message.senderTime, seq), EMPTY);
      meta.senderOrdered++;
    }
    meta.messages++;
    meta.bytes += message.body.length;
    this.dirtyMailboxes.add(mailbox);
  }

  // Removes a message and its keys. Its id record is left alone: the holder entry goes stale
  // (checked where it matters; the dedupe sweep drops it).
  private remove(mailbox: string, held: Held): void {
    const meta = this.mailboxes.get(mailbox);
    if (meta === undefined || meta.messages <= 0) assert(false, `mailbox ${mailbox} holds the removed message`);
    const seq = held.seq;
    this.blocks.delete(mailbox, seq);
    if (seq > meta.freshAfter) this.freshHeads.forget(mailbox); // a record the heads hold
    // A pending message with a state record is listed in a batch key, left stale; one hidden
    // since its SEND has a key of its own.
    if (held.state !== STATE_READY) {
      if (!held.stored) this.kv.delete(pendingKey(mailbox, held.visibleAtMs, seq));
    } else if (held.stored || held.senderTime !== undefined) this.kv.delete(readyKey(mailbox, seq, held.senderTime));
    if (held.stored) this.deleteState(mailbox, held);
    if (held.expiresAtMs > 0) this.kv.delete(expiryKey(held.expiresAtMs, mailbox, seq));
    if (held.senderTime !== undefined) {
      this.kv.delete(orderKey(mailbox, held.senderTime, seq));
      meta.senderOrdered--;
    }
    meta.messages--;
    meta.bytes -= held.bytes;
    this.dirtyMailboxes.add(mailbox);
  }

  // Writes the counters of the mailboxes this entry touched; forgets empty mailboxes without
  // settings, so the mailbox count is the number of mailboxes that hold something.
  private flushMailboxes(): void {
    this.blocks.endEntry();
    for (const mailbox of this.dirtyMailboxes) {
      const meta = this.mailboxes.get(mailbox);
      assert(meta !== undefined, "a dirty mailbox is known");
      if (meta.messages === 0) {
        this.dropPendingKeys(mailbox);
        this.freshHeads.reset(mailbox); // no record at all
      }
      if (meta.messages === 0 && meta.config === undefined) {
        assert(meta.bytes === 0, "an empty mailbox holds no bytes");
        this.mailboxes.delete(mailbox);
        this.pendingFloorMs.delete(mailbox);
        this.noneReturned.delete(mailbox);
        this.freshHeads.forget(mailbox);
        this.metaToWrite.set(mailbox, undefined);
      } else {
        this.metaToWrite.set(mailbox, meta);
      }
    }
    this.dirtyMailboxes.clear();
    if (!this.metaPerCommit) this.writeDeferred();
  }

  // An empty mailbox's pending keys are all stale: drop them, so that a mailbox nobody receives
  // from again keeps none (each key is deleted once: amortized over the commands that wrote them).
  private dropPendingKeys(mailbox: string): void {
    const prefix = mailboxPrefix(PENDING, mailbox);
    const end = prefixEnd(prefix);
    for (;;) {
      const entries = this.kv.scan(prefix, end, SCAN_BATCH);
      for (const entry of entries) this.kv.delete(entry.key);
      if (entries.length < SCAN_BATCH) return;
    }
  }

  // Writes the mailbox counters and state records kept since the last commit. Inside a
  // transaction (the apply's, or the KV's group right before it commits). The counters written are
  // those of the last applied entry, which the same commit holds.
  private writeDeferred(): void {
    for (const [mailbox, meta] of this.metaToWrite) {
      if (meta === undefined) this.kv.delete(META + mailbox);
      else this.kv.put(META + mailbox, encodeMeta(meta));
    }
    this.metaToWrite.clear();
    for (const [mailbox, states] of this.statesToWrite) {
      for (const [id, write] of states) {
        if (write.state === undefined) this.kv.delete(stateKey(mailbox, id));
        else this.kv.put(stateKey(mailbox, id), encodeState(write.state));
      }
    }
    this.forgetStateWrites();
    this.blocks.commit();
  }
}

const EMPTY = new Uint8Array(0);

function withAcks(reply: ReceiveReply, acked: number | undefined, ackLeases: readonly string[] | undefined): ReceiveReply {
  if (acked !== undefined) reply.acked = acked;
  if (ackLeases !== undefined) reply.ackedLeases = ackLeases.length;
  return reply;
}

// The pending batch key a lease name names.
function leaseKey(mailbox: string, lease: LeaseName): string {
  return pendingKey(mailbox, lease.visibleAtMs, pendingBatchTag(lease.index, lease.number));
}

// A message's delivery state, its id, whether its state record is stored, and the write of it
// not yet stored that this state came from or went to (undefined: none known). A Held lives
// within one apply, and the writes are dropped only at a commit, between applies, so such a write
// is still among them (or was deleted with the message: writing it then changes nothing).
interface Held extends MessageState {
  id: string;
  stored: boolean;
  write: StateWrite | undefined;
}

// A state record to write at the next commit (state undefined: delete it); inStore: the store may
// hold an earlier record under the key (otherwise a delete needs no store operation). Changed in
// place while it is among the writes.
interface StateWrite {
  state: MessageState | undefined;
  inStore: boolean;
}

function heldFrom(state: MessageState, id: string, write: StateWrite | undefined): Held {
  return {
    seq: state.seq,
    state: state.state,
    deliveries: state.deliveries,
    visibleAtMs: state.visibleAtMs,
    expiresAtMs: state.expiresAtMs,
    bytes: state.bytes,
    senderTime: state.senderTime,
    id,
    stored: true,
    write,
  };
}

function stateRecord(held: Held): MessageState {
  return {
    seq: held.seq,
    state: held.state,
    deliveries: held.deliveries,
    visibleAtMs: held.visibleAtMs,
    expiresAtMs: held.expiresAtMs,
    bytes: held.bytes,
    senderTime: held.senderTime,
  };
}

// The state of a message with no state record: as stored at SEND.
function freshState(seq: string, id: string, hiddenUntilMs: number, expiresAtMs: number, bytes: number, senderTime: bigint | undefined): Held {
  return {
    seq,
    state: hiddenUntilMs > 0 ? STATE_DELAYED : STATE_READY,
    deliveries: 0,
    visibleAtMs: hiddenUntilMs,
    expiresAtMs,
    bytes,
    senderTime,
    id,
    stored: false,
    write: undefined,
  };
}

function freshStateOf(seq: string, message: StoredMessage): Held {
  return freshState(seq, message.id, message.hiddenUntilMs, message.expiresAtMs, message.body.length, message.senderTime);
}

function newMeta(): MailboxMeta {
  return { messages: 0, bytes: 0, config: undefined, senderOrdered: 0, freshAfter: "" };
}

// Keys of a range in order, read `limit` at a time as the reader asks for them; keys already
// returned may be written meanwhile (scan returns arrays).
class KeyStream {
  private entries: KvEntry[] = [];
  private position = 0;
  private last: boolean;
  private scanned = false;
  foundNone = false; // its first scan found no key

  // knownEmpty: the range is known to hold no key (nothing is read).
  constructor(
    private readonly kv: OrderedKv,
    private start: string,
    private readonly end: string,
    knownEmpty = false,
  ) {
    this.last = knownEmpty;
  }

  peek(limit: number): KvEntry | undefined {
    if (this.position < this.entries.length) return this.entries[this.position];
    if (this.last) return undefined;
    this.entries = this.kv.scan(this.start, this.end, limit);
    this.position = 0;
    this.last = this.entries.length < limit;
    if (!this.scanned) this.foundNone = this.entries.length === 0;
    this.scanned = true;
    if (this.entries.length === 0) return undefined;
    this.start = `${this.entries[this.entries.length - 1]!.key}\x00`;
    return this.entries[0];
  }

  next(): void {
    this.position++;
  }
}

// The records after a mailbox's fresh cursor as RECEIVE reads them, one at a time: the head of
// each (the FreshHead fields) from the mailbox's heads in memory when given, else from the records
// themselves (then `record` and `head` hold the record and its decoded head, for the reply).
class FreshRecords implements FreshHead {
  seq = "";
  id = "";
  hiddenUntilMs = 0;
  expiresAtMs = 0;
  senderOrdered = false;
  bytes = 0;
  record: Uint8Array | undefined = undefined;
  head: MessageHead | undefined = undefined;
  ended = false; // the last peek found no record

  constructor(
    private readonly heads: HeadQueue | undefined,
    private readonly records: RecordStream,
  ) {}

  // Reads the next record into the fields (false: there is none).
  peek(): boolean {
    if (this.heads !== undefined) {
      this.ended = !this.heads.peek(this);
      return !this.ended;
    }
    const records = this.records;
    this.ended = !records.peek();
    if (this.ended) return false;
    if (records.value === this.record) return true; // read already
    const head = decodeMessageHead(records.value);
    this.seq = records.seq;
    this.id = head.id;
    this.hiddenUntilMs = head.hiddenUntilMs;
    this.expiresAtMs = head.expiresAtMs;
    this.senderOrdered = head.senderTime !== undefined;
    this.bytes = head.bytes;
    this.record = records.value;
    this.head = head;
    return true;
  }

  // Passes the record read.
  next(): void {
    if (this.heads !== undefined) this.heads.shift();
    else this.records.next();
  }
}

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

function isLive(state: { expiresAtMs: number }, nowMs: number): boolean {
  return state.expiresAtMs === 0 || state.expiresAtMs > nowMs;
}

function listItem(message: StoredMessage, held: Held, nowMs: number): ListItem {
  const item: ListItem = {
    id: message.id,
    sender: message.sender,
    timestamp: message.timestamp,
    state: stateAt(held, nowMs),
    deliveries: held.deliveries,
    bytes: message.body.length,
  };
  if (message.senderTime !== undefined) item.senderTime = message.senderTime;
  return item;
}

function stateAt(held: Held, nowMs: number): ListItem["state"] {
  if (held.state === STATE_READY || held.visibleAtMs <= nowMs) return "ready";
  if (held.state === STATE_LEASED) return "leased";
  if (held.state === STATE_DELAYED) return "delayed";
  return unreachable(held.state as never, "message state");
}
