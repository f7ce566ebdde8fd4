// The text protocol (design.md §3): one request per line, so `nc host port` is a working client.
//
// Three parts, none of which touches a socket:
// - LineParser: a resumable state machine fed arbitrary chunks of bytes. It emits complete lines
//   (LF or CRLF) and enforces the line length limit itself: it never buffers more than
//   lineBytesMax + 1 bytes (the +1 is a CR that may turn out to precede the LF). An over-long line
//   yields one `tooLarge` event and the rest of it is discarded; the next line parses normally.
// - parseCommand: one line → a typed command (syntax only: words, numbers, usage). Semantic checks
//   (names, sizes, ranges) belong to the server, which applies the same rules to both protocols.
// - format*: replies → lines (without the trailing LF).
// In bodies `\n` stands for a newline and `\\` for a backslash, both ways; `\r` for a carriage
// return (an extension, so that any body round-trips). Any other backslash is kept as it is.
import type {
  AckRequest,
  ClientRequest,
  ClusterRequest,
  ConfigReply,
  ConfigRequest,
  DeliveredMessage,
  ListItem,
  ListRequest,
  MailboxSettings,
  ReceiveRequest,
  Reply,
  SendRequest,
  StatusReply,
} from "./api.js";
import { FerryError } from "./errors.js";

export const LINE_BYTES_MAX_DEFAULT = 2 * 1024 * 1024 + 4096; // a 1 MiB body fully escaped, plus words

const LF = 0x0a;
const CR = 0x0d;

export type LineEvent = { kind: "line"; text: string } | { kind: "tooLarge"; bytes: number };

// Splits a byte stream into lines. States: "reading" (bytes of a line accumulate) and
// "discarding" (the current line went over the limit; skip to its LF).
export class LineParser {
  private state: "reading" | "discarding" = "reading";
  private parts: Buffer[] = [];
  private partsBytes = 0;

  constructor(readonly lineBytesMax: number = LINE_BYTES_MAX_DEFAULT) {
    if (!Number.isSafeInteger(lineBytesMax) || lineBytesMax < 1) throw new RangeError("lineBytesMax must be a positive integer");
  }

  // Bytes held for the line in progress; never above lineBytesMax + 1.
  get bufferedBytes(): number {
    return this.partsBytes;
  }

  feed(chunk: Uint8Array): LineEvent[] {
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const events: LineEvent[] = [];
    let position = 0;
    while (position < bytes.length) {
      const newline = bytes.indexOf(LF, position);
      const end = newline === -1 ? bytes.length : newline;
      if (this.state === "discarding") {
        if (newline !== -1) this.state = "reading";
      } else {
        this.take(bytes.subarray(position, end), newline !== -1, events);
      }
      position = newline === -1 ? bytes.length : newline + 1;
    }
    return events;
  }

  // Adds a piece of the current line; `complete` when the piece ends at an LF.
  private take(piece: Buffer, complete: boolean, events: LineEvent[]): void {
    const total = this.partsBytes + piece.length;
    if (!complete) {
      if (total > this.lineBytesMax + 1) {
        this.overflow(total, events, true);
        return;
      }
      if (piece.length > 0) this.parts.push(Buffer.from(piece)); // a copy: the caller may reuse its buffer
      this.partsBytes = total;
      return;
    }
    const line = this.parts.length === 0 ? piece : Buffer.concat([...this.parts, piece], total);
    const length = line.length > 0 && line[line.length - 1] === CR ? line.length - 1 : line.length;
    if (length > this.lineBytesMax) {
      this.overflow(length, events, false);
      return;
    }
    this.reset();
    events.push({ kind: "line", text: line.toString("utf8", 0, length) });
  }

  private overflow(bytes: number, events: LineEvent[], discardRest: boolean): void {
    this.reset();
    if (discardRest) this.state = "discarding";
    events.push({ kind: "tooLarge", bytes });
  }

  private reset(): void {
    this.parts = [];
    this.partsBytes = 0;
  }
}

// ---- bodies ----

export function escapeBody(text: string): string {
  return text.replace(/[\\\n\r]/g, (c) => (c === "\\" ? "\\\\" : c === "\n" ? "\\n" : "\\r"));
}

