// The operations a client can ask of a Ferry cluster, as plain data. The text protocol, the
// binary protocol and the client library are three encodings of these same requests and replies;
// the node executes them (writes through Raft, reads through ReadIndex).
import type { ErrorCode } from "./errors.js";

// A hybrid logical clock timestamp, encoded as a decimal string on the wire (it exceeds 2^53):
// (physical milliseconds << 16) | logical counter. Totally ordered; see src/clock.
export type Timestamp = bigint;

export interface SendRequest {
  op: "send";
  recipients: string[]; // one, or several for an atomic fan-out
  body: Uint8Array;
  id?: string; // client-supplied message id: makes a retried SEND idempotent (dedupe window)
  headers?: Record<string, string>;
  delayMs?: number; // not visible before entry time + delayMs
  ttlMs?: number; // expires after entry time + ttlMs
  after?: Timestamp; // causal token: the new timestamp is above it
  // The sender's own HLC timestamp (same format as Timestamp). Orders the message in a
  // "sender-time" mailbox; default: the timestamp the leader stamps. Ignored by "log" mailboxes.
  senderTime?: Timestamp;
  sender?: string; // filled in by the server from the session's identity
}
export interface SendReply {
  ok: true;
  id: string;
  timestamp: Timestamp;
  duplicate: boolean; // true when the id was seen within the dedupe window and nothing was stored
}

export interface ReceiveRequest {
  op: "receive";
  mailbox: string;
  max: number; // 1..RECEIVE_MAX
  waitMs?: number; // long poll: wait up to this long for a first message
  visibilityMs?: number; // lease length; default: the mailbox's visibility timeout
  after?: Timestamp;
  // Acknowledges these ids of the same mailbox first, in the same log entry (ACK's rules: only
  // leased messages count). A RECEIVE that carries acks answers at once when it leases nothing:
  // it never long-polls, so the acks' confirmation is never held up by a wait.
  ack?: string[];
  // Acknowledges, also first, the batches these earlier answers leased (ReceiveReply.lease), each
  // as an ACK of the ids that batch leased would: its messages still leased are removed. Counts
  // toward idsPerRequestMax with `ack`, one per name.
  ackLeases?: string[];
}
export interface DeliveredMessage {
  id: string;
  sender: string;
  recipient: string;
  timestamp: Timestamp;
  deliveries: number; // including this one
  body: Uint8Array;
  headers?: Record<string, string>;
  senderTime?: Timestamp; // sender-time mailboxes: the time the message is ordered by
}
export interface ReceiveReply {
  ok: true;
  messages: DeliveredMessage[];
  acked?: number; // a RECEIVE with `ack` or `ackLeases`: the leased messages it removed (ACK's count)
  // A RECEIVE with `ackLeases`: how many names it carried. Its presence says the node took them (a
  // node older than them ignores them and answers without it).
  ackedLeases?: number;
  lease?: string; // the name of this batch's lease (see ackLeases), when it leased something
}

export interface AckRequest {
  op: "ack" | "nack";
  mailbox: string;
  ids: string[];
  delayMs?: number; // nack only: visible again after this delay
}
export interface AckReply {
  ok: true;
  count: number; // leased messages removed (ack) or released (nack); unknown ids are skipped
}

export interface ExtendRequest {
  op: "extend";
  mailbox: string;
  ids: string[];
  visibilityMs: number;
}

export interface ListRequest {
  op: "list";
  mailbox: string;
  limit?: number; // page size, default LIST_PAGE_DEFAULT
  cursor?: string; // from the previous page's next
  stale?: boolean; // serve from local state without a ReadIndex round (faster, may lag)
}
export type MessageState = "ready" | "leased" | "delayed";
export interface ListItem {
  id: string;
  sender: string;
  timestamp: Timestamp;
  state: MessageState;
  deliveries: number;
  bytes: number;
  senderTime?: Timestamp; // sender-time mailboxes: the time the message is ordered by
}
export interface ListReply {
  ok: true;
  items: ListItem[];
  next?: string; // cursor of the next page when there is one
}

export interface PurgeRequest {
  op: "purge" | "delete";
  mailbox: string;
}

