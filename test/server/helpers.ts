// Test clients that talk to a real FerryServer over TCP: a line client as a person with nc would
// type, and a binary client that pipelines frames and matches replies by rid.
import { connect, type Socket } from "node:net";
import { type ConnectionOptions, connect as connectTls } from "node:tls";
import { BINARY_PREAMBLE, decodePayload, encodeFrame, FrameDecoder } from "../../src/protocol/binary.js";
import { FerryServer, type ServerOptions } from "../../src/server/server.js";
import { FakeService } from "./fake-service.js";

export async function startServer(options: Partial<ServerOptions> = {}): Promise<{ server: FerryServer; service: FakeService; port: number }> {
  const service = (options.service as FakeService | undefined) ?? new FakeService();
  const server = await FerryServer.start({ port: 0, log: () => {}, ...options, service });
  return { server, service, port: server.address().port };
}

function openSocket(port: number, tls?: ConnectionOptions): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket =
      tls === undefined
        ? connect({ port, host: "127.0.0.1" }, () => resolve(socket))
        : connectTls({ ...tls, port, host: "127.0.0.1" }, () => resolve(socket));
    socket.once("error", reject);
  });
}

export class LineClient {
  private buffer = "";
  private lines: string[] = [];
  private waiting: Array<() => void> = [];
  ended = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (text: string) => {
      this.buffer += text;
      let newline = this.buffer.indexOf("\n");
      while (newline !== -1) {
        this.lines.push(this.buffer.slice(0, newline));
        this.buffer = this.buffer.slice(newline + 1);
        newline = this.buffer.indexOf("\n");
      }
      this.wake();
    });
    socket.on("error", () => {});
    this.closed = new Promise((resolve) =>
      socket.on("close", () => {
        this.ended = true;
        this.wake();
        resolve();
      }),
    );
  }

  static async connect(port: number, tls?: ConnectionOptions): Promise<LineClient> {
    return new LineClient(await openSocket(port, tls));
  }

  private wake(): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const wake of waiting) wake();
  }

  write(text: string | Uint8Array): void {
    this.socket.write(text);
  }

  async line(): Promise<string> {
    while (this.lines.length === 0) {
      if (this.ended) throw new Error(`connection closed; unterminated rest: ${JSON.stringify(this.buffer)}`);
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    return this.lines.shift()!;
  }

  // Lines up to and including END.
  async untilEnd(): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.line();
      lines.push(line);
      if (line === "END" || line.startsWith("ERR ")) return lines;
    }
  }

  async request(line: string): Promise<string> {
    this.write(`${line}\n`);
    return this.line();
  }

  close(): void {
    this.socket.destroy();
  }
}

export type Frame = Record<string, unknown> & { rid: number };

export class BinaryClient {
  private readonly decoder = new FrameDecoder(64 * 1024 * 1024);
  private readonly pending = new Map<number, (frame: Frame) => void>();
  readonly received: Frame[] = []; // every reply, in arrival order
  private nextRid = 1;
  private waiting: Array<() => void> = [];
  ended = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      for (const payload of this.decoder.push(chunk)) {
        const frame = decodePayload(payload) as Frame;
        this.received.push(frame);
        const resolve = this.pending.get(frame.rid);
        this.pending.delete(frame.rid);
        resolve?.(frame);
      }
      this.wake();
    });
    socket.on("error", () => {});
    this.closed = new Promise((resolve) =>
      socket.on("close", () => {
        this.ended = true;
        this.wake();
        resolve();
      }),
    );
  }

  static async connect(port: number, preamble = true, tls?: ConnectionOptions): Promise<BinaryClient> {
    const socket = await openSocket(port, tls);
    if (preamble) socket.write(BINARY_PREAMBLE);
    return new BinaryClient(socket);
  }

  private wake(): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const wake of waiting) wake();
  }

  request(request: Record<string, unknown>): Promise<Frame> {
    const rid = (request.rid as number | undefined) ?? this.nextRid++;
    const reply = new Promise<Frame>((resolve) => this.pending.set(rid, resolve));
    this.socket.write(encodeFrame({ ...request, rid }));
    return reply;
  }

  writeRaw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  async frames(count: number): Promise<Frame[]> {
    while (this.received.length < count) {
      if (this.ended) throw new Error(`connection closed after ${this.received.length} frames`);
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    return this.received.slice(0, count);
  }

  close(): void {
    this.socket.destroy();
  }
}

// Waits until the condition holds (the test runner's timeout catches a condition that never does).
export async function waitUntil(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
}

// Waits until a counter stops changing for `rounds` consecutive polls: the way to observe that
// something has stopped (e.g. the server stopped reading) without asserting a duration.
export async function waitUntilStable(read: () => number, rounds = 10): Promise<number> {
  let value = read();
  let stable = 0;
  while (stable < rounds) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    const next = read();
    stable = next === value ? stable + 1 : 0;
    value = next;
  }
  return value;
}

// Holds every request the predicate selects until release() is called.
export function holdRequests(service: FakeService, select: (request: import("../../src/protocol/api.js").Request) => boolean) {
  const held: Array<() => void> = [];
  service.gate = (request) => (select(request) ? new Promise<void>((resolve) => held.push(resolve)) : undefined);
  return {
    get count() {
      return held.length;
    },
    release() {
      for (const resolve of held.splice(0)) resolve();
    },
    stop() {
      service.gate = undefined;
      this.release();
    },
  };
}
