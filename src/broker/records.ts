// The broker's key layout and value encodings.
//
// Keys are byte strings (see kv.ts). Mailbox names never contain "\x00", so "name\x00" ends a
// name unambiguously and all keys of one mailbox share a prefix. Integers in keys are 8-byte
// big-endian so that byte order is numeric order. A message's sequence ("seq") is its position
// in the log: 8 bytes of entry index then 4 bytes of its number within the entry (12 bytes).
//
//   "\x00a"                                   applied index
//   "\x01" name                               mailbox meta (counters, settings overrides, fresh cursor)
//   "\x02" name "\x00" index 00000000          message block: the immutable records (written once, body
//                                             included) of the messages one entry stored in the
//                                             mailbox (message-blocks.ts), the entry's first block ...
//   "\x02" name "\x00" seq                    ... and its further ones, keyed by their first seq
//   "\x0a" <a block's key after "\x02">        the block's removed messages (a bitmap), while some
//                                             are removed. "The record at a seq" below is that
//                                             message in its block, unless removed.
//   "\x03" name "\x00" seq                    ready index: messages that came back (NACK, lease
//                                             expiry, delay ended), in log order ...
//   "\x03" name "\x00" "\xff" senderTime seq    ... then sender-ordered ready messages by sender time
//   "\x04" name "\x00" visibleAtMs seq        pending index, a message hidden at SEND (delayed, or held
//                                             for its reorder window) until visibleAtMs; value: its id.
//                                             Deleted when it comes due or the message is removed.
//   "\x04" name "\x00" visibleAtMs batch      pending index, the ids one RECEIVE leased (or one NACK
//                                             with delay / EXTEND moved) until visibleAtMs; value: the
//                                             ids joined by "\x00". batch = entry index (8 bytes) and
//                                             0x80000000 + the number of the key in the entry (4 bytes),
//                                             so it never equals a seq. Entries go stale (ACK, NACK,
//                                             EXTEND, removal leave them): an id is current only while
//                                             its state record is pending with this visibleAtMs.
//   "\x05" name "\x00" id                     state record: state, deliveries, lease end / not-before,
//                                             and what removal needs (seq, expiry, bytes, sender
//                                             time); exists from the first lease (or the end of a
//                                             delay) on. A message without one is in its stored state.
//   "\x06" expiresAtMs name "\x00" seq        expiry index (all mailboxes, for the TTL sweep)
//   "\x07" id                                 id record (ids whose window ended while a copy is
//                                             stored, dead letters of ids not inline, ids past
//                                             dedupeIdsInMemoryMax; an id recorded within its
//                                             window is inline in its dedupe list instead): the
//                                             dedupe timestamp (HLC of the first SEND, while in
//                                             the window) and the holders (mailbox
//                                             and seq of each copy with that id, for client ids
//                                             and dead letters). Removing a copy leaves its holder
//                                             entry stale: a holder counts only while the record at
//                                             its seq exists (seqs are never reused).
//   "\x08" firstMs index                      dedupe list: the ids an entry recorded, each with its
//                                             record inline, or listed again (a reference to its id
//                                             record) for a later look; for the window sweep
//   "\x09" name "\x00" senderTime seq          sender order: sender-ordered messages (for LIST)
//
// Fresh messages: a log-ordered message ready at SEND gets no ready-index key. The mailbox meta
// holds a fresh cursor (the last record RECEIVE passed); such messages after it are ready and
// never leased. RECEIVE merges the ready index (log part) with the records after the cursor by
// seq, and moves the cursor past what it leases and past records that are tracked elsewhere
// (hidden or sender-ordered at SEND). Every new seq is above every stored one, so a new message
// is always after the cursor.
//
// A message stored in a "sender-time" mailbox is sender-ordered for life (a flag and its 64-bit
// sender time in the record). The first byte of a seq is at most 0x1f (indexes < 2^53), so the
// "\xff" marker sorts sender-ordered ready messages after every log-ordered one of the mailbox.
//
// Encoders write into the shared scratch buffer (ByteWriter.scratch): what they return is valid
// until the next encoding and is meant to be handed straight to OrderedKv.put, which copies it.
import { assert } from "../util/assert.js";
import { ByteReader, ByteWriter, setOwn, utf8Length } from "./bytes.js";
import type { MailboxConfig } from "./commands.js";

