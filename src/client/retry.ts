// Which failed calls may be sent again, and where to send the next attempt. Pure functions of
// the error, so the rules read in one place and are tested directly.
//
// Two kinds of calls:
// - "idempotent": repeating them cannot change the outcome. SEND always carries a message id
//   (the server stores an id once within its dedupe window); LIST and STATUS only read.
//   They retry on every retryable code, including TIMEOUT and a connection lost mid-request.
// - "unapplied-only": RECEIVE, ACK, NACK, EXTEND, CLUSTER change state in ways a blind repeat
//   could double (a second lease, a wrong count). They retry only on errors proving that the
//   request was not applied: NOT_LEADER, OVERLOADED, or a connection that failed before writing.
import type { FerryError } from "../protocol/errors.js";
import { AttemptTimeoutError, ConnectionError } from "./connection.js";

export type RetryKind = "idempotent" | "unapplied-only";

// An idempotent attempt left unanswered for attemptTimeoutMs (raised by the connection, which
// keeps the attempt's deadline with the request in flight).
export { AttemptTimeoutError };

export function mayRetry(kind: RetryKind, error: FerryError): boolean {
  if (error instanceof ConnectionError) return kind === "idempotent" || !error.requestSent;
  if (kind === "idempotent") return error.retryable;
  return error.code === "NOT_LEADER" || error.code === "OVERLOADED";
}

export type Route = { action: "stay" } | { action: "next-seed" } | { action: "redirect"; address: string };

// Where the next request goes after `error` from the node at currentAddress.
export function routeAfter(error: FerryError, currentAddress: string | undefined): Route {
  if (error instanceof ConnectionError) {
    // Refused or timed-out connect: that node is down, try another. Lost mid-request: reconnect
    // to the same node first; if it is gone the reconnect fails and moves on.
    return error.requestSent ? { action: "stay" } : { action: "next-seed" };
  }
  if (error instanceof AttemptTimeoutError) return { action: "next-seed" };
  switch (error.code) {
    case "NOT_LEADER":
      if (error.leaderHint !== undefined && error.leaderHint !== currentAddress) {
        return { action: "redirect", address: error.leaderHint };
      }
      return { action: "next-seed" };
    case "NO_QUORUM":
    case "UNHEALTHY":
    case "SHUTTING_DOWN":
      return { action: "next-seed" };
    default:
      return { action: "stay" };
  }
}
