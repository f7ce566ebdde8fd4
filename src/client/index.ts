// The client library's public surface.
export {
  type CallOptions,
  type ClusterAddresses,
  connect,
  FerryClient,
  IDS_PER_REQUEST_MAX,
  type ListOptions,
  type NackOptions,
  RECEIVE_MAX_DEFAULT,
  type ReceivedBatch,
  type ReceiveOptions,
  type SendOptions,
} from "./client.js";
export { CONSUME_ABORT_GRACE_MS, CONSUME_ACK_HOLD_MS, CONSUME_MAX_DEFAULT, CONSUME_PREFETCH_DEFAULT, CONSUME_PREFETCH_MAX, CONSUME_WAIT_MS_DEFAULT, type ConsumedMessage, type ConsumeOptions } from "./consume.js";
export {
  type ClientOptions,
  ATTEMPT_TIMEOUT_MS_DEFAULT,
  CONNECT_TIMEOUT_MS_DEFAULT,
  IDLE_TIMEOUT_MS_DEFAULT,
  RECONNECT_MAX_MS_DEFAULT,
  RECONNECT_MIN_MS_DEFAULT,
  RETRIES_MAX_DEFAULT,
  TIMEOUT_MS_DEFAULT,
  WINDOW_REQUESTS_DEFAULT,
} from "./options.js";
export type { RetryEvent } from "./diagnostics.js";
