// What text and binary connections share: the session, calling the service, flow control, write
// coalescing, idle timeout and an orderly shutdown.
//
// Flow control: the connection stops reading from its socket (socket.pause) while any of these
// holds, and resumes when none does: it is shutting down; requests read but not yet answered have
// reached requestsInFlightMax (the subclass says so through backlogged()); replies waiting to be
// sent exceed writeBufferBytesMax (writeBlocked(); queued requests do not start meanwhile either,
// so a client that does not read cannot make the server build replies without end). TCP then
// pushes back on the client, so memory per connection stays bounded whatever the client does.
// EOF from the client ends input: everything read is still answered, then the connection closes.
// Binary long polls stop at EOF: a RECEIVE waiting for messages answers at once with what it has,
// since a client that closed its end may be gone (the server cannot tell until it writes), and
// messages leased to it would stay hidden for their visibility timeout; the client library never
// half-closes. Text long polls go on after EOF: `printf 'RECEIVE jobs 1 5000\n' | nc ...` half-closes
// (netcat sends FIN at the end of its input) and still waits for the answer. A RECEIVE whose client
// is gone by the time it is answered gives its messages back at once (a NACK on its behalf).
// Writes: replies ready in the same turn of the event loop leave in one socket write.
import { setMaxListeners } from "node:events";
import type { Socket } from "node:net";
import type { HelloRequest, ReceiveRequest, Reply, Request } from "../protocol/api.js";
import { type ErrorCode, FerryError } from "../protocol/errors.js";
import { type Authenticator, authorizationProblem, type LoginThrottle, LoginsOverloadedError } from "./auth.js";
import type { ServerLimits } from "./limits.js";
import { giveBackNacks, type Service, type Session } from "./service.js";

export interface ConnectionContext {
  service: Service;
  verifyForwarder?: (proof: string) => boolean;
  auth?: Authenticator; // clients must authenticate and are authorized per request (src/server/auth.ts)
  loginThrottle?: LoginThrottle; // failed logins per client address (with auth)
  limits: ServerLimits;
  log: (line: string) => void;
  stats: ServerStats;
}

// Counters since the server started (for metrics, and for tests that check behaviour such as
// write coalescing without looking at timings).
export interface ServerStats {
  connectionsAccepted: number;
  connectionsRejected: number; // over connectionsMax
  requestsExecuted: number; // handed to the service
  requestsRejected: number; // answered with an error before reaching the service
  authFailures: number; // logins refused (wrong user or password)
  unauthorized: number; // requests refused for want of a login (UNAUTHORIZED) or a permission (FORBIDDEN)
  framingErrors: number; // binary connections closed because the byte stream broke
  idleClosed: number;
  waitsStopped: number; // long-polling RECEIVEs told to stop waiting (EOF, close, CANCEL, stopping)
  messagesGivenBack: number; // leased to a client that was gone before its reply could be written
  socketWrites: number;
  bytesWritten: number;
  readPauses: number; // times a connection stopped reading (backpressure)
  // The most bytes of an incomplete line or frame any connection has held: stays at or below
  // lineBytesMax + 1 (text) and frameBytesMax + 3 (binary: a header and a frame in progress).
  inputBufferedBytesPeak: number;
}

export function emptyStats(): ServerStats {
  return {
    connectionsAccepted: 0,
    connectionsRejected: 0,
    requestsExecuted: 0,
    requestsRejected: 0,
    authFailures: 0,
    unauthorized: 0,
    framingErrors: 0,
    idleClosed: 0,
    waitsStopped: 0,
    messagesGivenBack: 0,
    socketWrites: 0,
    bytesWritten: 0,
    readPauses: 0,
    inputBufferedBytesPeak: 0,
  };
}

export type Outcome = { ok: true; reply: Reply } | { ok: false; code: ErrorCode; message: string; leaderHint?: string };
export type HelloOutcome = Outcome | { ok: false; code: ErrorCode; message: string; closeAfter: boolean };

const AUTHENTICATE_FIRST = "this node requires a login: AUTH <user> <password> (binary: HELLO with user and password)";

