// The ordered key-value store the broker keeps its whole state in.
//
// Keys are "byte strings": JS strings whose every character is 0..255, compared by code unit,
// which is the same order as comparing the bytes. Implementations store them as bytes (LMDB) or
// as strings (memory). Values are bytes and are never mutated once stored or returned.
// Invariants: reads inside a transaction see that transaction's writes; a transaction that throws
// leaves no trace; a read view keeps seeing the state of the moment it was taken.

export interface KvEntry {
  key: string;
  value: Uint8Array;
}

export interface KvReader {
  get(key: string): Uint8Array | undefined;
  // Entries with start <= key < end in key order (reverse: descending), at most `limit` of them.
  // Returns an array, so callers may write while walking the result.
  scan(start: string, end: string, limit: number, reverse?: boolean): KvEntry[];
}

export interface KvReadView extends KvReader {
  release(): void;
}

export interface OrderedKv extends KvReader {
  // get() without the copy: `read` is handed the value in place (bytes the store may reuse once
  // it returns, so it must not keep them) and its result is returned; undefined when the key is
  // absent. For a caller that needs a few bytes of a large value.
  readInPlace<T>(key: string, read: (value: Uint8Array) => T): T | undefined;
  // Copies `value` before returning: callers hand it buffers they reuse (ByteWriter.scratch).
  put(key: string, value: Uint8Array): void;
  // put() when `key` is absent: returns true and stores, or false and changes nothing. One lookup
  // instead of a get and a put where absence is the usual case (a new client id).
  putIfAbsent(key: string, value: Uint8Array): boolean;
  delete(key: string): void;
  // Runs fn as one atomic write batch: all of its writes become visible and durable together,
  // or (when fn throws) none of them.
  transaction<T>(fn: () => T): T;
  // A consistent read-only view of the current state, unaffected by later writes.
  readView(): KvReadView;
  // Removes every entry (used by restore, inside a transaction).
  clear(): void;
  // Resolves when every transaction committed before the call is durable (immediately in memory).
  flushed(): Promise<void>;
  // Stores that group several transactions into one commit may offer this: `hook` runs inside the
  // open group right before it commits, and its writes join the commit. A client can then write
  // data that changes on every transaction (counters) once per commit instead of once per
  // transaction. Replaces any previous hook.
  setBeforeCommit?(hook: (() => void) | undefined): void;
}

// A store that groups transactions into one commit may fail that commit (lmdb-js 3's freelist
// check, for one: docs/node.md "State store commit failures"). The group is rolled back whole, so
// the store holds its last successful commit, consistently with the applied index stored in it.
// Until the owner calls recover() every operation throws this error; after it, the store works
// again from that commit and the owner re-applies what the group held (the WAL has it).
export class StoreCommitError extends Error {
  constructor(cause: unknown) {
    super(`the state store could not commit: ${(cause as Error)?.message ?? String(cause)}`.trimEnd(), { cause });
    this.name = "StoreCommitError";
  }
}

// Sorts above every byte string: the end of a scan over everything.
export const KEY_END = "\u0100";

// The byte string that sorts after every key starting with `prefix`.
export function prefixEnd(prefix: string): string {
  let end = prefix;
  while (end.length > 0) {
    const last = end.charCodeAt(end.length - 1);
    if (last < 0xff) return end.slice(0, -1) + String.fromCharCode(last + 1);
    end = end.slice(0, -1);
  }
  return KEY_END;
}

export function bytesToKey(bytes: Uint8Array): string {
  let key = "";
  for (let i = 0; i < bytes.length; i++) key += String.fromCharCode(bytes[i]!);
  return key;
}

export function keyToBytes(key: string): Uint8Array {
  const bytes = new Uint8Array(key.length);
  for (let i = 0; i < key.length; i++) bytes[i] = key.charCodeAt(i);
  return bytes;
}
