// Message records, stored in blocks: the messages one entry stores in one mailbox share a record
// of the state store (up to messageBlockBytesMax of records), and which of them are removed is a
// small record beside it. The store then works per block, not per message: a SEND entry of 100
// messages to a mailbox puts one record, and acknowledging them deletes one record (plus a bitmap
// written once per commit while the block is partly removed). One record per message cost each
// replica a B-tree put and a delete per message (~2.2 µs of CPU in LMDB; blocks of 25-100
// messages ~0.2, `npm run bench:apply`'s store rows).
//
// Keys (records.ts has the whole layout):
//   "\x02" name "\x00" seq   a block, keyed by the seq of its first message. Its messages are of
//                            one entry, in seq order.
//   "\x0a" name "\x00" seq   the block's removed messages, a bitmap (bit i: the block's i-th
//                            message), while some but not all of them are removed. The block and
//                            this record go together when the last one is removed.
//
// A block's value: u32 count, count x u32 message number (the seq's last 4 bytes), count x u32
// end of the message's record within the records, then the records (encodeMessage's), all
// big-endian.
//
// The blocks read or made since the last commit are kept (by key) and are where their removed
// messages are known until commit() writes the bitmaps: a message removed meanwhile is not in the
// store's bitmap yet. The blocks an entry makes are put when the entry ends (endEntry). Reads
// within the entry see them, and a message every replica stores in the same entry lands in the
// same block on every replica.
//
// Not a cache that may differ between replicas: the records written are a function of the applied
// entries (blocks form by entry and size, bitmaps are written at every commit), so two stores that
// applied the same entries hold the same records whatever their commit boundaries.
import { assert } from "../util/assert.js";
import { type KvEntry, type OrderedKv, prefixEnd } from "./kv.js";
import { MESSAGE, mailboxPrefix, REMOVED, SEQ_LENGTH, seqToCursor as seqHex, U64_LENGTH } from "./records.js";

export interface StoredRecord {
  seq: string;
  value: Uint8Array;
}

const EMPTY = new Uint8Array(0);
const OPEN_BYTES_INITIAL = 4096;

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
  gone = false; // every message removed: the block is no longer stored (or will not be)
  private readonly indexKey: string;

  constructor(
    readonly mailbox: string,
    readonly key: string,
    readonly first: string,
    readonly numbers: number[],
    readonly ends: number[], // where each record ends in `data`
    public data: Uint8Array,
    public open: boolean, // made by this entry, not yet put
  ) {
    this.indexKey = first.slice(0, U64_LENGTH);
    this.last = numbers.length === 0 ? first : this.indexKey + numberChars(numbers[numbers.length - 1]!);
  }

  static decode(mailbox: string, entry: KvEntry, prefixLength: number): Block {
    const value = entry.value;
    const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
    const count = view.getUint32(0);
    assert(count > 0 && 4 + 8 * count <= value.length, `a message block holds messages (${count} in ${value.length} bytes)`);
    const numbers = new Array<number>(count);
    const ends = new Array<number>(count);
    for (let i = 0; i < count; i++) {
      numbers[i] = view.getUint32(4 + 4 * i);
      ends[i] = view.getUint32(4 + 4 * count + 4 * i);
    }
    const data = value.subarray(4 + 8 * count);
    assert(ends[count - 1] === data.length, "a message block's records fill it");
    return new Block(mailbox, entry.key, entry.key.slice(prefixLength), numbers, ends, data, false);
  }

  get count(): number {
    return this.numbers.length;
  }

  get bytes(): number {
    return this.ends.length === 0 ? 0 : this.ends[this.ends.length - 1]!;
  }

  append(seq: string, record: Uint8Array): void {
    const start = this.bytes;
    const end = start + record.length;
    if (end > this.data.length) {
      const grown = new Uint8Array(Math.max(end, 2 * this.data.length, OPEN_BYTES_INITIAL));
      grown.set(this.data.subarray(0, start));
      this.data = grown;
    }
    this.data.set(record, start);
    this.numbers.push(numberOf(seq));
    this.ends.push(end);
    this.last = seq;
  }

  encode(): Uint8Array {
    const count = this.count;
    const header = 4 + 8 * count;
    const value = new Uint8Array(header + this.bytes);
    const view = new DataView(value.buffer);
    view.setUint32(0, count);
    for (let i = 0; i < count; i++) {
      view.setUint32(4 + 4 * i, this.numbers[i]!);
      view.setUint32(4 + 4 * count + 4 * i, this.ends[i]!);
    }
    value.set(this.data.subarray(0, this.bytes), header);
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
    return this.removed === undefined || this.removed[position] === 0;
  }

  seqAt(position: number): string {
    return this.indexKey + numberChars(this.numbers[position]!);
  }

  record(position: number): Uint8Array {
    return this.data.subarray(position === 0 ? 0 : this.ends[position - 1]!, this.ends[position]!);
  }

  markRemoved(position: number): void {
    if (this.removed === undefined) this.removed = new Uint8Array(this.count);
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
    assert(count > 0 && count < this.count, "a stored bitmap marks some but not all of its block's messages");
    this.removed = removed;
    this.removedCount = count;
    this.removedStored = true;
  }
}

