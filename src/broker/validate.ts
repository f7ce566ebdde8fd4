// Checks of command arguments against the broker's limits. Each returns an ErrorReply (a result
// that changes nothing) or undefined. They run before a command writes anything, so an invalid
// command leaves the state byte-identical.
import type { ErrorReply } from "../protocol/api.js";
import type { ErrorCode } from "../protocol/errors.js";
import { parseLeaseName } from "../protocol/leases.js";
import { isValidName, nameProblem } from "../protocol/names.js";
import { utf8Length } from "./bytes.js";
import type { BrokerConfig, MailboxConfig } from "./commands.js";

export const DEAD_LETTER_SUFFIX = ":dlq";
// Client-supplied ids: the name alphabet plus a few characters common in UUIDs and base64.
// "~" is reserved: assigned ids contain it, so they never collide with a client's.
// Checked with a table rather than a regular expression: every replica checks every id of every
// SEND and ACK, and the regex test was ~0.7 us of a SEND's ~5 us apply.
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9._:\-+=@/]+$/;
const ASSIGNED_ID_LENGTH_MAX = 32;
export const PRINTABLE_ASCII = /^[\x21-\x7e]+$/;
const CLIENT_ID_CHAR = asciiTable(CLIENT_ID_PATTERN);
const PRINTABLE_CHAR = asciiTable(PRINTABLE_ASCII);

// Which ASCII characters a one-character-class pattern like the two above accepts.
function asciiTable(pattern: RegExp): Uint8Array {
  const table = new Uint8Array(128);
  for (let code = 0; code < 128; code++) table[code] = pattern.test(String.fromCharCode(code)) ? 1 : 0;
  return table;
}

// Whether every character of a non-empty string is in the table (non-ASCII never is).
export function allIn(table: Uint8Array, text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 128 || table[code] === 0) return false;
  }
  return true;
}

export function failure(code: ErrorCode, message: string): ErrorReply {
  return { ok: false, code, message };
}

export function isDeadLetterMailbox(mailbox: string): boolean {
  return mailbox.endsWith(DEAD_LETTER_SUFFIX);
}

// A mailbox is named by a valid name, or is the dead-letter mailbox of one (which may then be up
// to 4 characters longer than a name).
export function mailboxProblem(mailbox: unknown): ErrorReply | undefined {
  if (typeof mailbox !== "string") return failure("INVALID", "mailbox name is missing");
  if (isValidName(mailbox)) return undefined;
  if (isDeadLetterMailbox(mailbox) && isValidName(mailbox.slice(0, -DEAD_LETTER_SUFFIX.length))) return undefined;
  return failure("INVALID", `mailbox '${mailbox.slice(0, 64)}': ${nameProblem(mailbox)}`);
}

export function integerProblem(what: string, value: unknown, minimum: number, maximum: number): ErrorReply | undefined {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) return failure("INVALID", `${what} must be an integer`);
  if (value < minimum || value > maximum) return failure("INVALID", `${what} ${value} is outside ${minimum}..${maximum}`);
  return undefined;
}

export function clientIdProblem(id: unknown, config: BrokerConfig): ErrorReply | undefined {
  if (typeof id !== "string" || id.length === 0) return failure("INVALID", "message id is empty");
  if (id.length > config.idLengthMax) return failure("TOO_LARGE", `message id is ${id.length} characters; the limit is ${config.idLengthMax}`);
  if (!allIn(CLIENT_ID_CHAR, id)) return failure("INVALID", "message id may contain only A-Z a-z 0-9 . _ : - + = @ /");
  return undefined;
}

// Ids named by ACK / NACK / EXTEND: client ids or assigned ones ("<index>~<n>" in base 36).
export function idsProblem(ids: unknown, config: BrokerConfig): ErrorReply | undefined {
  if (!Array.isArray(ids) || ids.length === 0) return failure("INVALID", "no message ids given");
  if (ids.length > config.idsPerRequestMax) return failure("TOO_LARGE", `${ids.length} ids; the limit is ${config.idsPerRequestMax}`);
  const lengthMax = Math.max(config.idLengthMax, ASSIGNED_ID_LENGTH_MAX);
  for (const id of ids) {
    if (typeof id !== "string" || id.length === 0 || id.length > lengthMax || !allIn(PRINTABLE_CHAR, id)) {
      return failure("INVALID", `message id '${String(id).slice(0, 64)}' is malformed`);
    }
  }
  return undefined;
}

