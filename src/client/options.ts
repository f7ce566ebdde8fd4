// Client options, their defaults and their validation. Every limit of the client library is a
// named constant here, overridable through ClientOptions and checked once in resolveOptions().
import type { ConnectionOptions as TlsConnectionOptions } from "node:tls";
import { FerryError } from "../protocol/errors.js";
import { FRAME_BYTES_MAX_DEFAULT } from "../protocol/binary.js";
import { nameProblem } from "../protocol/names.js";

export const TIMEOUT_MS_DEFAULT = 10_000;
export const WINDOW_REQUESTS_DEFAULT = 1024;
export const RECONNECT_MIN_MS_DEFAULT = 50;
export const RECONNECT_MAX_MS_DEFAULT = 2_000;
export const CONNECT_TIMEOUT_MS_DEFAULT = 3_000;
export const RETRIES_MAX_DEFAULT = 64;
export const ATTEMPT_TIMEOUT_MS_DEFAULT = 2_000;
// Below the server's idle timeout (5 min), so the client, not the server, closes an idle
// connection: a request written just as the server hangs up would otherwise be lost in between.
export const IDLE_TIMEOUT_MS_DEFAULT = 60_000;
// After a failed connect, leader discovery does not send the client back to that address for
// this long (a leader advertising an address this client cannot reach must not cause a loop).
export const UNREACHABLE_MEMORY_MS = 10_000;

export interface ClientOptions {
  seeds: string[]; // "host:port" client addresses of any nodes of the cluster
  name?: string; // identity sent with HELLO: the sender of this client's messages
  // The login a node started with a users file requires (docs/node.md#authentication-and-tls); the
  // user is then the sender of this client's messages. Both or neither.
  user?: string;
  password?: string;
  timeoutMs?: number; // per call, including retries (default 10 s)
  window?: number; // max requests in flight; callers beyond it wait (default 1024)
  reconnectMinMs?: number; // first backoff step (default 50 ms)
  reconnectMaxMs?: number; // backoff ceiling (default 2 s)
  connectTimeoutMs?: number; // one TCP connect + HELLO (default 3 s)
  frameBytesMax?: number; // largest frame sent or accepted (default 4 MiB)
  retriesMax?: number; // retries of one call, on top of its deadline (default 64)
  // A SEND, LIST or STATUS attempt unanswered this long is sent again to the next node: a
  // paused or partitioned leader keeps its TCP connection open and would otherwise hold the call
  // until its deadline (default 2 s, a few election timeouts; the resend is deduplicated by id).
  attemptTimeoutMs?: number;
  idleTimeoutMs?: number; // a connection with nothing in flight and no traffic this long is closed (default 60 s)
  // TLS to the client port: true for the system's trusted CAs, or node:tls options (ca, cert,
  // key, servername, ...). Default: plain TCP.
  tls?: boolean | TlsConnectionOptions;
  // Ask each newly connected node for the cluster status and move to the leader it names, so
  // requests skip the follower's forwarding hop (default true; turn off behind a proxy).
  discoverLeader?: boolean;
}

export interface ResolvedOptions {
  seeds: string[];
  name: string | undefined;
  user: string | undefined;
  password: string | undefined;
  timeoutMs: number;
  window: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  connectTimeoutMs: number;
  frameBytesMax: number;
  retriesMax: number;
  attemptTimeoutMs: number;
  idleTimeoutMs: number;
  tls: TlsConnectionOptions | undefined;
  discoverLeader: boolean;
}

export function resolveOptions(options: ClientOptions): ResolvedOptions {
  if (!Array.isArray(options.seeds) || options.seeds.length === 0) {
    throw new FerryError("INVALID", "seeds: give at least one host:port address");
  }
  for (const seed of options.seeds) parseAddress(seed);
  if (options.name !== undefined) {
    const problem = nameProblem(options.name);
    if (problem !== undefined) throw new FerryError("INVALID", `name: ${problem}`);
  }
  if ((options.user === undefined) !== (options.password === undefined)) {
    throw new FerryError("INVALID", "user and password go together");
  }
  if (options.user !== undefined) {
    const problem = nameProblem(options.user);
    if (problem !== undefined) throw new FerryError("INVALID", `user: ${problem}`);
    if (typeof options.password !== "string" || options.password.length === 0) throw new FerryError("INVALID", "password must be a non-empty string");
  }
  const resolved: ResolvedOptions = {
    seeds: [...options.seeds],
    name: options.name,
    user: options.user,
    password: options.password,
    timeoutMs: options.timeoutMs ?? TIMEOUT_MS_DEFAULT,
    window: options.window ?? WINDOW_REQUESTS_DEFAULT,
    reconnectMinMs: options.reconnectMinMs ?? RECONNECT_MIN_MS_DEFAULT,
    reconnectMaxMs: options.reconnectMaxMs ?? RECONNECT_MAX_MS_DEFAULT,
    connectTimeoutMs: options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS_DEFAULT,
    frameBytesMax: options.frameBytesMax ?? FRAME_BYTES_MAX_DEFAULT,
    retriesMax: options.retriesMax ?? RETRIES_MAX_DEFAULT,
    attemptTimeoutMs: options.attemptTimeoutMs ?? ATTEMPT_TIMEOUT_MS_DEFAULT,
    idleTimeoutMs: options.idleTimeoutMs ?? IDLE_TIMEOUT_MS_DEFAULT,
    tls: options.tls === true ? {} : options.tls === false ? undefined : options.tls,
    discoverLeader: options.discoverLeader ?? true,
  };
  requirePositive("timeoutMs", resolved.timeoutMs);
  requirePositive("window", resolved.window);
  requirePositive("reconnectMinMs", resolved.reconnectMinMs);
  requirePositive("connectTimeoutMs", resolved.connectTimeoutMs);
  requirePositive("frameBytesMax", resolved.frameBytesMax);
  requireNonNegative("retriesMax", resolved.retriesMax);
  requirePositive("attemptTimeoutMs", resolved.attemptTimeoutMs);
  requirePositive("idleTimeoutMs", resolved.idleTimeoutMs);
  if (resolved.reconnectMaxMs < resolved.reconnectMinMs) {
    throw new FerryError("INVALID", "reconnectMaxMs must be at least reconnectMinMs");
  }
  return resolved;
}

export function requirePositive(what: string, value: number): void {
  if (!Number.isFinite(value) || value <= 0) throw new FerryError("INVALID", `${what} must be a positive number, got ${value}`);
}

export function requireNonNegative(what: string, value: number): void {
  if (!Number.isFinite(value) || value < 0) throw new FerryError("INVALID", `${what} must be zero or more, got ${value}`);
}

export interface Address {
  host: string;
  port: number;
}

// "host:port", "[v6]:port". Throws INVALID on anything else.
export function parseAddress(address: string): Address {
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  const port = Number(address.slice(colon + 1));
  if (colon <= 0 || host.length === 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new FerryError("INVALID", `bad address '${address}': expected host:port`);
  }
  return { host, port };
}
