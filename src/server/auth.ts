// Authentication and authorization on the client port (design.md §1 "auth", §2 "Bad input").
//
// A node started with a users file (`ferry start --users <file>`) serves only clients that
// authenticate first: `AUTH <user> <password>` on the text protocol, a HELLO with `user` and
// `password` on the binary one (the client library's `user` / `password` options). The identity of
// an authenticated connection is its user: it is the sender of every SEND, and HELLO cannot change
// it. Each user may SEND to the mailboxes its `send` patterns match, RECEIVE, ACK, NACK, EXTEND and
// LIST the mailboxes its `receive` patterns match, and run PURGE, DELETE, CONFIG and CLUSTER only
// with `admin`. STATUS needs only the login; HELP, PING and QUIT not even that. A request before
// the login is answered with UNAUTHORIZED, one the user may not make with FORBIDDEN, and the
// connection stays usable; after authFailuresMax failed logins the connection is closed (and an
// address with too many is refused for a while: LoginThrottle). Without a users file nothing is
// checked (`npm start` and most tests), as before.
//
// The users file (JSON):
//   { "users": [ { "name": "alice", "password": "scrypt:16384:8:1:<salt>:<hash>",
//                  "send": ["*"], "receive": ["alice", "alice:*"], "admin": false } ] }
// A pattern is a mailbox name, or a prefix ending in "*" ("orders.*"), or "*" for every mailbox.
// Passwords are stored as scrypt hashes (`ferry hash-password` makes one), checked on the libuv
// thread pool (crypto.scrypt, not the event loop) and compared in constant time; an unknown user
// costs the scrypt of the costliest known one, so the time does not tell which names exist.
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Request } from "../protocol/api.js";
import { nameProblem } from "../protocol/names.js";

export const SCRYPT_COST_DEFAULT = 16384; // N
const SCRYPT_BLOCK_SIZE = 8; // r
const SCRYPT_PARALLELISM = 1; // p
const SALT_BYTES = 16;
const KEY_BYTES = 32;
const HASH_PREFIX = "scrypt";
// Bounds on what a users file may ask of scrypt (N up to 2^20 needs 1 GiB at r = 8: refused).
const SCRYPT_COST_MAX = 1 << 18;
const SCRYPT_MEMORY_MAX = 512 * 1024 * 1024;

export interface AuthUser {
  name: string;
  send: readonly string[];
  receive: readonly string[];
  admin: boolean;
  // The stored password hash the login matched: a session whose user's hash has changed since (a
  // reloaded users file with a new password) must log in again.
  credential: string;
}

interface StoredUser extends AuthUser {
  hash: ParsedHash;
}

interface ParsedHash {
  cost: number;
  blockSize: number;
  parallelism: number;
  salt: Buffer;
  key: Buffer;
}

export class UsersFileError extends Error {
  override name = "UsersFileError";
}

// Makes the stored form of a password: scrypt:N:r:p:<salt base64>:<key base64>.
export async function hashPassword(password: string, cost = SCRYPT_COST_DEFAULT): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(password, { cost, blockSize: SCRYPT_BLOCK_SIZE, parallelism: SCRYPT_PARALLELISM, salt, key: Buffer.alloc(0) });
  return [HASH_PREFIX, cost, SCRYPT_BLOCK_SIZE, SCRYPT_PARALLELISM, salt.toString("base64"), key.toString("base64")].join(":");
}

function derive(password: string, hash: ParsedHash): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(
      password,
      hash.salt,
      KEY_BYTES,
      { N: hash.cost, r: hash.blockSize, p: hash.parallelism, maxmem: SCRYPT_MEMORY_MAX },
      (error, key) => (error ? reject(error) : resolve(key)),
    );
  });
}

