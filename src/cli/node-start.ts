// `ferry start`: run one node from flags, environment variables (FERRY_*) or a JSON config file,
// in that order of precedence. Clear errors for a bad config, a port in use, a locked or corrupt
// data directory. SIGTERM/SIGINT: stop accepting, finish in-flight requests, hand leadership
// over, flush, exit 0.
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ConnectionOptions as TlsConnectionOptions, TlsOptions } from "node:tls";
import type { Command } from "commander";
import { NODE_DEFAULTS, type NodeConfig, parseHostPort, parseMembers, resolveBrokerConfig, validateConfig } from "../node/config.js";
import { createLogger } from "../node/log.js";
import { FerryNode } from "../node/node.js";
import { EntryTrace } from "../node/trace.js";
import { Authenticator } from "../server/auth.js";
import { ForwardingService, ForwardProofVerifier, forwardProof } from "../server/forwarder.js";
import { HttpEndpoint } from "../server/http.js";
import { resolveLimits, type ServerLimits } from "../server/limits.js";
import { FerryServer } from "../server/server.js";
import type { PeerTls } from "../transport/peer-transport.js";
import { missingNodeFlags } from "./node-flags.js";

interface StartFlags {
  config?: string;
  id?: string;
  data?: string;
  client?: string;
  peer?: string;
  members?: string;
  join?: boolean;
  clusterId?: string;
  secret?: string;
  fsync?: string;
  tickMs?: string;
  electionTicks?: string;
  heartbeatTicks?: string;
  snapshotEntries?: string;
  snapshotLogBytes?: string;
  snapshotCatchUpEntries?: string;
  stateCommitMs?: string;
  stateRecoveriesMax?: string;
  snapshotBytesMax?: string;
  snapshotThreadNice?: string;
  clockMaxOffsetMs?: string;
  http?: string;
  users?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  peerTls?: boolean;
}

const ENVIRONMENT: Record<keyof StartFlags, string> = {
  config: "FERRY_CONFIG",
  id: "FERRY_ID",
  data: "FERRY_DATA",
  client: "FERRY_CLIENT",
  peer: "FERRY_PEER",
  members: "FERRY_MEMBERS",
  join: "FERRY_JOIN",
  clusterId: "FERRY_CLUSTER_ID",
  secret: "FERRY_SECRET",
  fsync: "FERRY_FSYNC",
  tickMs: "FERRY_TICK_MS",
  electionTicks: "FERRY_ELECTION_TICKS",
  heartbeatTicks: "FERRY_HEARTBEAT_TICKS",
  snapshotEntries: "FERRY_SNAPSHOT_ENTRIES",
  snapshotLogBytes: "FERRY_SNAPSHOT_LOG_BYTES",
  snapshotCatchUpEntries: "FERRY_SNAPSHOT_CATCH_UP_ENTRIES",
  stateCommitMs: "FERRY_STATE_COMMIT_MS",
  stateRecoveriesMax: "FERRY_STATE_RECOVERIES_MAX",
  snapshotBytesMax: "FERRY_SNAPSHOT_BYTES_MAX",
  snapshotThreadNice: "FERRY_SNAPSHOT_THREAD_NICE",
  clockMaxOffsetMs: "FERRY_CLOCK_MAX_OFFSET_MS",
  http: "FERRY_HTTP",
  users: "FERRY_USERS",
  tlsCert: "FERRY_TLS_CERT",
  tlsKey: "FERRY_TLS_KEY",
  tlsCa: "FERRY_TLS_CA",
  peerTls: "FERRY_PEER_TLS",
};

// The client port's security, besides NodeConfig: who may log in (a users file) and TLS.
export interface ClientSecurity {
  auth?: Authenticator;
  usersFile?: string; // where auth came from: SIGHUP reads it again
  tls?: TlsOptions; // the client port speaks TLS with this key and certificate
  forwardTls?: TlsConnectionOptions; // how a follower reaches the leader's (TLS) client port
  peerTls?: PeerTls; // mutual TLS on the peer (Raft) port, with the same certificate and CA
}

