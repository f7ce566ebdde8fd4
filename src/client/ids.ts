// Message ids the client library assigns: UUIDv7 (RFC 9562), time-ordered.
//
// Why not randomUUID(): the cluster keeps one record per client id for the dedupe window, in an
// ordered store. Random ids scatter those records over the whole B-tree, so every group commit
// rewrites a page per SEND; ids that start with the time land next to each other and a commit
// writes a few pages for thousands of SENDs (see docs/bench.md). Layout: 48 bits of Unix ms,
// version 7, 12 bits of a counter that keeps ids of one process strictly increasing within a
// millisecond (method 1 of RFC 9562 §6.2; on overflow the timestamp moves on by 1 ms), the
// variant, then 62 random bits.
import { randomFillSync } from "node:crypto";

const POOL_BYTES = 8 * 256;
const COUNTER_MAX = 0xfff;
const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));

const pool = new Uint8Array(POOL_BYTES);
let poolOffset = POOL_BYTES;
let lastMs = -1;
let counter = 0;

function hex(bytes: Uint8Array, start: number, end: number): string {
  let text = "";
  for (let i = start; i < end; i++) text += HEX[bytes[i]!];
  return text;
}

// `nowMs` is injectable for tests; the library passes Date.now().
export function uuidv7(nowMs: number = Date.now()): string {
  if (nowMs > lastMs) {
    lastMs = nowMs;
    counter = 0;
  } else if (counter < COUNTER_MAX) {
    counter++;
  } else {
    lastMs++;
    counter = 0;
  }
  if (poolOffset + 8 > POOL_BYTES) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const bytes = new Uint8Array(16);
  const high = Math.floor(lastMs / 0x1_0000_0000);
  const low = lastMs >>> 0;
  bytes[0] = (high >>> 8) & 0xff;
  bytes[1] = high & 0xff;
  bytes[2] = (low >>> 24) & 0xff;
  bytes[3] = (low >>> 16) & 0xff;
  bytes[4] = (low >>> 8) & 0xff;
  bytes[5] = low & 0xff;
  bytes[6] = 0x70 | (counter >>> 8);
  bytes[7] = counter & 0xff;
  bytes.set(pool.subarray(poolOffset, poolOffset + 8), 8);
  poolOffset += 8;
  bytes[8] = 0x80 | (bytes[8]! & 0x3f);
  return `${hex(bytes, 0, 4)}-${hex(bytes, 4, 6)}-${hex(bytes, 6, 8)}-${hex(bytes, 8, 10)}-${hex(bytes, 10, 16)}`;
}