export function unescapeBody(text: string): string {
  if (!text.includes("\\")) return text;
  return text.replace(/\\([\\nr])/g, (_, c: string) => (c === "\\" ? "\\" : c === "n" ? "\n" : "\r"));
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8"); // invalid UTF-8 from binary clients shows as U+FFFD

export function bodyFromText(text: string): Uint8Array {
  return encoder.encode(unescapeBody(text));
}

export function bodyToText(body: Uint8Array): string {
  return escapeBody(decoder.decode(body));
}

// ---- commands ----

export type TextCommand =
  | { kind: "request"; request: ClientRequest }
  | { kind: "help" }
  | { kind: "quit" }
  | { kind: "ping" };

// One line per command, shown by HELP (the node may add lines of its own).
export const TEXT_COMMANDS_HELP: readonly string[] = [
  "SEND <recipient>[,<recipient>...] <body>        -> OK <id>",
  "SENDID <recipient>[,<recipient>...] <id> <body> -> OK <id>   (idempotent: a retry with the same id stores nothing)",
  "SENDAT <recipient>[,<recipient>...] <sender-time> <body> -> OK <id>   (sender-time: an HLC timestamp, orders the message in a sender-time mailbox)",
  "RECEIVE <recipient> [<max> [<wait-ms> [<visibility-ms>]]] -> MSG <id> <sender> <timestamp> <deliveries> <body> ... END",
  "ACK <recipient> <id> [<id> ...]                  -> OK <removed>",
  "NACK <recipient> <id> [<id> ...]                 -> OK <released>",
  "EXTEND <recipient> <visibility-ms> <id> [<id> ...] -> OK <extended>",
  "LIST <recipient> [<limit> [<cursor>]]            -> ITEM <id> <sender> <timestamp> <state> <deliveries> <bytes> ... [NEXT <cursor>] END",
  "PURGE <recipient>                                -> OK <removed>",
  "DELETE <recipient>                               -> OK <removed>",
  "CONFIG <recipient> [<key>=<value> ...]           -> OK <key>=<value> ...   (replaces the mailbox's settings; keys: visibility-ms deliveries-max messages-max bytes-max overflow ttl-ms expiry order reorder-window-ms)",
  "STATUS                                           -> NODE ... lines, END",
  "CLUSTER ADD <node-id> <peer-host:port> <client-host:port> | CLUSTER REMOVE <node-id> | CLUSTER TRANSFER [<node-id>] -> OK <message>",
  "HELLO <name>                                     -> OK   (sets the sender of later SENDs)",
  "AUTH <user> <password>                           -> OK   (log in: a node with a users file requires it; the user is the sender)",
  "PING                                             -> OK",
  "HELP                                             -> these lines, END",
  "QUIT                                             -> OK, then the connection closes",
  "Bodies: \\n is a newline, \\\\ a backslash, \\r a carriage return. Commands are case-insensitive.",
];

function invalid(message: string): FerryError {
  return new FerryError("INVALID", message);
}

// Parses a decimal integer argument (digits only, no sign, at most 2^53 - 1).
export function parseCount(word: string, what: string): number {
  if (!/^[0-9]{1,16}$/.test(word)) throw invalid(`${what} must be a non-negative integer, got '${word}'`);
  const value = Number(word);
  if (!Number.isSafeInteger(value)) throw invalid(`${what} is too large: ${word}`);
  return value;
}

// Splits off the first `count` space-separated words; the rest of the line (after one space) is
// returned untouched, so a body keeps its own spaces.
function splitWords(text: string, count: number): { words: string[]; rest: string | undefined } {
  const words: string[] = [];
  let position = 0;
  while (words.length < count) {
    const space = text.indexOf(" ", position);
    if (space === -1) {
      words.push(text.slice(position));
      return { words, rest: undefined };
    }
    words.push(text.slice(position, space));
    position = space + 1;
  }
  return { words, rest: text.slice(position) };
}

// Words of a command without a body: extra spaces between words are forgiven.
function argumentWords(text: string): string[] {
  return text.split(" ").filter((word) => word.length > 0);
}

export function parseCommand(line: string): TextCommand {
  const space = line.indexOf(" ");
  const verb = (space === -1 ? line : line.slice(0, space)).toUpperCase();
  const tail = space === -1 ? "" : line.slice(space + 1);
  switch (verb) {
    case "SEND":
      return request(parseSend(tail, false));
    case "SENDID":
      return request(parseSend(tail, true));
    case "SENDAT":
      return request(parseSendAt(tail));
    case "CONFIG":
      return request(parseConfig(argumentWords(tail)));
    case "RECEIVE":
      return request(parseReceive(argumentWords(tail)));
    case "ACK":
    case "NACK":
      return request(parseAck(verb === "ACK" ? "ack" : "nack", argumentWords(tail)));
    case "EXTEND":
      return request(parseExtend(argumentWords(tail)));
    case "LIST":
      return request(parseList(argumentWords(tail)));
    case "PURGE":
    case "DELETE":
      return request({ op: verb === "PURGE" ? "purge" : "delete", mailbox: exactlyOne(tail, verb) });
    case "STATUS":
      noArguments(tail, verb);
      return request({ op: "status" });
    case "CLUSTER":
      return request(parseCluster(argumentWords(tail)));
    case "HELLO":
      return request({ op: "hello", name: exactlyOne(tail, verb) });
    case "AUTH": {
      // The password is the rest of the line (it may hold spaces).
      const { words, rest } = splitWords(tail, 1);
      if (words[0] === "" || rest === undefined || rest === "") throw invalid("usage: AUTH <user> <password>");
      return request({ op: "hello", name: words[0]!, user: words[0]!, password: rest });
    }
    case "HELP":
      noArguments(tail, verb);
      return { kind: "help" };
    case "QUIT":
      noArguments(tail, verb);
      return { kind: "quit" };
    case "PING":
      noArguments(tail, verb);
      return { kind: "ping" };
    case "":
      throw invalid("empty line; try HELP");
    default:
      throw invalid(`unknown command '${truncate(verb)}'; try HELP`);
  }
}

function request(value: ClientRequest): TextCommand {
  return { kind: "request", request: value };
}

function truncate(text: string): string {
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}

function noArguments(tail: string, verb: string): void {
  if (tail.trim().length > 0) throw invalid(`${verb} takes no arguments`);
}

function exactlyOne(tail: string, verb: string): string {
  const words = argumentWords(tail);
  if (words.length !== 1) throw invalid(`usage: ${verb} <name>`);
  return words[0]!;
}

function parseSend(tail: string, withId: boolean): SendRequest {
  const usage = withId ? "usage: SENDID <recipient> <id> <body>" : "usage: SEND <recipient> <body>";
  const { words, rest } = splitWords(tail, withId ? 2 : 1);
  if (rest === undefined || words.some((word) => word.length === 0)) throw invalid(usage);
  const send: SendRequest = { op: "send", recipients: words[0]!.split(","), body: bodyFromText(rest) };
  if (withId) send.id = words[1]!;
  return send;
}

function parseSendAt(tail: string): SendRequest {
  const { words, rest } = splitWords(tail, 2);
  if (rest === undefined || words.some((word) => word.length === 0)) throw invalid("usage: SENDAT <recipient> <sender-time> <body>");
  if (!/^[0-9]{1,20}$/.test(words[1]!)) throw invalid(`sender-time must be a timestamp (decimal integer), got '${truncate(words[1]!)}'`);
  return { op: "send", recipients: words[0]!.split(","), body: bodyFromText(rest), senderTime: BigInt(words[1]!) };
}

// Text names of the mailbox settings (the words of `CONFIG` and of its reply).
const SETTING_WORDS: ReadonlyArray<[string, keyof MailboxSettings, "number" | "word"]> = [
  ["visibility-ms", "visibilityMs", "number"],
  ["deliveries-max", "deliveriesMax", "number"],
  ["messages-max", "messagesMax", "number"],
  ["bytes-max", "bytesMax", "number"],
  ["overflow", "overflow", "word"],
  ["ttl-ms", "ttlMs", "number"],
  ["expiry", "expiry", "word"],
  ["order", "order", "word"],
  ["reorder-window-ms", "reorderWindowMs", "number"],
];

function parseConfig(words: string[]): ConfigRequest {
  if (words.length < 1) throw invalid("usage: CONFIG <recipient> [<key>=<value> ...]");
  const settings: Record<string, string | number> = {};
  for (const word of words.slice(1)) {
    const equals = word.indexOf("=");
    const key = equals === -1 ? word : word.slice(0, equals).toLowerCase();
    const setting = SETTING_WORDS.find(([text]) => text === key);
    if (equals === -1 || setting === undefined) {
      throw invalid(`CONFIG takes <key>=<value> with a key among ${SETTING_WORDS.map(([text]) => text).join(" ")}, got '${truncate(word)}'`);
    }
    const value = word.slice(equals + 1);
    settings[setting[1]] = setting[2] === "number" ? parseCount(value, key) : value;
  }
  return { op: "config", mailbox: words[0]!, settings: settings as Partial<MailboxSettings> };
}

export function formatConfig(config: MailboxSettings): string {
  return `OK ${SETTING_WORDS.map(([text, field]) => `${text}=${config[field]}`).join(" ")}`;
}

function parseReceive(words: string[]): ReceiveRequest {
  if (words.length < 1 || words.length > 4) throw invalid("usage: RECEIVE <recipient> [<max> [<wait-ms> [<visibility-ms>]]]");
  const receive: ReceiveRequest = { op: "receive", mailbox: words[0]!, max: 1 };
  if (words[1] !== undefined) receive.max = parseCount(words[1], "max");
  if (words[2] !== undefined) receive.waitMs = parseCount(words[2], "wait-ms");
  if (words[3] !== undefined) receive.visibilityMs = parseCount(words[3], "visibility-ms");
  return receive;
}

function parseAck(op: "ack" | "nack", words: string[]): AckRequest {
  if (words.length < 2) throw invalid(`usage: ${op.toUpperCase()} <recipient> <id> [<id> ...]`);
  return { op, mailbox: words[0]!, ids: words.slice(1) };
}

function parseExtend(words: string[]): ClientRequest {
  if (words.length < 3) throw invalid("usage: EXTEND <recipient> <visibility-ms> <id> [<id> ...]");
  return { op: "extend", mailbox: words[0]!, visibilityMs: parseCount(words[1]!, "visibility-ms"), ids: words.slice(2) };
}

function parseList(words: string[]): ListRequest {
  if (words.length < 1 || words.length > 3) throw invalid("usage: LIST <recipient> [<limit> [<cursor>]]");
  const list: ListRequest = { op: "list", mailbox: words[0]! };
  if (words[1] !== undefined) list.limit = parseCount(words[1], "limit");
  if (words[2] !== undefined) list.cursor = words[2];
  return list;
}

function parseCluster(words: string[]): ClusterRequest {
  const action = (words[0] ?? "").toUpperCase();
  if (action === "ADD" && words.length === 4) {
    return { op: "cluster", action: "add", nodeId: parseCount(words[1]!, "node-id"), peerAddress: words[2]!, clientAddress: words[3]! };
  }
  if (action === "REMOVE" && words.length === 2) {
    return { op: "cluster", action: "remove", nodeId: parseCount(words[1]!, "node-id") };
  }
  if (action === "TRANSFER" && words.length <= 2) {
    return { op: "cluster", action: "transfer", nodeId: words[1] === undefined ? 0 : parseCount(words[1], "node-id") };
  }
  throw invalid("usage: CLUSTER ADD <node-id> <peer-host:port> <client-host:port> | CLUSTER REMOVE <node-id> | CLUSTER TRANSFER [<node-id>]");
}

// ---- replies ----

// A message for one line: no line breaks, so the reply stays one line whatever the cause.
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, " ");
}

