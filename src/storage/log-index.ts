// Where every entry of the log lives on disk, in memory: for index i in [firstIndex, lastIndex],
// its term and its record's segment, offset and size. Bodies are not kept here (see EntryCache),
// so the index costs 20 bytes per entry whatever the entry size.
//
// Invariants: firstIndex <= lastIndex + 1; previousTerm is the term of firstIndex - 1;
// appending at index i <= lastIndex first drops [i, lastIndex] (a conflicting suffix).
import { assert } from "../util/assert.js";

const INITIAL_CAPACITY_ENTRIES = 1024;

export interface EntryPosition {
  segment: number; // the segment's sequence number
  offsetBytes: number;
  sizeBytes: number; // the whole record, header and padding included
}

export class LogIndex {
  firstIndex = 1;
  previousTerm = 0;
  lastIndex = 0;
  // Entry i is at slot i - base.
  private base = 1;
  private terms = new Float64Array(INITIAL_CAPACITY_ENTRIES);
  private segments = new Uint32Array(INITIAL_CAPACITY_ENTRIES);
  private offsets = new Uint32Array(INITIAL_CAPACITY_ENTRIES);
  private sizes = new Uint32Array(INITIAL_CAPACITY_ENTRIES);

  // Empties the log: the next entry is firstIndex, entry firstIndex - 1 had previousTerm.
  reset(firstIndex: number, previousTerm: number): void {
    this.firstIndex = firstIndex;
    this.previousTerm = previousTerm;
    this.lastIndex = firstIndex - 1;
    this.base = firstIndex;
  }

  append(index: number, term: number, position: EntryPosition): void {
    assert(index >= this.firstIndex && index <= this.lastIndex + 1, `log index: append at ${index} outside [${this.firstIndex}, ${this.lastIndex + 1}]`);
    const slot = index - this.base;
    if (slot >= this.terms.length) this.grow(slot + 1);
    this.terms[slot] = term;
    this.segments[slot] = position.segment;
    this.offsets[slot] = position.offsetBytes;
    this.sizes[slot] = position.sizeBytes;
    this.lastIndex = index;
  }

  term(index: number): number {
    if (index === this.firstIndex - 1) return this.previousTerm;
    assert(index >= this.firstIndex && index <= this.lastIndex, `log index: term of ${index} outside [${this.firstIndex - 1}, ${this.lastIndex}]`);
    return this.terms[index - this.base]!;
  }

  position(index: number): EntryPosition {
    assert(index >= this.firstIndex && index <= this.lastIndex, `log index: position of ${index} outside [${this.firstIndex}, ${this.lastIndex}]`);
    const slot = index - this.base;
    return { segment: this.segments[slot]!, offsetBytes: this.offsets[slot]!, sizeBytes: this.sizes[slot]! };
  }

  segmentOf(index: number): number {
    return this.segments[index - this.base]!;
  }

  // Drops entries before index (index <= lastIndex + 1).
  compact(index: number): void {
    if (index <= this.firstIndex) return;
    assert(index <= this.lastIndex + 1, `log index: compact to ${index} past lastIndex + 1 = ${this.lastIndex + 1}`);
    this.previousTerm = this.term(index - 1);
    this.firstIndex = index;
    const deadSlots = index - this.base;
    const liveSlots = this.lastIndex - index + 1;
    if (deadSlots > INITIAL_CAPACITY_ENTRIES && deadSlots > liveSlots) {
      for (const array of [this.terms, this.segments, this.offsets, this.sizes]) array.copyWithin(0, deadSlots, deadSlots + liveSlots);
      this.base = index;
    }
  }

  private grow(slotsNeeded: number): void {
    const capacity = Math.max(slotsNeeded, this.terms.length * 2);
    const terms = new Float64Array(capacity);
    terms.set(this.terms);
    this.terms = terms;
    for (const key of ["segments", "offsets", "sizes"] as const) {
      const grown = new Uint32Array(capacity);
      grown.set(this[key]);
      this[key] = grown;
    }
  }
}
