// The client-facing server: what the node and the CLI use.
export { FerryServer, type ServerOptions } from "./server.js";
export type { Service, Session } from "./service.js";
export * from "./limits.js";
export type { ServerStats } from "./connection.js";
