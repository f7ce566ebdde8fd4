// The bound on requests in flight: a counting semaphore with a FIFO queue. A caller beyond the
// window waits (backpressure) until an earlier request settles, or until its own call is aborted
// or times out, in which case it leaves the queue without ever taking a slot.
//
// The queue is a HeadQueue, so taking the next waiter is O(1) even with many thousands queued; an
// aborted waiter is only marked, and skipped when its turn comes.

interface Waiter extends CancelListener {
  cancelled: boolean;
  grant(): void;
  fail(reason: unknown): void;
}

import { HeadQueue } from "../util/head-queue.js";
import type { Cancel, CancelListener } from "./scope.js";

export class RequestWindow {
  private inFlight = 0;
  private readonly queue = new HeadQueue<Waiter>();
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
    for (let waiter = this.queue.shift(); waiter !== undefined; waiter = this.queue.shift()) {
      if (!waiter.cancelled) {
        this.queued--;
        return waiter;
      }
    }
    return undefined;
  }
}
