// The heads of the message records after each mailbox's fresh cursor, in seq order, in memory: a
// replica's RECEIVE (one that builds no reply, see Broker.apply) takes what it leases from here
// instead of scanning the records. On a follower in the benchmark's drain, the scan and the
// decoding of each record's head were ~40% of a RECEIVE+ACK apply (bench:apply, profiled).
//
// Not part of the state: a cache of what the records hold, so replicas may hold different heads
// (or none) and still apply alike. A mailbox's heads are either known (exactly its records after
// the cursor: none when it has no such record) or unknown (RECEIVE scans the records, as a leader
// always does). The broker keeps them exact:
// - a new mailbox has none; a mailbox whose messages all went has none;
// - a stored message is appended (its seq is above every stored one);
// - RECEIVE drops the heads its cursor passed;
// - removing a record after the cursor (PURGE, expiry, drop-oldest, an ACK of a message leased
//   out of order: delayed or sender-ordered) makes the mailbox's heads unknown;
// - a mailbox whose heads would pass `max` (all mailboxes together) makes its heads unknown;
// - a reload (start, restore, aborted apply) makes every mailbox's heads unknown;
// - unknown heads become known (none) when a RECEIVE's scan reaches the mailbox's last record.
//
// Kept in a typed array, with the ids' bytes in one buffer: no object per message for the
// collector to copy and promote while a backlog waits (ids are printable ASCII, validate.ts: one
// byte per character). About 70 bytes per head, plus the growth's slack.
import { assert } from "../util/assert.js";
import { readU64Key, SEQ_LENGTH, seqOf, U64_LENGTH } from "./records.js";

const INITIAL_SLOTS = 8;
const ID_BYTES_PER_SLOT = 40; // a UUID is 36
// A slot's fields in `slots` (one Float64Array: two allocations per queue, not one per field).
const INDEX = 0; // the seq: entry index, then the message's number within the entry
const NUMBER = 1;
const HIDDEN_UNTIL = 2;
const EXPIRES_AT = 3;
const BYTES = 4; // body bytes * 2, + 1 when sender-ordered
const ID_END = 5; // the slot's id is ids[start, ID_END), start = the previous slot's ID_END, or idsFirst
const STRIDE = 6;
const NO_SLOTS = new Float64Array(0);
const NO_IDS = Buffer.alloc(0);

export interface FreshHead {
  seq: string;
  id: string;
  hiddenUntilMs: number;
  expiresAtMs: number;
  senderOrdered: boolean;
  bytes: number;
}

// The heads held by every mailbox, together.
interface Counter {
  value: number;
}

// One mailbox's heads, slots [first, end) in use. Its arrays are made with the first head.
export class HeadQueue {
  // What it counts in (undefined once FreshHeads forgot it: a RECEIVE may still finish with it).
  counter: Counter | undefined;
  private slots = NO_SLOTS;
  private ids = NO_IDS;
  private idsFirst = 0;
  private first = 0;
  private end = 0;

  constructor(counter: Counter) {
    this.counter = counter;
  }

  get size(): number {
    return this.end - this.first;
  }

  // Whether the first head's seq is at or before `cursor` (a seq, or "" before every seq).
  firstAtOrBefore(cursor: string): boolean {
    if (this.first >= this.end || cursor.length !== SEQ_LENGTH) return false;
    const at = this.first * STRIDE;
    const index = this.slots[at + INDEX]!;
    const cursorIndex = readU64Key(cursor, 0);
    if (index !== cursorIndex) return index < cursorIndex;
    return this.slots[at + NUMBER]! <= readU32Key(cursor, U64_LENGTH);
  }

  // The first head, read into `into` (false: none).
  peek(into: FreshHead): boolean {
    if (this.first >= this.end) return false;
    const at = this.first * STRIDE;
    into.seq = seqOf(this.slots[at + INDEX]!, this.slots[at + NUMBER]!);
    into.id = this.ids.toString("latin1", this.idsFirst, this.slots[at + ID_END]!);
    into.hiddenUntilMs = this.slots[at + HIDDEN_UNTIL]!;
    into.expiresAtMs = this.slots[at + EXPIRES_AT]!;
    const bytes = this.slots[at + BYTES]!;
    into.senderOrdered = bytes % 2 === 1;
    into.bytes = Math.floor(bytes / 2);
    return true;
  }

  shift(): void {
    assert(this.first < this.end, "a head is there to drop");
    if (this.counter !== undefined) this.counter.value--;
    this.idsFirst = this.slots[this.first * STRIDE + ID_END]!;
    this.first++;
    if (this.first === this.end) this.clear();
  }

