// Lease names: what a RECEIVE's answer calls the batch it leased (ReceiveReply.lease), so that a
// later RECEIVE can acknowledge the whole batch by that name (ReceiveRequest.ackLeases) instead of
// listing its ids. A name is "<entry index>.<batch number>.<visibleAtMs>": the log entry that
// leased the batch, the number of its pending batch key within that entry, and the lease's end
// (docs/broker.md "Acking a batch by its lease"). Clients treat it as opaque.

// Longest name a node makes: two 16-digit safe integers and a 10-digit batch number, two dots.
export const LEASE_NAME_LENGTH_MAX = 48;
// Batch numbers within an entry stay below 2^31 (the broker's pending batch tags).
const BATCH_NUMBER_LIMIT = 0x8000_0000;

export interface LeaseName {
  index: number; // the entry that leased the batch (>= 1)
  number: number; // its pending batch key within the entry
  visibleAtMs: number; // the lease's end
}

export function formatLeaseName(index: number, number: number, visibleAtMs: number): string {
  return `${index}.${number}.${visibleAtMs}`;
}

// The parts of a lease name, or undefined when `name` is not one (any other string, a number
// with a sign, leading zeros or beyond 2^53).
export function parseLeaseName(name: unknown): LeaseName | undefined {
  if (typeof name !== "string" || name.length === 0 || name.length > LEASE_NAME_LENGTH_MAX) return undefined;
  const first = name.indexOf(".");
  const second = first < 0 ? -1 : name.indexOf(".", first + 1);
  if (second < 0) return undefined;
  const index = decimal(name, 0, first);
  const number = decimal(name, first + 1, second);
  const visibleAtMs = decimal(name, second + 1, name.length);
  if (index === undefined || number === undefined || visibleAtMs === undefined) return undefined;
  if (index < 1 || number >= BATCH_NUMBER_LIMIT) return undefined;
  return { index, number, visibleAtMs };
}

// The non-negative integer name[start, end) spells in canonical decimal, or undefined.
function decimal(name: string, start: number, end: number): number | undefined {
  if (end <= start || (end - start > 1 && name.charCodeAt(start) === 48)) return undefined;
  let value = 0;
  for (let i = start; i < end; i++) {
    const digit = name.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return undefined;
    value = value * 10 + digit;
  }
  return Number.isSafeInteger(value) ? value : undefined;
}