export const APPLIED_KEY = "\x00a";
// The layout of every record below, as one number: written with the first apply into an empty
// store, checked whenever the store is opened or restored from a snapshot. Raise it with any
// change a store written before could not be read with (there is no migration: a node whose
// store is refused starts over with an empty data directory and catches up from its peers).
// Stores written before this record existed (before 2026-11-25) have none and are refused too:
// one of them held dedupe keys of an older layout that made every node's apply fail at once.
export const FORMAT_KEY = "\x00f";
export const STATE_FORMAT = 3; // 3: messages in blocks (2026-11-26)
export const META = "\x01";
export const MESSAGE = "\x02";
export const READY = "\x03";
export const PENDING = "\x04";
export const EXPIRY = "\x06";
export const STATE = "\x05";
export const DEDUPE = "\x07";
export const DEDUPE_LIST = "\x08";
export const ORDER = "\x09";
export const REMOVED = "\x0a";
export const SENDER_READY_MARK = "\xff";
export const SEQ_LENGTH = 12;
export const U64_LENGTH = 8;

export function u64Key(value: number): string {
  if (!(Number.isSafeInteger(value) && value >= 0)) assert(false, `key integer ${value} is a safe non-negative integer`);
  const high = Math.floor(value / 0x1_0000_0000);
  const low = value >>> 0;
  return String.fromCharCode(
    (high >>> 24) & 0xff,
    (high >>> 16) & 0xff,
    (high >>> 8) & 0xff,
    high & 0xff,
    (low >>> 24) & 0xff,
    (low >>> 16) & 0xff,
    (low >>> 8) & 0xff,
    low & 0xff,
  );
}

const U64_LIMIT = 1n << 64n;

// As u64Key for a 64-bit bigint (sender times); two 32-bit halves keep the BigInt work small.
export function u64BigKey(value: bigint): string {
  if (!(value >= 0n && value < U64_LIMIT)) assert(false, `key integer ${value} fits 64 bits`);
  const high = Number(value >> 32n);
  const low = Number(value & 0xffffffffn);
  return String.fromCharCode(
    (high >>> 24) & 0xff,
    (high >>> 16) & 0xff,
    (high >>> 8) & 0xff,
    high & 0xff,
    (low >>> 24) & 0xff,
    (low >>> 16) & 0xff,
    (low >>> 8) & 0xff,
    low & 0xff,
  );
}

export function readU64Key(key: string, offset: number): number {
  let value = 0;
  for (let i = 0; i < U64_LENGTH; i++) value = value * 256 + key.charCodeAt(offset + i);
  return value;
}

// Message numbers stay below 2^31: the top bit marks pending batch tags (pendingBatchTag).
const BATCH_NUMBER_BASE_SEQ = 0x8000_0000;

// indexKey: u64Key(index), when the caller has it (the broker keeps its entry's).
export function seqOf(index: number, number: number, indexKey = u64Key(index)): string {
  assert(number >= 0 && number < BATCH_NUMBER_BASE_SEQ, "message number within an entry fits 31 bits");
  return indexKey + String.fromCharCode((number >>> 24) & 0xff, (number >>> 16) & 0xff, (number >>> 8) & 0xff, number & 0xff);
}

export function seqToCursor(seq: string): string {
  let hex = "";
  for (let i = 0; i < seq.length; i++) hex += seq.charCodeAt(i).toString(16).padStart(2, "0");
  return hex;
}

export function cursorToSeq(cursor: string): string | undefined {
  return hexToKey(cursor, SEQ_LENGTH);
}

// The key bytes written as lowercase hex by seqToCursor, when `hex` is exactly `bytes` of them.
export function hexToKey(hex: string, bytes: number): string | undefined {
  if (hex.length !== 2 * bytes || !/^[0-9a-f]*$/.test(hex)) return undefined;
  let key = "";
  for (let i = 0; i < hex.length; i += 2) key += String.fromCharCode(Number.parseInt(hex.slice(i, i + 2), 16));
  return key;
}

export const mailboxPrefix = (kind: string, mailbox: string): string => `${kind}${mailbox}\x00`;
export const messageKey = (mailbox: string, seq: string): string => `${MESSAGE}${mailbox}\x00${seq}`;
export const readyKey = (mailbox: string, seq: string, senderTime?: bigint): string =>
  senderTime === undefined ? `${READY}${mailbox}\x00${seq}` : `${READY}${mailbox}\x00${SENDER_READY_MARK}${u64BigKey(senderTime)}${seq}`;
