// FerryClient: the typed client library. It keeps one connection to the node it believes leads
// (seeds first, then the leader named by STATUS or by NOT_LEADER's leaderHint; arguments.ts checks
// what goes out, replies.ts shapes what comes back), pipelines requests over it within a bounded
// window, and retries a failed call only when doing so cannot apply it twice (see retry.ts):
// every SEND carries a message id, generated here when the caller gives none, so a retried SEND
// is deduplicated by the cluster. Each call has one deadline covering the window wait,
// connecting, every attempt and every backoff sleep.
import type {
  AckRequest,
  ClusterReply,
  ClusterRequest,
  ConfigRequest,
  DeliveredMessage,
  ExtendRequest,
  ListReply,
  ListRequest,
  MailboxSettings,
  PurgeRequest,
  NodeStatus,
  ReceiveRequest,
  Request,
  SendReply,
  SendRequest,
  StatusReply,
  Timestamp,
} from "../protocol/api.js";
import { LIST_PAGE_MAX, RECEIVE_MAX } from "../protocol/api.js";
import { FerryError } from "../protocol/errors.js";
import { parseLeaseName } from "../protocol/leases.js";
import { checkedAddress, checkedNonNegative, checkedPositive, requireName, toBytes } from "./arguments.js";
import { backoffDelayMs } from "./backoff.js";
import { publishConnected, publishDisconnected, publishLeaderFound, publishRetry } from "./diagnostics.js";
import { Connection, ConnectionError, NotSent, type ReplyRecord, type RequestListener } from "./connection.js";
import { type ConsumedMessage, type ConsumeOptions, consumeMailbox } from "./consume.js";
import { type ClientOptions, type ResolvedOptions, resolveOptions, UNREACHABLE_MEMORY_MS } from "./options.js";
import { leaderAddressOf, toDeliveredMessage, toListItem, toTimestamp } from "./replies.js";
import { mayRetry, type RetryKind, routeAfter } from "./retry.js";
import { uuidv7 } from "./ids.js";
import { CallScope, type Cancel, type DeadlineList, Deadlines, raceCancel, sleep } from "./scope.js";
import { noop, promiseInto } from "./settlers.js";
import { RequestWindow } from "./window.js";

export interface CallOptions {
  timeoutMs?: number; // this call's deadline, retries included (default: the client's timeoutMs)
  signal?: AbortSignal; // aborting rejects the call with signal.reason
}
export interface SendOptions extends CallOptions {
  id?: string; // message id; default a time-ordered UUIDv7 (ids.ts). Reusing it makes a resend a no-op.
  headers?: Record<string, string>;
  delayMs?: number;
  ttlMs?: number;
  after?: Timestamp; // causal token: the new message's timestamp will be above it
  senderTime?: Timestamp; // the sender's HLC timestamp: orders the message in a sender-time mailbox
}
export interface ReceiveOptions extends CallOptions {
  max?: number; // 1..RECEIVE_MAX, default 1
  waitMs?: number; // long poll; the default timeoutMs is extended by waitMs
  visibilityMs?: number;
  after?: Timestamp;
  // Acknowledge these ids of the mailbox first, in the same request and log entry (an ACK's
  // rules). Such a RECEIVE answers at once when it leases nothing: it does not long-poll.
  ack?: string[];
  // Acknowledge, also first, the batches of these lease names (ReceivedBatch.lease), each as an
  // ACK of the ids its batch leased: one short name instead of a batch's ids.
  ackLeases?: string[];
}
// receiveBatch()'s answer: the messages leased, how many messages `ack` and `ackLeases`
// acknowledged, and the name of this batch's lease (when it leased something).
export interface ReceivedBatch {
  messages: DeliveredMessage[];
  acked: number;
  lease?: string;
  // With ackLeases: false when the node did not take them (one older than lease names ignores
  // them): their messages are still leased; ack them by id.
  leasesAcked?: boolean;
}
export interface NackOptions extends CallOptions {
  delayMs?: number;
}
export interface ListOptions extends CallOptions {
  limit?: number;
  cursor?: string;
  stale?: boolean;
}
export interface ClusterAddresses {
  peerAddress?: string;
  clientAddress?: string;
}

