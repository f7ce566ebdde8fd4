// Checks of call arguments, done before anything is sent: a bad name, count or duration fails
// with FerryError INVALID at once instead of a round trip later.
import { FerryError } from "../protocol/errors.js";
import { nameProblem } from "../protocol/names.js";
import { parseAddress, requireNonNegative, requirePositive } from "./options.js";

export function requireName(what: string, name: string): void {
  const problem = typeof name === "string" ? nameProblem(name) : "name must be a string";
  if (problem !== undefined) throw new FerryError("INVALID", `${what} '${name}': ${problem}`);
}

export function checkedPositive(what: string, value: number): number {
  requirePositive(what, value);
  return value;
}

export function checkedNonNegative(what: string, value: number): number {
  requireNonNegative(what, value);
  return value;
}

export function checkedAddress(address: string): string {
  parseAddress(address);
  return address;
}

const encoder = new TextEncoder();

export function toBytes(body: string | Uint8Array): Uint8Array {
  if (typeof body === "string") return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  throw new FerryError("INVALID", "send: body must be a string or a Uint8Array");
}