export const orderKey = (mailbox: string, senderTime: bigint, seq: string): string => `${ORDER}${mailbox}\x00${u64BigKey(senderTime)}${seq}`;
// `tag` is the seq of a message hidden at SEND, or a batch tag (pendingBatchTag).
export const pendingKey = (mailbox: string, visibleAtMs: number, tag: string): string =>
  `${PENDING}${mailbox}\x00${u64Key(visibleAtMs)}${tag}`;

const BATCH_NUMBER_BASE = 0x8000_0000;
export const PENDING_BATCHES_PER_ENTRY_MAX = 0x8000_0000;

// The tag of the `number`th pending batch key written by entry `index`: its 4-byte number has the
// top bit set, message numbers never do (seqOf), so a batch tag is never a seq.
export function pendingBatchTag(index: number, number: number): string {
  assert(number >= 0 && number < PENDING_BATCHES_PER_ENTRY_MAX, "pending batch number fits 31 bits");
  const tagged = BATCH_NUMBER_BASE + number;
  return u64Key(index) + String.fromCharCode((tagged >>> 24) & 0xff, (tagged >>> 16) & 0xff, (tagged >>> 8) & 0xff, tagged & 0xff);
}

// Whether a pending key's tag (the SEQ_LENGTH bytes after visibleAtMs) is a batch tag.
export function isPendingBatchTag(key: string, tagOffset: number): boolean {
  return key.charCodeAt(tagOffset + U64_LENGTH) >= 0x80;
}

// Ids are ASCII without "\x00" (validate.ts), so a batch value is the ids joined by "\x00".
export function encodePendingIds(ids: string[]): Uint8Array {
  let size = ids.length - 1;
  for (const id of ids) size += id.length;
  const writer = ByteWriter.scratch(size);
  for (let i = 0; i < ids.length; i++) {
    if (i > 0) writer.u8(0);
    writer.latin1(ids[i]!);
  }
  return writer.finish();
}

const DECODE_CHUNK = 8192;

export function decodePendingIds(value: Uint8Array): string[] {
  let text = "";
  for (let at = 0; at < value.length; at += DECODE_CHUNK) {
    text += String.fromCharCode.apply(null, value.subarray(at, at + DECODE_CHUNK) as unknown as number[]);
  }
  return text.split("\x00");
}
export const expiryKey = (expiresAtMs: number, mailbox: string, seq: string): string =>
  `${EXPIRY}${u64Key(expiresAtMs)}${mailbox}\x00${seq}`;
export const stateKey = (mailbox: string, id: string): string => `${STATE}${mailbox}\x00${id}`;
export const idRecordKey = (id: string): string => `${DEDUPE}${id}`;
export const dedupeListKey = (firstMs: number, index: number): string => `${DEDUPE_LIST}${u64Key(firstMs)}${u64Key(index)}`;

// A dedupe list: per id, either a reference (its record is the "\x07" id record, listed to be
// looked at again by the sweep) or the record itself, inline (a client id first recorded within
// the window: no id record of its own until the sweep, see Broker.inline).
export type ListedRecord = IdRecord | undefined; // undefined: a reference
const LISTED_REFERENCE = 0;
const LISTED_INLINE = 1;

export function encodeDedupeList(ids: readonly string[], records: readonly ListedRecord[]): Uint8Array {
  let size = 4;
  for (let i = 0; i < ids.length; i++) size += 5 + ids[i]!.length + (records[i] === undefined ? 0 : idRecordSize(records[i]!)); // client ids are ASCII
  const writer = ByteWriter.scratch(size);
  writer.u32(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const record = records[i];
    writer.u8(record === undefined ? LISTED_REFERENCE : LISTED_INLINE);
    writer.string(ids[i]!);
    if (record !== undefined) writeIdRecord(writer, record);
  }
  return writer.finish();
}

export function decodeDedupeList(data: Uint8Array): Array<[string, ListedRecord]> {
  const reader = new ByteReader(data);
  const count = reader.u32();
  const items: Array<[string, ListedRecord]> = [];
  for (let i = 0; i < count; i++) {
    const kind = reader.u8();
    const id = reader.string();
    items.push([id, kind === LISTED_INLINE ? readIdRecord(reader) : undefined]);
  }
  return items;
}