// Sent once per connection when the client has a name or a user: the identity its SENDs carry,
// and the login a node with a users file requires. Mirrors HelloRequest of src/protocol/api.ts.
interface HelloWireRequest {
  op: "hello";
  name: string;
  user?: string;
  password?: string;
}
type WireRequest = Request | HelloWireRequest;

export const RECEIVE_MAX_DEFAULT = 1;
export const IDS_PER_REQUEST_MAX = 1000; // the servers' default idsPerRequestMax

// Connects to the cluster (waits until some seed accepts, up to timeoutMs) and returns the client.
export async function connect(options: ClientOptions): Promise<FerryClient> {
  const client = new FerryClient(options);
  try {
    await client.ready();
  } catch (error) {
    await client.close();
    throw error;
  }
  return client;
}

const NO_OPTIONS: SendOptions = Object.freeze({});

// The SEND request of send()'s arguments; throws FerryError INVALID for a bad one.
function sendRequestOf(recipient: string | string[], body: string | Uint8Array, options: SendOptions): SendRequest {
  const recipients = Array.isArray(recipient) ? recipient : [recipient];
  if (recipients.length === 0) throw new FerryError("INVALID", "send: give at least one recipient");
  for (const name of recipients) requireName("recipient", name);
  const id = options.id ?? uuidv7();
  // A generated id is valid by construction; only the caller's is checked.
  if (options.id !== undefined && (typeof id !== "string" || !/^[\x21-\x7e]+$/.test(id))) {
    throw new FerryError("INVALID", "send: id must be a non-empty word of printable ASCII");
  }
  const request: SendRequest = { op: "send", recipients, body: toBytes(body), id };
  if (options.headers !== undefined) request.headers = options.headers;
  if (options.delayMs !== undefined) request.delayMs = checkedNonNegative("delayMs", options.delayMs);
  if (options.ttlMs !== undefined) request.ttlMs = checkedPositive("ttlMs", options.ttlMs);
  if (options.after !== undefined) request.after = options.after;
  if (options.senderTime !== undefined) {
    if (typeof options.senderTime !== "bigint" || options.senderTime < 0n) throw new FerryError("INVALID", "send: senderTime must be a non-negative bigint (HLC timestamp)");
    request.senderTime = options.senderTime;
  }
  return request;
}

// The SEND reply as send() resolves it; the id is the request's when the node leaves it out.
function sendReplyOf(reply: ReplyRecord, request: WireRequest): SendReply {
  const id = reply.id;
  return { ok: true, id: typeof id === "string" ? id : (request as SendRequest).id!, timestamp: toTimestamp(reply.timestamp), duplicate: reply.duplicate === true };
}

// Throws FerryError INVALID unless `ids` is a list of non-empty strings.
function checkedIds(op: string, ids: unknown): void {
  if (!Array.isArray(ids) || ids.some((id) => typeof id !== "string" || id.length === 0)) {
    throw new FerryError("INVALID", `${op}: ids must be non-empty strings`);
  }
}

// Throws FerryError INVALID unless `names` is a list of lease names (ReceivedBatch.lease) that fits
// in one request.
function checkedLeaseNames(names: unknown): void {
  if (!Array.isArray(names) || names.some((name) => parseLeaseName(name) === undefined)) {
    throw new FerryError("INVALID", "receive: ackLeases must be lease names that RECEIVEs answered with");
  }
  if (names.length > IDS_PER_REQUEST_MAX) throw new FerryError("INVALID", `receive: ${names.length} lease names; a request takes at most ${IDS_PER_REQUEST_MAX}`);
}

function asIs(reply: ReplyRecord): ReplyRecord {
  return reply;
}