export function registerStartCommand(program: Command): void {
  program
    .command("start")
    .description("run one Ferry node")
    .option("--config <file>", "JSON config file (keys as in NodeConfig)")
    .option("--id <n>", "this node's id (a positive integer)")
    .option("--data <dir>", "data directory")
    .option("--client <host:port>", "client listen address (text and binary protocols)")
    .option("--peer <host:port>", "peer (Raft) listen address")
    .option("--members <list>", "initial members: id=peerHost:port/clientHost:port,...")
    .option("--join", "join a running cluster (start without a configuration; add it with `ferry cluster add`)")
    .option("--cluster-id <name>", "cluster id; peers of another cluster are refused")
    .option("--secret <text>", "cluster secret peers prove on connect")
    .option("--fsync <policy>", "always | never | interval:<ms>")
    .option("--tick-ms <ms>", "Raft tick length")
    .option("--election-ticks <n>", "election timeout in ticks (randomized up to twice that)")
    .option("--heartbeat-ticks <n>", "heartbeat interval in ticks")
    .option("--snapshot-entries <n>", "take a snapshot every n applied entries")
    .option("--snapshot-log-bytes <n>", "... or once the entries applied since the last snapshot hold n bytes")
    .option("--snapshot-catch-up-entries <n>", "log entries kept below a snapshot for slow followers")
    .option("--state-commit-ms <ms>", "how often the state store commits applied entries (the WAL covers the rest)")
    .option("--state-recoveries-max <n>", "state store commit failures recovered from (by re-applying the WAL) in a minute before the node stops")
    .option("--snapshot-bytes-max <n>", "largest snapshot accepted from the leader (written to disk as it arrives)")
    .option("--snapshot-thread-nice <n>", "CPU priority (nice 0-19) of the thread that makes this node's snapshots; -1: no thread (made on the event loop in slices)")
    .option("--clock-max-offset-ms <ms>", "fence this node when its clock is off by more")
    .option("--http <host:port>", "serve /metrics, /health, /status and a status page here (off when not given)")
    .option("--users <file>", "JSON users file: clients must log in, and may do what their user may (docs/node.md#authentication-and-tls)")
    .option("--tls-cert <file>", "serve the client port over TLS with this PEM certificate (with --tls-key)")
    .option("--tls-key <file>", "the PEM private key of --tls-cert")
    .option("--tls-ca <file>", "the PEM CA a follower trusts when it forwards to the leader over TLS (default: --tls-cert)")
    .option("--peer-tls", "mutual TLS on the peer (Raft) port too, with --tls-cert/--tls-key; peers must present a certificate --tls-ca signed")
    .action(async (flags: StartFlags) => {
      let config: NodeConfig;
      let security: ClientSecurity;
      let limits: ServerLimits;
      try {
        config = resolveConfig(flags);
        limits = resolveServerLimits(flags);
        security = resolveSecurity(flags);
        requireSecretForUsers(config, security);
      } catch (error) {
        console.error(`ferry start: ${(error as Error).message}`);
        process.exit(2);
      }
      const http = flags.http ?? process.env[ENVIRONMENT.http];
      await runNode(config, typeof http === "string" ? http : undefined, security, limits);
    });
}

