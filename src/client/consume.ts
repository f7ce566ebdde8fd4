// consume(): a mailbox as an async iterable. It long-polls RECEIVE in batches and yields each
// message with ack() and nack() attached.
//
// Rules (at-least-once, never silently dropped):
// - autoAck (default true): a message is acked once the loop body for it finishes, unless the
//   body settled it itself.
// - Acks are coalesced: every ack (auto or explicit) made in one event-loop turn goes out in one
//   request, so a batch handled without waiting costs one, not one per message. They ride on the
//   next RECEIVE (ReceiveOptions.ack: one request and one log entry command acknowledge a batch
//   and lease the next): the one that goes out once the batch is handed out (see prefetch), or,
//   when none does (a short batch with more requested), the next that goes out; when none goes
//   out within CONSUME_ACK_HOLD_MS (a slow mailbox), or the loop ends, they go out as an ACK of
//   their own, as do the acks of a turn in which the loop is not waiting for a batch. A RECEIVE
//   carries a batch whose every message was acked in one go as its lease name (ackLeases: one
//   short name instead of its ids); a batch acked in parts, or with a message nacked or given
//   back, goes by ids. Each message's ack() settles with the request that carried it. At most
//   acksInFlightMax ACK requests are outstanding before the next RECEIVE waits for one to finish;
//   the loop never waits for its acks otherwise (their latency overlaps the next RECEIVE).
//   Leaving the loop waits for them.
// - prefetch (default 3 batches): when a batch came back full, RECEIVEs go out before the batch
//   is handed to the loop body until that many are outstanding, so the body's work and the
//   round trips overlap, and a consumer whose body is quick is not held to one round trip per
//   batch; once the batch is handed out, one more goes out (carrying its acks), so a consumer
//   waiting with nothing in hand has prefetch + 1 requested: what it holds and what it requested
//   stay within (prefetch + 1) x max messages, as do the messages leased to it and not yet acked
//   (each batch's acks leave with the RECEIVE that replaces it). The prefetched messages are
//   leased meanwhile: their visibility timeout runs while the batches before them are handled.
//   true means the default, false or 0 none.
// - Leaving the loop early (break, return, throw) nacks the message in hand (autoAck only: the
//   body may have failed on it), every message of the batch not yet yielded, and the
//   prefetched batches, so they are redelivered at once rather than after their lease. To stop
//   after handling a message with autoAck, ack it (`await message.ack()`) before breaking.
// - Retryable errors of RECEIVE and ACK are absorbed with backoff (a lost ack means a
//   redelivery, which at-least-once allows); other errors end the loop by throwing (an
//   auto-ack's at the next RECEIVE).
// - Aborting options.signal or closing the client ends the loop quietly. The RECEIVEs still
//   outstanding are not cancelled (the cluster may already have leased their messages): what
//   they bring is nacked when it arrives, if the client is still open. The loop waits up to
//   CONSUME_ABORT_GRACE_MS for prefetched ones (they usually answer at once), so that a client
//   closed right after the loop does not leave their messages leased until the lease ends.
import type { DeliveredMessage } from "../protocol/api.js";
import { FerryError } from "../protocol/errors.js";
import { backoffDelayMs } from "./backoff.js";
import type { FerryClient, ReceivedBatch } from "./client.js";
import { RECONNECT_MAX_MS_DEFAULT, RECONNECT_MIN_MS_DEFAULT } from "./options.js";
import { sleepUnlessAborted, unlessAborted } from "./scope.js";
import { noop, promiseInto, type Settlers } from "./settlers.js";

export const CONSUME_MAX_DEFAULT = 16;
export const CONSUME_WAIT_MS_DEFAULT = 5_000;
export const CONSUME_ACKS_IN_FLIGHT_MAX_DEFAULT = 4;
export const CONSUME_PREFETCH_DEFAULT = 3;
export const CONSUME_PREFETCH_MAX = 16;
// How long acks wait for a RECEIVE to ride on before they go out as an ACK of their own: longer
// than a loaded cluster takes to answer a batch (a few ms), short next to a visibility timeout.
export const CONSUME_ACK_HOLD_MS = 20;
// How long an aborted loop waits for its prefetched RECEIVEs to answer before it returns (what they
// bring later is still given back while the client is open).
export const CONSUME_ABORT_GRACE_MS = 500;
// An empty batch that came back sooner than this (waitMs 0, or a server that does not long-poll)
// is followed by a pause for the rest of it, so an idle consumer never spins.
export const CONSUME_EMPTY_POLL_MS_MIN = 100;

