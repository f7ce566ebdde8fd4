// The simulated application: proposals carry unique numbers, and each node's state machine is a
// running hash over every entry it applied, in order.
//
// The hash is the whole state: two nodes that applied the same entries at the same indexes have
// the same hash at every index, and a snapshot is just (index, hash). That keeps snapshots tiny
// while still letting the checker compare a restored snapshot with what others applied.

import type { Entry } from "../../src/raft/types.js";
import { assert } from "../../src/util/assert.js";

const PROPOSAL_HEADER_BYTES = 4;
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 16777619;
const SNAPSHOT_BYTES = 12;

// A proposal's bytes: its number (uint32, big-endian) then padding, so entries vary in size and
// flow control (maxMessageBytes, inflight bytes) gets exercised.
export function encodeProposal(value: number, paddingBytes: number): Uint8Array {
  const data = new Uint8Array(PROPOSAL_HEADER_BYTES + paddingBytes);
  new DataView(data.buffer).setUint32(0, value);
  for (let i = 0; i < paddingBytes; i++) data[PROPOSAL_HEADER_BYTES + i] = (value + i) & 0xff;
  return data;
}

// The proposal number of a normal entry, or undefined for a leader's empty no-op entry.
export function decodeProposal(entry: Entry): number | undefined {
  if (entry.type !== "normal" || entry.data.length < PROPOSAL_HEADER_BYTES) return undefined;
  return new DataView(entry.data.buffer, entry.data.byteOffset, entry.data.byteLength).getUint32(0);
}

// A digest of what an entry says (its type and data), not where it sits in the log.
export function entryDigest(entry: Entry): number {
  return hashBytes(entry.type === "normal" ? 1 : 2, entry.data);
}

function hashBytes(seed: number, data: Uint8Array): number {
  let hash = Math.imul(FNV_OFFSET ^ seed, FNV_PRIME);
  for (let i = 0; i < data.length; i++) hash = Math.imul(hash ^ data[i]!, FNV_PRIME);
  return hash >>> 0;
}

export function nextStateHash(previous: number, entry: Entry): number {
  let hash = Math.imul(previous ^ entryDigest(entry), FNV_PRIME);
  hash = Math.imul(hash ^ (hash >>> 15), 0x2c1b3c6d);
  return (hash ^ (hash >>> 12)) >>> 0;
}

export const INITIAL_STATE_HASH = FNV_OFFSET;

export class StateMachine {
  appliedIndex = 0;
  hash = INITIAL_STATE_HASH;

  apply(entry: Entry): void {
    assert(entry.index === this.appliedIndex + 1, `apply index ${entry.index} after ${this.appliedIndex}`);
    this.appliedIndex = entry.index;
    this.hash = nextStateHash(this.hash, entry);
  }

  snapshotData(): Uint8Array {
    const data = new Uint8Array(SNAPSHOT_BYTES);
    const view = new DataView(data.buffer);
    view.setFloat64(0, this.appliedIndex);
    view.setUint32(8, this.hash);
    return data;
  }

  // An empty snapshot is the state before any entry (a bootstrap snapshot at index 0).
  static fromSnapshot(data: Uint8Array): StateMachine {
    if (data.length === 0) return new StateMachine();
    assert(data.length === SNAPSHOT_BYTES, `snapshot data of ${data.length} bytes`);
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const machine = new StateMachine();
    machine.appliedIndex = view.getFloat64(0);
    machine.hash = view.getUint32(8);
    return machine;
  }
}
