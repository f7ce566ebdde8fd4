// Checks a decoded request before it reaches the node, for both protocols: shapes and types (the
// binary protocol carries arbitrary msgpack), names, sizes and ranges. Returns a fresh object with
// only the known fields, so nothing a client adds (such as `sender`) reaches the node unchecked.
// Throws FerryError INVALID or TOO_LARGE.
import type {
  AckRequest,
  ClientRequest,
  ClusterRequest,
  ConfigRequest,
  ExtendRequest,
  HelloRequest,
  ListRequest,
  MailboxSettings,
  ReceiveRequest,
  SendRequest,
  Timestamp,
} from "../protocol/api.js";
import { LIST_PAGE_MAX, RECEIVE_MAX } from "../protocol/api.js";
import { RID_MAX } from "../protocol/binary.js";
import { FerryError } from "../protocol/errors.js";
import { parseLeaseName } from "../protocol/leases.js";
import { nameProblem } from "../protocol/names.js";
import { DURATION_MS_MAX, MESSAGE_ID_LENGTH_MAX, type ServerLimits } from "./limits.js";

type Fields = Record<string, unknown>;

function invalid(message: string): FerryError {
  return new FerryError("INVALID", message);
}

function tooLarge(message: string): FerryError {
  return new FerryError("TOO_LARGE", message);
}

export function validateRequest(raw: unknown, limits: ServerLimits): ClientRequest {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw invalid("a request must be a map");
  const fields = raw as Fields;
  const op = fields.op;
  switch (op) {
    case "send":
      return validateSend(fields, limits);
    case "receive":
      return validateReceive(fields, limits);
    case "ack":
    case "nack":
      return validateAck(op, fields, limits);
    case "extend":
      return validateExtend(fields, limits);
    case "list":
      return validateList(fields);
    case "purge":
    case "delete":
      return { op, mailbox: name(fields.mailbox, "mailbox") };
    case "config":
      return validateConfig(fields);
    case "status":
      return { op };
    case "cluster":
      return validateCluster(fields);
    case "hello":
      return validateHello(fields);
    case "cancel":
      if (!(typeof fields.of === "number" && Number.isInteger(fields.of) && fields.of >= 1 && fields.of <= RID_MAX)) throw invalid(`of must be the rid of a request in flight, an integer from 1 to ${RID_MAX}`);
      return { op, of: fields.of };
    default:
      throw invalid(`unknown op ${typeof op === "string" ? `'${op.slice(0, 40)}'` : typeof op}`);
  }
}

export const PASSWORD_BYTES_MAX = 1024;

function validateHello(fields: Record<string, unknown>): HelloRequest {
  const hello: HelloRequest = { op: "hello", name: name(fields.name, "name") };
  if (typeof fields.forwardProof === "string") hello.forwardProof = fields.forwardProof.slice(0, 128);
  if (fields.user !== undefined || fields.password !== undefined) {
    hello.user = name(fields.user, "user");
    if (typeof fields.password !== "string") throw invalid("password must be a string");
    if (Buffer.byteLength(fields.password) > PASSWORD_BYTES_MAX) throw invalid(`password longer than ${PASSWORD_BYTES_MAX} bytes`);
    hello.password = fields.password;
  }
  return hello;
}

function name(value: unknown, what: string): string {
  if (typeof value !== "string") throw invalid(`${what} must be a string`);
  const problem = nameProblem(value);
  if (problem !== undefined) throw invalid(`${what}: ${problem}`);
  return value;
}

// Message ids and cursors: one word of printable ASCII, so they fit the text protocol.
function word(value: unknown, what: string): string {
  if (typeof value !== "string") throw invalid(`${what} must be a string`);
  if (value.length === 0 || value.length > MESSAGE_ID_LENGTH_MAX) throw invalid(`${what} must be 1-${MESSAGE_ID_LENGTH_MAX} characters`);
  if (!/^[\x21-\x7e]+$/.test(value)) throw invalid(`${what} may contain only printable ASCII without spaces`);
  return value;
}

function integer(value: unknown, what: string, minimum: number, maximum: number): number {
  const number = typeof value === "bigint" && value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= 0n ? Number(value) : value;
  if (typeof number !== "number" || !Number.isSafeInteger(number)) throw invalid(`${what} must be an integer`);
  if (number < minimum || number > maximum) throw invalid(`${what} must be between ${minimum} and ${maximum}, got ${number}`);
  return number;
}

function optionalInteger(value: unknown, what: string, minimum: number, maximum: number): number | undefined {
  return value === undefined || value === null ? undefined : integer(value, what, minimum, maximum);
}

// Timestamps travel as int64 (bigint), as a smaller integer, or as a decimal string.
function timestamp(value: unknown, what: string): Timestamp | undefined {
  if (value === undefined || value === null) return undefined;
  let result: bigint | undefined;
  if (typeof value === "bigint") result = value;
  else if (typeof value === "number" && Number.isSafeInteger(value)) result = BigInt(value);
  else if (typeof value === "string" && /^[0-9]{1,20}$/.test(value)) result = BigInt(value);
  if (result === undefined || result < 0n || result >= 1n << 64n) throw invalid(`${what} must be a timestamp (unsigned 64-bit integer)`);
  return result;
}

