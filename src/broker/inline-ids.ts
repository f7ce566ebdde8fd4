// Where the record of each client id recorded within its dedupe window sits: item `item` of the
// dedupe list of entry `list` (see Broker's dedupe lists). One lookup per SEND with a client id,
// so it must cost little and, holding up to a million ids for minutes, make no garbage: an
// open-addressing table in typed arrays keyed by a 64-bit hash of the id, 20 bytes per slot, at
// most half full. The ids themselves are not kept (a Map<string, ...> of them cost a SEND more
// in its growth and in the garbage collector's copying of the retained strings than the store
// write it replaced).
//
// Exact, whatever the hashes: a slot whose hash matches is confirmed by asking the owner for the
// id at that (list, item) (`idAt`, which reads the list), so two ids with equal hashes simply
// share a probe sequence. A new id (the usual case) finds no slot with its hash and costs no read.
// (list, item) names one id for good, so `isAt` and `deleteAt` need no confirmation.
import { assert } from "../util/assert.js";

export interface InlineLocation {
  list: number; // entry index (> 0)
  item: number; // position in that entry's dedupe list
}

const INITIAL_CAPACITY = 1024;
const EMPTY = 0; // no entry index is 0

export class InlineIds {
  private capacity = INITIAL_CAPACITY;
  private mask = INITIAL_CAPACITY - 1;
  private hashesA = new Int32Array(INITIAL_CAPACITY);
  private hashesB = new Int32Array(INITIAL_CAPACITY);
  private lists = new Float64Array(INITIAL_CAPACITY);
  private items = new Int32Array(INITIAL_CAPACITY);
  private count = 0;
  private hashA = 0;
  private hashB = 0;

  // idAt(list, item): the id of that item of that list. testHash (tests only): the hash of both
  // lanes, to make distinct ids collide and probe runs wrap around the table's end.
  constructor(
    private readonly idAt: (list: number, item: number) => string,
    private readonly testHash?: (id: string) => number,
  ) {}

  get size(): number {
    return this.count;
  }

  clear(): void {
    this.capacity = INITIAL_CAPACITY;
    this.mask = INITIAL_CAPACITY - 1;
    this.hashesA = new Int32Array(INITIAL_CAPACITY);
    this.hashesB = new Int32Array(INITIAL_CAPACITY);
    this.lists = new Float64Array(INITIAL_CAPACITY);
    this.items = new Int32Array(INITIAL_CAPACITY);
    this.count = 0;
  }

  get(id: string): InlineLocation | undefined {
    const slot = this.find(id);
    return slot < 0 ? undefined : { list: this.lists[slot]!, item: this.items[slot]! };
  }

  has(id: string): boolean {
    return this.find(id) >= 0;
  }

  // Records (or moves) the id's location.
  set(id: string, list: number, item: number): void {
    assert(list > 0 && Number.isSafeInteger(list), "a dedupe list is an entry index");
    const found = this.find(id); // leaves the id's hash in hashA/hashB
    if (found >= 0) {
      this.lists[found] = list;
      this.items[found] = item;
      return;
    }
    if ((this.count + 1) * 2 > this.capacity) this.grow();
    this.insert(this.hashA, this.hashB, list, item);
  }

  // set() for an id known to have no location (has() said so): no confirmation read.
  add(id: string, list: number, item: number): void {
    assert(list > 0 && Number.isSafeInteger(list), "a dedupe list is an entry index");
    if ((this.count + 1) * 2 > this.capacity) this.grow();
    this.hash(id);
    this.insert(this.hashA, this.hashB, list, item);
  }

  // Whether the id's record is exactly that item of that list.
  isAt(id: string, list: number, item: number): boolean {
    this.hash(id);
    return this.slotOf(list, item) >= 0;
  }

  delete(id: string): boolean {
    const slot = this.find(id);
    if (slot < 0) return false;
    this.remove(slot);
    return true;
  }

  // delete() for an id known to be at (list, item): no confirmation read.
  deleteAt(id: string, list: number, item: number): void {
    this.hash(id);
    const slot = this.slotOf(list, item);
    assert(slot >= 0, `${id} is at item ${item} of dedupe list ${list}`);
    this.remove(slot);
  }

  private find(id: string): number {
    this.hash(id);
    const a = this.hashA;
    const b = this.hashB;
    for (let slot = a & this.mask; this.lists[slot] !== EMPTY; slot = (slot + 1) & this.mask) {
      if (this.hashesA[slot] === a && this.hashesB[slot] === b && this.idAt(this.lists[slot]!, this.items[slot]!) === id) return slot;
    }
    return -1;
  }

