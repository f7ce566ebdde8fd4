// consume(): a mailbox as an async iterable. It long-polls RECEIVE in batches and yields each
// message with ack() and nack() attached.
//
// Rules (at-least-once, never silently dropped):
// - autoAck (default true): a message is acked once the loop body for it finishes, unless the
//   body settled it itself.
// - Acks are coalesced: every ack (auto or explicit) made in one event-loop turn goes out as one
//   ACK request, so a batch handled without waiting costs one ACK, not one per message. Each
//   message's ack() still settles with that request; what is collected goes out at the latest
//   before the next RECEIVE, in the same write. At most acksInFlightMax ACK requests are
//   outstanding before the next RECEIVE waits for one to finish; the loop never waits for its
//   acks otherwise (their latency overlaps the next RECEIVE). Leaving the loop waits for them.
// - prefetch (default true): when a batch came back full, the next RECEIVE goes out before the
//   batch is handed to the loop body, so the body's work and the round trip overlap. The
//   prefetched messages are leased meanwhile: their visibility timeout runs while the current
//   batch is handled.
// - Leaving the loop early (break, return, throw) nacks the message in hand (autoAck only: the
//   body may have failed on it), every message of the batch not yet yielded, and a prefetched
//   batch, so they are redelivered at once rather than after their lease. To stop after
//   handling a message with autoAck, ack it (`await message.ack()`) before breaking.
// - Retryable errors of RECEIVE and ACK are absorbed with backoff (a lost ack means a
//   redelivery, which at-least-once allows); other errors end the loop by throwing (an
//   auto-ack's at the next RECEIVE).
// - Aborting options.signal or closing the client ends the loop quietly.
import type { DeliveredMessage } from "../protocol/api.js";
import { FerryError } from "../protocol/errors.js";
import { backoffDelayMs } from "./backoff.js";
import type { FerryClient } from "./client.js";
import { RECONNECT_MAX_MS_DEFAULT, RECONNECT_MIN_MS_DEFAULT } from "./options.js";
import { sleepUnlessAborted } from "./scope.js";

export const CONSUME_MAX_DEFAULT = 16;
export const CONSUME_WAIT_MS_DEFAULT = 5_000;
export const CONSUME_ACKS_IN_FLIGHT_MAX_DEFAULT = 4;
// An empty batch that came back sooner than this (waitMs 0, or a server that does not long-poll)
// is followed by a pause for the rest of it, so an idle consumer never spins.
export const CONSUME_EMPTY_POLL_MS_MIN = 100;

export interface ConsumeOptions {
  autoAck?: boolean; // default true
  max?: number; // messages per RECEIVE (default 16)
  waitMs?: number; // long poll per RECEIVE (default 5 s)
  visibilityMs?: number;
  prefetch?: boolean; // default true: receive the next batch while this one is handled
  acksInFlightMax?: number; // ACK requests outstanding before the next RECEIVE waits (default 4)
  signal?: AbortSignal;
}

export type ConsumedMessage = DeliveredMessage & {
  ack(): Promise<void>;
  nack(delayMs?: number): Promise<void>;
};

interface Settleable {
  message: ConsumedMessage;
  settled: boolean;
}