function ids(value: unknown, limits: ServerLimits): string[] {
  if (!Array.isArray(value) || value.length === 0) throw invalid("ids must be a non-empty list");
  if (value.length > limits.idsPerRequestMax) throw tooLarge(`${value.length} ids in one request; the limit is ${limits.idsPerRequestMax}`);
  // The request's own (freshly decoded) array, checked in place: no copy per ACK of a batch.
  for (const id of value) word(id, "id");
  return value as string[];
}

// Lease names (ReceiveRequest.ackLeases): each counts as an id toward idsPerRequestMax.
function leaseNames(value: unknown, ids: number, limits: ServerLimits): string[] {
  if (!Array.isArray(value) || value.length === 0) throw invalid("ackLeases must be a non-empty list");
  if (ids + value.length > limits.idsPerRequestMax) {
    throw tooLarge(`${ids} ids and ${value.length} lease names in one request; the limit is ${limits.idsPerRequestMax}`);
  }
  for (const name of value) if (parseLeaseName(name) === undefined) throw invalid(`lease name '${String(name).slice(0, 64)}' is malformed`);
  return value as string[];
}

function body(value: unknown, limits: ServerLimits): Uint8Array {
  let bytes: Uint8Array;
  if (value instanceof Uint8Array) bytes = value;
  else if (typeof value === "string") bytes = Buffer.from(value, "utf8");
  else throw invalid("body must be bytes or a string");
  if (bytes.length > limits.bodyBytesMax) throw tooLarge(`body of ${bytes.length} bytes; the limit is ${limits.bodyBytesMax}`);
  return bytes;
}

function headers(value: unknown, limits: ServerLimits): Record<string, string> | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) throw invalid("headers must be a map of strings");
  const result: Record<string, string> = {};
  let bytes = 0;
  for (const [key, entry] of Object.entries(value as Fields)) {
    if (typeof entry !== "string" || key.length === 0) throw invalid("headers must be a map of non-empty keys to strings");
    bytes += Buffer.byteLength(key) + Buffer.byteLength(entry);
    result[key] = entry;
  }
  if (bytes > limits.headersBytesMax) throw tooLarge(`headers of ${bytes} bytes; the limit is ${limits.headersBytesMax}`);
  return result;
}

function validateSend(fields: Fields, limits: ServerLimits): SendRequest {
  const recipients = fields.recipients;
  if (!Array.isArray(recipients) || recipients.length === 0) throw invalid("recipients must be a non-empty list");
  if (recipients.length > limits.recipientsPerSendMax) {
    throw tooLarge(`${recipients.length} recipients; the limit is ${limits.recipientsPerSendMax}`);
  }
  const names = recipients.map((recipient) => name(recipient, "recipient"));
  const bytes = body(fields.body, limits);
  if (!distinct(names)) throw invalid("recipients must be distinct");
  // The usual SEND (with an id, nothing else) is built whole: no property added afterwards.
  const send: SendRequest =
    fields.id !== undefined && fields.id !== null ? { op: "send", recipients: names, body: bytes, id: word(fields.id, "id") } : { op: "send", recipients: names, body: bytes };
  const headerMap = headers(fields.headers, limits);
  if (headerMap !== undefined) send.headers = headerMap;
  const delayMs = optionalInteger(fields.delayMs, "delayMs", 0, DURATION_MS_MAX);
  if (delayMs !== undefined) send.delayMs = delayMs;
  const ttlMs = optionalInteger(fields.ttlMs, "ttlMs", 1, DURATION_MS_MAX);
  if (ttlMs !== undefined) send.ttlMs = ttlMs;
  const after = timestamp(fields.after, "after");
  if (after !== undefined) send.after = after;
  const senderTime = timestamp(fields.senderTime, "senderTime");
  if (senderTime !== undefined) send.senderTime = senderTime;
  // Honoured only from a trusted forwarder (the node checks the session); harmless otherwise.
  if (typeof fields.sender === "string") send.sender = name(fields.sender, "sender");
  return send;
}

// Most SENDs name one or a few recipients: comparing pairs costs less than building a Set.
const DISTINCT_BY_PAIRS_MAX = 8;

function distinct(values: string[]): boolean {
  if (values.length > DISTINCT_BY_PAIRS_MAX) return new Set(values).size === values.length;
  for (let i = 1; i < values.length; i++) for (let j = 0; j < i; j++) if (values[i] === values[j]) return false;
  return true;
}