export interface ConsumeOptions {
  autoAck?: boolean; // default true
  max?: number; // messages per RECEIVE (default 16)
  waitMs?: number; // long poll per RECEIVE (default 5 s)
  visibilityMs?: number;
  prefetch?: boolean | number; // batches received ahead while one is handled (default 3; false: 0)
  acksInFlightMax?: number; // ACK requests outstanding before the next RECEIVE waits (default 4)
  signal?: AbortSignal;
}

export type ConsumedMessage = DeliveredMessage & {
  ack(): Promise<void>;
  nack(delayMs?: number): Promise<void>;
};

// A message as the loop yields it: the delivered fields as own properties (logging or
// JSON.stringify shows just the message; `headers` and `senderTime` only when present), ack()
// and nack() as getters on the prototype that hand out functions bound to the message (made on
// first use), so `const { body, ack } = message` and `setTimeout(message.ack)` work, and the loop's
// bookkeeping in private fields: a message costs one object, plus one function if it is acked
// explicitly (before: a spread copy and two closures each). A spread copy (`{ ...message }`) has
// the fields only: keep the message to settle it.
class Consumed implements ConsumedMessage {
  id: string;
  sender: string;
  recipient: string;
  timestamp: DeliveredMessage["timestamp"];
  deliveries: number;
  body: Uint8Array;
  declare headers?: Record<string, string>;
  declare senderTime?: DeliveredMessage["senderTime"];
  readonly #loop: LoopContext;
  readonly #batch: LeasedBatch | undefined; // its batch, when that has a lease name
  #settled = false;
  #ack: (() => Promise<void>) | undefined;
  #nack: ((delayMs?: number) => Promise<void>) | undefined;

  constructor(delivered: DeliveredMessage, loop: LoopContext, batch: LeasedBatch | undefined) {
    this.id = delivered.id;
    this.sender = delivered.sender;
    this.recipient = delivered.recipient;
    this.timestamp = delivered.timestamp;
    this.deliveries = delivered.deliveries;
    this.body = delivered.body;
    if (delivered.headers !== undefined) this.headers = delivered.headers;
    if (delivered.senderTime !== undefined) this.senderTime = delivered.senderTime;
    this.#loop = loop;
    this.#batch = batch;
  }

  get settledByBody(): boolean {
    return this.#settled;
  }

  get ack(): () => Promise<void> {
    this.#ack ??= () => {
      const first = !this.#settled;
      this.#settled = true;
      return this.#loop.acker.ack(this.id, first ? this.#batch : undefined);
    };
    return this.#ack;
  }

  get nack(): (delayMs?: number) => Promise<void> {
    this.#nack ??= async (delayMs?: number) => {
      this.#settled = true;
      await this.#loop.client.nack(this.#loop.mailbox, [this.id], delayMs === undefined ? {} : { delayMs });
    };
    return this.#nack;
  }
}

interface LoopContext {
  acker: Acker;
  client: FerryClient;
  mailbox: string;
}

