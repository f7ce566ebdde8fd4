// Message records, stored in blocks: the messages one entry stores in one mailbox share a record
// of the state store (up to messageBlockBytesMax of records; past it they go on in further
// blocks), and which of them are removed is a small record beside it. The store then works per
// block, not per message: a SEND entry of 100 messages to a mailbox puts one record, and
// acknowledging them deletes one record (plus a bitmap written once per commit while the block is
// partly removed). With a record per message each replica paid a B-tree put and a delete per
// message (~2.2 µs of CPU in LMDB; in blocks of 25-100 messages ~0.2 µs).
//
// Keys (records.ts has the whole layout):
//   "\x02" name "\x00" index 00000000   the first block of an entry's messages to the mailbox
//   "\x02" name "\x00" seq              a further one (its first message's seq: number > 0)
//   "\x0a" <the same>                    the block's removed messages, a bitmap (bit i: its i-th
//                                       message), while some but not all of them are removed
// So a message's block is found from its seq with one read (the first block of its entry) unless
// its entry went on in further blocks. For that the first block stays while any further block of
// its entry is stored, all of its own messages removed or not (then with a full bitmap); a block
// goes, with its bitmap, when it has no message left and (a first block) no further block.
//
// A block's value: u32 count (top bit: further blocks follow), count x u32 message number (the
// seq's last 4 bytes), count x u32 end of each record within the records, then the records
// (encodeMessage's); big-endian.
//
// The blocks read or made since the last commit are kept (by key) and are where their removals
// are known until commit() writes the bitmaps. The blocks an entry makes are put when the entry
// ends (endEntry); reads within the entry see them.
//
// Not a cache that may differ between replicas: the records written are a function of the applied
// entries (blocks form by entry and size, bitmaps are written at every commit), so two stores that
// applied the same entries hold the same records whatever their commit boundaries.
import { assert } from "../util/assert.js";
import { type KvEntry, type KvReader, type OrderedKv, prefixEnd } from "./kv.js";
import { MESSAGE, mailboxPrefix, REMOVED, SEQ_LENGTH, seqToCursor as seqHex, U64_LENGTH } from "./records.js";

export interface StoredRecord {
  seq: string;
  value: Uint8Array;
}

const EMPTY = new Uint8Array(0);
// The records an entry stores are copied into chunks of this size, one after the other (a
// record over a quarter of it gets a copy of its own): an allocation per chunk, not per record or
// block. A chunk
// is never written again where it was written once, so the records handed out (replies built
// from them are sent after the apply) stay valid.
const ARENA_BYTES = 64 * 1024;
// Where blocks are encoded for the store's put, which copies them.
let scratch = new Uint8Array(ARENA_BYTES);

// The message number of a seq (its last 4 bytes).
function numberOf(seq: string): number {
  return (
    ((seq.charCodeAt(U64_LENGTH) << 24) | (seq.charCodeAt(U64_LENGTH + 1) << 16) | (seq.charCodeAt(U64_LENGTH + 2) << 8) | seq.charCodeAt(U64_LENGTH + 3)) >>>
    0
  );
}

function numberChars(number: number): string {
  return String.fromCharCode((number >>> 24) & 0xff, (number >>> 16) & 0xff, (number >>> 8) & 0xff, number & 0xff);
}

const FIRST_BLOCK = "\x00\x00\x00\x00"; // after the entry index, in the key of an entry's first block
const FURTHER = 0x8000_0000; // in a block's count: further blocks of its entry follow

function firstBlockKey(prefix: string, seq: string): string {
  return prefix + seq.slice(0, U64_LENGTH) + FIRST_BLOCK;
}

function removedKeyOf(blockKey: string): string {
  return REMOVED + blockKey.slice(MESSAGE.length);
}

