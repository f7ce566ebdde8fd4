// Hybrid logical clock (Kulkarni et al., 2014): timestamps that follow physical time closely yet
// never go backwards and always exceed every timestamp this node has seen.
//
// Encoding: one bigint, (physicalMs << 16) | logical, with physicalMs < 2^48 and a 16-bit logical
// counter. Comparing the bigints compares (physicalMs, logical) lexicographically, so the encoding
// is totally ordered and compact (it fits an unsigned 64-bit integer). A useful consequence:
// "the next timestamp after x" is simply x + 1n, and when the logical counter is full (0xFFFF)
// that carry moves into the physical part, which is exactly the overflow rule we want.
//
// Invariants: every value returned by now() or update() is strictly greater than every value
// returned, observed or accepted as high-water mark before it.
import { assert } from "../util/assert.js";

export type HlcTimestamp = bigint;

export const LOGICAL_BITS = 16n;
export const LOGICAL_MAX = 0xffff;
export const PHYSICAL_MS_MAX = 2 ** 48 - 1; // the year 10889
export const TIMESTAMP_MAX: HlcTimestamp = (1n << 64n) - 1n;
// How far ahead of the clock a persisted high-water mark reaches (see reserveHighWaterMark).
export const HIGH_WATER_RESERVE_MS_DEFAULT = 10_000;
const KEY_HEX_DIGITS = 16;

export function encodeTimestamp(physicalMs: number, logical: number): HlcTimestamp {
  assert(Number.isSafeInteger(physicalMs) && physicalMs >= 0 && physicalMs <= PHYSICAL_MS_MAX, `physical ms out of range: ${physicalMs}`);
  assert(Number.isInteger(logical) && logical >= 0 && logical <= LOGICAL_MAX, `logical counter out of range: ${logical}`);
  return (BigInt(physicalMs) << LOGICAL_BITS) | BigInt(logical);
}

export function decodeTimestamp(timestamp: HlcTimestamp): { physicalMs: number; logical: number } {
  assertTimestamp(timestamp);
  return { physicalMs: Number(timestamp >> LOGICAL_BITS), logical: Number(timestamp & BigInt(LOGICAL_MAX)) };
}

export function physicalMsOf(timestamp: HlcTimestamp): number {
  return decodeTimestamp(timestamp).physicalMs;
}

// The wire and text form (api.ts): decimal digits.
export function timestampToString(timestamp: HlcTimestamp): string {
  assertTimestamp(timestamp);
  return timestamp.toString(10);
}

// Parses the decimal form; throws RangeError on anything else (input from users crosses here).
export function parseTimestamp(text: string): HlcTimestamp {
  if (!/^[0-9]{1,20}$/.test(text)) throw new RangeError(`not a timestamp: ${JSON.stringify(text)}`);
  const value = BigInt(text);
  if (value > TIMESTAMP_MAX) throw new RangeError(`timestamp out of range: ${text}`);
  return value;
}

// A fixed-width hex form whose string order is the timestamp order (for keys in ordered stores).
export function timestampToKey(timestamp: HlcTimestamp): string {
  assertTimestamp(timestamp);
  return timestamp.toString(16).padStart(KEY_HEX_DIGITS, "0");
}

export function timestampFromKey(key: string): HlcTimestamp {
  if (!/^[0-9a-f]{16}$/.test(key)) throw new RangeError(`not a timestamp key: ${JSON.stringify(key)}`);
  return BigInt(`0x${key}`);
}

function assertTimestamp(timestamp: HlcTimestamp): void {
  assert(timestamp >= 0n && timestamp <= TIMESTAMP_MAX, `timestamp out of range: ${timestamp}`);
}

function maxOf(a: HlcTimestamp, b: HlcTimestamp): HlcTimestamp {
  return a > b ? a : b;
}

export class HybridClock {
  private last: HlcTimestamp;
  private reservedUntil: HlcTimestamp = 0n;
  private reserveMs = HIGH_WATER_RESERVE_MS_DEFAULT;

  // physicalNowMs: the disciplined physical clock (it may step backwards; the HLC does not).
  // highWaterMark: the value persisted by reserveHighWaterMark() before the last stop, so a
  // restarted node issues timestamps above everything it issued before.
  constructor(
    private readonly physicalNowMs: () => number,
    highWaterMark: HlcTimestamp = 0n,
  ) {
    assertTimestamp(highWaterMark);
    this.last = highWaterMark;
    this.reservedUntil = highWaterMark;
  }

  // The latest timestamp issued or observed.
  get lastTimestamp(): HlcTimestamp {
    return this.last;
  }

  // A timestamp for a local event (stamping an entry): above the clock and above everything seen.
  now(): HlcTimestamp {
    this.last = maxOf(this.physicalTimestamp(), this.last + 1n);
    return this.last;
  }

  // A timestamp for receiving `remote` (a client's causal token, a message from another node):
  // above the clock, above everything seen, and above remote.
  update(remote: HlcTimestamp): HlcTimestamp {
    assertTimestamp(remote);
    this.last = maxOf(maxOf(this.physicalTimestamp(), this.last + 1n), remote + 1n);
    return this.last;
  }

  // Raises the floor without issuing: a new leader observes the largest timestamp in its log
  // before stamping anything, so timestamps keep increasing with log order across leader changes.
  observe(timestamp: HlcTimestamp): void {
    assertTimestamp(timestamp);
    this.last = maxOf(this.last, timestamp);
  }

  // What the driver persists so a restart starts above every timestamp issued before the crash:
  // a value reserveMs ahead of now. Persist it, and call again when needsReservation() says so;
  // until then every issued timestamp stays below the persisted value unless the clock runs
  // reserveMs / 2 past it before the write completes.
  reserveHighWaterMark(reserveMs: number = this.reserveMs): HlcTimestamp {
    assert(Number.isFinite(reserveMs) && reserveMs > 0, `reserveMs must be positive: ${reserveMs}`);
    this.reserveMs = reserveMs;
    const floorMs = Math.max(physicalMsOf(this.last), physicalMsOf(this.physicalTimestamp()));
    this.reservedUntil = encodeTimestamp(Math.min(PHYSICAL_MS_MAX, Math.ceil(floorMs + reserveMs)), 0);
    return this.reservedUntil;
  }

  // True when the last reservation is half used (or none was made): time to persist a new one.
  needsReservation(): boolean {
    const halfMs = Math.floor(this.reserveMs / 2);
    const usedMs = Math.max(physicalMsOf(this.last), physicalMsOf(this.physicalTimestamp()));
    return usedMs + halfMs >= physicalMsOf(this.reservedUntil);
  }

  private physicalTimestamp(): HlcTimestamp {
    const physicalMs = Math.floor(this.physicalNowMs());
    return encodeTimestamp(Math.min(Math.max(physicalMs, 0), PHYSICAL_MS_MAX), 0);
  }
}
