// The bound on requests in flight: a counting semaphore with a FIFO queue. A caller beyond the
// window waits (backpressure) until an earlier request settles, or until its own call is aborted
// or times out, in which case it leaves the queue without ever taking a slot.

interface Waiter {
  grant(): void;
  fail(reason: unknown): void;
}

export class RequestWindow {
  private inFlight = 0;
  private readonly waiters: Waiter[] = [];

  constructor(readonly size: number) {}

  get used(): number {
    return this.inFlight;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  acquire(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.inFlight < this.size && this.waiters.length === 0) {
      this.inFlight++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          signal.removeEventListener("abort", onAbort);
          this.inFlight++;
          resolve();
        },
        fail: (reason) => {
          signal.removeEventListener("abort", onAbort);
          reject(reason);
        },
      };
      const onAbort = () => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  release(): void {
    if (this.inFlight <= 0) throw new Error("RequestWindow.release without acquire");
    this.inFlight--;
    const next = this.waiters.shift();
    next?.grant();
  }

  // Fails every waiter (the client is closing).
  rejectWaiters(reason: Error): void {
    for (const waiter of this.waiters.splice(0)) waiter.fail(reason);
  }
}