class Block {
  last: string; // the seq of its last message
  // removed[i] 1: the i-th message is removed (allocated with the first removal).
  removed: Uint8Array | undefined = undefined;
  removedCount = 0;
  removedStored = false; // the store holds a bitmap for it
  dirty = false; // removals since the bitmap was last written
  gone = false; // no longer stored (or never will be)
  further = false; // a first block whose entry went on in further blocks
  readonly indexKey: string;
  readonly first: string; // the seq of its first message
  readonly isFirst: boolean; // its entry's first block of the mailbox (a further one's number is > 0)

  constructor(
    readonly mailbox: string,
    readonly key: string,
    first: string,
    readonly numbers: number[],
    readonly ends: number[], // where each record ends in `data` (a stored block's)
    // A block read from the store: its records, or undefined until a record is asked for when
    // only its head was read (then they are read again from `source`).
    private data: Uint8Array | undefined,
    readonly parts: Uint8Array[] | undefined, // a block made here: its records
    public open: boolean, // made by this entry, not yet put
    private readonly source?: KvReader,
  ) {
    this.first = first;
    this.indexKey = first.slice(0, U64_LENGTH);
    this.last = numbers.length === 0 ? first : this.indexKey + numberChars(numbers[numbers.length - 1]!);
    this.isFirst = key.endsWith(FIRST_BLOCK);
  }

  get empty(): boolean {
    return this.removedCount === this.count;
  }

  // A stored block from its value: kept as its records (`source` undefined), or, with a source,
  // only its head is read now (the value may be a buffer the store reuses: readInPlace).
  static decode(mailbox: string, key: string, value: Uint8Array, prefixLength: number, source?: KvReader): Block {
    assert(key.length === prefixLength + SEQ_LENGTH, "a message block's key ends with a seq");
    const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
    const head = view.getUint32(0);
    const count = head & ~FURTHER;
    assert(count > 0 && 4 + 8 * count <= value.length, `a message block holds messages (${count} in ${value.length} bytes)`);
    const numbers = new Array<number>(count);
    const ends = new Array<number>(count);
    for (let i = 0; i < count; i++) {
      numbers[i] = view.getUint32(4 + 4 * i);
      ends[i] = view.getUint32(4 + 4 * count + 4 * i);
    }
    assert(4 + 8 * count + ends[count - 1]! === value.length, "a message block's records fill it");
    const data = source === undefined ? value.subarray(4 + 8 * count) : undefined;
    const indexKey = key.slice(prefixLength, prefixLength + U64_LENGTH);
    const block = new Block(mailbox, key, indexKey + numberChars(numbers[0]!), numbers, ends, data, undefined, false, source);
    block.further = (head & FURTHER) !== 0;
    return block;
  }

  get count(): number {
    return this.numbers.length;
  }

  get bytes(): number {
    return this.ends.length === 0 ? 0 : this.ends[this.ends.length - 1]!;
  }

  // An open block's next message (`record` stays as it is: the block keeps it).
  append(seq: string, record: Uint8Array): void {
    this.parts!.push(record);
    this.numbers.push(numberOf(seq));
    this.ends.push(this.bytes + record.length);
    this.last = seq;
  }

  // An open block's value for the store, valid until the next encode (the store copies it).
  encode(): Uint8Array {
    const count = this.count;
    const header = 4 + 8 * count;
    const size = header + this.bytes;
    if (scratch.length < size) scratch = new Uint8Array(Math.max(size, 2 * scratch.length));
    const value = scratch.subarray(0, size);
    const view = new DataView(value.buffer, value.byteOffset, size);
    view.setUint32(0, this.further ? (count | FURTHER) >>> 0 : count);
    for (let i = 0; i < count; i++) {
      view.setUint32(4 + 4 * i, this.numbers[i]!);
      view.setUint32(4 + 4 * count + 4 * i, this.ends[i]!);
    }
    let at = header;
    for (const part of this.parts!) {
      value.set(part, at);
      at += part.length;
    }
    return value;
  }