export async function* consumeMailbox(client: FerryClient, mailbox: string, options: ConsumeOptions): AsyncGenerator<ConsumedMessage> {
  const autoAck = options.autoAck ?? true;
  const prefetch = prefetchBatches(options.prefetch);
  const max = options.max ?? CONSUME_MAX_DEFAULT;
  const acksInFlightMax = options.acksInFlightMax ?? CONSUME_ACKS_IN_FLIGHT_MAX_DEFAULT;
  if (!Number.isInteger(acksInFlightMax) || acksInFlightMax < 1) throw new FerryError("INVALID", `acksInFlightMax takes an integer >= 1, not ${acksInFlightMax}`);
  const signal = options.signal;
  const acker = new Acker(client, mailbox);
  const loop: LoopContext = { acker, client, mailbox };
  // Not bound to the signal: an abort stops waiting for a RECEIVE, not the RECEIVE (see giveBack).
  // It carries the acks collected so far.
  const receive = (): Promise<Received> => {
    const acks = acker.take(true);
    const pending = client.receiveBatch(mailbox, {
      max,
      waitMs: options.waitMs ?? CONSUME_WAIT_MS_DEFAULT,
      ...(options.visibilityMs === undefined ? {} : { visibilityMs: options.visibilityMs }),
      ...(acks === undefined || acks.ids.length === 0 ? {} : { ack: acks.ids }),
      ...(acks === undefined || acks.leases.length === 0 ? {} : { ackLeases: acks.leases }),
    });
    // A node older than lease names ignores them: their batches' ids then go out as an ACK.
    if (acks !== undefined) {
      const done = acks.leases.length === 0 ? pending : pending.then((batch) => (batch.leasesAcked === false ? client.ack(mailbox, acks.leaseIds) : 0));
      acker.carried(acker.settleWith(acks, done));
    }
    const received = pending.then(acks === undefined ? withoutAcks : withAcks);
    received.catch(noError); // its error is handled where it is awaited
    return received;
  };
  const ahead: Array<Promise<Received>> = []; // prefetched RECEIVEs, oldest first
  let waiting: Promise<Received> | undefined; // the RECEIVE an abort interrupted
  let failures = 0;
  let lastFull = false; // the last batch came back full: more is likely waiting
  try {
    while (!signal?.aborted && !client.isClosed) {
      let batch: DeliveredMessage[];
      let lease: string | undefined;
      const startedMs = performance.now();
      try {
        acker.throwIfFailed();
        await acker.belowInFlight(acksInFlightMax);
        // Nothing in hand now: after a full batch, batches are requested up to prefetch + 1 (the
        // messages held and requested stay within (prefetch + 1) x max). The acks collected ride
        // on the first RECEIVE sent; if none is, on the next (hold).
        if (lastFull) while (ahead.length <= prefetch) ahead.push(receive());
        else if (ahead.length === 0) ahead.push(receive());
        acker.hold();
        const pending = ahead.shift()!;
        const arrived = await unlessAborted(pending, signal);
        if (arrived === undefined) {
          waiting = pending;
          return;
        }
        batch = arrived.messages;
        lease = arrived.lease;
        lastFull = batch.length === max;
        failures = 0;
        const elapsedMs = performance.now() - startedMs;
        // (A RECEIVE that carried acks answers at once when empty: then the next one waits.)
        if (batch.length === 0 && !arrived.carriedAcks && elapsedMs < CONSUME_EMPTY_POLL_MS_MIN) await sleepUnlessAborted(CONSUME_EMPTY_POLL_MS_MIN - elapsedMs, signal);
      } catch (error) {
        lastFull = false;
        if (signal?.aborted || client.isClosed) return;
        if (!(error instanceof FerryError) || !error.retryable) throw error;
        await sleepUnlessAborted(backoffDelayMs(failures++, RECONNECT_MIN_MS_DEFAULT, RECONNECT_MAX_MS_DEFAULT, Math.random), signal);
        continue;
      }
      // A full batch: more is likely waiting; up to prefetch batches are requested before it is
      // handed out. (After a short one, a prefetch would only hold back, leased here, messages
      // that arrive while this batch is handled.)
      if (lastFull) while (ahead.length < prefetch) ahead.push(receive());
      const batchOf = lease === undefined ? undefined : new LeasedBatch(lease, batch.length);
      const messages = batch.map((delivered) => new Consumed(delivered, loop, batchOf));
      let index = 0;
      try {
        for (; index < messages.length; index++) {
          if (signal?.aborted || client.isClosed) break;
          const message = messages[index]!;
          yield message;
          if (autoAck && !message.settledByBody) acker.autoAck(message.id, batchOf);
        }
      } finally {
        // index < length: the loop was left early (or aborted); give the rest back.
        const unsettled = messages.slice(index).filter((message, offset) => !message.settledByBody && (autoAck || offset > 0));
        if (unsettled.length > 0 && !client.isClosed) {
          await client.nack(mailbox, unsettled.map((message) => message.id)).catch(noError);
        }
      }
    }
  } finally {
    acker.flush();
    if (waiting !== undefined) void giveBack(client, mailbox, waiting);
    const givenBack = Promise.all(ahead.map((pending) => giveBack(client, mailbox, pending)));
    if (signal?.aborted || client.isClosed) {
      // Prefetched RECEIVEs went out after a full batch and usually answer at once: wait a little
      // for them, so that a client closed right after the loop has given their messages back,
      // but not for a long poll on a mailbox that just ran dry.
      const answered = new AbortController();
      void givenBack.then(() => answered.abort());
      await sleepUnlessAborted(CONSUME_ABORT_GRACE_MS, answered.signal);
    } else {
      await givenBack;
    }
    await acker.idle();
  }
}

