// One TCP connection speaking the binary protocol to one node. It writes the preamble, then
// pipelines requests as frames `{ rid, ...request }` and matches replies by rid, in whatever
// order they come. Frames written in one tick are encoded into one FrameWriter and go out in one
// socket write on the next tick. Each request in flight is one PendingRequest object: the entry in
// `pending`, the listener of the call's Cancel and, for an attempt with a deadline, the entry of
// that DeadlineList, so a request allocates no closures beyond its promise.
//
// Invariants: every request settles exactly once (reply, abort, or connection loss); once the
// connection is closed every pending request fails with UNAVAILABLE and new ones are refused
// without being written, which the retry policy can tell apart through `requestSent`.
import net from "node:net";
import tls from "node:tls";
import { BINARY_PREAMBLE, decodePayload, FrameDecoder, RID_MAX } from "../protocol/binary.js";
import { FrameWriter } from "../protocol/frame-writer.js";
import { FerryError, isErrorCode } from "../protocol/errors.js";
import { parseAddress } from "./options.js";
import type { Cancel, CancelListener, DeadlineEntry, DeadlineList } from "./scope.js";
import { noop, promiseInto } from "./settlers.js";

// UNAVAILABLE with one more fact: whether the request reached the socket. A request that was
// never written cannot have been applied, so any request may be retried after one.
export class ConnectionError extends FerryError {
  constructor(
    message: string,
    readonly address: string,
    readonly requestSent: boolean,
  ) {
    super("UNAVAILABLE", message);
  }
}

// An idempotent attempt left unanswered for attemptTimeoutMs: the node may be paused or cut off
// (the retry loop then sends the request elsewhere; see retry.ts).
export class AttemptTimeoutError extends FerryError {
  constructor(address: string, attemptTimeoutMs: number) {
    super("TIMEOUT", `no answer from ${address} within ${attemptTimeoutMs} ms`);
  }
}

// The ok reply as decoded (it still carries its rid).
export type ReplyRecord = Record<string, unknown> & { ok: true };

// Takes the outcome of a request sent with Connection.send(): exactly one call, with the ok reply
// or (reply undefined) the error, possibly from within the connection's own event handling.
export interface RequestListener {
  onSettled(reply: ReplyRecord | undefined, error: unknown): void;
}

// One request in flight. Settled exactly once: by its reply, the call's cancel, its attempt
// deadline, or the loss of the connection; each way unhooks it from the others.
class PendingRequest implements CancelListener, DeadlineEntry {
  deadlineMs = 0;
  deadlinePrevious: DeadlineEntry | undefined = undefined;
  deadlineNext: DeadlineEntry | undefined = undefined;
  deadlineList: DeadlineList | undefined = undefined;
  attemptTimeoutMs = 0; // when it is an entry of an attempt DeadlineList
  // Told the outcome when set (send()); otherwise the outcome settles request()'s promise.
  listener: RequestListener | undefined = undefined;
  resolve: (reply: ReplyRecord) => void = noop;
  reject: (error: unknown) => void = noop;

  constructor(
    private readonly connection: Connection,
    readonly rid: number,
    private readonly cancel: Cancel,
  ) {}

  settle(reply: ReplyRecord | undefined, error: unknown): void {
    this.cancel.unsubscribe(this);
    this.deadlineList?.remove(this);
    this.finish(reply, error);
  }

  // The call was cancelled: a late reply is ignored.
  onCancel(reason: unknown): void {
    this.deadlineList?.remove(this);
    this.connection.forget(this);
    this.finish(undefined, reason);
  }

  // The attempt deadline passed (the list has removed the entry already).
  expire(): void {
    this.cancel.unsubscribe(this);
    this.connection.forget(this);
    this.finish(undefined, new AttemptTimeoutError(this.connection.address, this.attemptTimeoutMs));
  }

  private finish(reply: ReplyRecord | undefined, error: unknown): void {
    if (this.listener !== undefined) this.listener.onSettled(reply, error);
    else if (reply !== undefined) this.resolve(reply);
    else this.reject(error);
  }
}

// Why a request was refused before it was written (the call was cancelled, the connection is
// closed, the frame is too large).
export class NotSent {
  constructor(readonly error: unknown) {}
}

const KEEPALIVE_DELAY_MS = 10_000;