  // The position of the message with this seq (-1: the block holds none, removed or not).
  position(seq: string): number {
    if (seq < this.first || seq > this.last) return -1;
    const number = numberOf(seq);
    const numbers = this.numbers;
    const guess = number - numbers[0]!; // the messages of a single-mailbox entry are consecutive
    if (guess < numbers.length && numbers[guess] === number) return guess;
    let low = 0;
    let high = numbers.length - 1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const at = numbers[middle]!;
      if (at === number) return middle;
      if (at < number) low = middle + 1;
      else high = middle - 1;
    }
    return -1;
  }

  // The position of the first message after `seq` (the count when there is none).
  positionAfter(seq: string): number {
    if (seq < this.first) return 0;
    if (seq >= this.last) return this.count;
    const number = numberOf(seq);
    let low = 0;
    let high = this.count;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.numbers[middle]! <= number) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  live(position: number): boolean {
    return this.removed === undefined || this.removed[position] !== 1;
  }

  seqAt(position: number): string {
    return this.indexKey + numberChars(this.numbers[position]!);
  }

  record(position: number): Uint8Array {
    if (this.parts !== undefined) return this.parts[position]!;
    const data = this.data ?? this.readRecords();
    return data.subarray(position === 0 ? 0 : this.ends[position - 1]!, this.ends[position]!);
  }

  // The records of a block whose head alone was read: its value is the same while it is stored
  // (a block is put once and deleted whole; removals go to its bitmap).
  private readRecords(): Uint8Array {
    const value = this.source!.get(this.key);
    assert(value !== undefined && value.length === 4 + 8 * this.count + this.bytes, "a block read by its head is still stored");
    this.data = value.subarray(4 + 8 * this.count);
    return this.data;
  }

  markRemoved(position: number): void {
    if (this.removed === undefined || this.removed.length < this.count) {
      // (An open block may have grown since its first removal.)
      const removed = new Uint8Array(this.count);
      if (this.removed !== undefined) removed.set(this.removed);
      this.removed = removed;
    }
    assert(this.removed[position] === 0, "a removed message is removed once");
    this.removed[position] = 1;
    this.removedCount++;
    this.dirty = true;
  }

  encodeRemoved(): Uint8Array {
    const bitmap = new Uint8Array(Math.ceil(this.count / 8));
    const removed = this.removed!;
    for (let i = 0; i < removed.length; i++) if (removed[i] === 1) bitmap[i >>> 3]! |= 1 << (i & 7);
    return bitmap;
  }

  decodeRemoved(bitmap: Uint8Array): void {
    assert(bitmap.length === Math.ceil(this.count / 8), "a removed-messages bitmap fits its block");
    const removed = new Uint8Array(this.count);
    let count = 0;
    for (let i = 0; i < removed.length; i++) {
      if ((bitmap[i >>> 3]! & (1 << (i & 7))) !== 0) {
        removed[i] = 1;
        count++;
      }
    }
    assert(count > 0 && (count < this.count || this.further), "a stored bitmap marks some messages of its block, all only in a first block with further ones");
    this.removed = removed;
    this.removedCount = count;
    this.removedStored = true;
  }
}

export class MessageBlocks {
  // The blocks read or made since the last commit, by key (see the top of the file).
  private readonly blocks = new Map<string, Block>();
  // The blocks this entry made, in the order made; each mailbox's first one, and its last one,
  // which takes its next message while it has room.
  private opened: Block[] = [];
  private readonly firstOf = new Map<string, Block>();
  private readonly openOf = new Map<string, Block>();
  private recent: Block | undefined; // the block found last: a command's messages are near each other
  private arena = new Uint8Array(0); // where put() copies records, from arenaUsed on
  private arenaUsed = 0;

  constructor(
    private readonly kv: OrderedKv,
    private readonly blockBytesMax: number,
  ) {}

