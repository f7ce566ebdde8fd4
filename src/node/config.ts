import type { BrokerSettings } from "../broker/config.js";

// The start-up check of NodeConfig.broker, for src/cli (which reaches the broker through the node).
export { resolveBrokerConfig } from "../broker/config.js";

// A node's configuration: identity, addresses, timing and limits, each with a default.
// Every limit here is named with its unit, has a default, can be set from flags, environment or
// a config file (src/cli), and is enforced by the node.

export interface MemberAddress {
  id: number;
  peer: string; // host:port of the Raft peer listener
  client: string; // host:port of the client listener
}

export type FsyncPolicy = "always" | "never" | { intervalMs: number };

export interface NodeConfig {
  id: number;
  clusterId: string;
  secret: string; // shared by the cluster's nodes; peers prove it on connect
  dataDir: string;
  clientListen: string; // host:port
  peerListen: string; // host:port
  members: MemberAddress[]; // the initial voters (bootstrap), or the known cluster when joining
  join: boolean; // a new node joining a running cluster: start with no configuration, wait to be added
  fsync: FsyncPolicy;
  tickMs: number;
  electionTicks: number;
  heartbeatTicks: number;
  pendingRequestsMax: number; // requests waiting to be proposed; beyond it: OVERLOADED
  entryCommandsMax: number; // commands batched into one log entry
  entryBytesMax: number;
  inflightEntriesMax: number; // proposed but not yet applied entries on the leader
  requestTimeoutMs: number; // a request not answered by then gets TIMEOUT
  snapshotEntries: number; // take a snapshot after this many applied entries
  // ... or once the entries applied since the last one hold this many bytes, so the log on disk
  // stays bounded whatever the entry size (entries hold up to entryBytesMax each). The margin kept
  // below a snapshot (snapshotCatchUpEntries) is cut to a quarter of this many bytes.
  snapshotLogBytes: number;
  stateCommitMs: number; // the state store (LMDB) commits its group of applied entries this often; the WAL replays the rest after a crash
  snapshotCatchUpEntries: number; // entries kept below a snapshot so slow followers need no snapshot
  // Commits the state store may refuse within a minute, each recovered from by re-applying the
  // WAL (docs/node.md "State store commit failures"); one more stops the node.
  stateRecoveriesMax: number;
  clockMaxOffsetMs: number; // beyond it the node fences itself
  waitMsMax: number; // longest long poll
  // Largest snapshot accepted from the leader. It is written to disk as it arrives, never held
  // in memory, so this bounds the disk a snapshot may take; a larger one closes the connection.
  snapshotBytesMax: number;
  // The CPU priority (nice, 0-19) of the thread that reads and encodes this node's snapshots; 19:
  // it gets the CPU the node's requests leave. -1: no thread, snapshots are read on the event loop
  // in slices of a few milliseconds.
  snapshotThreadNice: number;
  // The broker's limits and mailbox defaults (docs/broker.md "Limits"); absent keys take the
  // defaults. Every node of a cluster must give the same values (freshHeadsInMemoryMax aside): a
  // node refuses peers with others (docs/node.md "Broker settings and server limits").
  broker?: BrokerSettings;
}

// A longer group only adds WAL to replay after a crash; past a minute that replay is the cost.
export const STATE_COMMIT_MS_MAX = 60_000;

export const NODE_DEFAULTS = {
  clusterId: "ferry",
  secret: "ferry-dev-secret",
  fsync: "always" as FsyncPolicy,
  tickMs: 50,
  electionTicks: 8, // an election timeout of 400-800 ms: failover under 1 s
  heartbeatTicks: 2,
  pendingRequestsMax: 20_000,
  entryCommandsMax: 512,
  entryBytesMax: 1024 * 1024,
  inflightEntriesMax: 256,
  requestTimeoutMs: 10_000,
  snapshotEntries: 20_000,
  snapshotLogBytes: 256 * 1024 * 1024,
  stateCommitMs: 1000,
  snapshotCatchUpEntries: 5_000,
  stateRecoveriesMax: 5,
  clockMaxOffsetMs: 250,
  waitMsMax: 60_000,
  snapshotBytesMax: 64 * 1024 * 1024 * 1024,
  snapshotThreadNice: 19,
  join: false,
} satisfies Partial<NodeConfig>;

export function parseHostPort(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(":");
  const host = at > 0 ? address.slice(0, at) : "127.0.0.1";
  const port = Number(at >= 0 ? address.slice(at + 1) : address);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`address '${address}' is not host:port with a port in 0-65535`);
  }
  return { host: host.replace(/^\[|\]$/g, ""), port };
}

// Parses "1=127.0.0.1:22345/127.0.0.1:12345,2=..." (id=peer/client).
export function parseMembers(text: string): MemberAddress[] {
  return text
    .split(",")
    .filter((part) => part.trim() !== "")
    .map((part) => {
      const match = /^\s*(\d+)=([^/\s]+)\/([^/\s]+)\s*$/.exec(part);
      if (!match) throw new Error(`member '${part}' is not id=peerHost:port/clientHost:port`);
      return { id: Number(match[1]), peer: match[2]!, client: match[3]! };
    });
}

export function validateConfig(config: NodeConfig): void {
  const problems: string[] = [];
  if (!Number.isInteger(config.id) || config.id <= 0) problems.push("id must be a positive integer");
  if (!config.join && !config.members.some((m) => m.id === config.id)) {
    problems.push(`members must include this node (id ${config.id}) unless joining`);
  }
  if (new Set(config.members.map((m) => m.id)).size !== config.members.length) problems.push("member ids repeat");
  if (config.electionTicks <= config.heartbeatTicks) problems.push("electionTicks must exceed heartbeatTicks");
  if (!(Number.isInteger(config.stateCommitMs) && config.stateCommitMs <= STATE_COMMIT_MS_MAX)) {
    problems.push(`stateCommitMs must be a whole number of ms up to ${STATE_COMMIT_MS_MAX}`);
  }
  for (const key of ["tickMs", "pendingRequestsMax", "entryCommandsMax", "entryBytesMax", "inflightEntriesMax", "requestTimeoutMs", "snapshotEntries", "snapshotLogBytes", "stateCommitMs", "clockMaxOffsetMs", "snapshotBytesMax"] as const) {
    if (!(config[key] > 0)) problems.push(`${key} must be positive`);
  }
  if (!(Number.isInteger(config.snapshotCatchUpEntries) && config.snapshotCatchUpEntries >= 0)) problems.push("snapshotCatchUpEntries must be a whole number >= 0");
  if (!(Number.isInteger(config.snapshotThreadNice) && config.snapshotThreadNice >= -1 && config.snapshotThreadNice <= 19)) problems.push("snapshotThreadNice must be a whole number from -1 (no thread) to 19");
  if (!(Number.isInteger(config.stateRecoveriesMax) && config.stateRecoveriesMax >= 0)) problems.push("stateRecoveriesMax must be a whole number >= 0");
  // Below 4 entries of the largest size the catch-up margin would be 0 and every entry a snapshot.
  if (config.snapshotLogBytes < 4 * config.entryBytesMax) problems.push(`snapshotLogBytes must be at least 4 x entryBytesMax (${4 * config.entryBytesMax})`);
  parseHostPort(config.clientListen);
  parseHostPort(config.peerListen);
  if (problems.length > 0) throw new Error(`invalid configuration: ${problems.join("; ")}`);
}
