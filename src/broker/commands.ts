// The commands a committed log entry carries to the broker, their results, the broker's limits
// and mailbox settings, and a compact binary encoding of a batch of commands (the hot path:
// every SEND body travels through it once per replica).
//
// Encoding: u8 version, u32 count, then per command a u8 tag and its fields in a fixed order.
// Optional fields have a presence byte. Version 2 added senderTime to SEND and order /
// reorderWindowMs to the mailbox settings; version 1 batches (older logs) still decode. decodeCommands(encodeCommands(c)) deep-equals c.
import type { AckReply, AckRequest, ErrorReply, ExtendRequest, ListReply, PurgeRequest, ReceiveReply, SendReply } from "../protocol/api.js";
import { RECEIVE_MAX } from "../protocol/api.js";
import { ByteReader, ByteWriter, roundTripsUtf8, setOwn } from "./bytes.js";

export type OverflowPolicy = "reject" | "drop-oldest";
export type ExpiryPolicy = "drop" | "dead-letter";
// "log": messages are delivered in log order (the order the leader stamped them).
// "sender-time": by the sender's timestamp, each hidden until senderTime + reorderWindowMs.
export type OrderMode = "log" | "sender-time";

// Per-mailbox settings; each mailbox may override the cluster defaults (BrokerConfig.mailbox).
export interface MailboxConfig {
  visibilityMs: number; // lease length of a RECEIVE that names none
  deliveriesMax: number; // a message released after this many deliveries goes to the dead-letter mailbox
  messagesMax: number; // capacity in messages
  bytesMax: number; // capacity in body bytes
  overflow: OverflowPolicy; // what a SEND into a full mailbox does
  ttlMs: number; // 0: messages never expire unless the SEND sets a ttl
  expiry: ExpiryPolicy; // what happens to an expired message
  order: OrderMode; // delivery and LIST order of messages sent from now on
  reorderWindowMs: number; // sender-time: how long a message waits for earlier-stamped ones
}

export const MAILBOX_DEFAULTS: MailboxConfig = {
  visibilityMs: 30_000,
  deliveriesMax: 5,
  messagesMax: 1_000_000,
  bytesMax: 1024 * 1024 * 1024,
  overflow: "reject",
  ttlMs: 0,
  expiry: "drop",
  order: "log",
  reorderWindowMs: 1000,
};

// Cluster-wide limits. Every replica must run with the same BrokerConfig: it is part of the
// deterministic function from log to state.
export interface BrokerConfig {
  mailbox: MailboxConfig;
  dedupeWindowMs: number;
  bodyBytesMax: number;
  headersCountMax: number;
  headersBytesMax: number; // keys and values, UTF-8
  idLengthMax: number;
  mailboxesMax: number;
  recipientsMax: number; // per fan-out SEND
  receiveMax: number; // messages per RECEIVE
  idsPerRequestMax: number; // ids per ACK / NACK / EXTEND
  visibilityMsMax: number;
  delayMsMax: number;
  ttlMsMax: number;
  reorderWindowMsMax: number;
  // A SEND's senderTime may be at most this far ahead of the entry time (a clock far ahead would
  // otherwise hide its messages for as long).
  senderTimeAheadMsMax: number;
  // Bounded work per entry so one entry never stalls the node: expired messages, expired dedupe
  // records, and leases/delays coming due per RECEIVE.
  expirySweepMax: number;
  dedupeSweepMax: number;
  promoteMax: number;
  // Client ids whose record is inline in a dedupe list (indexed on the heap in 40-80 bytes each)
  // instead of an id record in the store per SEND; past it, new ids get an id record as before.
  dedupeIdsInMemoryMax: number;
  // Heads of messages not yet received that a replica keeps in memory (about 70 bytes each, off
  // the collector's heap), so that its RECEIVE need not read the records (fresh-heads.ts). Not part
  // of the state: replicas may differ here.
  freshHeadsInMemoryMax: number;
  // The records of the messages one entry stores in one mailbox share a record of the state store
  // up to this many bytes (message-blocks.ts); a message larger than it has a block of its own.
  messageBlockBytesMax: number;
}