// The first attempt of a call on the fast path: the listener of its request, holding what the
// call needs to finish or to go on retrying.
class FirstAttempt implements RequestListener {
  resolve: (value: unknown) => void = noop; // a function per instance here would cost one per call
  reject: (error: unknown) => void = noop;

  constructor(
    private readonly settled: (attempt: FirstAttempt, reply: ReplyRecord | undefined, error: unknown) => void,
    readonly scope: CallScope,
    readonly kind: RetryKind,
    readonly request: WireRequest,
    readonly address: string,
    readonly shape: (reply: ReplyRecord, request: WireRequest) => unknown,
  ) {}

  onSettled(reply: ReplyRecord | undefined, error: unknown): void {
    this.settled(this, reply, error);
  }
}

export class FerryClient {
  private readonly options: ResolvedOptions;
  private readonly window: RequestWindow;
  private readonly random: () => number = Math.random;
  private target: string;
  private seedIndex = 0;
  private connection: Connection | undefined;
  private connecting: Promise<Connection> | undefined;
  private readonly retired = new Set<Connection>();
  // Deadlines of the calls under way (ended at once by close()), one list per duration.
  private readonly callDeadlines = new Deadlines();
  // Deadlines of idempotent attempts in flight, and of internal requests (hello, status).
  private readonly otherDeadlines = new Deadlines();
  private readonly attemptDeadlines: DeadlineList;
  private readonly unreachableSinceMs = new Map<string, number>(); // address → last failed connect
  private closed = false;

  constructor(options: ClientOptions) {
    this.options = resolveOptions(options);
    this.window = new RequestWindow(this.options.window);
    this.target = this.options.seeds[0]!;
    this.attemptDeadlines = this.otherDeadlines.list(this.options.attemptTimeoutMs);
  }

  // The address requests currently go to (a seed, or the leader a node pointed at).
  get address(): string {
    return this.target;
  }

  // Requests in flight and callers waiting for a slot of the window.
  get pending(): { inFlight: number; waiting: number } {
    return { inFlight: this.window.used, waiting: this.window.waiting };
  }

  // Resolves once a connection is open (retrying seeds with backoff until timeoutMs).
  async ready(options: CallOptions = {}): Promise<void> {
    const scope = this.openScope(options);
    try {
      await this.withRetries(scope, "idempotent", "connect", undefined);
    } finally {
      scope.dispose();
    }
  }

