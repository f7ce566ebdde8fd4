// A small seeded pseudo-random generator (xoshiro128**, seeded through splitmix32).
//
// Everything the simulator decides comes from one seed through instances of this class, so a
// seed replays exactly. fork() derives an independent stream (one per node, one per concern) so
// that adding a draw in one place does not shift every later decision elsewhere.

const UINT32_RANGE = 4294967296;

function splitmix32(state: number): [next: number, output: number] {
  const next = (state + 0x9e3779b9) | 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [next, (z ^ (z >>> 16)) >>> 0];
}

export class Random {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  // seed: any safe integer (both 32-bit halves are mixed in).
  constructor(seed: number) {
    let state = (seed | 0) ^ Math.imul(Math.floor(seed / UINT32_RANGE) | 0, 0x27d4eb2d);
    const words: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [next, output] = splitmix32(state);
      state = next;
      words.push(output);
    }
    [this.s0, this.s1, this.s2, this.s3] = words as [number, number, number, number];
    // xoshiro must not start from the all-zero state.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  nextUint32(): number {
    const result = Math.imul(rotateLeft(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotateLeft(this.s3, 11);
    return result;
  }

  // Uniform in [0, 1).
  float(): number {
    return this.nextUint32() / UINT32_RANGE;
  }

  // Uniform integer in [0, maxExclusive).
  int(maxExclusive: number): number {
    return Math.floor(this.float() * maxExclusive);
  }

  // Uniform integer in [min, max] (both inclusive).
  range(min: number, max: number): number {
    return min + this.int(max - min + 1);
  }

  // Uniform real in [min, max).
  between(min: number, max: number): number {
    return min + this.float() * (max - min);
  }

  chance(probability: number): boolean {
    return probability > 0 && this.float() < probability;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("Random.pick from an empty list");
    return items[this.int(items.length)]!;
  }

  // Fisher-Yates, in place; returns its argument.
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const swap = items[i]!;
      items[i] = items[j]!;
      items[j] = swap;
    }
    return items;
  }

  // An independent generator whose seed is drawn from this one.
  fork(): Random {
    return new Random(this.nextUint32() * UINT32_RANGE + this.nextUint32());
  }
}

function rotateLeft(value: number, bits: number): number {
  return (value << bits) | (value >>> (32 - bits));
}
