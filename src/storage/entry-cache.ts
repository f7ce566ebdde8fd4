// The most recent entries, bodies included, so the hot path (a leader replicating to followers
// that keep up, the node applying what it just committed) never touches the disk. Bounded by
// bytes: the oldest entries are evicted first. Holds a contiguous range [firstIndex, lastIndex].
import type { Entry } from "../raft/types.js";

export const ENTRY_CACHE_BYTES_DEFAULT = 32 * 1024 * 1024;
const ENTRY_OVERHEAD_BYTES = 64; // object and array slot, roughly

export class EntryCache {
  private entries: Entry[] = [];
  private head = 0; // entries[head] has index firstIndex
  private sizeBytes = 0;
  firstIndex = 1;

  constructor(readonly capacityBytes: number) {}

  get lastIndex(): number {
    return this.firstIndex + (this.entries.length - this.head) - 1;
  }

  get(index: number): Entry | undefined {
    if (index < this.firstIndex || index > this.lastIndex) return undefined;
    return this.entries[this.head + index - this.firstIndex];
  }

  // Entries must be contiguous; entries[0].index <= lastIndex + 1 drops the overlapped suffix.
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = entries[0]!.index;
    if (first < this.firstIndex || first > this.lastIndex + 1) this.clear(first);
    else this.truncateFrom(first);
    for (const entry of entries) {
      this.entries.push(entry);
      this.sizeBytes += entry.data.length + ENTRY_OVERHEAD_BYTES;
    }
    this.evict();
  }

  // Drops entries from index on.
  truncateFrom(index: number): void {
    while (this.lastIndex >= index && this.entries.length > this.head) {
      const entry = this.entries.pop()!;
      this.sizeBytes -= entry.data.length + ENTRY_OVERHEAD_BYTES;
    }
  }

  // Drops entries before index.
  compact(index: number): void {
    while (this.firstIndex < index && this.head < this.entries.length) this.dropFirst();
    if (this.head === this.entries.length) this.clear(Math.max(index, this.firstIndex));
  }

  clear(nextIndex: number): void {
    this.entries = [];
    this.head = 0;
    this.sizeBytes = 0;
    this.firstIndex = nextIndex;
  }

  private evict(): void {
    while (this.sizeBytes > this.capacityBytes && this.head < this.entries.length - 1) this.dropFirst();
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  private dropFirst(): void {
    const entry = this.entries[this.head]!;
    this.entries[this.head] = undefined as unknown as Entry;
    this.head++;
    this.firstIndex++;
    this.sizeBytes -= entry.data.length + ENTRY_OVERHEAD_BYTES;
  }
}