export class MessageBlocks {
  // The blocks read or made since the last commit, by key (see the top of the file).
  private readonly blocks = new Map<string, Block>();
  // The blocks this entry made, in the order made; the last one of each mailbox takes its next
  // message while it has room.
  private opened: Block[] = [];
  private readonly openOf = new Map<string, Block>();
  private recent: Block | undefined; // the block found last: a command's messages are near each other

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
      const key = mailboxPrefix(MESSAGE, mailbox) + seq;
      block = new Block(mailbox, key, seq, [], [], EMPTY, true);
      this.openOf.set(mailbox, block);
      this.opened.push(block);
      this.blocks.set(key, block);
    }
    block.append(seq, record);
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
    if (block.removedCount < block.count) return;
    // The last one: the block goes, its bitmap with it.
    block.gone = true;
    if (block.open) {
      if (this.openOf.get(mailbox) === block) this.openOf.delete(mailbox);
    } else {
      this.kv.delete(block.key);
      if (block.removedStored) this.kv.delete(removedKeyOf(block.key));
    }
    this.blocks.delete(block.key);
    if (this.recent === block) this.recent = undefined;
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

  // Puts the blocks the entry made (inside its transaction).
  endEntry(): void {
    for (const block of this.opened) {
      if (block.gone) continue;
      this.kv.put(block.key, block.encode());
      block.open = false;
    }
    this.opened = [];
    this.openOf.clear();
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
    this.openOf.clear();
    this.recent = undefined;
  }

  // The block whose seqs span `seq` (it may hold no message with that seq).
  find(mailbox: string, seq: string): Block | undefined {
    const recent = this.recent;
    if (recent !== undefined && recent.mailbox === mailbox && seq <= recent.last && seq >= recent.first) return recent;
    for (const block of this.opened) {
      if (!block.gone && block.mailbox === mailbox && seq >= block.first && seq <= block.last) {
        this.recent = block;
        return block;
      }
    }
    const prefix = mailboxPrefix(MESSAGE, mailbox);
    // A block's messages are of one entry: the last block of the seq's entry that starts at or before it.
    const [entry] = this.kv.scan(prefix + seq.slice(0, U64_LENGTH), `${prefix}${seq}\x00`, 1, true);
    if (entry === undefined) return undefined;
    const block = this.known(mailbox, entry, prefix.length);
    if (seq > block.last) return undefined;
    this.recent = block;
    return block;
  }

  // The first block of the mailbox whose first seq is after `after` ("": its first block).
  next(mailbox: string, after: string): Block | undefined {
    const prefix = mailboxPrefix(MESSAGE, mailbox);
    const [entry] = this.kv.scan(after === "" ? prefix : `${prefix}${after}\x00`, prefixEnd(prefix), 1);
    if (entry !== undefined) return this.known(mailbox, entry, prefix.length);
    // The entry's own blocks come after every stored one.
    for (const block of this.opened) {
      if (!block.gone && block.mailbox === mailbox && block.first > after) return block;
    }
    return undefined;
  }

  // A stored block as this object knows it (its removals since the last commit included).
  private known(mailbox: string, entry: KvEntry, prefixLength: number): Block {
    const kept = this.blocks.get(entry.key);
    if (kept !== undefined) return kept;
    assert(entry.key.length === prefixLength + SEQ_LENGTH, "a message block's key ends with a seq");
    const block = Block.decode(mailbox, entry, prefixLength);
    const bitmap = this.kv.get(removedKeyOf(entry.key));
    if (bitmap !== undefined) block.decodeRemoved(bitmap);
    this.blocks.set(entry.key, block);
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
      const after = this.after;
      const block = after === "" ? undefined : this.blocks.find(this.mailbox, after);
      if (block !== undefined) {
        this.block = block;
        this.position = block.positionAfter(after);
      } else {
        this.block = this.blocks.next(this.mailbox, after);
        this.position = 0;
      }
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
      this.block = this.blocks.next(this.mailbox, block.first);
      this.position = 0;
    }
  }

  // Passes the message peek() read.
  next(): void {
    this.position++;
  }
}