export const STATE_READY = 0;
export const STATE_LEASED = 1;
export const STATE_DELAYED = 2;
export type StateCode = typeof STATE_READY | typeof STATE_LEASED | typeof STATE_DELAYED;

// The immutable part of a message: written once at SEND (or dead-lettering), never rewritten.
export interface StoredMessage {
  id: string;
  sender: string;
  timestamp: bigint; // HLC timestamp of the SEND's entry
  hiddenUntilMs: number; // stored delayed (or held for its reorder window) until then; 0: ready at SEND
  expiresAtMs: number; // 0: never
  headers: Record<string, string> | undefined;
  body: Uint8Array;
  senderTime: bigint | undefined; // sender-ordered messages only: the order key
}

const RECORD_VERSION = 2;
const FLAG_SENDER_ORDERED = 0x40; // the sender time follows the timestamp

const MESSAGE_FIXED_BYTES = 1 + 1 + 8 + 8 + 8 + 4 + 4 + 4;

export function encodeMessage(message: StoredMessage): Uint8Array {
  // Exact size (ids and senders are ASCII), so the record is one allocation and no copy.
  let size = MESSAGE_FIXED_BYTES + (message.senderTime === undefined ? 0 : 8) + message.id.length + message.sender.length + message.body.length;
  if (message.headers !== undefined) {
    for (const name in message.headers) size += 8 + utf8Length(name) + utf8Length(message.headers[name]!);
  }
  const writer = ByteWriter.scratch(size);
  writer.u8(RECORD_VERSION);
  writer.u8(message.senderTime === undefined ? 0 : FLAG_SENDER_ORDERED);
  writer.u64(message.timestamp);
  if (message.senderTime !== undefined) writer.u64(message.senderTime);
  writer.f64(message.hiddenUntilMs);
  writer.f64(message.expiresAtMs);
  writer.string(message.id);
  writer.string(message.sender);
  const headers = message.headers === undefined ? undefined : Object.entries(message.headers);
  writer.u32(headers === undefined ? 0xffffffff : headers.length);
  for (const [name, value] of headers ?? []) {
    writer.string(name);
    writer.string(value);
  }
  writer.bytes(message.body);
  return writer.finish();
}

// What a message's delivery state follows from: its record read without the timestamp, sender,
// headers and body. A RECEIVE whose reply nobody reads (a replica's apply) decodes no more;
// decodeMessage reads the rest from where the head says it starts.
export interface MessageHead {
  id: string;
  hiddenUntilMs: number;
  expiresAtMs: number;
  senderTime: bigint | undefined;
  bytes: number; // body bytes
  // Where fields start in the record (their u32 length or count, little-endian: bytes.ts u32At):
  // the id, the sender, the header count, the body.
  idAt: number;
  senderAt: number;
  headersAt: number;
  bodyAt: number;
}

export const RECORD_TIMESTAMP_AT = 2; // the timestamp, u64 little-endian, after the version and flags bytes
export const RECORD_SENDER_TIME_AT = 10; // the sender time, u64 little-endian (a sender-ordered message's)
export const RECORD_NO_HEADERS = 0xffffffff; // the header count of a message without headers

export function decodeMessageHead(data: Uint8Array): MessageHead {
  const reader = new ByteReader(data);
  const version = reader.u8();
  if (version !== RECORD_VERSION) assert(false, `message record version ${version} is known`);
  const flags = reader.u8();
  reader.skip(8); // timestamp
  const senderTime = (flags & FLAG_SENDER_ORDERED) !== 0 ? reader.u64() : undefined;
  const hiddenUntilMs = reader.f64();
  const expiresAtMs = reader.f64();
  const idAt = reader.offset;
  const id = reader.string();
  const senderAt = reader.offset;
  reader.skip(reader.u32()); // sender
  const headersAt = reader.offset;
  const headerCount = reader.u32();
  if (headerCount !== RECORD_NO_HEADERS) {
    for (let i = 0; i < 2 * headerCount; i++) reader.skip(reader.u32());
  }
  const bodyAt = reader.offset;
  const bytes = reader.u32();
  reader.skip(bytes);
  return { id, hiddenUntilMs, expiresAtMs, senderTime, bytes, idAt, senderAt, headersAt, bodyAt };
}