// Per-mailbox settings (mirrors the broker's MailboxConfig).
export interface MailboxSettings {
  visibilityMs: number; // lease length of a RECEIVE that names none
  deliveriesMax: number; // deliveries before a released message is dead-lettered
  messagesMax: number; // capacity in messages
  bytesMax: number; // capacity in body bytes
  overflow: "reject" | "drop-oldest"; // what a SEND into a full mailbox does
  ttlMs: number; // default time to live; 0: none
  expiry: "drop" | "dead-letter"; // what happens to an expired message
  order: "log" | "sender-time"; // delivery and LIST order of messages sent from now on
  reorderWindowMs: number; // sender-time: a message is hidden until senderTime + this
}

// Replaces the mailbox's overrides of the cluster defaults with `settings` (fields left out take
// the cluster default; {} resets the mailbox). Answers with the effective settings.
export interface ConfigRequest {
  op: "config";
  mailbox: string;
  settings: Partial<MailboxSettings>;
}
export interface ConfigReply {
  ok: true;
  config: MailboxSettings;
}

export interface StatusRequest {
  op: "status";
}
export interface NodeStatus {
  id: number;
  address: string; // client address
  role: string;
  term: number;
  leader: number;
  commit: number;
  applied: number;
  lag?: number; // leader's view: entries this node is behind
  clockOffsetMs?: number;
  healthy: boolean;
}
export interface StatusReply {
  ok: true;
  nodes: NodeStatus[];
  self: number;
}

// Membership and leadership (admin). add: a new node joins as a learner, catches up, and is
// promoted to voter; remove: a node leaves the configuration; transfer: hand leadership to nodeId
// (or to the most up-to-date voter when nodeId is 0).
export interface ClusterRequest {
  op: "cluster";
  action: "add" | "remove" | "transfer";
  nodeId: number;
  peerAddress?: string; // add: the new node's peer (Raft) address, host:port
  clientAddress?: string; // add: the new node's client address, host:port
}
export interface ClusterReply {
  ok: true;
  message: string;
}

export type Request =
  | SendRequest
  | ClusterRequest
  | ReceiveRequest
  | AckRequest
  | ExtendRequest
  | ListRequest
  | PurgeRequest
  | ConfigRequest
  | StatusRequest;

export interface ErrorReply {
  ok: false;
  code: ErrorCode;
  message: string;
  leaderHint?: string;
}

// Defaults and bounds of request arguments; servers enforce them, clients may pre-check.
export const RECEIVE_MAX = 1000;
export const LIST_PAGE_DEFAULT = 100;
export const LIST_PAGE_MAX = 1000;

// ---- Added by the server: session identity, replies without a type above, the reply union. ----

// Binary protocol: sets the connection's identity (the sender of later SENDs), like the text
// protocol's `HELLO <name>`. Answered by the server itself; it never reaches the node.
export interface HelloRequest {
  op: "hello";
  name: string;
  forwardProof?: string; // node-to-node only: proves the cluster secret (src/server/forwarder.ts)
  // Credentials, for a node that requires them (src/server/auth.ts): the identity becomes `user`.
  // The text protocol's `AUTH <user> <password>` is this request.
  user?: string;
  password?: string;
}
export interface HelloReply {
  ok: true;
  name: string; // the identity now in effect
}

export interface PurgeReply {
  ok: true;
  count: number; // messages removed
}

// Binary protocol: stops the wait of a long-polling RECEIVE this connection has in flight (its
// rid in `of`). That RECEIVE is then answered at once with what it has (usually nothing), so a
// client that gives up on a long poll leaves no messages leased to nobody. Answered by the
// server itself; `cancelled` is false when no waiting RECEIVE has that rid (it was answered).
export interface CancelRequest {
  op: "cancel";
  of: number;
}
export interface CancelReply {
  ok: true;
  cancelled: boolean;
}

// What the client may send on a connection: the node's requests plus the server-local ones.
export type ClientRequest = Request | HelloRequest | CancelRequest;

// The reply type of each op (extend answers like ack: how many leases were extended).
export interface ReplyByOp {
  send: SendReply;
  receive: ReceiveReply;
  ack: AckReply;
  nack: AckReply;
  extend: AckReply;
  list: ListReply;
  purge: PurgeReply;
  delete: PurgeReply;
  config: ConfigReply;
  status: StatusReply;
  cluster: ClusterReply;
  hello: HelloReply;
  cancel: CancelReply;
}
export type Reply = ReplyByOp[keyof ReplyByOp];
// Any ok reply a follower forwarded to the leader and relayed also names the leader's client
// address, so the client can send there directly (src/server/forwarder.ts).
export type ForwardedReply = Reply & { leaderHint: string };
export type ReplyFor<R extends { op: keyof ReplyByOp }> = ReplyByOp[R["op"]];