  // Stores a new message of the entry being applied (its seq above every stored one of the
  // mailbox). `record` may be a reused buffer: it is copied.
  put(mailbox: string, seq: string, record: Uint8Array): void {
    let block = this.openOf.get(mailbox);
    if (block !== undefined) assert(seq > block.last, "messages are stored in seq order");
    if (block === undefined || (block.count > 0 && block.bytes + record.length > this.blockBytesMax)) {
      const prefix = mailboxPrefix(MESSAGE, mailbox);
      const key = block === undefined ? firstBlockKey(prefix, seq) : prefix + seq;
      block = new Block(mailbox, key, seq, [], [], EMPTY, [], true);
      if (!this.firstOf.has(mailbox)) this.firstOf.set(mailbox, block);
      this.openOf.set(mailbox, block);
      this.opened.push(block);
      this.blocks.set(key, block);
    }
    block.append(seq, this.copy(record));
  }

  // The record of a stored message (undefined: none with this seq, or removed).
  get(mailbox: string, seq: string): Uint8Array | undefined {
    const block = this.find(mailbox, seq);
    if (block === undefined) return undefined;
    const position = block.position(seq);
    return position < 0 || !block.live(position) ? undefined : block.record(position);
  }

  // Removes a stored message.
  delete(mailbox: string, seq: string): void {
    const block = this.find(mailbox, seq);
    const position = block === undefined ? -1 : block.position(seq);
    if (block === undefined || position < 0 || !block.live(position)) assert(false, `the removed message ${seqHex(seq)} of ${mailbox} is stored`);
    block.markRemoved(position);
    // An open block is written or not when its entry ends; a stored one goes with its last message.
    if (block.open || !block.empty) return;
    if (!block.isFirst) {
      this.drop(block);
      // Its entry's first block stays only for further blocks: this may have been the last one.
      const prefix = mailboxPrefix(MESSAGE, mailbox);
      const first = this.stored(mailbox, firstBlockKey(prefix, block.first), prefix.length);
      assert(first?.further === true, "a further block's first block is stored");
      if (first.empty && !this.furtherStored(first)) this.drop(first);
    } else if (!block.further || !this.furtherStored(block)) {
      this.drop(block);
    }
  }

  // The stored messages of a mailbox after `after` (a seq; "": from its first), in seq order,
  // read as the reader asks for them.
  stream(mailbox: string, after: string): RecordStream {
    return new RecordStream(this, mailbox, after);
  }

  // Up to `limit` of the messages stream() would give.
  scan(mailbox: string, after: string, limit: number): StoredRecord[] {
    const records: StoredRecord[] = [];
    const stream = this.stream(mailbox, after);
    while (records.length < limit && stream.peek()) {
      records.push({ seq: stream.seq, value: stream.value });
      stream.next();
    }
    return records;
  }

  // Puts the blocks the entry made (inside its transaction): those with a message left, and a
  // mailbox's first one while a further one is put.
  endEntry(): void {
    if (this.opened.length === 0) return;
    for (const block of this.opened) {
      if (block.isFirst) continue;
      if (block.empty) this.forget(block);
      else this.firstOf.get(block.mailbox)!.further = true;
    }
    for (const block of this.opened) {
      if (block.gone) continue;
      if (block.isFirst && block.empty && !block.further) {
        this.forget(block);
        continue;
      }
      this.kv.put(block.key, block.encode());
      block.open = false;
      // Kept only while its bitmap is to be written: blocks held until the commit (a block per
      // mailbox and entry) lived long enough for the collector to promote and copy them, and
      // are read again (if at all) long after.
      if (!block.dirty) this.blocks.delete(block.key);
    }
    this.opened = [];
    this.firstOf.clear();
    this.openOf.clear();
    this.recent = undefined;
  }

