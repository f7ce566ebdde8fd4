// The Raft core's data types and the contract between the core and its driver.
//
// The core (RaftNode) is a pure state machine: it does no I/O, reads no clock and draws no
// randomness of its own. The driver feeds it messages (step), time (tick) and proposals, then
// collects a Ready batch of work, does it (persist, send, apply) and calls advance().

export type NodeId = number; // > 0; 0 means "none"
export const NONE: NodeId = 0;

export type EntryType = "normal" | "conf-change";

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  // For "normal": opaque application data (may be empty: a new leader's no-op).
  // For "conf-change": an encoded ConfChange (see encodeConfChange in confchange.ts).
  data: Uint8Array;
}

export interface HardState {
  term: number;
  vote: NodeId;
  commit: number;
}

// A cluster configuration. While votersOutgoing is non-empty the cluster is in joint consensus:
// decisions need a majority of voters AND a majority of votersOutgoing.
export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
  votersOutgoing: NodeId[];
  // Learners that become voters when the joint configuration is left (a demoted voter).
  learnersNext: NodeId[];
  autoLeave: boolean;
}

export interface SnapshotMeta {
  index: number;
  term: number;
  conf: ConfState;
}

export interface Snapshot {
  meta: SnapshotMeta;
  data: Uint8Array; // the application state machine's snapshot, opaque to raft
  // A snapshot kept on disk also gives its size and its data as a stream, so that a sender need
  // not hold it whole (reading `data` then reads the whole file at once).
  dataBytes?: number;
  checksum?: number; // CRC32C of the data, known without reading it
  readChunks?(chunkBytes: number): AsyncIterator<Uint8Array>;
}

// Where a snapshot arriving from the leader goes, chunk by chunk (the transport writes to it; a
// node's storage gives one that writes the snapshot's file). finish() checks the byte count and
// the checksum the sender announced and gives the snapshot.
export interface SnapshotSink {
  write(chunk: Uint8Array): Promise<void>;
  finish(): Promise<Snapshot>;
  abort(): Promise<void>;
}

// The size of a snapshot's data, without reading it when it is on disk.
export function snapshotDataBytes(snapshot: Snapshot): number {
  return snapshot.dataBytes ?? snapshot.data.length;
}

export type ConfChangeType = "add-voter" | "add-learner" | "remove-node";
export interface ConfChangeSingle {
  type: ConfChangeType;
  nodeId: NodeId;
}
// "auto": a single change goes in one step when that is safe, joint otherwise, and the joint
// configuration is left automatically. "joint": enter joint consensus and stay until an empty
// ConfChange leaves it. changes = [] with a joint config active means "leave joint".
export interface ConfChange {
  transition: "auto" | "joint";
  changes: ConfChangeSingle[];
  context?: Uint8Array;
}

export type MessageType =
  | "append" // AppendEntries (also carries commit)
  | "append-response"
  | "vote"
  | "vote-response"
  | "prevote"
  | "prevote-response"
  | "heartbeat"
  | "heartbeat-response"
  | "snapshot" // InstallSnapshot
  | "timeout-now" // leadership transfer: campaign at once
  | "read-index" // follower asks the leader for a read index
  | "read-index-response"
  | "propose"; // follower forwards a proposal to the leader (when enabled)

export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  logTerm: number; // append: term of entry at index; vote: candidate's last log term
  index: number; // append: index preceding entries; vote: candidate's last index; response: match/last
  entries: Entry[];
  commit: number;
  reject: boolean;
  rejectHint: number; // append-response on reject: follower's hint index
  // append-response on reject: term of the follower's entry at rejectHint (fast backtracking)
  rejectTerm?: number;
  snapshot?: Snapshot;
  context?: Uint8Array; // read-index request context; heartbeat context for ReadIndex rounds
  // vote/prevote: the campaign follows a leadership transfer (timeout-now), so the receiver
  // grants it even while it believes a leader is alive (the lease check would refuse it).
  leaderTransfer?: boolean;
}

export type Role = "follower" | "pre-candidate" | "candidate" | "leader";

export interface SoftState {
  leader: NodeId;
  role: Role;
}

export interface ReadState {
  index: number; // the read may be served once the applied index reaches this
  context: Uint8Array; // the caller's request context, given to readIndex()
}