export const BROKER_DEFAULTS: BrokerConfig = {
  mailbox: MAILBOX_DEFAULTS,
  dedupeWindowMs: 2 * 60_000,
  bodyBytesMax: 1024 * 1024,
  headersCountMax: 32,
  headersBytesMax: 8 * 1024,
  idLengthMax: 128,
  mailboxesMax: 100_000,
  recipientsMax: 100,
  receiveMax: RECEIVE_MAX,
  idsPerRequestMax: 1000,
  visibilityMsMax: 12 * 3600_000,
  delayMsMax: 7 * 24 * 3600_000,
  ttlMsMax: 365 * 24 * 3600_000,
  reorderWindowMsMax: 60_000,
  senderTimeAheadMsMax: 60_000,
  expirySweepMax: 10_000,
  dedupeSweepMax: 10_000,
  promoteMax: 10_000,
  dedupeIdsInMemoryMax: 1_000_000,
  freshHeadsInMemoryMax: 500_000,
  // 256 KiB: an entry of the most SENDs one may hold (entryCommandsMax 512) of ~300-byte records
  // fits one block, so a drain of such entries finds each message's block with one point read and
  // never looks for further blocks (64 KiB: ~7% more server CPU per drained message on the drain
  // harness, docs/bench.md "Session 30").
  messageBlockBytesMax: 256 * 1024,
};

export interface SendCommand {
  op: "send";
  sender: string;
  recipients: string[];
  body: Uint8Array;
  id?: string;
  headers?: Record<string, string>;
  delayMs?: number;
  ttlMs?: number;
  senderTime?: bigint; // HLC timestamp the sender stamped; default: the SEND's entry timestamp
}
export interface ReceiveCommand {
  op: "receive";
  mailbox: string;
  max: number;
  visibilityMs?: number;
  consumer?: string; // who asked (informational; not enforced on ACK)
  ack?: string[]; // ids acknowledged first, as by an ACK of the mailbox (AckReply's count: `acked`)
  ackLeases?: string[]; // then the batches of these lease names (ReceiveRequest.ackLeases)
  // The messages of the reply as their stored records (StoredDelivery), for a reply that is
  // written with FrameWriter (the binary protocol's). Not in the log: it changes the reply's form,
  // never the state.
  recordReplies?: boolean;
}
export type AckCommand = AckRequest; // op "ack" | "nack"
export type ExtendCommand = ExtendRequest;
export type PurgeCommand = PurgeRequest; // op "purge" | "delete"
export interface MailboxConfigCommand {
  op: "set-mailbox-config";
  mailbox: string;
  config: Partial<MailboxConfig>; // {} resets the mailbox to the cluster defaults
}

export type BrokerCommand = SendCommand | ReceiveCommand | AckCommand | ExtendCommand | PurgeCommand | MailboxConfigCommand;

export interface PurgeReply {
  ok: true;
  count: number; // messages removed
}
export interface MailboxConfigReply {
  ok: true;
  config: MailboxConfig; // the effective settings
}

export type BrokerResult = SendReply | ReceiveReply | AckReply | PurgeReply | MailboxConfigReply | ErrorReply;
export type { ListReply };

const ENCODING_VERSION = 2;
const TAG = { send: 1, receive: 2, ack: 3, nack: 4, extend: 5, purge: 6, delete: 7, "set-mailbox-config": 8 } as const;
// A RECEIVE that carries acks: a tag of its own (a RECEIVE without keeps the encoding it always
// had, so logs written before it decode as they did).
const TAG_RECEIVE_ACKING = 9;
// A RECEIVE that carries lease names to ack (ackLeases), with or without ids.
const TAG_RECEIVE_LEASE_ACKING = 10;

