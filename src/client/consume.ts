// consume(): a mailbox as an async iterable. It long-polls RECEIVE in batches and yields each
// message with ack() and nack() attached.
//
// Rules (at-least-once, never silently dropped):
// - autoAck (default true): a message is acked once the loop body for it finishes, unless the
//   body settled it itself. Acks go out without waiting, and are awaited before the next RECEIVE.
// - Leaving the loop early (break, return, throw) nacks the message in hand (autoAck only: the
//   body may have failed on it) and every message of the batch not yet yielded, so they are
//   redelivered at once rather than after their lease. To stop after handling a message with
//   autoAck, ack it (`await message.ack()`) before breaking.
// - Retryable errors of RECEIVE and ACK are absorbed with backoff (a lost ack means a
//   redelivery, which at-least-once allows); other errors end the loop by throwing.
// - Aborting options.signal or closing the client ends the loop quietly.
import type { DeliveredMessage } from "../protocol/api.js";
import { FerryError } from "../protocol/errors.js";
import { backoffDelayMs } from "./backoff.js";
import type { FerryClient } from "./client.js";
import { RECONNECT_MAX_MS_DEFAULT, RECONNECT_MIN_MS_DEFAULT } from "./options.js";
import { sleepUnlessAborted } from "./scope.js";

export const CONSUME_MAX_DEFAULT = 16;
export const CONSUME_WAIT_MS_DEFAULT = 5_000;
// An empty batch that came back sooner than this (waitMs 0, or a server that does not long-poll)
// is followed by a pause for the rest of it, so an idle consumer never spins on RECEIVE.
export const CONSUME_EMPTY_POLL_MS_MIN = 100;

export interface ConsumeOptions {
  autoAck?: boolean; // default true
  max?: number; // messages per RECEIVE (default 16)
  waitMs?: number; // long poll per RECEIVE (default 5 s)
  visibilityMs?: number;
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
  const signal = options.signal;
  let acks: Array<Promise<unknown>> = []; // each settles with undefined or the ack's error
  let failures = 0;
  while (!signal?.aborted && !client.isClosed) {
    let batch: DeliveredMessage[];
    const startedMs = performance.now();
    try {
      await awaitAcks(acks);
      acks = [];
      batch = await client.receive(mailbox, {
        max: options.max ?? CONSUME_MAX_DEFAULT,
        waitMs: options.waitMs ?? CONSUME_WAIT_MS_DEFAULT,
        ...(options.visibilityMs === undefined ? {} : { visibilityMs: options.visibilityMs }),
        ...(signal === undefined ? {} : { signal }),
      });
      failures = 0;
      const elapsedMs = performance.now() - startedMs;
      if (batch.length === 0 && elapsedMs < CONSUME_EMPTY_POLL_MS_MIN) await sleepUnlessAborted(CONSUME_EMPTY_POLL_MS_MIN - elapsedMs, signal);
    } catch (error) {
      if (signal?.aborted || client.isClosed) return;
      if (!(error instanceof FerryError) || !error.retryable) throw error;
      await sleepUnlessAborted(backoffDelayMs(failures++, RECONNECT_MIN_MS_DEFAULT, RECONNECT_MAX_MS_DEFAULT, Math.random), signal);
      continue;
    }
    const entries = batch.map((delivered) => settleable(client, mailbox, delivered));
    let index = 0;
    try {
      for (; index < entries.length; index++) {
        if (signal?.aborted || client.isClosed) break;
        const entry = entries[index]!;
        yield entry.message;
        if (autoAck && !entry.settled) acks.push(entry.message.ack().then(noError, (error: unknown) => error ?? new Error("ack failed")));
      }
    } finally {
      // index < length: the loop was left early (or aborted); give the rest back.
      const unsettled = entries.slice(index).filter((entry, offset) => !entry.settled && (autoAck || offset > 0));
      if (unsettled.length > 0 && !client.isClosed) {
        await client.nack(mailbox, unsettled.map((entry) => entry.message.id)).catch(() => undefined);
      }
    }
  }
  await awaitAcks(acks).catch(() => undefined);
}

function settleable(client: FerryClient, mailbox: string, delivered: DeliveredMessage): Settleable {
  const entry: Settleable = {
    settled: false,
    message: {
      ...delivered,
      ack: async () => {
        entry.settled = true;
        await client.ack(mailbox, [delivered.id]);
      },
      nack: async (delayMs?: number) => {
        entry.settled = true;
        await client.nack(mailbox, [delivered.id], delayMs === undefined ? {} : { delayMs });
      },
    },
  };
  return entry;
}

function noError(): undefined {
  return undefined;
}

// Waits for auto-acks; a retryable failure only means a redelivery later, anything else throws.
// (The ack promises carry their errors as values so that none is ever an unhandled rejection.)
async function awaitAcks(acks: Array<Promise<unknown>>): Promise<void> {
  for (const error of await Promise.all(acks)) {
    if (error !== undefined && !(error instanceof FerryError && error.retryable)) throw error;
  }
}