export function outcomeOfError(error: unknown, log: (line: string) => void): Outcome & { ok: false } {
  if (error instanceof FerryError) {
    const outcome: Outcome & { ok: false } = { ok: false, code: error.code, message: error.message };
    if (error.leaderHint !== undefined) outcome.leaderHint = error.leaderHint;
    return outcome;
  }
  log(`server: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  return { ok: false, code: "INTERNAL", message: "internal error (logged on the node)" };
}

// The reply, when the service answered with an ok reply; throws otherwise (an INTERNAL error).
export function checkedReply(request: Request, reply: Reply): Reply {
  if (typeof reply !== "object" || reply === null || reply.ok !== true) {
    throw new Error(`the service answered ${request.op} with ${JSON.stringify(reply)?.slice(0, 200)}, not an ok reply`);
  }
  return reply;
}

export abstract class Connection {
  // Replaced, never mutated, when HELLO changes it: a request under way keeps the session it
  // started with, without a copy per request.
  session: Session;
  protected readonly limits: ServerLimits;
  protected readonly context: ConnectionContext;
  protected shuttingDown = false; // read no more requests; close once the in-flight ones are answered
  private inputEnded = false; // the client sent EOF: answer everything read, then close
  private readonly abortController = new AbortController();
  private outbox: Buffer[] = [];
  private outboxBytes = 0;
  private flushScheduled = false;
  private readPaused = false;
  private closed = false;
  private readonly closedPromise: Promise<void>;
  private authFailures = 0;
  // The long-polling RECEIVEs in flight, by key (the binary protocol's rid; a negative counter for
  // the text protocol, which has no way to cancel one): aborting one ends its wait.
  private readonly waits = new Map<number, AbortController>();
  private waitKeys = 0;
  private loginDeadline: ReturnType<typeof setTimeout> | undefined; // see armLoginDeadline

  constructor(
    readonly socket: Socket,
    protocol: Session["protocol"],
    sessionId: number,
    context: ConnectionContext,
  ) {
    // Every request in flight on this connection listens on its signal (limited by
    // inFlightPerConnectionMax): not a leak, so no "possible leak" warning.
    setMaxListeners(0, this.abortController.signal);
    this.context = context;
    this.limits = context.limits;
    this.session = {
      id: sessionId,
      identity: "anonymous",
      remoteAddress: `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? 0}`,
      protocol,
    };
    this.closedPromise = new Promise((resolve) => socket.once("close", () => resolve()));
    socket.on("data", (chunk: Buffer) => this.feed(chunk));
    socket.on("drain", () => this.resumeWork());
    socket.on("end", () => {
      this.inputEnded = true; // the client is done sending: answer everything it sent, then close
      if (this.session.protocol === "binary") this.stopWaits();
      this.updateFlow();
    });
    socket.on("timeout", () => {
      if (this.pendingReplies() > 0 || this.outputBytes() > 0) return; // a long poll is not idleness
      this.context.stats.idleClosed += 1;
      this.closeIdle();
    });
    socket.on("close", () => {
      this.closed = true;
      this.clearLoginDeadline();
      this.stopWaits();
      this.abortController.abort(new FerryError("UNAVAILABLE", "the connection closed"));
    });
    socket.on("error", () => {}); // 'close' follows; a client's reset is not the server's problem
    this.armLoginDeadline();
  }

  // Bytes read from the socket (the server hands over the first chunk, which chose the protocol).
  feed(chunk: Buffer): void {
    if (this.shuttingDown || this.closed) return;
    this.receive(chunk);
    const stats = this.context.stats;
    if (this.bufferedInputBytes > stats.inputBufferedBytesPeak) stats.inputBufferedBytesPeak = this.bufferedInputBytes;
  }

  get signal(): AbortSignal {
    return this.abortController.signal;
  }

  protected get isClosed(): boolean {
    return this.closed;
  }

  get whenClosed(): Promise<void> {
    return this.closedPromise;
  }

  // Bytes the connection holds for input not yet turned into requests (for tests and metrics).
  abstract get bufferedInputBytes(): number;
  // Feeds bytes read from the socket.
  protected abstract receive(chunk: Buffer): void;
  // Requests read and not yet answered (running or queued).
  protected abstract pendingReplies(): number;
  // True when the connection must not read more (requests queued or at the in-flight limit).
  protected abstract backlogged(): boolean;
  // Answers what was read but not started, when shutting down.
  protected abstract refuseQueued(): void;
  // Closes a connection that has been idle for idleTimeoutMs.
  protected abstract closeIdle(): void;
  // Starts queued requests that may start now (after the write buffer drained).
  protected abstract resumeWork(): void;

  // True while replies waiting to be sent exceed writeBufferBytesMax.
  protected writeBlocked(): boolean {
    return this.socket.writableLength + this.outputBytes() > this.limits.writeBufferBytesMax;
  }

  // Bytes of replies ready and not yet handed to the socket.
  protected outputBytes(): number {
    return this.outboxBytes;
  }

  // The bytes ready to go, as one buffer (undefined when none); they leave the connection's hands.
  protected takeOutput(): Buffer | undefined {
    if (this.outbox.length === 0) return undefined;
    const bytes = this.outbox.length === 1 ? this.outbox[0]! : Buffer.concat(this.outbox, this.outboxBytes);
    this.outbox = [];
    this.outboxBytes = 0;
    return bytes;
  }

  protected async execute(request: Request): Promise<Outcome> {
    try {
      return { ok: true, reply: checkedReply(request, await this.call(request)) };
    } catch (error) {
      return outcomeOfError(error, this.context.log);
    }
  }

  // HELLO (the text protocol's HELLO and AUTH): the outcome and the session it leaves. Without a
  // users file a HELLO names the sender (credentials, if any, are not checked). With one, only
  // a login changes the identity: the user and password must match (checked off the event loop),
  // and a HELLO with just a name answers OK once logged in (the identity stays the user's) and
  // UNAUTHORIZED before. A node proving the cluster secret (forwardProof) is trusted as is.
  // `closeAfter`: the login failed for the authFailuresMax-th time; answer, then close.
  protected hello(request: HelloRequest): Outcome | Promise<HelloOutcome> {
    const auth = this.context.auth;
    if (request.forwardProof !== undefined) {
      if (!this.context.verifyForwarder?.(request.forwardProof)) {
        return { ok: false, code: "UNAUTHORIZED", message: "forwardProof does not prove this cluster's secret" };
      }
      this.session = { ...this.session, identity: request.name, trustedForwarder: true };
      this.clearLoginDeadline();
      return { ok: true, reply: { ok: true, name: request.name } };
    }
    if (auth === undefined) {
      const identity = request.user ?? request.name;
      this.session = { ...this.session, identity };
      return { ok: true, reply: { ok: true, name: identity } };
    }
    if (request.user === undefined) {
      if (this.session.user !== undefined) return { ok: true, reply: { ok: true, name: this.session.identity } };
      this.context.stats.unauthorized += 1;
      return { ok: false, code: "UNAUTHORIZED", message: AUTHENTICATE_FIRST };
    }
    const userName = request.user;
    const address = this.socket.remoteAddress ?? "?";
    const throttle = this.context.loginThrottle;
    const waitMs = throttle?.waitMs(address) ?? 0;
    if (waitMs > 0) {
      this.context.stats.authFailures += 1;
      return { ok: false, code: "UNAUTHORIZED", message: `too many failed logins from ${address}; try again in ${Math.ceil(waitMs / 1000)} s` };
    }
    return auth.verify(userName, request.password ?? "", this.signal).then((user): HelloOutcome => {
      if (user === undefined) {
        this.context.stats.authFailures += 1;
        throttle?.failed(address);
        this.authFailures += 1;
        const closeAfter = this.authFailures >= this.limits.authFailuresMax;
        const suffix = closeAfter ? `; ${this.authFailures} failed logins, closing the connection` : "";
        return { ok: false, code: "UNAUTHORIZED", message: `wrong user or password${suffix}`, closeAfter };
      }
      // Replaced, not changed: requests under way keep the session they started with.
      this.session = { ...this.session, identity: user.name, user };
      this.clearLoginDeadline();
      return { ok: true, reply: { ok: true, name: user.name } };
    }, (error: unknown): HelloOutcome => {
      if (error instanceof LoginsOverloadedError) return { ok: false, code: "OVERLOADED", message: error.message };
      return outcomeOfError(error, this.context.log);
    });
  }

  // With a users file, a connection that has not logged in (nor proved the cluster secret)
  // within limits.loginTimeoutMs is closed: it would otherwise hold one of connectionsMax slots
  // for the whole idle timeout.
  protected armLoginDeadline(): void {
    if (this.context.auth === undefined) return;
    this.loginDeadline = setTimeout(() => {
      this.loginDeadline = undefined;
      if (this.session.user !== undefined || this.session.trustedForwarder === true || this.isClosed) return;
      this.context.stats.unauthorized += 1;
      this.closeWithoutLogin(`no login within ${this.limits.loginTimeoutMs} ms; closing`);
    }, this.limits.loginTimeoutMs);
    this.loginDeadline.unref?.();
  }

  private clearLoginDeadline(): void {
    if (this.loginDeadline !== undefined) clearTimeout(this.loginDeadline);
    this.loginDeadline = undefined;
  }

  // Tells the client why (UNAUTHORIZED) and closes the connection.
  protected abstract closeWithoutLogin(message: string): void;

  // Hands the request to the service: its promise, rejected (not thrown) on any failure. `rid`:
  // the binary protocol's request id, by which a CANCEL names a long poll.
  protected call(request: Request, rid?: number, waitStopped = false): Promise<Reply> {
    const auth = this.context.auth;
    if (auth !== undefined && this.session.trustedForwarder !== true) {
      // The permissions of the users file in force now (it may have been reloaded since the login).
      const loggedIn = this.session.user;
      const user = loggedIn === undefined ? undefined : auth.user(loggedIn.name);
      // UNAUTHORIZED: no login yet, the user is gone or its password changed; FORBIDDEN: logged
      // in, but this user may not.
      let refusal: FerryError | undefined;
      if (loggedIn === undefined) refusal = new FerryError("UNAUTHORIZED", AUTHENTICATE_FIRST);
      else if (user === undefined) refusal = new FerryError("UNAUTHORIZED", `user '${loggedIn.name}' is no longer in the users file; log in again`);
      else if (user.credential !== loggedIn.credential) refusal = new FerryError("UNAUTHORIZED", `the password of user '${loggedIn.name}' changed; log in again`);
      else {
        const problem = authorizationProblem(user, request);
        if (problem !== undefined) refusal = new FerryError("FORBIDDEN", problem);
      }
      if (refusal !== undefined) {
        this.context.stats.unauthorized += 1;
        return Promise.reject(refusal);
      }
    }
    this.context.stats.requestsExecuted += 1;
    try {
      if (request.op === "receive") return this.callReceive(request, rid, waitStopped);
      // this.session is replaced, not changed, by a later HELLO: no copy needed.
      return this.context.service.execute(request, this.session, this.signal);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  // A RECEIVE: a long poll gets a wait signal of its own (see stopWaits and cancelWait); the
  // messages of any RECEIVE answered after the client is gone are given back.
  // waitStopped: a CANCEL named it before it started.
  private callReceive(request: ReceiveRequest, rid: number | undefined, waitStopped: boolean): Promise<Reply> {
    const session = this.session;
    if ((request.waitMs ?? 0) === 0) return this.context.service.execute(request, session, this.signal).then((reply) => this.delivered(request, reply, session));
    const wait = new AbortController();
    const key = rid ?? -++this.waitKeys;
    if (waitStopped || (this.inputEnded && this.session.protocol === "binary") || this.closed || this.shuttingDown) wait.abort();
    else this.waits.set(key, wait);
    const forget = () => {
      if (this.waits.get(key) === wait) this.waits.delete(key);
    };
    let answer: Promise<Reply>;
    try {
      answer = this.context.service.execute(request, session, this.signal, wait.signal);
    } catch (error) {
      forget();
      throw error;
    }
    return answer.then(
      (reply) => {
        forget();
        return this.delivered(request, reply, session);
      },
      (error: unknown) => {
        forget();
        throw error;
      },
    );
  }

  // A reply that can no longer be written (the connection closed, or it stopped sending: lost
  // framing, a failed login, no login in time) gives its messages back.
  // The messages go back with NACKs on the client's behalf: visible again at once instead of after
  // their lease. Best effort: a failed NACK leaves them to their lease, as before.
  private delivered(request: ReceiveRequest, reply: Reply, session: Session): Reply {
    if (!this.closed && !this.socket.writableEnded) return reply;
    for (const nack of giveBackNacks(request.mailbox, reply, this.limits.idsPerRequestMax)) {
      this.context.stats.messagesGivenBack += nack.ids.length;
      this.context.service.execute(nack, session, NEVER_ABORTED).catch(() => {});
    }
    return reply;
  }

  // The binary protocol's CANCEL: ends the wait of the long poll with this rid, if one is waiting.
  protected cancelWait(rid: number): boolean {
    const wait = this.waits.get(rid);
    if (wait === undefined) return false;
    this.waits.delete(rid);
    this.context.stats.waitsStopped += 1;
    wait.abort();
    return true;
  }

  // Ends every long poll's wait: the client ended its input or is gone, or the server is stopping.
  private stopWaits(): void {
    if (this.waits.size === 0) return;
    this.context.stats.waitsStopped += this.waits.size;
    const waits = [...this.waits.values()];
    this.waits.clear();
    for (const wait of waits) wait.abort();
  }

  protected write(bytes: Buffer): void {
    if (this.closed) return;
    this.outbox.push(bytes);
    this.outboxBytes += bytes.length;
    this.scheduleFlush();
  }

  // Replies ready in this turn leave together, in one socket write, in the next.
  protected scheduleFlush(): void {
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  protected flush(): void {
    this.flushScheduled = false;
    if (this.closed) return;
    const bytes = this.takeOutput();
    if (bytes === undefined) return;
    if (!this.socket.writableEnded) {
      this.context.stats.socketWrites += 1;
      this.context.stats.bytesWritten += bytes.length;
      // The callback runs once these bytes reach the kernel: the moment to start waiting work
      // again. 'drain' alone is not enough: it only fires past the socket's own high-water mark,
      // which may be above writeBufferBytesMax.
      this.socket.write(bytes, this.onWritten);
    }
    this.updateFlow();
  }

  private readonly onWritten = (): void => {
    if (this.readPaused) this.resumeWork();
  };

  // Re-evaluates whether the socket should be read; also ends the connection once a shutdown
  // has answered everything.
  protected updateFlow(): void {
    if (this.closed) return;
    if ((this.shuttingDown || this.inputEnded) && this.pendingReplies() === 0) {
      this.finish();
      return;
    }
    const pause = this.shuttingDown || this.backlogged() || this.writeBlocked();
    if (pause && !this.readPaused) {
      this.readPaused = true;
      this.context.stats.readPauses += 1;
      this.socket.pause();
    } else if (!pause && this.readPaused) {
      this.readPaused = false;
      this.socket.resume();
    }
  }

  // Writes what is queued, then closes the sending side (the client sees EOF after the replies).
  protected finish(): void {
    if (this.closed || this.socket.writableEnded) return;
    this.stopWaits(); // none on an orderly finish (nothing pending); a forced one answers them now
    this.flush();
    this.socket.end();
    this.socket.destroySoon();
  }

  // Stop reading, answer what was read, close when the in-flight requests are answered.
  shutdown(): void {
    if (this.closed || this.shuttingDown) return;
    this.shuttingDown = true;
    this.stopWaits();
    this.refuseQueued();
    this.updateFlow();
  }

  // The end of the grace period: abandon whatever is still running.
  destroy(): void {
    this.abortController.abort(new FerryError("SHUTTING_DOWN", "the node is stopping"));
    this.socket.destroy();
  }
}

const NEVER_ABORTED = new AbortController().signal;