  private slotOf(list: number, item: number): number {
    const a = this.hashA;
    const b = this.hashB;
    for (let slot = a & this.mask; this.lists[slot] !== EMPTY; slot = (slot + 1) & this.mask) {
      if (this.hashesA[slot] === a && this.hashesB[slot] === b && this.lists[slot] === list && this.items[slot] === item) return slot;
    }
    return -1;
  }

  private insert(a: number, b: number, list: number, item: number): void {
    let slot = a & this.mask;
    while (this.lists[slot] !== EMPTY) slot = (slot + 1) & this.mask;
    this.hashesA[slot] = a;
    this.hashesB[slot] = b;
    this.lists[slot] = list;
    this.items[slot] = item;
    this.count++;
  }

  // Backward-shift deletion: later slots of the probe run move up, so no tombstones are needed.
  private remove(slot: number): void {
    let hole = slot;
    for (let next = (hole + 1) & this.mask; this.lists[next] !== EMPTY; next = (next + 1) & this.mask) {
      const home = this.hashesA[next]! & this.mask;
      // The entry at `next` may fill the hole when its home is not cyclically within (hole, next].
      const stays = hole <= next ? home > hole && home <= next : home > hole || home <= next;
      if (stays) continue;
      this.hashesA[hole] = this.hashesA[next]!;
      this.hashesB[hole] = this.hashesB[next]!;
      this.lists[hole] = this.lists[next]!;
      this.items[hole] = this.items[next]!;
      hole = next;
    }
    this.lists[hole] = EMPTY;
    this.count--;
  }

  private grow(): void {
    const { hashesA, hashesB, lists, items } = this;
    this.capacity *= 2;
    this.mask = this.capacity - 1;
    this.hashesA = new Int32Array(this.capacity);
    this.hashesB = new Int32Array(this.capacity);
    this.lists = new Float64Array(this.capacity);
    this.items = new Int32Array(this.capacity);
    this.count = 0;
    for (let slot = 0; slot < lists.length; slot++) {
      if (lists[slot] !== EMPTY) this.insert(hashesA[slot]!, hashesB[slot]!, lists[slot]!, items[slot]!);
    }
  }

  private hash(id: string): void {
    if (this.testHash !== undefined) {
      this.hashA = this.hashB = this.testHash(id);
      return;
    }
    hashId(id);
    this.hashA = hashA;
    this.hashB = hashB;
  }
}

// The 64-bit hash of an id, in two module-level lanes (no allocation per hash): two 32-bit FNV-1a
// style lanes over the UTF-16 code units, each with a final mix (the low bits pick a slot, and
// time-ordered ids differ mostly in their last characters). The last id hashed is remembered: a
// SEND asks the table, the filter and the table again about one id, and hashes it once.
let hashA = 0;
let hashB = 0;
let hashed: string | undefined;
function hashId(id: string): void {
  if (id === hashed) return;
  hashed = id;
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ id.length;
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  a ^= a >>> 15;
  a = Math.imul(a, 0x2c1b3c6d);
  a ^= a >>> 12;
  b ^= b >>> 13;
  b = Math.imul(b, 0x297a2d39);
  b ^= b >>> 15;
  hashA = a;
  hashB = b;
}

// A Bloom filter (two bits per id) of the ids that have an id record in the store: "no" is
// certain, so a SEND with a new client id skips the store read that would miss. Only ever added
// to; `saturated` tells the owner to rebuild it (clear, add every stored id again, `rebuilt()`)
// once `FILTER_REBUILD_ADDS` ids were added since (about 1.5% false positives then), or twice as
// many as the rebuild found, when more ids than that are stored (a rebuild per doubling). It only
// saves reads: the answers a broker gives never depend on it.
const FILTER_BITS = 1 << 23; // 1 MiB
const FILTER_REBUILD_ADDS = FILTER_BITS >>> 4;

export class IdFilter {
  private readonly bits = new Int32Array(FILTER_BITS >>> 5);
  private adds = 0;
  private addsMax = FILTER_REBUILD_ADDS;

  get saturated(): boolean {
    return this.adds > this.addsMax;
  }

  clear(): void {
    this.bits.fill(0);
    this.adds = 0;
  }

  rebuilt(): void {
    this.addsMax = Math.max(FILTER_REBUILD_ADDS, 2 * this.adds);
  }

  add(id: string): void {
    hashId(id);
    const a = hashA & (FILTER_BITS - 1);
    const b = hashB & (FILTER_BITS - 1);
    this.bits[a >>> 5]! |= 1 << (a & 31);
    this.bits[b >>> 5]! |= 1 << (b & 31);
    this.adds++;
  }

  mightHave(id: string): boolean {
    hashId(id);
    const a = hashA & (FILTER_BITS - 1);
    const b = hashB & (FILTER_BITS - 1);
    return (this.bits[a >>> 5]! & (1 << (a & 31))) !== 0 && (this.bits[b >>> 5]! & (1 << (b & 31))) !== 0;
  }
}
