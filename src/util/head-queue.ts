// A FIFO queue on an array with a moving head: shift() is O(1) even with many thousands queued.
// Each slot is cleared as its item leaves, so the queue keeps nothing it handed out alive (the
// proposal queue kept up to 1024 taken requests that way, and under load they survived scavenges
// and were promoted); emptied, it starts over, and mostly consumed, it drops the consumed part.
const COMPACT_AFTER = 1024;

export class HeadQueue<T> {
  private items: Array<T | undefined> = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  // The next item, left in the queue.
  peek(): T | undefined {
    return this.head < this.items.length ? this.items[this.head] : undefined;
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
    } else if (this.head >= COMPACT_AFTER && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  // Empties the queue, returning what it held in order.
  takeAll(): T[] {
    const all = this.items.slice(this.head) as T[];
    this.items = [];
    this.head = 0;
    return all;
  }
}
