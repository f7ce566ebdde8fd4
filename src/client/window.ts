// The bound on requests in flight: a counting semaphore with a FIFO queue. A caller beyond the
// window waits (backpressure) until an earlier request settles, or until its own call is aborted
// or times out, in which case it leaves the queue without ever taking a slot.
//
// The queue is an array with a moving head, so taking the next waiter is O(1) even with many
// thousands queued; an aborted waiter is only marked, and skipped when its turn comes.

interface Waiter extends CancelListener {
  cancelled: boolean;
  grant(): void;
  fail(reason: unknown): void;
}

import type { Cancel, CancelListener } from "./scope.js";

const COMPACT_AFTER_WAITERS = 1024;

export class RequestWindow {
  private inFlight = 0;
  private queue: Array<Waiter | undefined> = []; // slots before head are cleared
  private head = 0;
  private queued = 0; // waiters in the queue not cancelled

  constructor(readonly size: number) {}

  get used(): number {
    return this.inFlight;
  }

  get waiting(): number {
    return this.queued;
  }

  // Takes a slot when one is free and nobody is waiting: the common case, with no promise.
  tryAcquire(): boolean {
    if (this.inFlight < this.size && this.queued === 0) {
      this.inFlight++;
      return true;
    }
    return false;
  }

  acquire(cancel: Cancel): Promise<void> {
    if (cancel.aborted) return Promise.reject(cancel.reason);
    if (this.tryAcquire()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        cancelled: false,
        grant: () => {
          cancel.unsubscribe(waiter);
          this.inFlight++;
          resolve();
        },
        fail: (reason) => {
          cancel.unsubscribe(waiter);
          reject(reason);
        },
        onCancel: (reason) => {
          waiter.cancelled = true;
          this.queued--;
          reject(reason);
        },
      };
      cancel.subscribe(waiter);
      this.queue.push(waiter);
      this.queued++;
    });
  }

  release(): void {
    if (this.inFlight <= 0) throw new Error("RequestWindow.release without acquire");
    this.inFlight--;
    const next = this.takeNext();
    next?.grant();
  }

  // Fails every waiter (the client is closing).
  rejectWaiters(reason: Error): void {
    for (let waiter = this.takeNext(); waiter !== undefined; waiter = this.takeNext()) waiter.fail(reason);
  }

  private takeNext(): Waiter | undefined {
    while (this.head < this.queue.length) {
      const waiter = this.queue[this.head]!;
      this.queue[this.head++] = undefined; // granted or cancelled: not kept alive from here
      if (this.head === this.queue.length) {
        this.queue.length = 0;
        this.head = 0;
      } else if (this.head >= COMPACT_AFTER_WAITERS && this.head * 2 >= this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      if (!waiter.cancelled) {
        this.queued--;
        return waiter;
      }
    }
    return undefined;
  }
}
