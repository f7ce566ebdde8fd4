// A binary protocol connection (src/protocol/binary.ts, docs/protocol.md): the preamble, then
// frames `{ rid, ...request }`, answered by frames `{ rid, ...reply }` or
// `{ rid, ok: false, code, message, leaderHint? }` as soon as each is ready, in any order.
//
// Framing errors (a wrong preamble, a frame over frameBytesMax, a payload that is not msgpack)
// close the connection: the byte stream can no longer be trusted. A well-framed but invalid
// request gets an error reply with its rid (rid 0 when the rid itself is missing or invalid) and
// the connection goes on. At most requestsInFlightMax requests run at once; frames decoded beyond
// it wait in `queue` (at most one socket read's worth) and the socket is not read meanwhile.
// Replies are encoded straight into the connection's FrameWriter and leave in one socket write
// per turn of the event loop.
import type { Socket } from "node:net";
import type { Reply, Request } from "../protocol/api.js";
import { BINARY_PREAMBLE, decodePayload, FrameDecoder, RID_MAX } from "../protocol/binary.js";
import type { ErrorCode } from "../protocol/errors.js";
import { FrameWriter } from "../protocol/frame-writer.js";
import { checkedReply, Connection, type ConnectionContext, type Outcome, outcomeOfError } from "./connection.js";
import { validateRequest } from "./validate.js";

export class BinaryConnection extends Connection {
  private readonly decoder: FrameDecoder;
  private preambleBytesMatched = 0;
  private queue: unknown[] = []; // decoded frames (or `undecodable`) waiting for a slot
  // Rids of queued RECEIVEs a CANCEL named before they started: they start without a wait.
  private readonly cancelledBeforeStart = new Set<number>();
  private readonly ridsInFlight = new Set<number>();
  private loggingIn = false; // a login (HELLO with credentials) is being checked: start nothing else
  private readonly output = new FrameWriter();

  constructor(socket: Socket, sessionId: number, context: ConnectionContext) {
    super(socket, "binary", sessionId, context);
    this.decoder = new FrameDecoder(context.limits.frameBytesMax);
  }

  get bufferedInputBytes(): number {
    return this.decoder.pendingBytes;
  }

  protected receive(chunk: Buffer): void {
    let rest: Buffer | undefined = chunk;
    if (this.preambleBytesMatched < BINARY_PREAMBLE.length) {
      rest = this.matchPreamble(chunk);
      if (rest === undefined) return;
    }
    let frames: Buffer[];
    try {
      frames = this.decoder.push(rest);
    } catch (error) {
      this.loseFraming(error instanceof Error ? error.message : String(error));
      return;
    }
    for (const frame of frames) {
      const raw = safeDecode(frame);
      // A CANCEL takes no slot and is answered as soon as it is read, ahead of the requests queued
      // for a slot (it may name one of them). A connection at its in-flight limit is not read,
      // though: a CANCEL sent after that waits, like any request, for a slot to free.
      if (isCancel(raw) && !this.shuttingDown) this.handle(raw);
      else this.queue.push(raw);
    }
    this.pump();
  }

  // Consumes preamble bytes; returns the bytes after them, or undefined (need more, or closed).
  private matchPreamble(chunk: Buffer): Buffer | undefined {
    let index = 0;
    while (index < chunk.length && this.preambleBytesMatched < BINARY_PREAMBLE.length) {
      if (chunk[index] !== BINARY_PREAMBLE[this.preambleBytesMatched]) {
        this.loseFraming("bad preamble");
        return undefined;
      }
      index += 1;
      this.preambleBytesMatched += 1;
    }
    return this.preambleBytesMatched < BINARY_PREAMBLE.length ? undefined : chunk.subarray(index);
  }

  protected pendingReplies(): number {
    return this.ridsInFlight.size + this.queue.length;
  }

  protected backlogged(): boolean {
    return this.queue.length > 0 || this.ridsInFlight.size >= this.inFlightMax();
  }

  // A follower's forwarding connection carries all its clients' requests (see limits.ts).
  private inFlightMax(): number {
    return this.session.trustedForwarder === true ? this.limits.forwardedRequestsInFlightMax : this.limits.requestsInFlightMax;
  }

  protected refuseQueued(): void {
    const queued = this.queue;
    this.queue = [];
    this.cancelledBeforeStart.clear();
    for (const raw of queued) {
      const rid = ridOf(raw);
      this.sendError(rid ?? 0, "SHUTTING_DOWN", "the node is stopping");
    }
  }

  protected override outputBytes(): number {
    return this.output.pendingBytes;
  }

  protected override takeOutput(): Buffer | undefined {
    return this.output.take();
  }

  protected closeWithoutLogin(message: string): void {
    this.queue = [];
    this.sendError(0, "UNAUTHORIZED", message);
    this.finish();
    this.shuttingDown = true;
  }

  protected closeIdle(): void {
    this.finish();
  }

  // The stream cannot be parsed any further: tell the client why (rid 0) and close.
  private loseFraming(reason: string): void {
    this.context.stats.framingErrors += 1;
    this.context.log(`server: closing binary connection ${this.session.remoteAddress}: ${reason}`);
    this.queue = [];
    this.sendError(0, "INVALID", `${reason}; closing the connection`);
    this.finish();
    this.shuttingDown = true;
  }

  protected resumeWork(): void {
    this.pump();
  }

  private pump(): void {
    let index = 0;
    const inFlightMax = this.inFlightMax();
    while (index < this.queue.length && !this.loggingIn && this.ridsInFlight.size < inFlightMax && !this.shuttingDown && !this.writeBlocked()) {
      this.handle(this.queue[index]!);
      index += 1;
    }
    this.queue = this.shuttingDown ? [] : this.queue.slice(index);
    this.updateFlow();
  }