export function resolveConfig(flags: StartFlags): NodeConfig {
  const pick = (key: keyof StartFlags): string | boolean | undefined => flags[key] ?? process.env[ENVIRONMENT[key]];
  const fromFile = readConfigFile(flags) as Partial<NodeConfig>;
  const text = (key: keyof StartFlags): string | undefined => {
    const value = pick(key);
    return typeof value === "string" ? value : undefined;
  };
  const number = (key: keyof StartFlags, fallback: number): number => {
    const value = text(key);
    if (value === undefined) return fallback;
    const parsed = Number(value);
    if (!Number.isFinite(parsed)) throw new Error(`--${key} must be a number, got '${value}'`);
    return parsed;
  };
  const id = number("id", fromFile.id ?? Number.NaN);
  const membersText = text("members");
  const config: NodeConfig = {
    ...NODE_DEFAULTS,
    ...fromFile,
    id,
    dataDir: text("data") ?? fromFile.dataDir ?? `./data/node${id}`,
    clientListen: text("client") ?? fromFile.clientListen ?? "127.0.0.1:12345",
    peerListen: text("peer") ?? fromFile.peerListen ?? "127.0.0.1:22345",
    members: membersText !== undefined ? parseMembers(membersText) : (fromFile.members ?? []),
    join: pick("join") === true || pick("join") === "1" || pick("join") === "true" || (fromFile.join ?? false),
    clusterId: text("clusterId") ?? fromFile.clusterId ?? NODE_DEFAULTS.clusterId,
    secret: text("secret") ?? fromFile.secret ?? NODE_DEFAULTS.secret,
    fsync: parseFsync(text("fsync")) ?? fromFile.fsync ?? NODE_DEFAULTS.fsync,
    tickMs: number("tickMs", fromFile.tickMs ?? NODE_DEFAULTS.tickMs),
    electionTicks: number("electionTicks", fromFile.electionTicks ?? NODE_DEFAULTS.electionTicks),
    heartbeatTicks: number("heartbeatTicks", fromFile.heartbeatTicks ?? NODE_DEFAULTS.heartbeatTicks),
    snapshotEntries: number("snapshotEntries", fromFile.snapshotEntries ?? NODE_DEFAULTS.snapshotEntries),
    snapshotLogBytes: number("snapshotLogBytes", fromFile.snapshotLogBytes ?? NODE_DEFAULTS.snapshotLogBytes),
    snapshotCatchUpEntries: number("snapshotCatchUpEntries", fromFile.snapshotCatchUpEntries ?? NODE_DEFAULTS.snapshotCatchUpEntries),
    stateCommitMs: number("stateCommitMs", fromFile.stateCommitMs ?? NODE_DEFAULTS.stateCommitMs),
    stateRecoveriesMax: number("stateRecoveriesMax", fromFile.stateRecoveriesMax ?? NODE_DEFAULTS.stateRecoveriesMax),
    snapshotBytesMax: number("snapshotBytesMax", fromFile.snapshotBytesMax ?? NODE_DEFAULTS.snapshotBytesMax),
    snapshotThreadNice: number("snapshotThreadNice", fromFile.snapshotThreadNice ?? NODE_DEFAULTS.snapshotThreadNice),
    // Only in the config file: a JSON object of limits (docs/node.md "Broker settings and server limits"), checked here.
    broker: resolveBrokerConfig(fromFile.broker),
    clockMaxOffsetMs: number("clockMaxOffsetMs", fromFile.clockMaxOffsetMs ?? NODE_DEFAULTS.clockMaxOffsetMs),
  };
  if (config.members.length === 0 && !config.join) {
    config.members = [{ id: config.id, peer: config.peerListen, client: config.clientListen }];
  }
  validateConfig(config);
  return config;
}

// The client server's limits (src/server/limits.ts, docs/protocol.md "Limits"): the config file's
// `limits` object, each key checked, the rest at their defaults.
export function resolveServerLimits(flags: StartFlags): ServerLimits {
  const limits = readConfigFile(flags).limits;
  if (limits === undefined) return resolveLimits({});
  if (typeof limits !== "object" || limits === null || Array.isArray(limits)) throw new Error("limits must be an object of server limits");
  return resolveLimits(limits as Partial<ServerLimits>);
}

// The JSON config file named by --config or FERRY_CONFIG, or {} without one.
function readConfigFile(flags: StartFlags): Record<string, unknown> {
  const file = flags.config ?? process.env[ENVIRONMENT.config];
  return typeof file === "string" ? (JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>) : {};
}