function parseHash(text: unknown, where: string): ParsedHash {
  if (typeof text !== "string") throw new UsersFileError(`${where}: password must be a string made by \`ferry hash-password\``);
  const parts = text.split(":");
  if (parts.length !== 6 || parts[0] !== HASH_PREFIX) {
    throw new UsersFileError(`${where}: password is not of the form scrypt:N:r:p:salt:hash (make one with \`ferry hash-password\`)`);
  }
  const [cost, blockSize, parallelism] = parts.slice(1, 4).map(Number) as [number, number, number];
  const salt = Buffer.from(parts[4]!, "base64");
  const key = Buffer.from(parts[5]!, "base64");
  const powerOfTwo = Number.isSafeInteger(cost) && cost >= 2 && (cost & (cost - 1)) === 0;
  if (!powerOfTwo || cost > SCRYPT_COST_MAX) throw new UsersFileError(`${where}: scrypt N must be a power of two from 2 to ${SCRYPT_COST_MAX}, got ${parts[1]}`);
  if (!Number.isSafeInteger(blockSize) || blockSize < 1 || blockSize > 32) throw new UsersFileError(`${where}: scrypt r must be 1-32, got ${parts[2]}`);
  if (!Number.isSafeInteger(parallelism) || parallelism < 1 || parallelism > 16) throw new UsersFileError(`${where}: scrypt p must be 1-16, got ${parts[3]}`);
  if (128 * cost * blockSize > SCRYPT_MEMORY_MAX) throw new UsersFileError(`${where}: scrypt N x r needs more than ${SCRYPT_MEMORY_MAX >> 20} MiB`);
  if (salt.length < 8 || key.length !== KEY_BYTES) throw new UsersFileError(`${where}: salt or hash has the wrong length`);
  return { cost, blockSize, parallelism, salt, key };
}

function patterns(value: unknown, where: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new UsersFileError(`${where} must be a list of mailbox patterns`);
  return value.map((pattern, i) => {
    if (typeof pattern !== "string") throw new UsersFileError(`${where}[${i}] must be a string`);
    const name = pattern.endsWith("*") ? pattern.slice(0, -1) : pattern;
    // "*" alone, or a name (or prefix of one) by the mailbox rules.
    if (name !== "" && nameProblem(name) !== undefined) throw new UsersFileError(`${where}[${i}] '${pattern}': ${nameProblem(name)}`);
    return pattern;
  });
}

export function matches(patternsOfUser: readonly string[], mailbox: string): boolean {
  for (const pattern of patternsOfUser) {
    if (pattern.endsWith("*") ? mailbox.startsWith(pattern.slice(0, -1)) : mailbox === pattern) return true;
  }
  return false;
}

// Logins checked at once. scrypt runs on the libuv thread pool (4 threads by default), which the
// WAL's writes share: a burst of logins must leave threads for them, so the rest wait their turn.
export const LOGINS_CONCURRENT_MAX = 2;
// Logins waiting for their turn; beyond it a login is answered OVERLOADED at once (a flood of
// logins cannot queue without end in front of real ones).
export const LOGINS_WAITING_MAX = 64;

export class LoginsOverloadedError extends Error {
  override name = "LoginsOverloadedError";
}

export class Authenticator {
  private readonly users: Map<string, StoredUser>;
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  // Checked for an unknown name, so that it costs what a known one does.
  private readonly decoy: ParsedHash;

  private constructor(users: Map<string, StoredUser>) {
    this.users = users;
    // The costliest user's parameters: an unknown name takes at least as long as any known one.
    let shape: Omit<ParsedHash, "salt" | "key"> = { cost: SCRYPT_COST_DEFAULT, blockSize: SCRYPT_BLOCK_SIZE, parallelism: SCRYPT_PARALLELISM };
    const work = (hash: Omit<ParsedHash, "salt" | "key">) => hash.cost * hash.blockSize * hash.parallelism;
    let most = 0;
    for (const user of users.values()) {
      if (work(user.hash) > most) {
        most = work(user.hash);
        shape = { cost: user.hash.cost, blockSize: user.hash.blockSize, parallelism: user.hash.parallelism };
      }
    }
    this.decoy = { ...shape, salt: randomBytes(SALT_BYTES), key: randomBytes(KEY_BYTES) };
  }