export function formatError(code: string, message: string): string {
  return `ERR ${code} ${oneLine(message)}`;
}

export function formatMessage(message: DeliveredMessage): string {
  return `MSG ${message.id} ${message.sender} ${message.timestamp} ${message.deliveries} ${bodyToText(message.body)}`;
}

export function formatItem(item: ListItem): string {
  return `ITEM ${item.id} ${item.sender} ${item.timestamp} ${item.state} ${item.deliveries} ${item.bytes}`;
}

export function formatStatus(status: StatusReply): string[] {
  const lines = status.nodes.map((node) => {
    const fields = [
      `NODE ${node.id}`,
      `address=${node.address}`,
      `role=${node.role}`,
      `term=${node.term}`,
      `leader=${node.leader}`,
      `commit=${node.commit}`,
      `applied=${node.applied}`,
    ];
    if (node.lag !== undefined) fields.push(`lag=${node.lag}`);
    if (node.clockOffsetMs !== undefined) fields.push(`clock-offset-ms=${node.clockOffsetMs}`);
    fields.push(`healthy=${node.healthy}`);
    if (node.id === status.self) fields.push("self");
    return oneLine(fields.join(" "));
  });
  return [...lines, "END"];
}

// The lines answering a successful request (without line ends).
export function formatReply(request: ClientRequest, reply: Reply): string[] {
  switch (request.op) {
    case "send":
      return [`OK ${(reply as { id: string }).id}`];
    case "receive":
      return [...(reply as { messages: DeliveredMessage[] }).messages.map(formatMessage), "END"];
    case "ack":
    case "nack":
    case "extend":
    case "purge":
    case "delete":
      return [`OK ${(reply as { count: number }).count}`];
    case "list": {
      const list = reply as { items: ListItem[]; next?: string };
      const lines = list.items.map(formatItem);
      if (list.next !== undefined) lines.push(`NEXT ${list.next}`);
      lines.push("END");
      return lines;
    }
    case "status":
      return formatStatus(reply as StatusReply);
    case "cluster":
      return [`OK ${oneLine((reply as { message: string }).message)}`];
    case "config":
      return [oneLine(formatConfig((reply as ConfigReply).config))];
    case "hello":
    case "cancel": // a binary protocol request; the text protocol has no rids to name
      return ["OK"];
  }
}
