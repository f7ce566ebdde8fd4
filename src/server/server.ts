// The client-facing listener: one port, two protocols. A connection whose first byte is the first
// byte of BINARY_PREAMBLE (0x00, which no text command starts with) speaks binary; any other
// connection speaks text. The server owns the connection limit and an orderly close(); each
// connection owns its own parsing, flow control and replies (text-connection.ts,
// binary-connection.ts), so a misbehaving client affects nobody else.
import { createServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, type TlsOptions } from "node:tls";
import { BINARY_PREAMBLE } from "../protocol/binary.js";
import { type Authenticator, LoginThrottle } from "./auth.js";
import { formatError } from "../protocol/text.js";
import { BinaryConnection } from "./binary-connection.js";
import { type Connection, type ConnectionContext, emptyStats, type ServerStats } from "./connection.js";
import { resolveLimits, type ServerLimits } from "./limits.js";
import type { Service } from "./service.js";
import { TextConnection } from "./text-connection.js";

export interface ServerOptions {
  host?: string; // default 127.0.0.1
  port: number; // 0 picks a free port (tests)
  service: Service;
  verifyForwarder?: (proof: string) => boolean; // accepts another node's HELLO forwardProof
  // Clients must log in and may do only what their user may (src/server/auth.ts); off when absent.
  auth?: Authenticator;
  limits?: Partial<ServerLimits>;
  // Serve TLS on the client port (key and cert at least). Both protocols work the same inside it;
  // the protocol is told apart by the first byte after the handshake.
  tls?: TlsOptions;
  log?: (line: string) => void; // default console.error
}

export class FerryServer {
  private readonly sockets = new Set<Socket>(); // every accepted socket still open
  private readonly connections = new Map<Socket, Connection>();
  private nextSessionId = 1;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly listener: Server,
    private readonly context: ConnectionContext,
  ) {}

  static start(options: ServerOptions): Promise<FerryServer> {
    const limits = resolveLimits(options.limits);
    const context: ConnectionContext = {
      service: options.service,
      verifyForwarder: options.verifyForwarder,
      ...(options.auth === undefined ? {} : { auth: options.auth }),
      limits,
      log: options.log ?? ((line) => console.error(line)),
      stats: emptyStats(),
      ...(options.auth === undefined ? {} : { loginThrottle: new LoginThrottle(limits.authFailuresPerAddressMax, limits.authFailureWindowMs) }),
    };
    // Half-open: a client's EOF ends its input, not our replies to what it sent.
    const listener = options.tls
      ? createTlsServer({ ...options.tls, allowHalfOpen: true, handshakeTimeout: limits.tlsHandshakeTimeoutMs })
      : createServer({ allowHalfOpen: true, noDelay: true });
    const server = new FerryServer(listener, context);
    listener.on(options.tls ? "secureConnection" : "connection", (socket: Socket) => server.accept(socket));
    // A failed or stalled TLS handshake: Node reports a timeout without closing the socket.
    if (options.tls) listener.on("tlsClientError", (_error: Error, socket: Socket) => socket.destroy());
    return new Promise((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(options.port, options.host ?? "127.0.0.1", () => {
        listener.off("error", reject);
        listener.on("error", (error) => context.log(`server: listener error: ${error.message}`));
        resolve(server);
      });
    });
  }

  // Puts a new users file in force (SIGHUP on a node): new logins check it, and every request of
  // a connection that logged in before is checked against the user's permissions in it (a user
  // no longer in it gets UNAUTHORIZED). Only on a server started with one.
  reloadUsers(auth: Authenticator): void {
    if (this.context.auth === undefined) throw new Error("this server was started without a users file");
    this.context.auth = auth;
  }

  address(): { host: string; port: number } {
    const address = this.listener.address();
    if (address === null || typeof address === "string") throw new Error("the server is not listening");
    return { host: address.address, port: address.port };
  }

  get stats(): Readonly<ServerStats> {
    return this.context.stats;
  }

  get limits(): Readonly<ServerLimits> {
    return this.context.limits;
  }

  // Open connections (including ones whose protocol is not known yet).
  get connectionCount(): number {
    return this.sockets.size;
  }

  // Stops accepting, lets every connection answer what it has read (reading no more), closes it;
  // after limits.closeGraceMs the remaining connections are aborted.
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const stopped = new Promise<void>((resolve) => this.listener.close(() => resolve()));
    for (const socket of this.sockets) if (!this.connections.has(socket)) socket.destroy();
    for (const connection of this.connections.values()) connection.shutdown();
    const grace = setTimeout(() => {
      for (const connection of this.connections.values()) connection.destroy();
      for (const socket of this.sockets) socket.destroy();
    }, this.context.limits.closeGraceMs);
    await stopped; // net.Server calls back once every connection has closed
    clearTimeout(grace);
  }

  private accept(socket: Socket): void {
    const { limits } = this.context;
    socket.setNoDelay(true);
    socket.on("error", () => {}); // a reset before the first byte; 'close' follows
    if (this.closing !== undefined) return void socket.destroy();
    if (this.sockets.size >= limits.connectionsMax) {
      this.context.stats.connectionsRejected += 1;
      // Text, because the protocol is not known yet; a binary client recognises it because "ERR "
      // read as a frame length is far above any frame limit.
      socket.end(`${formatError("LIMIT", `too many connections (limit ${limits.connectionsMax}); try another node or later`)}\n`);
      socket.destroySoon();
      return;
    }
    this.sockets.add(socket);
    this.context.stats.connectionsAccepted += 1;
    socket.once("close", () => this.sockets.delete(socket));
    socket.setTimeout(limits.idleTimeoutMs);
    if (this.context.auth !== undefined) {
      // A login is due within loginTimeoutMs; a client that does not even send its first byte by
      // then is dropped here (the connection object arms the deadline from its first byte on).
      const silent = setTimeout(() => {
        if (!this.connections.has(socket)) socket.destroy();
      }, limits.loginTimeoutMs);
      silent.unref?.();
      socket.once("close", () => clearTimeout(silent));
    }
    // Until the first byte there is no connection object: idleness or EOF just closes the socket.
    const closeSilently = () => socket.destroy();
    socket.once("timeout", closeSilently);
    socket.once("end", closeSilently);
    socket.once("data", (first: Buffer) => {
      socket.off("timeout", closeSilently);
      socket.off("end", closeSilently);
      const connection = this.open(socket, first[0] === BINARY_PREAMBLE[0] ? "binary" : "text");
      connection.whenClosed.then(() => this.connections.delete(socket));
      connection.feed(first);
    });
  }

  private open(socket: Socket, protocol: "text" | "binary"): Connection {
    const sessionId = this.nextSessionId++;
    const connection =
      protocol === "binary" ? new BinaryConnection(socket, sessionId, this.context) : new TextConnection(socket, sessionId, this.context);
    this.connections.set(socket, connection);
    return connection;
  }
}
