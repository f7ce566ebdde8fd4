// Message ids the client library assigns: UUIDv7 (RFC 9562), time-ordered.
//
// Why not randomUUID(): the cluster keeps one record per client id for the dedupe window, in an
// ordered store. Random ids scatter those records over the whole B-tree, so every group commit
// rewrites a page per SEND; ids that start with the time land next to each other and a commit
// writes a few pages for thousands of SENDs (see docs/bench.md). Layout: 48 bits of Unix ms,
// version 7, 12 bits of a counter that keeps ids of one process strictly increasing within a
// millisecond (method 1 of RFC 9562 §6.2; on overflow the timestamp moves on by 1 ms), the
// variant, then 62 random bits.
//
// The id's 36 characters are written as ASCII into one scratch buffer and read out as one string:
// no byte array and no chain of string concatenations per id. The time's hex digits change once
// per millisecond and are written only then.
import { randomFillSync } from "node:crypto";

const POOL_BYTES = 8 * 256;
const COUNTER_MAX = 0xfff;
const UUID_CHARS = 36;
const DASH = 0x2d;
// HEX_DIGITS[2 * byte] and [2 * byte + 1]: the byte's two lower-case hex digits, as char codes.
const HEX_DIGITS = new Uint8Array(512);
for (let byte = 0; byte < 256; byte++) {
  const digits = byte.toString(16).padStart(2, "0");
  HEX_DIGITS[2 * byte] = digits.charCodeAt(0);
  HEX_DIGITS[2 * byte + 1] = digits.charCodeAt(1);
}

const pool = new Uint8Array(POOL_BYTES);
let poolOffset = POOL_BYTES;
let lastMs = -1;
let counter = 0;
// The text of the current id: positions 0-12 hold lastMs (and its dashes) once lastMs is set.
const text = Buffer.alloc(UUID_CHARS);
text[8] = DASH;
text[13] = DASH;
text[18] = DASH;
text[23] = DASH;

function writeHex(at: number, byte: number): void {
  text[at] = HEX_DIGITS[2 * byte]!;
  text[at + 1] = HEX_DIGITS[2 * byte + 1]!;
}

function setMs(ms: number): void {
  lastMs = ms;
  counter = 0;
  const high = Math.floor(ms / 0x1_0000_0000);
  const low = ms >>> 0;
  writeHex(0, (high >>> 8) & 0xff);
  writeHex(2, high & 0xff);
  writeHex(4, low >>> 24);
  writeHex(6, (low >>> 16) & 0xff);
  writeHex(9, (low >>> 8) & 0xff);
  writeHex(11, low & 0xff);
}

// `nowMs` is injectable for tests; the library passes Date.now().
export function uuidv7(nowMs: number = Date.now()): string {
  if (nowMs > lastMs) setMs(nowMs);
  else if (counter < COUNTER_MAX) counter++;
  else setMs(lastMs + 1);
  if (poolOffset + 8 > POOL_BYTES) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const at = poolOffset;
  poolOffset += 8;
  writeHex(14, 0x70 | (counter >>> 8)); // version 7, counter bits 11-8
  writeHex(16, counter & 0xff);
  writeHex(19, 0x80 | (pool[at]! & 0x3f)); // variant 10, then random bits
  writeHex(21, pool[at + 1]!);
  for (let index = 2; index < 8; index++) writeHex(20 + 2 * index, pool[at + index]!);
  return text.toString("latin1", 0, UUID_CHARS);
}