export interface Ready {
  softState?: SoftState; // present when leader or role changed since the last Ready
  hardState?: HardState; // present when changed: persist before sending messagesAfterPersist
  entries: Entry[]; // append to stable storage; entries[0].index may overwrite a suffix
  snapshot?: Snapshot; // a received snapshot to persist (and to restore the state machine from)
  messages: Message[]; // may be sent at once (in parallel with persisting)
  messagesAfterPersist: Message[]; // send only after hardState, entries and snapshot are durable
  committedEntries: Entry[]; // apply in order, after persisting this Ready
  readStates: ReadState[];
}

// Read access to the log that has been persisted. Synchronous: implementations serve recent
// entries from memory; a miss may read from disk (the cold path of a lagging follower).
export interface LogStorage {
  initialState(): { hardState: HardState; conf: ConfState };
  // Entries [lo, hi), at least one if lo < hi, then as many as fit in maxBytes.
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  term(index: number): number; // throws CompactedError below firstIndex-1
  firstIndex(): number; // index of the first entry still available (snapshot.index + 1)
  lastIndex(): number;
  // The most recent snapshot (throws SnapshotUnavailableError if none yet). Its data may be read
  // from disk when asked for, and only while it is the most recent one: a sender that reads it
  // later fails to send it, and the core sends the newer one (reportSnapshot).
  snapshot(): Snapshot;
}

export class CompactedError extends Error {
  override name = "CompactedError";
}
export class SnapshotUnavailableError extends Error {
  override name = "SnapshotUnavailableError";
}

// Bugs that tests plant to show the simulator catches them. Never set in production.
export interface PlantedBugs {
  commitPreviousTermByCount?: boolean; // commit an older term's entry once a majority has it
  voteBeforePersist?: boolean; // reply to a vote without waiting for the vote to be persisted
  skipVoteLogCheck?: boolean; // grant votes without the up-to-date log check
  takeCommittedUnpersisted?: boolean; // takeCommitted() hands out committed entries not yet persisted here
}

export interface RaftConfig {
  id: NodeId;
  electionTicks: number; // base election timeout; the real one is in [electionTicks, 2*electionTicks)
  heartbeatTicks: number;
  preVote: boolean;
  checkQuorum: boolean;
  maxMessageBytes: number; // soft limit on the entries of one append
  maxInflightMessages: number; // appends in flight per follower in replicate mode
  maxInflightBytes: number; // 0 = no limit
  maxCommittedBytesPerReady: number;
  maxUncommittedBytes: number; // leader refuses proposals past this (0 = no limit)
  // When the commit index moves, tell every follower at once with an append even if it carries no
  // entries (true, etcd's behaviour and the default), or only with the next append that carries
  // entries or the next heartbeat (false). Lazy saves a message to each follower and its answer per
  // commit, the dominant cost of a lightly loaded cluster; followers then apply one append or at
  // most one heartbeat interval later. Commit latency on the leader is the same either way.
  eagerCommitBroadcast?: boolean;
  random: () => number; // uniform in [0, 1): the injected randomness (seeded in the simulator)
  applied?: number; // the state machine's applied index at start (restart)
  logger?: (line: string) => void;
  bugs?: PlantedBugs;
}

export interface ProgressStatus {
  match: number;
  next: number;
  state: "probe" | "replicate" | "snapshot";
  recentActive: boolean;
  heardRecently: boolean; // heard from within the last one to two election timeouts
  learner: boolean;
  inflightCount?: number; // appends in flight (replicate state)
  pendingSnapshot?: number; // snapshot state: the index of the snapshot being sent
}

export interface RaftStatus {
  id: NodeId;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  lead: NodeId;
  role: Role;
  firstIndex: number;
  lastIndex: number;
  conf: ConfState;
  progress: Map<NodeId, ProgressStatus>; // leader only
  leadTransferee: NodeId;
}

// Errors the API returns (thrown) to the driver; all are expected operating conditions.
export type RaftErrorCode =
  | "NOT_LEADER"
  | "PROPOSAL_DROPPED" // leader transfer in progress, or uncommitted limit reached
  | "CONF_CHANGE_PENDING"
  | "INVALID_CONF_CHANGE";

export class RaftError extends Error {
  override name = "RaftError";
  constructor(
    readonly code: RaftErrorCode,
    message: string,
  ) {
    super(message);
  }
}