// The whole record; `head` when the caller decoded it already (the head is not read twice).
export function decodeMessage(data: Uint8Array, head: MessageHead = decodeMessageHead(data)): StoredMessage {
  const reader = new ByteReader(data);
  reader.skip(RECORD_TIMESTAMP_AT);
  const timestamp = reader.u64();
  reader.skip(head.senderAt - reader.offset);
  const sender = reader.string();
  const headerCount = reader.u32();
  let headers: Record<string, string> | undefined;
  if (headerCount !== 0xffffffff) {
    headers = {};
    for (let i = 0; i < headerCount; i++) setOwn(headers, reader.string(), reader.string());
  }
  const body = reader.bytes();
  return { id: head.id, sender, timestamp, hiddenUntilMs: head.hiddenUntilMs, expiresAtMs: head.expiresAtMs, headers, body, senderTime: head.senderTime };
}

// The mutable part of a message (its delivery state) plus what removing it needs, so that ACK,
// NACK and EXTEND read and write this small value and never the record with the body. Stored
// under "\x05" name "\x00" id once the message was leased (or a delayed one became ready);
// before that it follows from the record (fresh: no deliveries, ready or hidden as stored).
export interface MessageState {
  seq: string;
  state: StateCode;
  deliveries: number;
  visibleAtMs: number; // leased / delayed: when it becomes visible again; ready: 0
  expiresAtMs: number; // 0: never
  bytes: number; // body bytes (the mailbox counter)
  senderTime: bigint | undefined;
}

const STATE_FIXED_BYTES = SEQ_LENGTH + 1 + 1 + 4 + 8 + 8 + 4;

export function encodeState(state: MessageState): Uint8Array {
  const writer = ByteWriter.scratch(STATE_FIXED_BYTES + (state.senderTime === undefined ? 0 : 8));
  for (let i = 0; i < SEQ_LENGTH; i++) writer.u8(state.seq.charCodeAt(i));
  writer.u8(state.state);
  writer.u8(state.senderTime === undefined ? 0 : FLAG_SENDER_ORDERED);
  writer.u32(state.deliveries);
  writer.f64(state.visibleAtMs);
  writer.f64(state.expiresAtMs);
  writer.u32(state.bytes);
  if (state.senderTime !== undefined) writer.u64(state.senderTime);
  return writer.finish();
}

export function decodeState(data: Uint8Array): MessageState {
  const reader = new ByteReader(data);
  const seq = String.fromCharCode(...reader.raw(SEQ_LENGTH));
  const state = reader.u8() as StateCode;
  const flags = reader.u8();
  const deliveries = reader.u32();
  const visibleAtMs = reader.f64();
  const expiresAtMs = reader.f64();
  const bytes = reader.u32();
  const senderTime = (flags & FLAG_SENDER_ORDERED) !== 0 ? reader.u64() : undefined;
  return { seq, state, deliveries, visibleAtMs, expiresAtMs, bytes, senderTime };
}

export interface MailboxMeta {
  messages: number;
  bytes: number; // body bytes
  config: Partial<MailboxConfig> | undefined; // overrides of the cluster defaults
  senderOrdered: number; // messages that are sender-ordered (LIST skips a phase when none or all are)
  // The fresh cursor: the seq of the last message record RECEIVE passed ("": none yet). Every
  // log-ordered message after it that was ready at SEND is fresh: never leased, no state record,
  // no ready-index key (RECEIVE reads such messages straight from the records).
  freshAfter: string;
}

const CONFIG_NUMBERS = ["visibilityMs", "deliveriesMax", "messagesMax", "bytesMax", "ttlMs"] as const;

export function encodeMeta(meta: MailboxMeta): Uint8Array {
  const writer = ByteWriter.scratch(96);
  writer.f64(meta.messages);
  writer.f64(meta.bytes);
  writer.u8(meta.config === undefined ? 0 : 1);
  if (meta.config !== undefined) {
    for (const field of CONFIG_NUMBERS) writer.f64(meta.config[field] ?? -1);
    writer.string(meta.config.overflow ?? "");
    writer.string(meta.config.expiry ?? "");
  }
  // Appended later: older records end above and read as defaults.
  writer.f64(meta.senderOrdered);
  if (meta.config !== undefined) {
    writer.f64(meta.config.reorderWindowMs ?? -1);
    writer.string(meta.config.order ?? "");
  }
  writer.string(meta.freshAfter);
  return writer.finish();
}