export interface ConnectionOptions {
  connectTimeoutMs: number;
  frameBytesMax: number;
  idleTimeoutMs: number;
  tls?: tls.ConnectionOptions | undefined; // present: TLS (the same port serves it when the node has a certificate)
}

export class Connection {
  private readonly pending = new Map<number, PendingRequest>();
  private readonly decoder: FrameDecoder;
  private nextRid = 1;
  private readonly output = new FrameWriter();
  private flushScheduled = false;
  private closed = false;
  private closeWhenIdle = false;
  private serverNotice: string | undefined;
  private readonly closeListeners: Array<() => void> = [];

  private constructor(
    readonly address: string,
    private readonly socket: net.Socket,
    private readonly frameBytesMax: number,
    idleTimeoutMs: number,
  ) {
    this.decoder = new FrameDecoder(frameBytesMax);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
    // Idle: no bytes either way for idleTimeoutMs. Only a connection with nothing in flight is
    // closed (a long poll may legitimately be silent for longer).
    socket.setTimeout(idleTimeoutMs, () => {
      if (this.pending.size === 0) this.retire();
    });
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => {}); // "close" follows and does the work
    socket.on("close", () => this.onClose());
  }

  // Connects and writes the preamble. Rejects with ConnectionError (requestSent: false).
  static open(address: string, options: ConnectionOptions): Promise<Connection> {
    const { host, port } = parseAddress(address);
    return new Promise((resolve, reject) => {
      const socket = options.tls === undefined ? net.connect({ host, port }) : tls.connect({ ...serverName(host), ...options.tls, host, port });
      const readyEvent = options.tls === undefined ? "connect" : "secureConnect";
      const fail = (message: string) => {
        clearTimeout(timer);
        socket.destroy();
        reject(new ConnectionError(`cannot connect to ${address}: ${message}`, address, false));
      };
      const timer = setTimeout(() => fail(`no connection within ${options.connectTimeoutMs} ms`), options.connectTimeoutMs);
      socket.once("error", (error) => fail(error.message));
      socket.once(readyEvent, () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        socket.write(BINARY_PREAMBLE);
        resolve(new Connection(address, socket, options.frameBytesMax, options.idleTimeoutMs));
      });
    });
  }

  // Open and taking requests (a retired connection only finishes what it has).
  get isOpen(): boolean {
    return !this.closed && !this.closeWhenIdle;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  onClosed(listener: () => void): void {
    if (this.closed) listener();
    else this.closeListeners.push(listener);
  }

  // Sends one request; resolves with the ok reply, rejects with FerryError for an error reply,
  // ConnectionError when the connection is or gets lost, the reason on cancel, and
  // AttemptTimeoutError when `attemptDeadlines` is given and its duration passes first.
  request(request: object, cancel: Cancel, attemptDeadlines?: DeadlineList): Promise<ReplyRecord> {
    const pending = this.write(request, cancel);
    if (pending instanceof NotSent) return Promise.reject(pending.error);
    const promise = promiseInto(pending);
    this.track(pending, cancel, attemptDeadlines);
    return promise;
  }

  // request() without a promise: the outcome goes to `listener` (never from within this call).
  // Returns undefined, or NotSent when the request was not written (the listener is not called).
  send(request: object, cancel: Cancel, attemptDeadlines: DeadlineList | undefined, listener: RequestListener): NotSent | undefined {
    const pending = this.write(request, cancel);
    if (pending instanceof NotSent) return pending;
    pending.listener = listener;
    this.track(pending, cancel, attemptDeadlines);
    return undefined;
  }

  // Encodes the request into this tick's output, or returns why not.
  private write(request: object, cancel: Cancel): PendingRequest | NotSent {
    if (cancel.aborted) return new NotSent(cancel.reason);
    if (this.closed || this.closeWhenIdle || this.socket.destroyed || this.socket.writableEnded) {
      return new NotSent(new ConnectionError(`connection to ${this.address} is closed`, this.address, false));
    }
    const rid = this.takeRid();
    const payloadBytes = this.output.append(rid, request as Record<string, unknown>);
    if (payloadBytes > this.frameBytesMax) {
      this.output.dropLast(payloadBytes);
      return new NotSent(new FerryError("TOO_LARGE", `request of ${payloadBytes} bytes exceeds the frame limit of ${this.frameBytesMax}`));
    }
    return new PendingRequest(this, rid, cancel);
  }

  private track(pending: PendingRequest, cancel: Cancel, attemptDeadlines: DeadlineList | undefined): void {
    cancel.subscribe(pending);
    if (attemptDeadlines !== undefined) {
      pending.attemptTimeoutMs = attemptDeadlines.durationMs;
      attemptDeadlines.add(pending);
    }
    this.pending.set(pending.rid, pending);
    this.scheduleFlush();
  }

  // A request given up (cancelled or timed out): free its rid; a late reply is ignored.
  forget(pending: PendingRequest): void {
    if (this.pending.get(pending.rid) === pending) this.pending.delete(pending.rid);
    this.closeIfIdle();
  }

  // Stops taking requests and closes once the ones in flight have settled (used when the client
  // moves to another node but must not cut off requests that may still be answered here).
  retire(): void {
    this.closeWhenIdle = true;
    this.closeIfIdle();
  }

  close(): void {
    this.socket.destroy();
  }

  private takeRid(): number {
    // Wraps after 2^32-1 requests on one connection, skipping ids still waiting for an answer.
    while (this.pending.has(this.nextRid)) this.nextRid = this.nextRid >= RID_MAX ? 1 : this.nextRid + 1;
    const rid = this.nextRid;
    this.nextRid = rid >= RID_MAX ? 1 : rid + 1;
    return rid;
  }

  // Frames queued together leave in one socket write: the flush is a microtask, so it runs after
  // the code that queued the first frame and the continuations already queued when it did (the
  // requests that one read's answers set off), but before later continuations. A consume() loop's
  // prefetched RECEIVEs therefore leave before its body handles the batch they follow; on
  // process.nextTick they waited for the body's whole batch (and every batch of that read).
  private scheduleFlush(): void {
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.flushNow);
    }
  }

  private readonly flushNow = (): void => this.flush();

  private flush(): void {
    this.flushScheduled = false;
    const bytes = this.output.take();
    if (bytes !== undefined && !this.socket.destroyed && !this.socket.writableEnded) this.socket.write(bytes);
  }

  private onData(chunk: Buffer): void {
    let payloads: Buffer[];
    try {
      payloads = this.decoder.push(chunk);
    } catch {
      this.socket.destroy(); // framing lost (oversized frame): nothing after it can be trusted
      return;
    }
    for (const payload of payloads) this.onReply(payload);
    this.closeIfIdle();
  }

  private onReply(payload: Buffer): void {
    let reply: unknown;
    try {
      reply = decodePayload(payload);
    } catch {
      this.socket.destroy();
      return;
    }
    if (typeof reply !== "object" || reply === null) return;
    const record = reply as Record<string, unknown>;
    const rid = record.rid;
    if (rid === 0 && record.ok === false) {
      // The server's word on why it is about to close the connection (framing lost, stopping).
      this.serverNotice = errorFromReply(record).message;
      return;
    }
    const pending = typeof rid === "number" ? this.pending.get(rid) : undefined;
    if (pending === undefined) return; // answer to an aborted or timed-out request
    this.pending.delete(rid as number);
    if (record.ok === true) pending.settle(record as ReplyRecord, undefined);
    else pending.settle(undefined, errorFromReply(record));
  }

  private closeIfIdle(): void {
    if (this.closeWhenIdle && this.pending.size === 0 && !this.closed) {
      this.flush(); // frames of this tick go first (a request cancelled since was still written)
      this.socket.end();
    }
  }

  private onClose(): void {
    this.closed = true;
    const why = this.serverNotice === undefined ? "" : ` (server said: ${this.serverNotice})`;
    const error = new ConnectionError(`connection to ${this.address} lost before an answer${why}`, this.address, true);
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const request of pending) request.settle(undefined, error);
    for (const listener of this.closeListeners.splice(0)) listener();
  }
}

// SNI carries host names only; for an IP address the caller may name the certificate's host.
function serverName(host: string): { servername?: string } {
  return net.isIP(host) === 0 ? { servername: host } : {};
}

function errorFromReply(reply: Record<string, unknown>): FerryError {
  const code = typeof reply.code === "string" && isErrorCode(reply.code) ? reply.code : "INTERNAL";
  const message = typeof reply.message === "string" ? reply.message : "error reply without a message";
  const leaderHint = typeof reply.leaderHint === "string" && reply.leaderHint.length > 0 ? reply.leaderHint : undefined;
  return new FerryError(code, message, leaderHint);
}
