// One TCP connection speaking the binary protocol to one node. It writes the preamble, then
// pipelines requests as frames `{ rid, ...request }` and matches replies by rid, in whatever
// order they come. Frames written in one tick go out in one socket write (cork/uncork).
//
// Invariants: every request settles exactly once (reply, abort, or connection loss); once the
// connection is closed every pending request fails with UNAVAILABLE and new ones are refused
// without being written, which the retry policy can tell apart through `requestSent`.
import net from "node:net";
import tls from "node:tls";
import { BINARY_PREAMBLE, decodePayload, encodeFrame, FRAME_HEADER_BYTES, FrameDecoder } from "../protocol/binary.js";
import { FerryError, isErrorCode } from "../protocol/errors.js";
import { parseAddress } from "./options.js";
import type { Cancel } from "./scope.js";

// UNAVAILABLE with one more fact: whether the request reached the socket. A request that was
// never written cannot have been applied, so any request may be retried after one.
export class ConnectionError extends FerryError {
  constructor(
    message: string,
    readonly address: string,
    readonly requestSent: boolean,
  ) {
    super("UNAVAILABLE", message);
  }
}

export type ReplyRecord = Record<string, unknown> & { ok: true };

interface Pending {
  resolve(reply: ReplyRecord): void;
  reject(error: unknown): void;
}

const KEEPALIVE_DELAY_MS = 10_000;
// Request ids are integers from 1 to 2^32-1 (0 marks a server error not tied to a request).
export const RID_MAX = 0xffff_ffff;

export interface ConnectionOptions {
  connectTimeoutMs: number;
  frameBytesMax: number;
  idleTimeoutMs: number;
  tls?: tls.ConnectionOptions | undefined; // present: TLS (the same port serves it when the node has a certificate)
}

export class Connection {
  private readonly pending = new Map<number, Pending>();
  private readonly decoder: FrameDecoder;
  private nextRid = 1;
  private corked = false;
  private closed = false;
  private closeWhenIdle = false;
  private serverNotice: string | undefined;
  private readonly closeListeners: Array<() => void> = [];