function validateReceive(fields: Fields, limits: ServerLimits): ReceiveRequest {
  const receive: ReceiveRequest = {
    op: "receive",
    mailbox: name(fields.mailbox, "mailbox"),
    max: fields.max === undefined ? 1 : integer(fields.max, "max", 1, RECEIVE_MAX),
  };
  const waitMs = optionalInteger(fields.waitMs, "wait-ms", 0, limits.receiveWaitMsMax);
  if (waitMs !== undefined) receive.waitMs = waitMs;
  const visibilityMs = optionalInteger(fields.visibilityMs, "visibility-ms", 1, DURATION_MS_MAX);
  if (visibilityMs !== undefined) receive.visibilityMs = visibilityMs;
  const after = timestamp(fields.after, "after");
  if (after !== undefined) receive.after = after;
  if (fields.ack !== undefined && fields.ack !== null) receive.ack = ids(fields.ack, limits);
  if (fields.ackLeases !== undefined && fields.ackLeases !== null) receive.ackLeases = leaseNames(fields.ackLeases, receive.ack?.length ?? 0, limits);
  return receive;
}

function validateAck(op: "ack" | "nack", fields: Fields, limits: ServerLimits): AckRequest {
  const ack: AckRequest = { op, mailbox: name(fields.mailbox, "mailbox"), ids: ids(fields.ids, limits) };
  if (op === "nack") {
    const delayMs = optionalInteger(fields.delayMs, "delayMs", 0, DURATION_MS_MAX);
    if (delayMs !== undefined) ack.delayMs = delayMs;
  }
  return ack;
}

function validateExtend(fields: Fields, limits: ServerLimits): ExtendRequest {
  return {
    op: "extend",
    mailbox: name(fields.mailbox, "mailbox"),
    ids: ids(fields.ids, limits),
    visibilityMs: integer(fields.visibilityMs, "visibility-ms", 1, DURATION_MS_MAX),
  };
}

function validateList(fields: Fields): ListRequest {
  const list: ListRequest = { op: "list", mailbox: name(fields.mailbox, "mailbox") };
  const limit = optionalInteger(fields.limit, "limit", 1, LIST_PAGE_MAX);
  if (limit !== undefined) list.limit = limit;
  if (fields.cursor !== undefined && fields.cursor !== null) list.cursor = word(fields.cursor, "cursor");
  if (fields.stale !== undefined && fields.stale !== null) {
    if (typeof fields.stale !== "boolean") throw invalid("stale must be a boolean");
    list.stale = fields.stale;
  }
  return list;
}

// Mailbox settings: known keys only, integers in range, policies by name. The broker checks its
// own (configurable, tighter) limits again when it applies the command.
const SETTING_RANGES: Record<"visibilityMs" | "deliveriesMax" | "messagesMax" | "bytesMax" | "ttlMs" | "reorderWindowMs", [number, number]> = {
  visibilityMs: [1, DURATION_MS_MAX],
  deliveriesMax: [1, 1_000_000],
  messagesMax: [1, Number.MAX_SAFE_INTEGER],
  bytesMax: [1, Number.MAX_SAFE_INTEGER],
  ttlMs: [0, DURATION_MS_MAX],
  reorderWindowMs: [0, DURATION_MS_MAX],
};
const SETTING_CHOICES: Record<"overflow" | "expiry" | "order", readonly string[]> = {
  overflow: ["reject", "drop-oldest"],
  expiry: ["drop", "dead-letter"],
  order: ["log", "sender-time"],
};

function validateConfig(fields: Fields): ConfigRequest {
  const raw = fields.settings ?? {};
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw invalid("settings must be a map");
  const settings: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw as Fields)) {
    if (value === undefined || value === null) continue;
    if (Object.hasOwn(SETTING_RANGES, key)) {
      const [minimum, maximum] = SETTING_RANGES[key as keyof typeof SETTING_RANGES];
      settings[key] = integer(value, key, minimum, maximum);
    } else if (Object.hasOwn(SETTING_CHOICES, key)) {
      const choices = SETTING_CHOICES[key as keyof typeof SETTING_CHOICES];
      if (typeof value !== "string" || !choices.includes(value)) throw invalid(`${key} must be one of ${choices.join(", ")}`);
      settings[key] = value;
    } else {
      throw invalid(`unknown mailbox setting '${key.slice(0, 40)}'`);
    }
  }
  return { op: "config", mailbox: name(fields.mailbox, "mailbox"), settings: settings as Partial<MailboxSettings> };
}

// host:port with a port; the node resolves and connects.
function address(value: unknown, what: string): string {
  if (typeof value !== "string" || !/^[A-Za-z0-9.\-:[\]]{1,253}:[0-9]{1,5}$/.test(value)) throw invalid(`${what} must be host:port`);
  return value;
}

function validateCluster(fields: Fields): ClusterRequest {
  const action = fields.action;
  if (action !== "add" && action !== "remove" && action !== "transfer") throw invalid("action must be add, remove or transfer");
  const nodeId = integer(fields.nodeId ?? (action === "transfer" ? 0 : undefined), "nodeId", action === "transfer" ? 0 : 1, 0xffff_ffff);
  const cluster: ClusterRequest = { op: "cluster", action, nodeId };
  if (action === "add") {
    cluster.peerAddress = address(fields.peerAddress, "peerAddress");
    cluster.clientAddress = address(fields.clientAddress, "clientAddress");
  }
  return cluster;
}