  // Writes the bitmaps of the blocks with removals since the last commit, then forgets the blocks
  // (inside the transaction that commits, after endEntry).
  commit(): void {
    assert(this.opened.length === 0, "no entry is open at a commit");
    for (const block of this.blocks.values()) {
      if (!block.dirty) continue;
      this.kv.put(removedKeyOf(block.key), block.encodeRemoved());
      block.removedStored = true;
      block.dirty = false;
    }
    this.blocks.clear();
    this.recent = undefined;
  }

  // Forgets everything not in the store (an aborted apply, a reload, a restore).
  reset(): void {
    this.blocks.clear();
    this.opened = [];
    this.firstOf.clear();
    this.openOf.clear();
    this.recent = undefined;
  }

  // The block whose seqs span `seq` (it may hold no message with that seq).
  find(mailbox: string, seq: string): Block | undefined {
    const recent = this.recent;
    if (recent !== undefined && recent.mailbox === mailbox && seq <= recent.last && seq >= recent.first) return recent;
    const firstOpen = this.opened[0];
    if (firstOpen !== undefined && seq.startsWith(firstOpen.indexKey)) {
      // A seq of this entry: one of its open blocks, the mailbox's last one unless it was split.
      const last = this.openOf.get(mailbox);
      if (last !== undefined && seq >= last.first) return seq <= last.last ? this.found(last) : undefined;
      for (const block of this.opened) {
        if (block.mailbox === mailbox && seq >= block.first && seq <= block.last) return this.found(block);
      }
      return undefined;
    }
    // The first block of the seq's entry, then (when the entry went on) the further block that
    // starts at or before the seq.
    const prefix = mailboxPrefix(MESSAGE, mailbox);
    const first = this.stored(mailbox, firstBlockKey(prefix, seq), prefix.length);
    if (first === undefined || seq < first.first) return undefined;
    if (seq <= first.last) return this.found(first);
    if (!first.further) return undefined;
    const [entry] = this.kv.scan(`${first.key}\x00`, `${prefix}${seq}\x00`, 1, true);
    const block = entry === undefined ? undefined : this.known(mailbox, entry, prefix.length);
    return block === undefined || seq > block.last ? undefined : this.found(block);
  }

  // The first block of the mailbox with a message after `after` ("": its first block).
  firstAfter(mailbox: string, after: string): Block | undefined {
    const prefix = mailboxPrefix(MESSAGE, mailbox);
    if (after !== "") {
      const block = this.find(mailbox, after);
      if (block !== undefined && after < block.last) return block;
      // The first block of after's entry is keyed before after: a scan from after misses it.
      if (block === undefined) {
        const first = this.stored(mailbox, firstBlockKey(prefix, after), prefix.length);
        if (first !== undefined && first.first > after) return first;
      }
    }
    const [entry] = this.kv.scan(after === "" ? prefix : `${prefix}${after}\x00`, prefixEnd(prefix), 1);
    if (entry !== undefined) return this.known(mailbox, entry, prefix.length);
    return this.openAfter(mailbox, after);
  }

  // The block of the mailbox after `block`.
  next(mailbox: string, block: Block): Block | undefined {
    if (block.open) return this.openAfter(mailbox, block.last);
    const prefix = mailboxPrefix(MESSAGE, mailbox);
    const [entry] = this.kv.scan(`${block.key}\x00`, prefixEnd(prefix), 1);
    if (entry !== undefined) return this.known(mailbox, entry, prefix.length);
    return this.openAfter(mailbox, block.last);
  }

  private found(block: Block): Block {
    this.recent = block;
    return block;
  }

  // The first of the entry's own blocks (after every stored one) with a message after `after`.
  private openAfter(mailbox: string, after: string): Block | undefined {
    for (const block of this.opened) {
      if (block.mailbox === mailbox && block.last > after) return block;
    }
    return undefined;
  }

  // Whether a further block of a first block's entry is stored.
  private furtherStored(first: Block): boolean {
    const entryEnd = prefixEnd(first.key.slice(0, first.key.length - FIRST_BLOCK.length));
    return this.kv.scan(`${first.key}\x00`, entryEnd, 1).length > 0;
  }