  private handle(raw: unknown): void {
    if (raw === undecodable) {
      this.loseFraming("a frame is not valid msgpack");
      return;
    }
    const rid = ridOf(raw);
    if (rid === undefined) {
      this.sendError(0, "INVALID", `rid must be an integer from 1 to ${RID_MAX}`);
      return;
    }
    // A CANCEL that named this frame while it was queued: taken whatever becomes of the frame.
    const waitStopped = this.cancelledBeforeStart.size > 0 && !isCancel(raw) && this.cancelledBeforeStart.delete(rid);
    if (this.ridsInFlight.has(rid)) {
      this.sendError(rid, "INVALID", `rid ${rid} is already in flight`);
      return;
    }
    let request: ReturnType<typeof validateRequest>;
    try {
      request = validateRequest(raw, this.limits);
    } catch (error) {
      this.context.stats.requestsRejected += 1;
      this.sendOutcome(rid, outcomeOfError(error, this.context.log));
      return;
    }
    if (request.op === "hello") {
      const outcome = this.hello(request);
      if (!(outcome instanceof Promise)) {
        this.sendOutcome(rid, outcome);
        return;
      }
      // A login: nothing after it starts until it is decided, so the requests a client pipelines
      // behind its HELLO run as the user it logs in as.
      this.ridsInFlight.add(rid);
      this.loggingIn = true;
      void outcome.then((decided) => {
        this.loggingIn = false;
        if ("closeAfter" in decided && decided.closeAfter) {
          this.ridsInFlight.delete(rid);
          this.sendOutcome(rid, decided);
          this.queue = [];
          this.finish();
          this.shuttingDown = true;
          return;
        }
        this.finishRequest(rid, decided);
      });
      return;
    }
    if (request.op === "cancel") {
      this.sendOutcome(rid, { ok: true, reply: { ok: true, cancelled: this.cancel(request.of) } });
      return;
    }
    this.ridsInFlight.add(rid);
    this.run(rid, request, waitStopped);
  }

  // Ends the wait of the long poll with this rid, running or still queued.
  private cancel(of: number): boolean {
    if (this.cancelWait(of)) return true;
    if (this.ridsInFlight.has(of) || this.cancelledBeforeStart.has(of)) return false;
    const queued = this.queue.some((raw) => ridOf(raw) === of && (raw as { op?: unknown }).op === "receive");
    if (queued) {
      this.cancelledBeforeStart.add(of);
      this.context.stats.waitsStopped += 1;
    }
    return queued;
  }

  // One promise reaction per request between the service's answer and the reply frame.
  private run(rid: number, request: Request, waitStopped: boolean): void {
    this.call(request, rid, waitStopped).then(
      (reply) => {
        let checked: Reply;
        try {
          checked = checkedReply(request, reply);
        } catch (error) {
          this.finishRequest(rid, outcomeOfError(error, this.context.log));
          return;
        }
        this.ridsInFlight.delete(rid);
        this.sendReply(rid, checked);
        this.afterReply();
      },
      (error: unknown) => this.finishRequest(rid, outcomeOfError(error, this.context.log)),
    );
  }

  private finishRequest(rid: number, outcome: Outcome): void {
    this.ridsInFlight.delete(rid);
    this.sendOutcome(rid, outcome);
    this.afterReply();
  }

  private afterReply(): void {
    if (this.queue.length > 0) this.pump();
    else this.updateFlow();
  }

  private sendOutcome(rid: number, outcome: Outcome): void {
    if (!outcome.ok) {
      const error: Record<string, unknown> = { ok: false, code: outcome.code, message: outcome.message };
      if (outcome.leaderHint !== undefined) error.leaderHint = outcome.leaderHint;
      this.sendFrame(rid, error);
      return;
    }
    this.sendReply(rid, outcome.reply);
  }

  private sendReply(rid: number, reply: Reply): void {
    let payloadBytes: number;
    try {
      payloadBytes = this.output.append(rid, reply as unknown as Record<string, unknown>);
    } catch (error) {
      const outcome = outcomeOfError(error, this.context.log);
      this.sendError(rid, outcome.code, outcome.message);
      return;
    }
    // The client enforces the same frame limit: a reply over it would cost the client its framing.
    if (payloadBytes > this.limits.frameBytesMax) {
      this.output.dropLast(payloadBytes);
      this.sendError(rid, "TOO_LARGE", `reply of ${payloadBytes} bytes exceeds the frame limit of ${this.limits.frameBytesMax}`);
      return;
    }
    this.scheduleFlush();
  }

  private sendError(rid: number, code: ErrorCode, message: string): void {
    this.sendFrame(rid, { ok: false, code, message });
  }

  private sendFrame(rid: number, value: Record<string, unknown>): void {
    if (!this.isClosed) {
      this.output.append(rid, value);
      this.scheduleFlush();
    }
  }
}

const undecodable = Symbol("undecodable");

function safeDecode(payload: Buffer): unknown {
  try {
    return decodePayload(payload);
  } catch {
    return undecodable;
  }
}

function isCancel(raw: unknown): boolean {
  return typeof raw === "object" && raw !== null && (raw as { op?: unknown }).op === "cancel";
}

function ridOf(raw: unknown): number | undefined {
  if (typeof raw !== "object" || raw === null) return undefined;
  const rid = (raw as { rid?: unknown }).rid;
  if (typeof rid === "number" && Number.isInteger(rid) && rid >= 1 && rid <= RID_MAX) return rid;
  return undefined;
}