// The sets of log commands, newest last: 1, tags 1-8; 2 (session 38), a RECEIVE that carries acks
// (tag 9); 3 (session 41), a RECEIVE that acks batches by their lease names (tag 10). A node
// applies the commands of its set and says so to its peers (HelloFrame.commands); a leader
// proposes a command only once every member applies its set: until then it turns lease names
// into the ids they leased (set 2), and splits a RECEIVE with acks into an ACK and a RECEIVE
// (set 1) (docs/node.md "Upgrades"), since an older node cannot decode them.
export const COMMAND_SET = 3;
export const COMMAND_SET_ACKING_RECEIVE = 2;
export const COMMAND_SET_LEASE_ACKS = 3;
const CONFIG_NUMBER_FIELDS = ["visibilityMs", "deliveriesMax", "messagesMax", "bytesMax", "ttlMs"] as const;

export class CommandDecodeError extends Error {
  override name = "CommandDecodeError";
}

export function encodeCommands(commands: BrokerCommand[]): Uint8Array {
  let capacity = 64;
  for (const command of commands) capacity += command.op === "send" ? command.body.length + 128 : 64;
  const writer = new ByteWriter(capacity);
  writer.u8(ENCODING_VERSION);
  writer.u32(commands.length);
  for (const command of commands) encodeCommand(writer, command);
  return writer.finish();
}

function optionalNumber(writer: ByteWriter, value: number | undefined): void {
  writer.f64(value === undefined ? -1 : value);
}
function optionalString(writer: ByteWriter, value: string | undefined): void {
  writer.u8(value === undefined ? 0 : 1);
  if (value !== undefined) writer.string(value);
}
function strings(writer: ByteWriter, values: string[]): void {
  writer.u32(values.length);
  for (const value of values) writer.string(value);
}

function encodeCommand(writer: ByteWriter, command: BrokerCommand): void {
  writer.u8(command.op !== "receive" ? TAG[command.op] : command.ackLeases !== undefined ? TAG_RECEIVE_LEASE_ACKING : command.ack !== undefined ? TAG_RECEIVE_ACKING : TAG.receive);
  switch (command.op) {
    case "send": {
      writer.string(command.sender);
      strings(writer, command.recipients);
      optionalString(writer, command.id);
      optionalNumber(writer, command.delayMs);
      optionalNumber(writer, command.ttlMs);
      const headers = command.headers === undefined ? undefined : Object.entries(command.headers);
      writer.u32(headers === undefined ? 0xffffffff : headers.length);
      for (const [name, value] of headers ?? []) {
        writer.string(name);
        writer.string(value);
      }
      writer.u8(command.senderTime === undefined ? 0 : 1);
      if (command.senderTime !== undefined) writer.u64(command.senderTime);
      writer.bytes(command.body);
      return;
    }
    case "receive":
      writer.string(command.mailbox);
      writer.f64(command.max);
      optionalNumber(writer, command.visibilityMs);
      optionalString(writer, command.consumer);
      if (command.ackLeases !== undefined) {
        writer.u8(command.ack === undefined ? 0 : 1);
        if (command.ack !== undefined) strings(writer, command.ack);
        strings(writer, command.ackLeases);
      } else if (command.ack !== undefined) {
        strings(writer, command.ack);
      }
      return;
    case "ack":
    case "nack":
      writer.string(command.mailbox);
      strings(writer, command.ids);
      optionalNumber(writer, command.delayMs);
      return;
    case "extend":
      writer.string(command.mailbox);
      strings(writer, command.ids);
      writer.f64(command.visibilityMs);
      return;
    case "purge":
    case "delete":
      writer.string(command.mailbox);
      return;
    case "set-mailbox-config": {
      writer.string(command.mailbox);
      for (const field of CONFIG_NUMBER_FIELDS) optionalNumber(writer, command.config[field]);
      optionalString(writer, command.config.overflow);
      optionalString(writer, command.config.expiry);
      optionalNumber(writer, command.config.reorderWindowMs);
      optionalString(writer, command.config.order);
      return;
    }
  }
}