  static fromFile(path: string): Authenticator {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (error) {
      throw new UsersFileError(`cannot read the users file ${path}: ${(error as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      throw new UsersFileError(`users file ${path} is not JSON: ${(error as Error).message}`);
    }
    return Authenticator.fromJson(parsed, path);
  }

  static fromJson(value: unknown, source = "users"): Authenticator {
    const list = (value as { users?: unknown } | null)?.users;
    if (!Array.isArray(list) || list.length === 0) throw new UsersFileError(`${source}: expected {"users": [ ... ]} with at least one user`);
    const users = new Map<string, StoredUser>();
    list.forEach((entry, i) => {
      const where = `${source}: users[${i}]`;
      if (typeof entry !== "object" || entry === null) throw new UsersFileError(`${where} must be an object`);
      const fields = entry as Record<string, unknown>;
      const known = new Set(["name", "password", "send", "receive", "admin"]);
      for (const key of Object.keys(fields)) if (!known.has(key)) throw new UsersFileError(`${where}: unknown field '${key}'`);
      if (typeof fields.name !== "string" || nameProblem(fields.name) !== undefined) {
        throw new UsersFileError(`${where}: name must follow the mailbox name rules (1-200 of A-Z a-z 0-9 . _ - :)`);
      }
      if (users.has(fields.name)) throw new UsersFileError(`${where}: user '${fields.name}' appears twice`);
      if (fields.admin !== undefined && typeof fields.admin !== "boolean") throw new UsersFileError(`${where}: admin must be true or false`);
      users.set(fields.name, {
        name: fields.name,
        credential: fields.password as string, // a string: parseHash below refuses anything else
        hash: parseHash(fields.password, `${where} (${fields.name})`),
        send: patterns(fields.send, `${where}.send`),
        receive: patterns(fields.receive, `${where}.receive`),
        admin: fields.admin === true,
      });
    });
    return new Authenticator(users);
  }

  get userCount(): number {
    return this.users.size;
  }

  // The user's current permissions (undefined: no such user), for a session that logged in
  // before the users file was reloaded. Looked up on every request of a logged-in connection, so
  // it returns the stored user itself, no copy.
  user(name: string): AuthUser | undefined {
    return this.users.get(name);
  }

  // Logins being checked now (at most LOGINS_CONCURRENT_MAX), for tests and metrics.
  get loginsRunning(): number {
    return this.running;
  }

  // The user, when the password is theirs; undefined otherwise, and when `signal` was aborted
  // (the client left) before the login's turn came: its scrypt is then not run. Rejects with
  // LoginsOverloadedError when LOGINS_WAITING_MAX logins already wait. Never throws for bad input.
  async verify(name: string, password: string, signal?: AbortSignal): Promise<AuthUser | undefined> {
    const user = this.users.get(name);
    const hash = user?.hash ?? this.decoy;
    // A waiter is handed the slot of the login that finishes (running is not lowered for it).
    if (this.running >= LOGINS_CONCURRENT_MAX) {
      if (this.waiting.length >= LOGINS_WAITING_MAX) throw new LoginsOverloadedError(`${this.waiting.length} logins are waiting; retry later`);
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running += 1;
    }
    let key: Buffer;
    try {
      if (signal?.aborted === true) return undefined;
      key = await derive(password, hash);
    } catch {
      return undefined;
    } finally {
      const next = this.waiting.shift();
      if (next !== undefined) next();
      else this.running -= 1;
    }
    if (!timingSafeEqual(key, hash.key) || user === undefined) return undefined;
    const { hash: _hash, ...permissions } = user;
    return permissions;
  }
}

// Why `user` may not run `request`, or undefined when it may.
export function authorizationProblem(user: Omit<AuthUser, "credential">, request: Request): string | undefined {
  switch (request.op) {
    case "send":
      for (const recipient of request.recipients) {
        if (!matches(user.send, recipient)) return `user '${user.name}' may not send to '${recipient}'`;
      }
      return undefined;
    case "receive":
    case "ack":
    case "nack":
    case "extend":
    case "list":
      return matches(user.receive, request.mailbox) ? undefined : `user '${user.name}' may not ${request.op} mailbox '${request.mailbox}'`;
    case "purge":
    case "delete":
    case "config":
    case "cluster":
      return user.admin ? undefined : `user '${user.name}' may not ${request.op}: that needs "admin": true`;
    case "status":
      return undefined;
    default:
      return `operation '${(request as { op: string }).op}' is not known to the authorizer`;
  }
}

// Failed logins per client address: beyond `max` within `windowMs`, logins from that address are
// refused at once (no scrypt) until the window that began with its first failure has passed. A
// client that reconnects after authFailuresMax cannot keep guessing. Bounded: at most
// ADDRESSES_TRACKED_MAX addresses are remembered (the oldest windows are dropped first).
export const ADDRESSES_TRACKED_MAX = 10_000;

export class LoginThrottle {
  private readonly failures = new Map<string, { count: number; sinceMs: number }>();

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  // Milliseconds until `address` may try again, or 0.
  waitMs(address: string): number {
    const entry = this.failures.get(address);
    if (entry === undefined) return 0;
    const left = entry.sinceMs + this.windowMs - this.now();
    if (left <= 0) {
      this.failures.delete(address);
      return 0;
    }
    return entry.count >= this.max ? left : 0;
  }

  failed(address: string): void {
    const nowMs = this.now();
    const entry = this.failures.get(address);
    if (entry === undefined || entry.sinceMs + this.windowMs <= nowMs) {
      this.failures.delete(address);
      if (this.failures.size >= ADDRESSES_TRACKED_MAX) this.failures.delete(this.failures.keys().next().value as string);
      this.failures.set(address, { count: 1, sinceMs: nowMs });
      return;
    }
    entry.count += 1;
  }
}

