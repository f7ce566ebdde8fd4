// Invariant assertions for the pure layers (raft, clock, broker), which may not import node:assert.
// A failed assertion is a bug, never an operating error: it throws and is not meant to be caught.

export class AssertionError extends Error {
  override name = "AssertionError";
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}

export function unreachable(value: never, message = "unreachable"): never {
  throw new AssertionError(`${message}: ${JSON.stringify(value)}`);
}
