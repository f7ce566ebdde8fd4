// Waiters a request parks while it waits for the state machine: long-polling RECEIVEs wait for a
// mailbox to gain visible messages, linearizable reads wait for the applied index to reach their
// read index. Both are woken by the apply loop, never by polling.

export class MailboxWaiters {
  private readonly waiters = new Map<string, Set<() => void>>();

  // Resolves when the mailbox is woken or after timeoutMs, whichever is first.
  wait(mailbox: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let set = this.waiters.get(mailbox);
      if (!set) this.waiters.set(mailbox, (set = new Set()));
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        set!.delete(done);
        if (set!.size === 0 && this.waiters.get(mailbox) === set) this.waiters.delete(mailbox);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, timeoutMs));
      signal?.addEventListener("abort", done, { once: true });
      set.add(done);
    });
  }

  wake(mailbox: string): void {
    const set = this.waiters.get(mailbox);
    if (!set) return;
    for (const done of [...set]) done();
  }

  wakeAll(): void {
    for (const mailbox of [...this.waiters.keys()]) this.wake(mailbox);
  }

  get count(): number {
    let total = 0;
    for (const set of this.waiters.values()) total += set.size;
    return total;
  }
}

// Callbacks waiting for the applied index to reach a target, kept sorted by target.
export class AppliedWaiters {
  private queue: Array<{ index: number; resolve: () => void }> = [];

  wait(index: number, applied: number): Promise<void> {
    if (applied >= index) return Promise.resolve();
    return new Promise((resolve) => {
      const at = this.queue.findIndex((w) => w.index > index);
      const waiter = { index, resolve };
      if (at < 0) this.queue.push(waiter);
      else this.queue.splice(at, 0, waiter);
    });
  }

  applied(index: number): void {
    let count = 0;
    while (count < this.queue.length && this.queue[count]!.index <= index) count++;
    if (count === 0) return;
    const ready = this.queue.splice(0, count);
    for (const waiter of ready) waiter.resolve();
  }
}