function prefetchBatches(option: boolean | number | undefined): number {
  if (option === undefined || option === true) return CONSUME_PREFETCH_DEFAULT;
  if (option === false) return 0;
  if (!Number.isInteger(option) || option < 0 || option > CONSUME_PREFETCH_MAX) {
    throw new FerryError("INVALID", `prefetch takes true, false or an integer from 0 to ${CONSUME_PREFETCH_MAX}, not ${option}`);
  }
  return option;
}

// Nacks what a RECEIVE the loop will not hand out brings, when it arrives, so it is redelivered
// at once rather than after its lease (unless the client was closed meanwhile).
async function giveBack(client: FerryClient, mailbox: string, pending: Promise<Received>): Promise<void> {
  const messages = await pending.then(
    (received) => received.messages,
    (): DeliveredMessage[] => [],
  );
  if (messages.length > 0 && !client.isClosed) await client.nack(mailbox, messages.map((message) => message.id)).catch(noError);
}

// The explicit acks of one coalesced request share one promise (one allocation per request, not
// per message); they settle together anyway.
class SharedAck implements Settlers<void> {
  resolve: () => void = noop;
  reject: (error: unknown) => void = noop;
  readonly promise: Promise<void> = promiseInto<void>(this); // fills in resolve and reject
}

// A RECEIVE's answer as the loop takes it: whether the RECEIVE carried acks (then an empty one
// came back at once, without waiting).
interface Received {
  messages: DeliveredMessage[];
  carriedAcks: boolean;
  lease: string | undefined;
}
function withoutAcks(batch: ReceivedBatch): Received {
  return { messages: batch.messages, carriedAcks: false, lease: batch.lease };
}
function withAcks(batch: ReceivedBatch): Received {
  return { messages: batch.messages, carriedAcks: true, lease: batch.lease };
}

// A batch with a lease name, and how many of its messages the acks being collected hold (split:
// some of its acks went out already, so it goes by ids).
class LeasedBatch {
  collected = 0;
  split = false;
  constructor(
    readonly lease: string,
    readonly size: number,
  ) {}
}

// Acks collected and taken together: their ids and lease names (a RECEIVE's take: the batches
// all of whose messages are among them, by name, their ids in leaseIds), and what their
// requests settle.
interface Collected {
  ids: string[];
  leases: string[];
  leaseIds: string[];
  explicit: SharedAck | undefined; // the ack() calls among them
  autoAcks: boolean; // autoAck() calls among them
}

// Coalesces the acks of one event-loop turn into one request: the next RECEIVE, or an ACK (see
// the rules above).
class Acker {
  private ids: string[] = [];
  // The leased batch of each of `ids` (undefined: none, or acked before), and those batches.
  private batchOfIds: Array<LeasedBatch | undefined> = [];
  private batches: LeasedBatch[] = [];
  private explicit: SharedAck | undefined; // the ack() calls among `ids`
  private autoAcks = false; // autoAck() calls among `ids`
  private scheduled = false;
  private holdTimer: ReturnType<typeof setTimeout> | undefined; // set while held for a RECEIVE
  private readonly inFlight = new Set<Promise<void>>(); // ACK requests
  private readonly onReceives = new Set<Promise<void>>(); // acks carried by RECEIVEs
  private failure: unknown; // the first auto-ack error that is not retryable