  private constructor(
    readonly address: string,
    private readonly socket: net.Socket,
    private readonly frameBytesMax: number,
    idleTimeoutMs: number,
  ) {
    this.decoder = new FrameDecoder(frameBytesMax);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
    // Idle: no bytes either way for idleTimeoutMs. Only a connection with nothing in flight is
    // closed (a long poll may legitimately be silent for longer).
    socket.setTimeout(idleTimeoutMs, () => {
      if (this.pending.size === 0) this.retire();
    });
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => {}); // "close" follows and does the work
    socket.on("close", () => this.onClose());
  }

  // Connects and writes the preamble. Rejects with ConnectionError (requestSent: false).
  static open(address: string, options: ConnectionOptions): Promise<Connection> {
    const { host, port } = parseAddress(address);
    return new Promise((resolve, reject) => {
      const socket = options.tls === undefined ? net.connect({ host, port }) : tls.connect({ ...serverName(host), ...options.tls, host, port });
      const readyEvent = options.tls === undefined ? "connect" : "secureConnect";
      const fail = (message: string) => {
        clearTimeout(timer);
        socket.destroy();
        reject(new ConnectionError(`cannot connect to ${address}: ${message}`, address, false));
      };
      const timer = setTimeout(() => fail(`no connection within ${options.connectTimeoutMs} ms`), options.connectTimeoutMs);
      socket.once("error", (error) => fail(error.message));
      socket.once(readyEvent, () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        socket.write(BINARY_PREAMBLE);
        resolve(new Connection(address, socket, options.frameBytesMax, options.idleTimeoutMs));
      });
    });
  }

  // Open and taking requests (a retired connection only finishes what it has).
  get isOpen(): boolean {
    return !this.closed && !this.closeWhenIdle;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  onClosed(listener: () => void): void {
    if (this.closed) listener();
    else this.closeListeners.push(listener);
  }

  // Sends one request; resolves with the ok reply (rid removed), rejects with FerryError for an
  // error reply, ConnectionError when the connection is or gets lost, the reason on cancel.
  request(request: object, cancel: Cancel): Promise<ReplyRecord> {
    if (cancel.aborted) return Promise.reject(cancel.reason);
    if (this.closed || this.closeWhenIdle || this.socket.destroyed || this.socket.writableEnded) {
      return Promise.reject(new ConnectionError(`connection to ${this.address} is closed`, this.address, false));
    }
    const rid = this.takeRid();
    const frame = encodeFrame({ rid, ...request });
    if (frame.length - FRAME_HEADER_BYTES > this.frameBytesMax) {
      return Promise.reject(
        new FerryError("TOO_LARGE", `request of ${frame.length - FRAME_HEADER_BYTES} bytes exceeds the frame limit of ${this.frameBytesMax}`),
      );
    }
    return new Promise<ReplyRecord>((resolve, reject) => {
      const unsubscribe = cancel.subscribe((reason) => {
        this.pending.delete(rid); // a late reply is ignored
        reject(reason);
        this.closeIfIdle();
      });
      this.pending.set(rid, {
        resolve: (reply) => {
          unsubscribe();
          resolve(reply);
        },
        reject: (error) => {
          unsubscribe();
          reject(error);
        },
      });
      this.write(frame);
    });
  }

  // Stops taking requests and closes once the ones in flight have settled (used when the client
  // moves to another node but must not cut off requests that may still be answered here).
  retire(): void {
    this.closeWhenIdle = true;
    this.closeIfIdle();
  }

  close(): void {
    this.socket.destroy();
  }

  private takeRid(): number {
    // Wraps after 2^32-1 requests on one connection, skipping ids still waiting for an answer.
    while (this.pending.has(this.nextRid)) this.nextRid = this.nextRid >= RID_MAX ? 1 : this.nextRid + 1;
    const rid = this.nextRid;
    this.nextRid = rid >= RID_MAX ? 1 : rid + 1;
    return rid;
  }

  private write(frame: Buffer): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(frame);
  }

  private onData(chunk: Buffer): void {
    let payloads: Buffer[];
    try {
      payloads = this.decoder.push(chunk);
    } catch {
      this.socket.destroy(); // framing lost (oversized frame): nothing after it can be trusted
      return;
    }
    for (const payload of payloads) this.onReply(payload);
    this.closeIfIdle();
  }

  private onReply(payload: Buffer): void {
    let reply: unknown;
    try {
      reply = decodePayload(payload);
    } catch {
      this.socket.destroy();
      return;
    }
    if (typeof reply !== "object" || reply === null) return;
    const { rid, ...rest } = reply as Record<string, unknown>;
    if (rid === 0 && rest.ok === false) {
      // The server's word on why it is about to close the connection (framing lost, stopping).
      this.serverNotice = errorFromReply(rest).message;
      return;
    }
    const pending = typeof rid === "number" ? this.pending.get(rid) : undefined;
    if (pending === undefined) return; // answer to an aborted or timed-out request
    this.pending.delete(rid as number);
    if (rest.ok === true) pending.resolve(rest as ReplyRecord);
    else pending.reject(errorFromReply(rest));
  }

  private closeIfIdle(): void {
    if (this.closeWhenIdle && this.pending.size === 0 && !this.closed) this.socket.end();
  }

  private onClose(): void {
    this.closed = true;
    const why = this.serverNotice === undefined ? "" : ` (server said: ${this.serverNotice})`;
    const error = new ConnectionError(`connection to ${this.address} lost before an answer${why}`, this.address, true);
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const request of pending) request.reject(error);
    for (const listener of this.closeListeners.splice(0)) listener();
  }
}

// SNI carries host names only; for an IP address the caller may name the certificate's host.
function serverName(host: string): { servername?: string } {
  return net.isIP(host) === 0 ? { servername: host } : {};
}

function errorFromReply(reply: Record<string, unknown>): FerryError {
  const code = typeof reply.code === "string" && isErrorCode(reply.code) ? reply.code : "INTERNAL";
  const message = typeof reply.message === "string" ? reply.message : "error reply without a message";
  const leaderHint = typeof reply.leaderHint === "string" && reply.leaderHint.length > 0 ? reply.leaderHint : undefined;
  return new FerryError(code, message, leaderHint);
}