export async function* consumeMailbox(client: FerryClient, mailbox: string, options: ConsumeOptions): AsyncGenerator<ConsumedMessage> {
  const autoAck = options.autoAck ?? true;
  const prefetch = options.prefetch ?? true;
  const max = options.max ?? CONSUME_MAX_DEFAULT;
  const acksInFlightMax = options.acksInFlightMax ?? CONSUME_ACKS_IN_FLIGHT_MAX_DEFAULT;
  if (!Number.isInteger(acksInFlightMax) || acksInFlightMax < 1) throw new FerryError("INVALID", `acksInFlightMax takes an integer >= 1, not ${acksInFlightMax}`);
  const signal = options.signal;
  const acker = new Acker(client, mailbox);
  const receive = (): Promise<DeliveredMessage[]> =>
    client.receive(mailbox, {
      max,
      waitMs: options.waitMs ?? CONSUME_WAIT_MS_DEFAULT,
      ...(options.visibilityMs === undefined ? {} : { visibilityMs: options.visibilityMs }),
      ...(signal === undefined ? {} : { signal }),
    });
  let ahead: Promise<DeliveredMessage[]> | undefined; // the prefetched RECEIVE
  let failures = 0;
  try {
    while (!signal?.aborted && !client.isClosed) {
      let batch: DeliveredMessage[];
      const startedMs = performance.now();
      try {
        acker.throwIfFailed();
        await acker.belowInFlight(acksInFlightMax);
        // The acks collected so far go out ahead of the RECEIVE, in the same write, so the leader
        // usually proposes both in one entry (one Raft round) instead of two.
        acker.flush();
        const pending = ahead ?? receive();
        ahead = undefined;
        batch = await pending;
        failures = 0;
        const elapsedMs = performance.now() - startedMs;
        if (batch.length === 0 && elapsedMs < CONSUME_EMPTY_POLL_MS_MIN) await sleepUnlessAborted(CONSUME_EMPTY_POLL_MS_MIN - elapsedMs, signal);
      } catch (error) {
        if (signal?.aborted || client.isClosed) return;
        if (!(error instanceof FerryError) || !error.retryable) throw error;
        await sleepUnlessAborted(backoffDelayMs(failures++, RECONNECT_MIN_MS_DEFAULT, RECONNECT_MAX_MS_DEFAULT, Math.random), signal);
        continue;
      }
      // A full batch: more is likely waiting. (After a short one, a prefetch would only hold
      // back, leased here, messages that arrive while this batch is handled.)
      if (prefetch && batch.length === max) {
        acker.flush();
        ahead = receive();
        ahead.catch(noError); // its error is handled where it is awaited
      }
      const entries = batch.map((delivered) => settleable(acker, client, mailbox, delivered));
      let index = 0;
      try {
        for (; index < entries.length; index++) {
          if (signal?.aborted || client.isClosed) break;
          const entry = entries[index]!;
          yield entry.message;
          if (autoAck && !entry.settled) acker.autoAck(entry.message.id);
        }
      } finally {
        // index < length: the loop was left early (or aborted); give the rest back.
        const unsettled = entries.slice(index).filter((entry, offset) => !entry.settled && (autoAck || offset > 0));
        if (unsettled.length > 0 && !client.isClosed) {
          await client.nack(mailbox, unsettled.map((entry) => entry.message.id)).catch(noError);
        }
      }
    }
  } finally {
    acker.flush();
    if (ahead !== undefined) {
      const prefetched = await ahead.catch((): DeliveredMessage[] => []);
      if (prefetched.length > 0 && !client.isClosed) await client.nack(mailbox, prefetched.map((message) => message.id)).catch(noError);
    }
    await acker.idle();
  }
}

function settleable(acker: Acker, client: FerryClient, mailbox: string, delivered: DeliveredMessage): Settleable {
  const entry: Settleable = {
    settled: false,
    message: {
      ...delivered,
      ack: () => {
        entry.settled = true;
        return acker.ack(delivered.id);
      },
      nack: async (delayMs?: number) => {
        entry.settled = true;
        await client.nack(mailbox, [delivered.id], delayMs === undefined ? {} : { delayMs });
      },
    },
  };
  return entry;
}

interface AckWaiter {
  resolve(): void;
  reject(error: unknown): void;
}

// Coalesces the acks of one event-loop turn into one ACK request (see the rules above).
class Acker {
  private ids: string[] = [];
  private waiters: Array<AckWaiter | undefined> = []; // undefined: an auto-ack
  private scheduled = false;
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown; // the first auto-ack error that is not retryable

  constructor(
    private readonly client: FerryClient,
    private readonly mailbox: string,
  ) {}

  ack(id: string): Promise<void> {
    return new Promise<void>((resolve, reject) => this.add(id, { resolve, reject }));
  }

  autoAck(id: string): void {
    this.add(id, undefined);
  }

  throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  async belowInFlight(max: number): Promise<void> {
    while (this.inFlight.size >= max) await Promise.race(this.inFlight);
  }

  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.race(this.inFlight);
  }

  // Sends what was collected (also called by the turn's end).
  flush(): void {
    if (this.ids.length === 0) return;
    const ids = this.ids;
    const waiters = this.waiters;
    this.ids = [];
    this.waiters = [];
    const done = this.client.ack(this.mailbox, ids).then(
      () => {
        for (const waiter of waiters) waiter?.resolve();
      },
      (error: unknown) => {
        const failure = error ?? new Error("ack failed");
        for (const waiter of waiters) waiter?.reject(failure);
        const auto = waiters.some((waiter) => waiter === undefined);
        if (auto && this.failure === undefined && !(failure instanceof FerryError && failure.retryable)) this.failure = failure;
      },
    );
    this.inFlight.add(done);
    void done.then(() => this.inFlight.delete(done));
  }

  private add(id: string, waiter: AckWaiter | undefined): void {
    this.ids.push(id);
    this.waiters.push(waiter);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }
}

function noError(): undefined {
  return undefined;
}