// Flags, then FERRY_* variables, then the config file's users / tlsCert / tlsKey / tlsCa keys.
export function resolveSecurity(flags: StartFlags): ClientSecurity {
  const fromFile = readConfigFile(flags);
  const pick = (key: "users" | "tlsCert" | "tlsKey" | "tlsCa"): string | undefined => {
    const value = flags[key] ?? process.env[ENVIRONMENT[key]] ?? fromFile[key];
    if (value !== undefined && typeof value !== "string") throw new Error(`${key} must be a file path`);
    return value;
  };
  const read = (path: string, what: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (error) {
      throw new Error(`cannot read the ${what} ${path}: ${(error as Error).message}`);
    }
  };
  const security: ClientSecurity = {};
  const peerTlsSetting = flags.peerTls ?? process.env[ENVIRONMENT.peerTls] ?? fromFile.peerTls;
  const peerTls = peerTlsSetting === true || peerTlsSetting === "1" || peerTlsSetting === "true";
  const users = pick("users");
  if (users !== undefined) {
    security.auth = Authenticator.fromFile(users);
    security.usersFile = users;
  }
  const certPath = pick("tlsCert");
  const keyPath = pick("tlsKey");
  const caPath = pick("tlsCa");
  if ((certPath === undefined) !== (keyPath === undefined)) throw new Error("--tls-cert and --tls-key go together");
  if (certPath !== undefined && keyPath !== undefined) {
    const cert = read(certPath, "TLS certificate");
    security.tls = { cert, key: read(keyPath, "TLS key") };
    // Followers forward to the leader's client port: trust the cluster's CA (or its shared
    // certificate). The peers are named by address, not host name, so the check is the chain,
    // and the forwarding connection still proves the cluster secret in its HELLO.
    const ca = caPath === undefined ? cert : read(caPath, "TLS CA");
    security.forwardTls = { ca, checkServerIdentity: () => undefined };
    if (peerTls) security.peerTls = { key: security.tls.key as Buffer, cert, ca };
  } else if (caPath !== undefined) {
    throw new Error("--tls-ca needs --tls-cert and --tls-key");
  }
  if (peerTls && security.peerTls === undefined) throw new Error("--peer-tls needs --tls-cert and --tls-key");
  return security;
}

// A node's requests skip the users' checks, and it proves itself with the cluster secret: with the
// default (public) secret anyone could pass as a node, so a users file needs a secret of its own.
export const SECRET_LENGTH_MIN_WITH_USERS = 16;
export function requireSecretForUsers(config: NodeConfig, security: ClientSecurity): void {
  if (security.auth === undefined) return;
  if (config.secret === NODE_DEFAULTS.secret || config.secret.length < SECRET_LENGTH_MIN_WITH_USERS) {
    throw new Error(
      `--users needs a cluster secret of your own (--secret or FERRY_SECRET, at least ${SECRET_LENGTH_MIN_WITH_USERS} characters, the same on every node): with the default one anyone could pass as a node and skip the users' checks`,
    );
  }
}

function parseFsync(text: string | undefined): NodeConfig["fsync"] | undefined {
  if (text === undefined) return undefined;
  if (text === "always" || text === "never") return text;
  const match = /^interval:(\d+)$/.exec(text);
  if (match) return { intervalMs: Number(match[1]) };
  throw new Error(`--fsync must be always, never or interval:<ms>, got '${text}'`);
}

