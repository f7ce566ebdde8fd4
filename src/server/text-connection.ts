// A text protocol connection (design.md §3, docs/protocol.md): lines in, lines out, in order.
//
// Replies leave in the order the lines were read: each line takes a slot in `slots`, and replies
// are written from the head as slots complete. A slot is taken by every line, including the ones
// answered at once (errors, HELLO, HELP), so unanswered lines are bounded by requestsInFlightMax;
// beyond it the connection stops reading. Lines parsed from the last chunk but not started wait
// in `queue` (at most one socket read's worth; the socket is not read meanwhile).
//
// Ordering: consecutive SENDs run concurrently (the node batches them into one Raft entry) and
// reach the node in the order they were read. Any other request starts only once every earlier
// request is answered, so a script's RECEIVE or LIST sees the SENDs written before it, exactly as
// if a person had waited for each reply.
import type { Socket } from "node:net";
import type { HelloRequest, Request } from "../protocol/api.js";
import { FerryError } from "../protocol/errors.js";
import { formatError, formatReply, LineParser, type LineEvent, parseCommand, TEXT_COMMANDS_HELP } from "../protocol/text.js";
import { Connection, type ConnectionContext, type Outcome, outcomeOfError } from "./connection.js";
import { validateRequest } from "./validate.js";

interface Slot {
  lines?: string[];
}

// A line, parsed and validated, waiting for its turn.
type Work =
  | { kind: "answer"; lines: string[] } // errors, PING: the reply is known already
  | { kind: "help" }
  | { kind: "quit" }
  | { kind: "hello"; request: HelloRequest }
  | { kind: "request"; request: Request };

export class TextConnection extends Connection {
  private readonly parser: LineParser;
  private queue: Work[] = [];
  private slots: Slot[] = [];
  private running = 0; // requests at the service
  private runningSends = 0;
  private quitting = false;
  private pumping = false; // pump() is on the stack: replies released meanwhile must not re-enter it
  private loggingIn = false; // a login is being checked: no later line starts until it is decided

  constructor(socket: Socket, sessionId: number, context: ConnectionContext) {
    super(socket, "text", sessionId, context);
    this.parser = new LineParser(context.limits.lineBytesMax);
  }

  get bufferedInputBytes(): number {
    return this.parser.bufferedBytes;
  }

  protected receive(chunk: Buffer): void {
    if (this.quitting) return;
    for (const event of this.parser.feed(chunk)) this.queue.push(this.prepare(event));
    this.pump();
  }

  protected pendingReplies(): number {
    return this.slots.length + this.queue.length;
  }

  protected backlogged(): boolean {
    return this.queue.length > 0 || this.slots.length >= this.limits.requestsInFlightMax;
  }

  protected refuseQueued(): void {
    const queued = this.queue;
    this.queue = [];
    for (const _ of queued) this.answer([formatError("SHUTTING_DOWN", "the node is stopping")]);
  }

  protected closeWithoutLogin(message: string): void {
    this.write(Buffer.from(`${formatError("UNAUTHORIZED", message)}\n`));
    this.finish();
  }

  protected closeIdle(): void {
    this.write(Buffer.from(`${formatError("TIMEOUT", `idle for ${this.limits.idleTimeoutMs} ms; closing`)}\n`));
    this.finish();
  }

  // Syntax and validation happen as soon as a line is read; effects happen in turn (perform).
  private prepare(event: LineEvent): Work {
    if (event.kind === "tooLarge") {
      this.context.stats.requestsRejected += 1;
      return { kind: "answer", lines: [formatError("TOO_LARGE", `line of ${event.bytes}+ bytes; the limit is ${this.limits.lineBytesMax}`)] };
    }
    try {
      const command = parseCommand(event.text);
      if (command.kind === "ping") return { kind: "answer", lines: ["OK"] };
      if (command.kind !== "request") return { kind: command.kind };
      const request = validateRequest(command.request, this.limits);
      if (request.op === "cancel") throw new FerryError("INVALID", "CANCEL is a binary protocol request");
      return request.op === "hello" ? { kind: "hello", request } : { kind: "request", request };
    } catch (error) {
      this.context.stats.requestsRejected += 1;
      const outcome = outcomeOfError(error, this.context.log);
      return { kind: "answer", lines: [formatError(outcome.code, outcome.message)] };
    }
  }

  protected resumeWork(): void {
    this.pump();
  }

