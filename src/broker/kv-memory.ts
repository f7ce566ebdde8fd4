// An in-memory OrderedKv for tests and the simulator: a Map for point reads plus the keys in a
// sorted list of bounded chunks (binary search to the chunk, then within it), so get/put/delete
// are O(log n + chunk) and a scan walks keys in order without touching the rest.
// Invariants: every chunk is non-empty and sorted, chunks are in order and do not overlap,
// `lastKeys[i]` is the last key of `chunks[i]`, and the chunks hold exactly the Map's keys.
import { assert } from "../util/assert.js";
import type { KvEntry, KvReadView, OrderedKv } from "./kv.js";

const CHUNK_KEYS_MAX = 1024;

export class SortedKeys {
  chunks: string[][] = [];
  lastKeys: string[] = [];

  // Index of the first chunk whose last key is >= key (chunks.length when none).
  chunkFor(key: string): number {
    let low = 0;
    let high = this.lastKeys.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.lastKeys[middle]! < key) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  insert(key: string): void {
    if (this.chunks.length === 0) {
      this.chunks.push([key]);
      this.lastKeys.push(key);
      return;
    }
    let chunkIndex = this.chunkFor(key);
    if (chunkIndex === this.chunks.length) chunkIndex--; // above every key: append to the last chunk
    const chunk = this.chunks[chunkIndex]!;
    const position = lowerBound(chunk, key);
    chunk.splice(position, 0, key);
    this.lastKeys[chunkIndex] = chunk[chunk.length - 1]!;
    if (chunk.length > CHUNK_KEYS_MAX) {
      const upper = chunk.splice(chunk.length >>> 1);
      this.chunks.splice(chunkIndex + 1, 0, upper);
      this.lastKeys.splice(chunkIndex, 1, chunk[chunk.length - 1]!, upper[upper.length - 1]!);
    }
  }

  remove(key: string): void {
    const chunkIndex = this.chunkFor(key);
    const chunk = this.chunks[chunkIndex];
    assert(chunk !== undefined, "removed key is in a chunk");
    const position = lowerBound(chunk, key);
    assert(chunk[position] === key, "removed key is present");
    chunk.splice(position, 1);
    if (chunk.length === 0) {
      this.chunks.splice(chunkIndex, 1);
      this.lastKeys.splice(chunkIndex, 1);
    } else {
      this.lastKeys[chunkIndex] = chunk[chunk.length - 1]!;
    }
  }

  get size(): number {
    let size = 0;
    for (const chunk of this.chunks) size += chunk.length;
    return size;
  }

  *all(): Generator<string> {
    for (const chunk of this.chunks) yield* chunk;
  }

  // Keys in [start, end), ascending or descending, at most limit.
  range(start: string, end: string, limit: number, reverse: boolean): string[] {
    const keys: string[] = [];
    if (limit <= 0 || start >= end) return keys;
    if (!reverse) {
      let chunkIndex = this.chunkFor(start);
      let position = chunkIndex < this.chunks.length ? lowerBound(this.chunks[chunkIndex]!, start) : 0;
      for (; chunkIndex < this.chunks.length; chunkIndex++, position = 0) {
        const chunk = this.chunks[chunkIndex]!;
        for (; position < chunk.length; position++) {
          const key = chunk[position]!;
          if (key >= end || keys.length >= limit) return keys;
          keys.push(key);
        }
      }
      return keys;
    }
    let chunkIndex = Math.min(this.chunkFor(end), this.chunks.length - 1);
    let position = chunkIndex >= 0 ? lowerBound(this.chunks[chunkIndex]!, end) - 1 : -1;
    for (; chunkIndex >= 0; chunkIndex--) {
      const chunk = this.chunks[chunkIndex]!;
      if (position === Number.POSITIVE_INFINITY) position = chunk.length - 1;
      for (; position >= 0; position--) {
        const key = chunk[position]!;
        if (key < start || keys.length >= limit) return keys;
        keys.push(key);
      }
      position = Number.POSITIVE_INFINITY;
    }
    return keys;
  }
}

function lowerBound(sorted: string[], key: string): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (sorted[middle]! < key) low = middle + 1;
    else high = middle;
  }
  return low;
}

// A frozen copy of the entries at the moment the view was taken.
class MemoryReadView implements KvReadView {
  constructor(
    private readonly values: Map<string, Uint8Array>,
    private readonly keys: SortedKeys,
  ) {}
  get(key: string): Uint8Array | undefined {
    return this.values.get(key);
  }
  scan(start: string, end: string, limit: number, reverse = false): KvEntry[] {
    return this.keys.range(start, end, limit, reverse).map((key) => ({ key, value: this.values.get(key)! }));
  }
  release(): void {}
}

export class MemoryKv implements OrderedKv {
  private values = new Map<string, Uint8Array>();
  private keys = new SortedKeys();
  // Inside a transaction: each touched key's value before the transaction (undefined: absent).
  private undo: Map<string, Uint8Array | undefined> | undefined;

  get(key: string): Uint8Array | undefined {
    return this.values.get(key);
  }

  scan(start: string, end: string, limit: number, reverse = false): KvEntry[] {
    return this.keys.range(start, end, limit, reverse).map((key) => ({ key, value: this.values.get(key)! }));
  }

  readInPlace<T>(key: string, read: (value: Uint8Array) => T): T | undefined {
    const value = this.values.get(key);
    return value === undefined ? undefined : read(value);
  }

  put(key: string, value: Uint8Array): void {
    const previous = this.values.get(key);
    this.remember(key, previous);
    if (previous === undefined) this.keys.insert(key);
    this.values.set(key, value.slice()); // the caller may reuse its buffer (OrderedKv.put)
  }

  putIfAbsent(key: string, value: Uint8Array): boolean {
    if (this.values.has(key)) return false;
    this.put(key, value);
    return true;
  }

  delete(key: string): void {
    const previous = this.values.get(key);
    if (previous === undefined) return;
    this.remember(key, previous);
    this.keys.remove(key);
    this.values.delete(key);
  }

  transaction<T>(fn: () => T): T {
    assert(this.undo === undefined, "transactions do not nest");
    this.undo = new Map();
    try {
      const result = fn();
      this.undo = undefined;
      return result;
    } catch (error) {
      const undo = this.undo ?? new Map<string, Uint8Array | undefined>();
      this.undo = undefined;
      for (const [key, value] of undo) {
        if (value === undefined) this.delete(key);
        else this.put(key, value);
      }
      throw error;
    }
  }

  readView(): KvReadView {
    const keys = new SortedKeys();
    keys.chunks = this.keys.chunks.map((chunk) => chunk.slice());
    keys.lastKeys = this.keys.lastKeys.slice();
    return new MemoryReadView(new Map(this.values), keys);
  }

  clear(): void {
    for (const key of [...this.values.keys()]) this.delete(key);
  }

  flushed(): Promise<void> {
    return Promise.resolve();
  }

  size(): number {
    return this.values.size;
  }

  private remember(key: string, previous: Uint8Array | undefined): void {
    if (this.undo !== undefined && !this.undo.has(key)) this.undo.set(key, previous);
  }
}
