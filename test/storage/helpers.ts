// Shared helpers for the storage tests.
import type { ConfState, Entry } from "../../src/raft/types.js";

export const CONF: ConfState = { voters: [1, 2, 3], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };

export function entry(index: number, term: number, text = `entry ${index} term ${term}`): Entry {
  return { index, term, type: "normal", data: new TextEncoder().encode(text) };
}

export function entries(first: number, last: number, term: number, sizeBytes?: number): Entry[] {
  const result: Entry[] = [];
  for (let index = first; index <= last; index++) {
    result.push(sizeBytes === undefined ? entry(index, term) : { index, term, type: "normal", data: new Uint8Array(sizeBytes).fill(index & 0xff) });
  }
  return result;
}

export function text(data: Uint8Array): string {
  return new TextDecoder().decode(data);
}