  private pump(): void {
    this.pumping = true;
    let index = 0;
    while (index < this.queue.length && this.slots.length < this.limits.requestsInFlightMax && !this.quitting && !this.writeBlocked()) {
      const work = this.queue[index]!;
      if (work.kind === "request" && !this.mayStart(work.request)) break;
      // A login (checked off the event loop) waits for what runs, and holds back what follows.
      if (this.loggingIn || (work.kind === "hello" && this.isLogin(work.request) && this.running > 0)) break;
      this.perform(work);
      index += 1;
    }
    this.queue = this.quitting ? [] : this.queue.slice(index);
    this.pumping = false;
    this.updateFlow();
  }

  private isLogin(request: HelloRequest): boolean {
    return request.user !== undefined && request.forwardProof === undefined && this.context.auth !== undefined;
  }

  private mayStart(request: Request): boolean {
    return this.running === 0 || (request.op === "send" && this.runningSends === this.running);
  }

  private perform(work: Work): void {
    switch (work.kind) {
      case "answer":
        this.answer(work.lines);
        return;
      case "help":
        this.answer(this.helpLines());
        return;
      case "quit":
        this.quitting = true;
        this.answer(["OK"]);
        return;
      case "hello":
        this.runHello(work.request);
        return;
      case "request":
        this.run(work.request);
        return;
    }
  }

  // HELLO and AUTH (Connection.hello). A login is checked off the event loop; meanwhile it counts
  // as running, so nothing after it starts until it is decided.
  private runHello(request: HelloRequest): void {
    const outcome = this.hello(request);
    if (!(outcome instanceof Promise)) {
      this.answer(outcome.ok ? ["OK"] : [formatError(outcome.code, outcome.message)]);
      return;
    }
    const slot: Slot = {};
    this.slots.push(slot);
    this.running += 1;
    this.loggingIn = true;
    void outcome.then((decided) => {
      this.running -= 1;
      this.loggingIn = false;
      slot.lines = decided.ok ? ["OK"] : [formatError(decided.code, decided.message)];
      if ("closeAfter" in decided && decided.closeAfter) {
        this.quitting = true; // answer what came before and this, then close (release() does)
        this.queue = [];
      }
      this.release();
    });
  }

  private run(request: Request): void {
    const slot: Slot = {};
    const isSend = request.op === "send";
    this.slots.push(slot);
    this.running += 1;
    if (isSend) this.runningSends += 1;
    void this.execute(request).then((outcome) => {
      this.running -= 1;
      if (isSend) this.runningSends -= 1;
      slot.lines = this.linesOf(request, outcome);
      this.release();
    });
  }

  private linesOf(request: Request, outcome: Outcome): string[] {
    if (!outcome.ok) return [formatError(outcome.code, outcome.message + leaderSuffix(outcome.leaderHint))];
    try {
      return formatReply(request, outcome.reply);
    } catch (error) {
      // A reply that does not fit its request is a bug of the node; this connection goes on.
      const failure = outcomeOfError(error, this.context.log);
      return [formatError(failure.code, failure.message)];
    }
  }

  private helpLines(): string[] {
    let extra: string[] = [];
    try {
      extra = this.context.service.helpLines?.() ?? [];
    } catch (error) {
      outcomeOfError(error, this.context.log);
    }
    return [...TEXT_COMMANDS_HELP, ...extra.map((line) => line.replace(/[\r\n]+/g, " ")), "END"];
  }

  // A reply available at once still waits for the replies of the lines before it.
  private answer(lines: string[]): void {
    this.slots.push({ lines });
    this.release();
  }

  // Writes the completed replies at the head, in order; then lets waiting lines start.
  private release(): void {
    let released = 0;
    while (this.slots.length > released && this.slots[released]!.lines !== undefined) released += 1;
    if (released > 0) {
      const lines: string[] = [];
      for (const slot of this.slots.slice(0, released)) lines.push(...slot.lines!);
      this.slots = this.slots.slice(released);
      this.write(Buffer.from(`${lines.join("\n")}\n`, "utf8"));
    }
    if (this.quitting && this.slots.length === 0) {
      this.finish();
      return;
    }
    if (this.pumping) return;
    if (this.queue.length > 0) this.pump();
    else this.updateFlow();
  }
}

function leaderSuffix(leaderHint: string | undefined): string {
  return leaderHint === undefined ? "" : ` (leader: ${leaderHint})`;
}
