// The public API of the `ferry` package: the client library and the shared error type.
export { FerryError, type ErrorCode } from "./protocol/errors.js";
export type * from "./protocol/api.js";
