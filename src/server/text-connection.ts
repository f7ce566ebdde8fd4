// A text protocol connection (design.md §3, docs/protocol.md): lines in, lines out, in order.
//
// Requests run concurrently (pipelining) but are answered in the order they were read: each line
// takes a slot in `slots`, and replies leave from the head as slots complete. A slot is taken by
// every line, including the ones answered at once (errors, HELLO, HELP), so unanswered lines are
// bounded by requestsInFlightMax; beyond it the connection stops reading. Lines already parsed
// from the last chunk wait in `queue` (at most one socket read's worth).
import type { Socket } from "node:net";
import type { ClientRequest, Request } from "../protocol/api.js";
import { formatError, formatReply, LineParser, type LineEvent, parseCommand, TEXT_COMMANDS_HELP } from "../protocol/text.js";
import { Connection, type ConnectionContext, outcomeOfError } from "./connection.js";
import { validateRequest } from "./validate.js";

interface Slot {
  lines?: string[];
}

export class TextConnection extends Connection {
  private readonly parser: LineParser;
  private queue: LineEvent[] = [];
  private slots: Slot[] = [];
  private quitting = false;
  private pumping = false; // pump() is on the stack: replies released meanwhile must not re-enter it

  constructor(socket: Socket, sessionId: number, context: ConnectionContext) {
    super(socket, "text", sessionId, context);
    this.parser = new LineParser(context.limits.lineBytesMax);
  }

  get bufferedInputBytes(): number {
    return this.parser.bufferedBytes;
  }

  protected receive(chunk: Buffer): void {
    if (this.quitting) return;
    for (const event of this.parser.feed(chunk)) this.queue.push(event);
    this.pump();
  }

  protected pendingReplies(): number {
    return this.slots.length;
  }

  protected backlogged(): boolean {
    return this.queue.length > 0 || this.slots.length >= this.limits.requestsInFlightMax;
  }

  protected refuseQueued(): void {
    const queued = this.queue;
    this.queue = [];
    for (const _ of queued) this.answer([formatError("SHUTTING_DOWN", "the node is stopping")]);
  }

  protected closeIdle(): void {
    this.write(Buffer.from(`${formatError("TIMEOUT", `idle for ${this.limits.idleTimeoutMs} ms; closing`)}\n`));
    this.finish();
  }

  private pump(): void {
    this.pumping = true;
    let index = 0;
    while (index < this.queue.length && this.slots.length < this.limits.requestsInFlightMax && !this.quitting) {
      this.dispatch(this.queue[index]!);
      index += 1;
    }
    this.queue = this.quitting ? [] : this.queue.slice(index);
    this.pumping = false;
    this.updateFlow();
  }

  private dispatch(event: LineEvent): void {
    if (event.kind === "tooLarge") {
      this.answer([formatError("TOO_LARGE", `line of ${event.bytes}+ bytes; the limit is ${this.limits.lineBytesMax}`)]);
      return;
    }
    let request: ClientRequest;
    try {
      const command = parseCommand(event.text);
      if (command.kind === "help") {
        this.answer(this.helpLines());
        return;
      }
      if (command.kind === "ping") {
        this.answer(["OK"]);
        return;
      }
      if (command.kind === "quit") {
        this.quitting = true;
        this.answer(["OK"]);
        return;
      }
      request = validateRequest(command.request, this.limits);
    } catch (error) {
      this.context.stats.requestsRejected += 1;
      const outcome = outcomeOfError(error, this.context.log);
      this.answer([formatError(outcome.code, outcome.message)]);
      return;
    }
    if (request.op === "hello") {
      this.session.identity = request.name;
      this.answer(["OK"]);
      return;
    }
    this.run(request);
  }

  private run(request: Request): void {
    const slot: Slot = {};
    this.slots.push(slot);
    void this.execute(request).then((outcome) => {
      slot.lines = outcome.ok ? formatReply(request, outcome.reply) : [formatError(outcome.code, outcome.message + leaderSuffix(outcome.leaderHint))];
      this.release();
    });
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

  // Writes the completed replies at the head, in order.
  private release(): void {
    let released = 0;
    while (this.slots.length > released && this.slots[released]!.lines !== undefined) released += 1;
    if (released === 0) return;
    const lines: string[] = [];
    for (const slot of this.slots.slice(0, released)) lines.push(...slot.lines!);
    this.slots = this.slots.slice(released);
    this.write(Buffer.from(`${lines.join("\n")}\n`, "utf8"));
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