// Lease names to ack (ReceiveCommand.ackLeases): each one counts as an id toward
// idsPerRequestMax, with the `ids` ids the same command acks.
export function leaseNamesProblem(names: unknown, ids: number, config: BrokerConfig): ErrorReply | undefined {
  if (!Array.isArray(names) || names.length === 0) return failure("INVALID", "no lease names given");
  if (ids + names.length > config.idsPerRequestMax) return failure("TOO_LARGE", `${ids} ids and ${names.length} lease names; the limit is ${config.idsPerRequestMax}`);
  for (const name of names) {
    if (parseLeaseName(name) === undefined) return failure("INVALID", `lease name '${String(name).slice(0, 64)}' is malformed`);
  }
  return undefined;
}

export function headersProblem(headers: unknown, config: BrokerConfig): ErrorReply | undefined {
  if (headers === undefined) return undefined;
  if (typeof headers !== "object" || headers === null) return failure("INVALID", "headers must be an object of strings");
  const entries = Object.entries(headers);
  if (entries.length > config.headersCountMax) return failure("TOO_LARGE", `${entries.length} headers; the limit is ${config.headersCountMax}`);
  let bytes = 0;
  for (const [name, value] of entries) {
    if (typeof value !== "string" || name.length === 0) return failure("INVALID", "header names must be non-empty and values strings");
    bytes += utf8Length(name) + utf8Length(value);
  }
  if (bytes > config.headersBytesMax) return failure("TOO_LARGE", `headers take ${bytes} bytes; the limit is ${config.headersBytesMax}`);
  return undefined;
}

export function mailboxConfigProblem(settings: Partial<MailboxConfig>, config: BrokerConfig): ErrorReply | undefined {
  if (typeof settings !== "object" || settings === null) return failure("INVALID", "mailbox settings must be an object");
  const checks: Array<[keyof MailboxConfig, number, number]> = [
    ["visibilityMs", 1, config.visibilityMsMax],
    ["deliveriesMax", 1, 1_000_000],
    ["messagesMax", 1, Number.MAX_SAFE_INTEGER],
    ["bytesMax", 1, Number.MAX_SAFE_INTEGER],
    ["ttlMs", 0, config.ttlMsMax],
    ["reorderWindowMs", 0, config.reorderWindowMsMax],
  ];
  for (const [field, minimum, maximum] of checks) {
    if (settings[field] !== undefined) {
      const problem = integerProblem(field, settings[field], minimum, maximum);
      if (problem !== undefined) return problem;
    }
  }
  if (settings.overflow !== undefined && settings.overflow !== "reject" && settings.overflow !== "drop-oldest") {
    return failure("INVALID", "overflow must be reject or drop-oldest");
  }
  if (settings.expiry !== undefined && settings.expiry !== "drop" && settings.expiry !== "dead-letter") {
    return failure("INVALID", "expiry must be drop or dead-letter");
  }
  if (settings.order !== undefined && settings.order !== "log" && settings.order !== "sender-time") {
    return failure("INVALID", "order must be log or sender-time");
  }
  return undefined;
}

// A sender's HLC timestamp: a 64-bit value at most senderTimeAheadMsMax ahead of the entry time.
export function senderTimeProblem(senderTime: unknown, nowMs: number, config: BrokerConfig): ErrorReply | undefined {
  if (typeof senderTime !== "bigint" || senderTime < 0n || senderTime >= 1n << 64n) {
    return failure("INVALID", "senderTime must be a 64-bit HLC timestamp");
  }
  const aheadMs = Number(senderTime >> 16n) - nowMs;
  if (aheadMs > config.senderTimeAheadMsMax) {
    return failure("INVALID", `senderTime is ${aheadMs} ms ahead of the leader's clock; the limit is ${config.senderTimeAheadMsMax}`);
  }
  return undefined;
}
