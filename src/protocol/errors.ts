// One error type with a code, shared by the server, the client library and the CLI.
// The codes are part of the public API: the text protocol prints them (`ERR <CODE> <message>`),
// the binary protocol carries them, the client library throws FerryError with them.

export const ERROR_CODES = [
  "INVALID", // malformed request, bad argument, bad name
  "TOO_LARGE", // a frame, line, body or batch over its limit
  "NOT_FOUND", // unknown mailbox or message where one is required
  "NOT_LEADER", // this node cannot serve it and cannot forward (hint in the message)
  "NO_QUORUM", // no leader / no majority reachable: writes fail instead of diverging
  "TIMEOUT", // the request did not complete in time; it may or may not have been applied
  "OVERLOADED", // a queue is full; retry later with backoff
  "UNAUTHORIZED", // no or wrong credentials
  "FORBIDDEN", // authenticated, not allowed
  "LIMIT", // a configured limit (connections, in-flight requests, mailbox capacity) reached
  "CONFLICT", // a lease held by someone else, a membership change already pending
  "UNHEALTHY", // this node has fenced itself (clock skew, disk error)
  "SHUTTING_DOWN", // the node is stopping
  "UNAVAILABLE", // the connection was lost before an answer (client side)
  "INTERNAL", // a bug: reported, the node keeps serving
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

// Codes after which the same request may be sent again, to the same or another node.
// A SEND retried after TIMEOUT or UNAVAILABLE is safe because it carries its message id.
export const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "NOT_LEADER",
  "NO_QUORUM",
  "TIMEOUT",
  "OVERLOADED",
  "SHUTTING_DOWN",
  "UNAVAILABLE",
  "UNHEALTHY",
]);

export function isErrorCode(value: string): value is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(value);
}

export class FerryError extends Error {
  override name = "FerryError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    // NOT_LEADER: the leader's client address when known, so a client can go there directly.
    readonly leaderHint?: string,
  ) {
    super(message);
  }

  get retryable(): boolean {
    return RETRYABLE.has(this.code);
  }
}