export function decodeMeta(data: Uint8Array): MailboxMeta {
  const reader = new ByteReader(data);
  const meta: MailboxMeta = { messages: reader.f64(), bytes: reader.f64(), config: undefined, senderOrdered: 0, freshAfter: "" };
  if (reader.u8() === 1) {
    const config: Partial<MailboxConfig> = {};
    for (const field of CONFIG_NUMBERS) {
      const value = reader.f64();
      if (value !== -1) config[field] = value;
    }
    const overflow = reader.string();
    const expiry = reader.string();
    if (overflow !== "") config.overflow = overflow as MailboxConfig["overflow"];
    if (expiry !== "") config.expiry = expiry as MailboxConfig["expiry"];
    meta.config = config;
  }
  if (reader.done()) return meta;
  meta.senderOrdered = reader.f64();
  if (meta.config !== undefined) {
    const reorderWindowMs = reader.f64();
    const order = reader.string();
    if (reorderWindowMs !== -1) meta.config.reorderWindowMs = reorderWindowMs;
    if (order !== "") meta.config.order = order as MailboxConfig["order"];
  }
  meta.freshAfter = reader.string();
  return meta;
}

export function encodeFormat(format: number): Uint8Array {
  const writer = ByteWriter.scratch(4);
  writer.u32(format);
  return writer.finish();
}

export function decodeFormat(data: Uint8Array): number | undefined {
  return data.length === 4 ? new ByteReader(data).u32() : undefined;
}

export function encodeIndex(index: number): Uint8Array {
  const writer = ByteWriter.scratch(8);
  writer.f64(index);
  return writer.finish();
}

export function decodeIndex(data: Uint8Array): number {
  return new ByteReader(data).f64();
}

export function encodeTimestamp(timestamp: bigint): Uint8Array {
  const writer = ByteWriter.scratch(8);
  writer.u64(timestamp);
  return writer.finish();
}

export function decodeTimestamp(data: Uint8Array): bigint {
  return new ByteReader(data).u64();
}

export function seqValue(seq: string): Uint8Array {
  const bytes = new Uint8Array(seq.length);
  for (let i = 0; i < seq.length; i++) bytes[i] = seq.charCodeAt(i);
  return bytes;
}

export function valueSeq(value: Uint8Array): string {
  return String.fromCharCode(...value);
}

// Who holds an id, and since when it dedupes. Exists while it dedupes or has a holder.
export interface IdHolder {
  mailbox: string;
  seq: string;
}
export interface IdRecord {
  dedupeSince: bigint | undefined; // HLC timestamp of the SEND that recorded it; undefined: swept
  holders: IdHolder[];
}

function idRecordSize(record: IdRecord): number {
  let size = 1 + 8 + 4;
  for (const holder of record.holders) size += 4 + holder.mailbox.length + SEQ_LENGTH; // names are ASCII
  return size;
}

function writeIdRecord(writer: ByteWriter, record: IdRecord): void {
  writer.u8(record.dedupeSince === undefined ? 0 : 1);
  writer.u64(record.dedupeSince ?? 0n);
  writer.u32(record.holders.length);
  for (const holder of record.holders) {
    writer.string(holder.mailbox);
    for (let i = 0; i < SEQ_LENGTH; i++) writer.u8(holder.seq.charCodeAt(i));
  }
}

function readIdRecord(reader: ByteReader): IdRecord {
  const dedupes = reader.u8() === 1;
  const since = reader.u64();
  const count = reader.u32();
  const holders: IdHolder[] = [];
  for (let i = 0; i < count; i++) {
    const mailbox = reader.string();
    const seq = reader.raw(SEQ_LENGTH);
    holders.push({ mailbox, seq: String.fromCharCode(...seq) });
  }
  return { dedupeSince: dedupes ? since : undefined, holders };
}

export function encodeIdRecord(record: IdRecord): Uint8Array {
  const writer = ByteWriter.scratch(idRecordSize(record));
  writeIdRecord(writer, record);
  return writer.finish();
}

export function decodeIdRecord(data: Uint8Array): IdRecord {
  return readIdRecord(new ByteReader(data));
}
