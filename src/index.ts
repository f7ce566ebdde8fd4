// The public API of the `ferry` package: the client library and the shared error type.
export { FerryError, type ErrorCode, ERROR_CODES, RETRYABLE } from "./protocol/errors.js";
export type * from "./protocol/api.js";
export * from "./client/index.js";