  push(seq: string, id: string, hiddenUntilMs: number, expiresAtMs: number, senderOrdered: boolean, bytes: number): void {
    assert(seq.length === SEQ_LENGTH, "a seq is 12 bytes");
    if ((this.end + 1) * STRIDE > this.slots.length) this.makeRoom();
    if (this.idsEnd() + id.length > this.ids.length) this.compactIds(id.length);
    const start = this.idsEnd();
    const at = this.end++ * STRIDE;
    this.slots[at + INDEX] = readU64Key(seq, 0);
    this.slots[at + NUMBER] = readU32Key(seq, U64_LENGTH);
    this.slots[at + HIDDEN_UNTIL] = hiddenUntilMs;
    this.slots[at + EXPIRES_AT] = expiresAtMs;
    this.slots[at + BYTES] = bytes * 2 + (senderOrdered ? 1 : 0);
    this.slots[at + ID_END] = writeLatin1(this.ids, id, start);
    if (this.counter !== undefined) this.counter.value++;
  }

  clear(): void {
    if (this.counter !== undefined) this.counter.value -= this.size;
    this.first = 0;
    this.end = 0;
    this.idsFirst = 0;
  }

  // Moves the slots in use to the front, first doubling the array when more than half is in use.
  private makeRoom(): void {
    const used = this.size;
    const capacity = this.slots.length / STRIDE;
    if (used * 2 > capacity || capacity === 0) {
      const slots = new Float64Array(Math.max(INITIAL_SLOTS, capacity * 2) * STRIDE);
      slots.set(this.slots.subarray(this.first * STRIDE, this.end * STRIDE));
      this.slots = slots;
    } else {
      this.slots.copyWithin(0, this.first * STRIDE, this.end * STRIDE);
    }
    this.first = 0;
    this.end = used;
  }

  private idsEnd(): number {
    return this.first === this.end ? this.idsFirst : this.slots[(this.end - 1) * STRIDE + ID_END]!;
  }

  // Moves the ids in use to the front of their buffer, first doubling it until it holds twice
  // what they and `more` bytes need.
  private compactIds(more: number): void {
    const shift = this.idsFirst;
    const usedEnd = this.idsEnd();
    const needed = usedEnd - shift + more;
    let length = Math.max(this.ids.length, INITIAL_SLOTS * ID_BYTES_PER_SLOT);
    while (needed * 2 > length) length *= 2;
    const target = length === this.ids.length ? this.ids : Buffer.allocUnsafe(length);
    this.ids.copy(target, 0, shift, usedEnd);
    this.ids = target;
    this.idsFirst = 0;
    for (let slot = this.first; slot < this.end; slot++) this.slots[slot * STRIDE + ID_END] -= shift;
  }
}

function readU32Key(key: string, offset: number): number {
  return ((key.charCodeAt(offset) << 24) | (key.charCodeAt(offset + 1) << 16) | (key.charCodeAt(offset + 2) << 8) | key.charCodeAt(offset + 3)) >>> 0;
}

// Writes a string of one-byte characters at `at`; returns where it ends. A loop: for strings this
// short, Buffer#write's call into the runtime cost a SEND's apply ~0.4 µs for the two of them.
function writeLatin1(target: Uint8Array, text: string, at: number): number {
  for (let i = 0; i < text.length; i++) target[at + i] = text.charCodeAt(i);
  return at + text.length;
}

// Every mailbox's heads, with their total bounded.
export class FreshHeads {
  private readonly queues = new Map<string, HeadQueue>();
  private readonly counter: Counter = { value: 0 };

  constructor(private readonly max: number) {}

  // Heads held, all mailboxes together.
  get size(): number {
    return this.counter.value;
  }

  // The mailbox's heads when they are known.
  of(mailbox: string): HeadQueue | undefined {
    return this.queues.get(mailbox);
  }

  // The mailbox holds no record after its cursor: its heads are known, and none.
  reset(mailbox: string): void {
    const queue = this.queues.get(mailbox);
    if (queue === undefined) this.queues.set(mailbox, new HeadQueue(this.counter));
    else queue.clear();
  }

  // The mailbox's heads are no longer known.
  forget(mailbox: string): void {
    const queue = this.queues.get(mailbox);
    if (queue === undefined) return;
    this.counter.value -= queue.size;
    queue.counter = undefined; // left as it is, for whoever still reads it
    this.queues.delete(mailbox);
  }

  clear(): void {
    for (const queue of this.queues.values()) queue.counter = undefined;
    this.queues.clear();
    this.counter.value = 0;
  }

  // A message stored after every other of its mailbox.
  append(mailbox: string, seq: string, id: string, hiddenUntilMs: number, expiresAtMs: number, senderOrdered: boolean, bytes: number): void {
    const queue = this.queues.get(mailbox);
    if (queue === undefined) return;
    if (this.counter.value >= this.max) {
      this.forget(mailbox);
      return;
    }
    queue.push(seq, id, hiddenUntilMs, expiresAtMs, senderOrdered, bytes);
  }

  // Drops the heads at or before the cursor (of a queue still held: one forgotten meanwhile is left).
  passed(queue: HeadQueue, cursor: string): void {
    if (queue.counter === undefined) return;
    while (queue.firstAtOrBefore(cursor)) queue.shift();
  }
}