  constructor(
    private readonly client: FerryClient,
    private readonly mailbox: string,
  ) {}

  ack(id: string, batch: LeasedBatch | undefined): Promise<void> {
    this.add(id, batch);
    this.explicit ??= new SharedAck();
    return this.explicit.promise;
  }

  autoAck(id: string, batch: LeasedBatch | undefined): void {
    this.add(id, batch);
    this.autoAcks = true;
  }

  throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  async belowInFlight(max: number): Promise<void> {
    while (this.inFlight.size >= max) await Promise.race(this.inFlight);
  }

  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.race(this.inFlight);
    while (this.onReceives.size > 0) await Promise.race(this.onReceives);
  }

  // Acks a RECEIVE carries until it is answered (idle() waits for them too).
  carried(done: Promise<void>): void {
    this.onReceives.add(done);
    void done.then(() => this.onReceives.delete(done));
  }

  // Keeps what was collected for the next RECEIVE (take()) for up to CONSUME_ACK_HOLD_MS; then,
  // or at flush(), it goes out as an ACK.
  hold(): void {
    if (this.ids.length === 0 || this.holdTimer !== undefined) return;
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined;
      this.flush();
    }, CONSUME_ACK_HOLD_MS);
  }

  // What was collected (undefined: nothing); settleWith() gets its answer. byLease: for a RECEIVE
  // to carry, with every batch whose messages are all among the acks by its lease name.
  take(byLease = false): Collected | undefined {
    this.release();
    if (this.ids.length === 0) return undefined;
    const collected: Collected = { ids: this.ids, leases: [], leaseIds: [], explicit: this.explicit, autoAcks: this.autoAcks };
    if (this.batches.length > 0) {
      let whole = false;
      for (const batch of this.batches) {
        if (byLease && !batch.split && batch.collected === batch.size) {
          collected.leases.push(batch.lease);
          whole = true;
        }
        batch.split = true; // by name now, or some of its acks go out by id
      }
      if (whole) {
        const ids: string[] = [];
        for (let i = 0; i < this.ids.length; i++) {
          const batch = this.batchOfIds[i];
          if (batch !== undefined && batch.collected === batch.size) collected.leaseIds.push(this.ids[i]!);
          else ids.push(this.ids[i]!);
        }
        collected.ids = ids;
      }
      this.batches = [];
    }
    this.ids = [];
    this.batchOfIds = [];
    this.explicit = undefined;
    this.autoAcks = false;
    return collected;
  }

  // Sends what was collected as an ACK (also called by the turn's end unless held).
  flush(): void {
    const collected = this.take();
    if (collected === undefined) return;
    const done = this.settleWith(collected, this.client.ack(this.mailbox, collected.ids));
    this.inFlight.add(done);
    void done.then(() => this.inFlight.delete(done));
  }

  // Settles the collected acks' promises with the request that carried them.
  settleWith(collected: Collected, request: Promise<unknown>): Promise<void> {
    return request.then(
      () => collected.explicit?.resolve(),
      (error: unknown) => {
        const failure = error ?? new Error("ack failed");
        collected.explicit?.reject(failure);
        if (collected.autoAcks && this.failure === undefined && !(failure instanceof FerryError && failure.retryable)) this.failure = failure;
      },
    );
  }

  private release(): void {
    if (this.holdTimer === undefined) return;
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
  }

  private add(id: string, batch: LeasedBatch | undefined): void {
    this.ids.push(id);
    this.batchOfIds.push(batch);
    if (batch !== undefined && !batch.split && batch.collected++ === 0) this.batches.push(batch);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.holdTimer === undefined) this.flush();
    });
  }
}

function noError(): undefined {
  return undefined;
}