// Whether decodeCommands(encodeCommands(commands)) gives back every field the broker reads of
// these commands, value for value: then the leader may apply the commands it holds instead of
// decoding the entry it encoded from them (FerryNode.applyEntry), and its state is the one its
// followers and its own WAL replay build. The encoding is exact except for: an optional number
// of -1 (it reads back as absent), a string with a lone surrogate (it reads back with U+FFFD), a
// sender time outside [0, 2^64) (wrapped), and fields it does not carry (the broker reads none of
// those). Only the commands of the hot path are vouched for (send, receive, ack, nack); any other
// answers false and is decoded as on a follower. test/broker/held-commands.test.ts holds the
// claim against the encoding and against two brokers fed either way.
export function roundTripsExactly(commands: readonly BrokerCommand[]): boolean {
  for (const command of commands) {
    switch (command.op) {
      case "send":
        if (!roundTripsUtf8(command.sender) || !allRoundTrip(command.recipients)) return false;
        if (command.id !== undefined && !roundTripsUtf8(command.id)) return false;
        if (command.delayMs === -1 || command.ttlMs === -1) return false;
        if (command.senderTime !== undefined && !(command.senderTime >= 0n && command.senderTime < U64_LIMIT)) return false;
        if (command.headers !== undefined) {
          for (const [name, value] of Object.entries(command.headers)) {
            if (!roundTripsUtf8(name) || !roundTripsUtf8(value)) return false;
          }
        }
        break;
      case "receive":
        if (!roundTripsUtf8(command.mailbox) || command.visibilityMs === -1) return false;
        if (command.consumer !== undefined && !roundTripsUtf8(command.consumer)) return false;
        if (command.ack !== undefined && !allRoundTrip(command.ack)) return false;
        if (command.ackLeases !== undefined && !allRoundTrip(command.ackLeases)) return false;
        break;
      case "ack":
      case "nack":
        if (!roundTripsUtf8(command.mailbox) || !allRoundTrip(command.ids) || command.delayMs === -1) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

const U64_LIMIT = 1n << 64n;

function allRoundTrip(values: readonly string[]): boolean {
  for (const value of values) if (!roundTripsUtf8(value)) return false;
  return true;
}

// commandSet: the set this node applies (COMMAND_SET; lower only to stand for an older node in
// tests): a command of a newer set is refused as that node would refuse it.
export function decodeCommands(data: Uint8Array, commandSet = COMMAND_SET): BrokerCommand[] {
  try {
    const reader = new ByteReader(data);
    const version = reader.u8();
    if (version !== ENCODING_VERSION && version !== 1) throw new CommandDecodeError(`unknown command encoding version ${version}`);
    const count = reader.u32();
    // Every command takes at least 5 bytes, so a corrupt count cannot allocate much.
    if (count * 5 > data.length) throw new CommandDecodeError(`command count ${count} exceeds the input`);
    const commands: BrokerCommand[] = [];
    for (let i = 0; i < count; i++) commands.push(decodeCommand(reader, version, commandSet));
    if (!reader.done()) throw new CommandDecodeError("trailing bytes after the commands");
    return commands;
  } catch (error) {
    if (error instanceof CommandDecodeError) throw error;
    throw new CommandDecodeError(`corrupt command batch: ${(error as Error).message}`);
  }
}

function readOptionalNumber(reader: ByteReader): number | undefined {
  const value = reader.f64();
  return value === -1 ? undefined : value;
}
function readOptionalString(reader: ByteReader): string | undefined {
  return reader.u8() === 0 ? undefined : reader.string();
}
function readStrings(reader: ByteReader): string[] {
  return reader.strings(reader.u32());
}

const NO_BODY = new Uint8Array(0);

function decodeCommand(reader: ByteReader, version: number, commandSet: number): BrokerCommand {
  const tag = reader.u8();
  if (tag === TAG_RECEIVE_ACKING && commandSet < COMMAND_SET_ACKING_RECEIVE) throw new CommandDecodeError(`unknown command tag ${tag}`);
  if (tag === TAG_RECEIVE_LEASE_ACKING && commandSet < COMMAND_SET_LEASE_ACKS) throw new CommandDecodeError(`unknown command tag ${tag}`);
  switch (tag) {
    case TAG.send: {
      const sender = reader.string();
      const recipients = readStrings(reader);
      const command: SendCommand = { op: "send", sender, recipients, body: NO_BODY }; // the body comes last
      const id = readOptionalString(reader);
      const delayMs = readOptionalNumber(reader);
      const ttlMs = readOptionalNumber(reader);
      if (id !== undefined) command.id = id;
      if (delayMs !== undefined) command.delayMs = delayMs;
      if (ttlMs !== undefined) command.ttlMs = ttlMs;
      const headerCount = reader.u32();
      if (headerCount !== 0xffffffff) {
        const headers: Record<string, string> = {};
        for (let i = 0; i < headerCount; i++) setOwn(headers, reader.string(), reader.string());
        command.headers = headers;
      }
      if (version >= 2 && reader.u8() === 1) command.senderTime = reader.u64();
      command.body = reader.bytes();
      return command;
    }
    case TAG.receive:
    case TAG_RECEIVE_ACKING:
    case TAG_RECEIVE_LEASE_ACKING: {
      const command: ReceiveCommand = { op: "receive", mailbox: reader.string(), max: reader.f64() };
      const visibilityMs = readOptionalNumber(reader);
      const consumer = readOptionalString(reader);
      if (visibilityMs !== undefined) command.visibilityMs = visibilityMs;
      if (consumer !== undefined) command.consumer = consumer;
      if (tag === TAG_RECEIVE_ACKING) command.ack = readStrings(reader);
      if (tag === TAG_RECEIVE_LEASE_ACKING) {
        if (reader.u8() === 1) command.ack = readStrings(reader);
        command.ackLeases = readStrings(reader);
      }
      return command;
    }
    case TAG.ack:
    case TAG.nack: {
      const command: AckCommand = { op: tag === TAG.ack ? "ack" : "nack", mailbox: reader.string(), ids: readStrings(reader) };
      const delayMs = readOptionalNumber(reader);
      if (delayMs !== undefined) command.delayMs = delayMs;
      return command;
    }
    case TAG.extend:
      return { op: "extend", mailbox: reader.string(), ids: readStrings(reader), visibilityMs: reader.f64() };
    case TAG.purge:
    case TAG.delete:
      return { op: tag === TAG.purge ? "purge" : "delete", mailbox: reader.string() };
    case TAG["set-mailbox-config"]: {
      const mailbox = reader.string();
      const config: Partial<MailboxConfig> = {};
      for (const field of CONFIG_NUMBER_FIELDS) {
        const value = readOptionalNumber(reader);
        if (value !== undefined) config[field] = value;
      }
      const overflow = readOptionalString(reader);
      const expiry = readOptionalString(reader);
      if (overflow !== undefined) config.overflow = overflow as OverflowPolicy;
      if (expiry !== undefined) config.expiry = expiry as ExpiryPolicy;
      if (version >= 2) {
        const reorderWindowMs = readOptionalNumber(reader);
        const order = readOptionalString(reader);
        if (reorderWindowMs !== undefined) config.reorderWindowMs = reorderWindowMs;
        if (order !== undefined) config.order = order as OrderMode;
      }
      return { op: "set-mailbox-config", mailbox, config };
    }
    default:
      throw new CommandDecodeError(`unknown command tag ${tag}`);
  }
}
