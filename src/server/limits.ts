// Every limit the server enforces, with its default. Each one has an error: see docs/protocol.md.
import { FRAME_BYTES_MAX_DEFAULT } from "../protocol/binary.js";
import { LINE_BYTES_MAX_DEFAULT } from "../protocol/text.js";

export const BODY_BYTES_MAX_DEFAULT = 1024 * 1024;
export const CONNECTIONS_MAX_DEFAULT = 1024;
// Requests read but not yet answered on one connection. Beyond it the server stops reading from
// that socket (backpressure through TCP) instead of failing requests.
export const REQUESTS_IN_FLIGHT_MAX_DEFAULT = 256;
// The same for a follower's forwarding connection (it carries the requests of all the follower's
// clients, long polls included): as many as a forwarding link sends (FORWARD_INFLIGHT_MAX_DEFAULT),
// so the follower's clients are not held to one client's share, plus room for the CANCELs and
// give-back NACKs the link sends beside them.
export const FORWARDED_REQUESTS_IN_FLIGHT_MAX_DEFAULT = 4096 + 256;
export const IDLE_TIMEOUT_MS_DEFAULT = 5 * 60 * 1000;
// Bytes queued in the socket's write buffer above which the server stops reading from it, until
// it drains: a client that does not read its replies cannot make the server buffer without end.
export const WRITE_BUFFER_BYTES_MAX_DEFAULT = 1024 * 1024;
export const RECEIVE_WAIT_MS_MAX_DEFAULT = 60 * 1000;
export const CLOSE_GRACE_MS_DEFAULT = 5000;
export const IDS_PER_REQUEST_MAX_DEFAULT = 1000; // ACK / NACK / EXTEND ids in one request
export const RECIPIENTS_PER_SEND_MAX_DEFAULT = 64; // atomic fan-out width
export const HEADERS_BYTES_MAX_DEFAULT = 16 * 1024; // sum of header key and value bytes
export const MESSAGE_ID_LENGTH_MAX = 200; // client-supplied message ids and cursors
// Failed logins (AUTH / HELLO with a wrong user or password) after which a connection is closed.
export const AUTH_FAILURES_MAX_DEFAULT = 3;
// Failed logins from one client address within AUTH_FAILURE_WINDOW_MS after which that address
// is refused at once until the window has passed.
export const AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT = 20;
export const AUTH_FAILURE_WINDOW_MS_DEFAULT = 60_000;
// With a users file: a connection that has not logged in by then is closed.
export const LOGIN_TIMEOUT_MS_DEFAULT = 10_000;
// With TLS: a client whose TLS handshake is not done by then is disconnected.
export const TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT = 10_000;
export const DURATION_MS_MAX = 365 * 24 * 60 * 60 * 1000; // delays, TTLs, leases

export interface ServerLimits {
  frameBytesMax: number;
  lineBytesMax: number;
  bodyBytesMax: number;
  connectionsMax: number;
  requestsInFlightMax: number;
  forwardedRequestsInFlightMax: number;
  idleTimeoutMs: number;
  writeBufferBytesMax: number;
  receiveWaitMsMax: number;
  closeGraceMs: number;
  idsPerRequestMax: number;
  recipientsPerSendMax: number;
  headersBytesMax: number;
  authFailuresMax: number;
  loginTimeoutMs: number;
  tlsHandshakeTimeoutMs: number;
  authFailuresPerAddressMax: number;
  authFailureWindowMs: number;
}

export const SERVER_LIMITS_DEFAULT: Readonly<ServerLimits> = Object.freeze({
  frameBytesMax: FRAME_BYTES_MAX_DEFAULT,
  lineBytesMax: LINE_BYTES_MAX_DEFAULT,
  bodyBytesMax: BODY_BYTES_MAX_DEFAULT,
  connectionsMax: CONNECTIONS_MAX_DEFAULT,
  requestsInFlightMax: REQUESTS_IN_FLIGHT_MAX_DEFAULT,
  forwardedRequestsInFlightMax: FORWARDED_REQUESTS_IN_FLIGHT_MAX_DEFAULT,
  idleTimeoutMs: IDLE_TIMEOUT_MS_DEFAULT,
  writeBufferBytesMax: WRITE_BUFFER_BYTES_MAX_DEFAULT,
  receiveWaitMsMax: RECEIVE_WAIT_MS_MAX_DEFAULT,
  closeGraceMs: CLOSE_GRACE_MS_DEFAULT,
  idsPerRequestMax: IDS_PER_REQUEST_MAX_DEFAULT,
  recipientsPerSendMax: RECIPIENTS_PER_SEND_MAX_DEFAULT,
  headersBytesMax: HEADERS_BYTES_MAX_DEFAULT,
  authFailuresMax: AUTH_FAILURES_MAX_DEFAULT,
  loginTimeoutMs: LOGIN_TIMEOUT_MS_DEFAULT,
  tlsHandshakeTimeoutMs: TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT,
  authFailuresPerAddressMax: AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT,
  authFailureWindowMs: AUTH_FAILURE_WINDOW_MS_DEFAULT,
});

// Fills in defaults and rejects nonsense at startup rather than at the first request.
export function resolveLimits(partial: Partial<ServerLimits> = {}): ServerLimits {
  const limits: ServerLimits = { ...SERVER_LIMITS_DEFAULT };
  for (const [key, value] of Object.entries(partial) as Array<[keyof ServerLimits, number | undefined]>) {
    if (value === undefined) continue;
    if (!(key in SERVER_LIMITS_DEFAULT)) throw new RangeError(`unknown server limit '${key}'`);
    if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`server limit ${key} must be a positive integer, got ${value}`);
    limits[key] = value;
  }
  return limits;
}