  // Deletes a stored block and its bitmap.
  private drop(block: Block): void {
    this.kv.delete(block.key);
    if (block.removedStored) this.kv.delete(removedKeyOf(block.key));
    this.forget(block);
  }

  private forget(block: Block): void {
    block.gone = true;
    block.dirty = false;
    this.blocks.delete(block.key);
    if (this.recent === block) this.recent = undefined;
  }

  // A copy of a record, in the arena.
  private copy(record: Uint8Array): Uint8Array {
    if (this.arenaUsed + record.length > this.arena.length) {
      if (record.length > ARENA_BYTES / 4) return record.slice();
      this.arena = new Uint8Array(ARENA_BYTES);
      this.arenaUsed = 0;
    }
    const copy = this.arena.subarray(this.arenaUsed, this.arenaUsed + record.length);
    copy.set(record);
    this.arenaUsed += record.length;
    return copy;
  }

  // The stored block with this key, as this object knows it (undefined: none).
  // Only its head is read: the usual caller, an ACK on a follower (whose RECEIVE read no records),
  // removes messages and reads none. Copying each ~30 KB block out of LMDB for its head was ~14%
  // of a follower's RECEIVE+ACK apply (bench:apply, profiled).
  // A caller that then reads a record (a leader's RECEIVE from a cursor inside the block, a message
  // given back) reads the block twice, once per block and commit.
  private stored(mailbox: string, key: string, prefixLength: number): Block | undefined {
    const kept = this.blocks.get(key);
    if (kept !== undefined) return kept;
    const block = this.kv.readInPlace(key, (value) => Block.decode(mailbox, key, value, prefixLength, this.kv));
    return block === undefined ? undefined : this.keep(block);
  }

  // A stored block as this object knows it (its removals since the last commit included).
  private known(mailbox: string, entry: KvEntry, prefixLength: number): Block {
    const kept = this.blocks.get(entry.key);
    if (kept !== undefined) return kept;
    return this.keep(Block.decode(mailbox, entry.key, entry.value, prefixLength));
  }

  // A block just read from the store, with its removals, kept until the commit.
  private keep(block: Block): Block {
    const bitmap = this.kv.get(removedKeyOf(block.key));
    if (bitmap !== undefined) block.decodeRemoved(bitmap);
    this.blocks.set(block.key, block);
    return block;
  }
}

// A mailbox's messages after a seq, one at a time (see MessageBlocks.stream). Messages removed
// while it walks are skipped; messages stored meanwhile are seen when they are after it.
export class RecordStream {
  seq = "";
  value: Uint8Array = EMPTY;
  private block: Block | undefined = undefined;
  private position = 0;
  private started = false;
  private loaded: Block | undefined = undefined; // seq and value are of this block's message at loadedPosition
  private loadedPosition = -1;

  constructor(
    private readonly blocks: MessageBlocks,
    private readonly mailbox: string,
    private readonly after: string,
  ) {}

  // Reads the next live message into seq and value; false when there is none.
  peek(): boolean {
    if (!this.started) {
      this.started = true;
      const block = this.blocks.firstAfter(this.mailbox, this.after);
      this.block = block;
      this.position = block === undefined || this.after === "" ? 0 : block.positionAfter(this.after);
    }
    for (;;) {
      const block = this.block;
      if (block === undefined) return false;
      while (this.position < block.count && !block.live(this.position)) this.position++;
      if (this.position < block.count) {
        if (this.loaded !== block || this.loadedPosition !== this.position) {
          this.loaded = block;
          this.loadedPosition = this.position;
          this.seq = block.seqAt(this.position);
          this.value = block.record(this.position);
        }
        return true;
      }
      this.block = this.blocks.next(this.mailbox, block);
      this.position = 0;
    }
  }

  // Passes the message peek() read.
  next(): void {
    this.position++;
  }
}