async function runNode(config: NodeConfig, httpAddress: string | undefined, security: ClientSecurity, limits: ServerLimits): Promise<void> {
  const log = createLogger(`node${config.id}`);
  // SIGHUP's default action ends the process: until the users file's handler below is in place
  // (and on a node without one), a SIGHUP only says so.
  const ignoreHangup = () => log("info", "sighup-ignored", { reason: security.auth === undefined ? "no users file to reload" : "still starting" });
  process.on("SIGHUP", ignoreHangup);
  let node: FerryNode;
  let server: FerryServer;
  let forwarder: ForwardingService;
  let http: HttpEndpoint | undefined;
  let currentAuth = security.auth; // replaced on SIGHUP
  // A diagnostic for `npm run bench:stages`: when each entry reached each stage on this node,
  // written to <dir>/trace-node<id>.txt when the node stops gracefully (docs/node.md).
  const traceDir = process.env.FERRY_TRACE_DIR;
  const trace = traceDir === undefined || traceDir === "" ? undefined : new EntryTrace();
  try {
    node = await FerryNode.start(config, { log, ...(security.peerTls === undefined ? {} : { peerTls: security.peerTls }), ...(trace === undefined ? {} : { trace }) });
    const { host, port } = parseHostPort(config.clientListen);
    const proof = () => forwardProof(config.clusterId, config.secret);
    forwarder = new ForwardingService(node, { proof, name: `node-${config.id}`, ...(security.forwardTls ? { tls: security.forwardTls } : {}) });
    const verifier = new ForwardProofVerifier(config.clusterId, config.secret);
    const verifyForwarder = (candidate: string) => verifier.verify(candidate);
    server = await FerryServer.start({
      host,
      port,
      service: forwarder,
      verifyForwarder,
      limits,
      ...(security.auth ? { auth: security.auth } : {}),
      ...(security.tls ? { tls: security.tls } : {}),
      log: (line) => log("info", "server", { line }),
    });
    const serverStats = server.stats;
    node.metrics.addServerCounters(() => {
      const { inputBufferedBytesPeak: _peak, ...counters } = serverStats;
      return counters;
    });
    if (httpAddress !== undefined) {
      const { host: httpHost, port: httpPort } = parseHostPort(httpAddress);
      const running = node;
      const authorize =
        security.auth === undefined
          ? undefined
          : async (user: string, password: string) => {
              const found = await currentAuth!.verify(user, password);
              return found === undefined ? "unknown" : found.admin ? "admin" : "not-admin";
            };
      http = await HttpEndpoint.start(
        httpHost,
        httpPort,
        { metricsText: () => running.metrics.text(), health: () => running.health(), status: () => running.status() },
        authorize === undefined ? {} : { authorize },
      );
    }
  } catch (error) {
    log("fatal", "start-failed", { error: describeStartError(error, config) });
    process.exit(1);
  }
  log("info", "serving", {
    client: config.clientListen,
    peer: config.peerListen,
    http: httpAddress ?? "off",
    data: config.dataDir,
    auth: security.auth ? `${security.auth.userCount} users` : "off",
    tls: security.tls ? "on" : "off",
    peerTls: security.peerTls ? "on" : "off",
  });
  const missing = missingNodeFlags(process.execArgv, process.env.NODE_OPTIONS);
  if (missing.length > 0) {
    // Run as `node bin/ferry.js start` (or by a service manager calling node): it works, with more
    // CPU per request under load (docs/node.md).
    log("warn", "node-flags-missing", { missing: missing.join(" "), hint: "start nodes through bin/ferry.js or ./ferry, or pass these to node (docs/node.md)" });
  }
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log("info", "stopping", { signal });
    await server.close();
    await http?.close();
    forwarder.close();
    await node.stop();
    if (trace !== undefined && traceDir !== undefined) {
      const file = join(traceDir, `trace-node${config.id}.txt`);
      try {
        await writeFile(file, trace.text());
        log("info", "trace-written", { file, events: trace.size, dropped: trace.dropped });
      } catch (error) {
        log("error", "trace-write-failed", { file, error: (error as Error).message });
      }
    }
    log("info", "stopped", {});
    process.exit(0);
  };
  const usersPath = security.usersFile;
  if (security.auth !== undefined && usersPath !== undefined) {
    // SIGHUP: read the users file again; a bad one is logged and the one in force stays.
    process.off("SIGHUP", ignoreHangup);
    process.on("SIGHUP", () => {
      try {
        const auth = Authenticator.fromFile(usersPath);
        server.reloadUsers(auth);
        currentAuth = auth;
        http?.forgetCredentials();
        log("info", "users-reloaded", { users: auth.userCount, file: usersPath });
      } catch (error) {
        log("error", "users-reload-failed", { error: (error as Error).message, file: usersPath });
      }
    });
  }
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
  node.onFatal((error) => {
    log("fatal", "node-failed", { error: error.message });
    process.exit(1);
  });
}

function describeStartError(error: unknown, config: NodeConfig): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "EADDRINUSE") {
    return `${(error as Error).message}: another process holds that port (client ${config.clientListen}, peer ${config.peerListen})`;
  }
  return (error as Error).message;
}