  // Not an async function: its promise is the call's own (a bad argument still rejects it).
  send(recipient: string | string[], body: string | Uint8Array, options: SendOptions = NO_OPTIONS): Promise<SendReply> {
    let request: SendRequest;
    try {
      request = sendRequestOf(recipient, body, options);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.callAndShape(request, "idempotent", options, sendReplyOf);
  }

  async receive(mailbox: string, options: ReceiveOptions = {}): Promise<DeliveredMessage[]> {
    return (await this.receiveBatch(mailbox, options)).messages;
  }

  // receive() with the count of the acks it carried (options.ack, options.ackLeases) and the name
  // of its lease: one round trip acknowledges a batch and leases the next. A node that does not
  // know `ack` (older than the client) answers without a count; the ids then go out as an ACK of
  // their own before this resolves. One that does not know `ackLeases` ignores them (leasesAcked
  // false).
  async receiveBatch(mailbox: string, options: ReceiveOptions = {}): Promise<ReceivedBatch> {
    requireName("mailbox", mailbox);
    const max = options.max ?? RECEIVE_MAX_DEFAULT;
    if (!Number.isInteger(max) || max < 1 || max > RECEIVE_MAX) {
      throw new FerryError("INVALID", `receive: max must be an integer from 1 to ${RECEIVE_MAX}, got ${max}`);
    }
    const request: ReceiveRequest = { op: "receive", mailbox, max };
    if (options.waitMs !== undefined) request.waitMs = checkedNonNegative("waitMs", options.waitMs);
    if (options.visibilityMs !== undefined) request.visibilityMs = checkedPositive("visibilityMs", options.visibilityMs);
    if (options.after !== undefined) request.after = options.after;
    // Lease names count as ids toward a request's limit; the ids past one request's worth go out
    // as an ACK of their own, alongside.
    const leases = options.ackLeases ?? [];
    checkedLeaseNames(leases);
    if (leases.length > 0) request.ackLeases = leases;
    const ack = options.ack ?? [];
    checkedIds("receive", ack);
    const room = IDS_PER_REQUEST_MAX - leases.length;
    const extra = ack.length > room ? this.ack(mailbox, ack.slice(room), options) : undefined;
    if (ack.length > 0 && room > 0) request.ack = ack.length > room ? ack.slice(0, room) : ack;
    // A long poll legitimately takes waitMs before its answer: the default deadline covers it
    // (also with acks, which make a node answer at once: a node older than them still waits).
    const timeoutMs = options.timeoutMs ?? this.options.timeoutMs + (request.waitMs ?? 0);
    const reply = await this.call(request, "unapplied-only", { ...options, timeoutMs });
    const messages = Array.isArray(reply.messages) ? reply.messages.map((message) => toDeliveredMessage(message as Record<string, unknown>)) : [];
    let acked = 0;
    if (typeof reply.acked === "number") acked = reply.acked;
    else if (request.ack !== undefined) acked = await this.ack(mailbox, request.ack, options);
    if (extra !== undefined) acked += await extra;
    const batch: ReceivedBatch = { messages, acked };
    if (typeof reply.lease === "string") batch.lease = reply.lease;
    if (request.ackLeases !== undefined) batch.leasesAcked = typeof reply.ackedLeases === "number";
    return batch;
  }

  async ack(mailbox: string, ids: string[], options: CallOptions = {}): Promise<number> {
    return this.settle({ op: "ack", mailbox, ids }, options);
  }

  async nack(mailbox: string, ids: string[], options: NackOptions = {}): Promise<number> {
    const request: AckRequest = { op: "nack", mailbox, ids };
    if (options.delayMs !== undefined) request.delayMs = checkedNonNegative("delayMs", options.delayMs);
    return this.settle(request, options);
  }

  async extend(mailbox: string, ids: string[], visibilityMs: number, options: CallOptions = {}): Promise<number> {
    const request: ExtendRequest = { op: "extend", mailbox, ids, visibilityMs: checkedPositive("visibilityMs", visibilityMs) };
    return this.settle(request, options);
  }

  async list(mailbox: string, options: ListOptions = {}): Promise<ListReply> {
    requireName("mailbox", mailbox);
    const request: ListRequest = { op: "list", mailbox };
    if (options.limit !== undefined) {
      if (!Number.isInteger(options.limit) || options.limit < 1 || options.limit > LIST_PAGE_MAX) {
        throw new FerryError("INVALID", `list: limit must be an integer from 1 to ${LIST_PAGE_MAX}, got ${options.limit}`);
      }
      request.limit = options.limit;
    }
    if (options.cursor !== undefined) request.cursor = options.cursor;
    if (options.stale !== undefined) request.stale = options.stale;
    const reply = await this.call(request, "idempotent", options);
    const items = Array.isArray(reply.items) ? reply.items.map((item) => toListItem(item as Record<string, unknown>)) : [];
    const result: ListReply = { ok: true, items };
    if (typeof reply.next === "string") result.next = reply.next;
    return result;
  }

  // Removes every message of a mailbox (purge) or the mailbox itself (delete); resolves with the
  // number of messages removed.
  async purge(mailbox: string, options: CallOptions = {}): Promise<number> {
    return this.purgeOrDelete({ op: "purge", mailbox }, options);
  }

  async deleteMailbox(mailbox: string, options: CallOptions = {}): Promise<number> {
    return this.purgeOrDelete({ op: "delete", mailbox }, options);
  }

  // Replaces the mailbox's settings with `settings` (fields left out take the cluster defaults;
  // {} resets) and resolves with the effective settings. Setting the same values twice is
  // harmless, so the call is retried like a SEND.
  async configure(mailbox: string, settings: Partial<MailboxSettings>, options: CallOptions = {}): Promise<MailboxSettings> {
    requireName("mailbox", mailbox);
    if (typeof settings !== "object" || settings === null) throw new FerryError("INVALID", "configure: settings must be an object");
    const request: ConfigRequest = { op: "config", mailbox, settings: { ...settings } };
    const reply = await this.call(request, "idempotent", options);
    return reply.config as MailboxSettings;
  }

  async status(options: CallOptions = {}): Promise<StatusReply> {
    const reply = await this.call({ op: "status" }, "idempotent", options);
    const nodes = Array.isArray(reply.nodes) ? (reply.nodes as NodeStatus[]) : [];
    return { ok: true, nodes, self: Number(reply.self) };
  }

  async cluster(action: ClusterRequest["action"], nodeId: number, addresses: ClusterAddresses = {}, options: CallOptions = {}): Promise<ClusterReply> {
    if (!["add", "remove", "transfer"].includes(action)) throw new FerryError("INVALID", `cluster: unknown action '${action}'`);
    if (!Number.isInteger(nodeId) || nodeId < 0) throw new FerryError("INVALID", `cluster: node id must be a non-negative integer, got ${nodeId}`);
    const request: ClusterRequest = { op: "cluster", action, nodeId };
    if (addresses.peerAddress !== undefined) request.peerAddress = checkedAddress(addresses.peerAddress);
    if (addresses.clientAddress !== undefined) request.clientAddress = checkedAddress(addresses.clientAddress);
    if (action === "add" && (request.peerAddress === undefined || request.clientAddress === undefined)) {
      throw new FerryError("INVALID", "cluster add: give both peerAddress and clientAddress");
    }
    const reply = await this.call(request, "unapplied-only", options);
    return { ok: true, message: typeof reply.message === "string" ? reply.message : "" };
  }

  // Receives in a loop and yields each message; see consume.ts for the ack rules.
  consume(mailbox: string, options: ConsumeOptions = {}): AsyncIterable<ConsumedMessage> {
    requireName("mailbox", mailbox);
    return consumeMailbox(this, mailbox, options);
  }

  // Fails calls waiting for the window, closes every connection; calls in flight fail with
  // UNAVAILABLE. Later calls fail at once.
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Calls waiting for the window, connecting or backing off end now; calls in flight end
    // when their connection closes below.
    const closedError = new ConnectionError("the client was closed before an answer", this.target, false);
    for (const scope of this.callDeadlines.entries()) (scope as CallScope).abort(closedError);
    this.window.rejectWaiters(closedError);
    const connections = [...this.retired];
    if (this.connection !== undefined) connections.push(this.connection);
    this.connection = undefined;
    await Promise.all(
      connections.map(
        (connection) =>
          new Promise<void>((resolve) => {
            connection.onClosed(resolve);
            connection.close();
          }),
      ),
    );
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private async settle(request: AckRequest | ExtendRequest, options: CallOptions): Promise<number> {
    requireName("mailbox", request.mailbox);
    checkedIds(request.op, request.ids);
    if (request.ids.length === 0) return 0;
    // Nodes take at most IDS_PER_REQUEST_MAX ids per request (their default): split longer lists
    // into pipelined requests and add up the counts.
    const chunks: Array<AckRequest | ExtendRequest> = [];
    for (let start = 0; start < request.ids.length; start += IDS_PER_REQUEST_MAX) {
      chunks.push({ ...request, ids: request.ids.slice(start, start + IDS_PER_REQUEST_MAX) });
    }
    const replies = await Promise.all(chunks.map((chunk) => this.call(chunk, "unapplied-only", options)));
    return replies.reduce((sum, reply) => sum + Number(reply.count ?? 0), 0);
  }

  private async purgeOrDelete(request: PurgeRequest, options: CallOptions): Promise<number> {
    requireName("mailbox", request.mailbox);
    const reply = await this.call(request, "unapplied-only", options);
    return Number(reply.count ?? 0);
  }

  private call(request: WireRequest, kind: RetryKind, options: CallOptions): Promise<ReplyRecord> {
    return this.callAndShape(request, kind, options, asIs);
  }

  // Runs the call and resolves with shape(reply). The common case (a window slot free, the
  // connection to the target open) sends at once with no promise but the call's own, and enters
  // the retry loop only when that first attempt fails, as its retry 0; otherwise the whole call
  // goes through the loop. Both ways obey the same rules (withRetries).
  private callAndShape<T>(request: WireRequest, kind: RetryKind, options: CallOptions, shape: (reply: ReplyRecord, request: WireRequest) => T): Promise<T> {
    let scope: CallScope;
    try {
      scope = this.openScope(options);
    } catch (error) {
      return Promise.reject(error);
    }
    const connection = this.openConnectionNow();
    if (connection === undefined || !this.window.tryAcquire()) {
      const reply = this.callThroughRetries(scope, kind, request);
      return shape === asIs ? (reply as Promise<T>) : reply.then((record) => shape(record, request));
    }
    const attempt = new FirstAttempt(this.firstAttemptSettled, scope, kind, request, connection.address, shape);
    const promise = promiseInto<unknown>(attempt) as Promise<T>;
    let notSent: NotSent | undefined;
    try {
      notSent = connection.send(request, scope, kind === "idempotent" ? this.attemptDeadlines : undefined, attempt);
    } catch (error) {
      notSent = new NotSent(error);
    }
    // Refused before writing: the retry loop takes over (in a microtask, after this returns).
    if (notSent !== undefined) attempt.onSettled(undefined, notSent.error);
    return promise;
  }

  // The outcome of a call's first attempt made by callAndShape (one function per client, given
  // to each FirstAttempt). Success settles the call here; a failure goes on in the retry loop,
  // after the event that reported it (a reply read, a deadline, an abort) has been handled.
  private readonly firstAttemptSettled = (attempt: FirstAttempt, reply: ReplyRecord | undefined, error: unknown): void => {
    if (reply === undefined) {
      queueMicrotask(() => {
        this.retryAfterFirstAttempt(attempt.scope, attempt.kind, attempt.request, error, attempt.address).then((record) => attempt.shape(record, attempt.request), undefined).then(attempt.resolve, attempt.reject);
      });
      return;
    }
    let value: unknown;
    try {
      if (reply.leaderHint !== undefined) this.followLeaderHint(attempt.address, reply.leaderHint);
      value = attempt.shape(reply, attempt.request);
    } catch (failure) {
      attempt.reject(failure);
      return;
    } finally {
      this.window.release();
      attempt.scope.dispose();
    }
    attempt.resolve(value);
  };

  private async callThroughRetries(scope: CallScope, kind: RetryKind, request: WireRequest): Promise<ReplyRecord> {
    try {
      if (!this.window.tryAcquire()) await this.window.acquire(scope);
      try {
        return (await this.withRetries(scope, kind, request.op, request))!;
      } finally {
        this.window.release();
      }
    } finally {
      scope.dispose();
    }
  }

  // The first attempt of a call (window slot held) failed on the connection to `address`.
  private async retryAfterFirstAttempt(scope: CallScope, kind: RetryKind, request: WireRequest, failure: unknown, address: string): Promise<ReplyRecord> {
    try {
      return (await this.withRetries(scope, kind, request.op, request, { failure, address }))!;
    } finally {
      this.window.release();
      scope.dispose();
    }
  }

  private openScope(options: CallOptions): CallScope {
    if (this.closed) throw new ConnectionError("client closed", this.target, false);
    return new CallScope(this.callDeadlines, options.timeoutMs ?? this.options.timeoutMs, options.signal);
  }

  // Sends `request` (or, without one, only gets a connection) until it succeeds, fails in a way
  // that must not be retried, or the scope ends. Between attempts it reroutes (leader hint, next
  // seed) and backs off; the first redirect to a hinted leader goes at once. `firstAttempt`: the
  // call's fast path already made attempt 0 on the connection to `address`, which failed.
  private async withRetries(
    scope: CallScope,
    kind: RetryKind,
    op: string,
    request: WireRequest | undefined,
    firstAttempt?: { failure: unknown; address: string },
  ): Promise<ReplyRecord | undefined> {
    let redirectIsFree = true;
    let lastFailure: FerryError | undefined;
    for (let retry = 0; ; retry++) {
      let address: string | undefined;
      let failure: unknown;
      if (retry === 0 && firstAttempt !== undefined) {
        address = firstAttempt.address;
        failure = firstAttempt.failure;
      } else {
        try {
          const connection = this.openConnectionNow() ?? (await this.connectionFor(scope));
          address = connection.address;
          if (request === undefined) return undefined;
          const reply = await this.attempt(connection, request, kind, scope);
          if (reply.leaderHint !== undefined) this.followLeaderHint(connection.address, reply.leaderHint);
          return reply;
        } catch (error) {
          failure = error;
        }
      }
      if (scope.aborted) {
        // Deadline passed while still connecting: the last real error says more than TIMEOUT.
        // (With a request in flight, TIMEOUT is the truth: it may or may not have been applied.)
        if (scope.timedOut && address === undefined && lastFailure !== undefined) throw lastFailure;
        throw scope.reason;
      }
      if (!(failure instanceof FerryError)) throw failure;
      if (failure instanceof ConnectionError) address ??= failure.address;
      const route = this.reroute(failure, address);
      if (this.closed || !mayRetry(kind, failure) || retry >= this.options.retriesMax) throw failure;
      publishRetry({ op, code: failure.code, message: failure.message, retry, from: address, to: this.target });
      lastFailure = failure;
      if (route === "redirect" && redirectIsFree) {
        redirectIsFree = false;
        continue;
      }
      try {
        await sleep(backoffDelayMs(retry, this.options.reconnectMinMs, this.options.reconnectMaxMs, this.random), scope);
      } catch (reason) {
        throw scope.timedOut ? failure : reason; // as above: backing off, nothing in flight
      }
    }
  }

  // One request on one connection. Idempotent requests also get the attempt deadline, after
  // which the retry loop sends them elsewhere; the others wait for the call's deadline.
  private attempt(connection: Connection, request: WireRequest, kind: RetryKind, scope: CallScope): Promise<ReplyRecord> {
    return connection.request(request, scope, kind === "idempotent" ? this.attemptDeadlines : undefined);
  }

  // The open connection to the target, when there is one (no promise, no tick).
  private openConnectionNow(): Connection | undefined {
    if (this.closed) return undefined;
    const current = this.connection;
    return current?.isOpen ? current : undefined;
  }

  private connectionFor(cancel: Cancel): Promise<Connection> {
    if (this.closed) return Promise.reject(new ConnectionError("client closed", this.target, false));
    const current = this.connection;
    if (current?.isOpen) return Promise.resolve(current);
    this.connecting ??= this.openConnection(this.target).finally(() => {
      this.connecting = undefined;
    });
    return raceCancel(this.connecting, cancel);
  }

  private async openConnection(address: string): Promise<Connection> {
    const { connectTimeoutMs, frameBytesMax, idleTimeoutMs, tls } = this.options;
    let connection: Connection;
    try {
      connection = await Connection.open(address, { connectTimeoutMs, frameBytesMax, idleTimeoutMs, tls });
    } catch (error) {
      this.unreachableSinceMs.set(address, performance.now());
      throw error;
    }
    this.unreachableSinceMs.delete(address);
    try {
      if (this.closed) throw new ConnectionError("client closed", address, false);
      if (this.options.name !== undefined || this.options.user !== undefined) await this.hello(connection);
    } catch (error) {
      connection.close();
      throw error;
    }
    publishConnected(address);
    connection.onClosed(() => {
      if (this.connection === connection) this.connection = undefined;
      this.retired.delete(connection);
      publishDisconnected(address);
    });
    if (address !== this.target) {
      // Rerouted while connecting: serve the waiting callers here, send new calls to the target.
      this.retired.add(connection);
      queueMicrotask(() => connection.retire());
    } else {
      this.connection = connection;
      if (this.options.discoverLeader) void this.discoverLeader(connection);
    }
    return connection;
  }

  // Asks the node just connected which node leads and moves there (calls already on their way
  // finish here). Only an optimization: any failure leaves the client where it is.
  private async discoverLeader(connection: Connection): Promise<void> {
    const scope = new CallScope(this.otherDeadlines, this.options.connectTimeoutMs, undefined);
    try {
      const leaderAddress = leaderAddressOf(await connection.request({ op: "status" }, scope));
      if (leaderAddress === undefined || leaderAddress === connection.address) return;
      if (this.closed || this.connection !== connection) return; // moved on meanwhile
      const failedAtMs = this.unreachableSinceMs.get(leaderAddress);
      if (failedAtMs !== undefined && performance.now() - failedAtMs < UNREACHABLE_MEMORY_MS) return;
      publishLeaderFound(connection.address, leaderAddress);
      this.moveTo(leaderAddress);
    } catch {
      // No status (an old node, a follower that cannot answer): stay.
    } finally {
      scope.dispose();
    }
  }

  // A follower forwarded the call and named the leader: later calls go there directly (calls
  // already on their way finish where they are). As with discovery, not toward an address that
  // refused a connection lately.
  private followLeaderHint(address: string, hint: unknown): void {
    if (typeof hint !== "string" || hint === address || address !== this.target || this.closed) return;
    const failedAtMs = this.unreachableSinceMs.get(hint);
    if (failedAtMs !== undefined && performance.now() - failedAtMs < UNREACHABLE_MEMORY_MS) return;
    publishLeaderFound(address, hint);
    this.moveTo(hint);
  }

  private async hello(connection: Connection): Promise<void> {
    const { name, user, password } = this.options;
    const request: HelloWireRequest = { op: "hello", name: name ?? user! };
    if (user !== undefined) Object.assign(request, { user, password });
    const timeoutMs = this.options.connectTimeoutMs;
    const scope = new CallScope(this.otherDeadlines, timeoutMs, undefined, () => new ConnectionError(`no answer to hello from ${connection.address} within ${timeoutMs} ms`, connection.address, false));
    try {
      await connection.request(request, scope);
    } catch (error) {
      // Whatever happened to HELLO, the caller's own request was never written.
      if (error instanceof ConnectionError && error.requestSent) throw new ConnectionError(error.message, error.address, false);
      throw error;
    } finally {
      scope.dispose();
    }
  }

  // Applies the routing consequence of an error seen from `address`. Only the first of many
  // concurrent failures from the same node moves the target (the others see it already moved).
  private reroute(error: FerryError, address: string | undefined): "stay" | "redirect" | "next-seed" {
    const route = routeAfter(error, address);
    if (route.action === "stay" || address !== this.target) return route.action;
    if (route.action === "redirect") this.moveTo(route.address);
    else this.moveTo(this.nextSeed(address));
    return route.action;
  }

  private nextSeed(after: string): string {
    const seeds = this.options.seeds;
    const index = seeds.indexOf(after);
    // From a seed, go to the one after it; from a hinted address, resume the seed rotation.
    this.seedIndex = index >= 0 ? (index + 1) % seeds.length : (this.seedIndex + 1) % seeds.length;
    return seeds[this.seedIndex]!;
  }

  private moveTo(address: string): void {
    this.target = address;
    const old = this.connection;
    if (old !== undefined && old.address !== address) {
      this.connection = undefined;
      this.retired.add(old);
      old.retire(); // answers still due on it are kept
    }
  }
}
