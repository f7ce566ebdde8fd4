// A fake Ferry node speaking the binary protocol, for the client tests. It keeps mailboxes in
// memory (send with id dedupe, receive with leases, ack, nack, extend, list) and can play a
// follower (NOT_LEADER with a leaderHint), fail chosen requests with a code, drop the connection
// on a request, delay replies, or hold them until the test releases them.
import net from "node:net";
import tls from "node:tls";
import { BINARY_PREAMBLE, decodePayload, encodeFrame, FrameDecoder } from "../../src/protocol/binary.js";
import type { ErrorCode } from "../../src/protocol/errors.js";

export interface FakeRequest {
  rid: number;
  op: string;
  [field: string]: unknown;
}

type Reply = Record<string, unknown>;

interface StoredMessage {
  id: string;
  sender: string;
  recipient: string;
  timestamp: bigint;
  deliveries: number;
  body: Uint8Array;
  headers?: Record<string, string>;
  leased: boolean;
}

// What a test may do to the next request(s) matching `op` (any op when undefined).
export type Fault =
  | { op?: string; kind: "error"; code: ErrorCode; message?: string; leaderHint?: string }
  | { op?: string; kind: "drop" } // destroy the connection instead of answering
  | { op?: string; kind: "apply-then-drop" } // execute, then destroy the connection: the answer is lost
  | { op?: string; kind: "ignore" }; // never answer

const TIMESTAMP_BASE = 1_700_000_000_000n << 16n;

export class FakeServer {
  readonly requests: FakeRequest[] = [];
  readonly faults: Fault[] = [];
  readonly mailboxes = new Map<string, StoredMessage[]>();
  role: "leader" | "follower" = "leader";
  leaderHint: string | undefined;
  delayMs: (request: FakeRequest) => number = () => 0;
  // Consulted for every request after the queued faults: a test's own fault schedule.
  faultFor: (request: FakeRequest) => Fault | undefined = () => undefined;
  hold = false; // when true, answers (except hello and status) wait until releaseHeld()
  // What STATUS says leads: "self" (this node, id 1), or the client address of another node,
  // which makes this node a forwarding follower that still answers everything itself.
  statusLeader: "self" | string = "self";
  // Set: answers (but hello and status) carry it as leaderHint, as a follower's forwarded answers do.
  forwardedLeaderHint: string | undefined;
  // Plays a node older than RECEIVE's `ack`: it ignores the field (and answers without `acked`).
  ignoresReceiveAcks = false;
  // Names each batch's lease (ReceiveReply.lease) and takes RECEIVE's ackLeases, as a node does;
  // with ignoresLeaseAcks it ignores ackLeases as a node older than them does (answers without
  // ackedLeases) while still naming leases (a client that moved to it from a newer node).
  namesLeases = false;
  ignoresLeaseAcks = false;
  private readonly leases = new Map<string, string[]>();
  private leasesNamed = 0;
  connectionsAccepted = 0;
  inFlight = 0;
  inFlightMax = 0;
  private readonly held: Array<() => void> = [];
  private readonly sockets = new Set<net.Socket>();
  private readonly seenIds = new Map<string, bigint>();
  private clock = 0n;

  private constructor(private readonly server: net.Server) {}

  static async start(options: { role?: "leader" | "follower"; leaderHint?: string; port?: number; tls?: tls.TlsOptions } = {}): Promise<FakeServer> {
    const server = options.tls === undefined ? net.createServer() : tls.createServer(options.tls);
    const fake = new FakeServer(server);
    fake.role = options.role ?? "leader";
    fake.leaderHint = options.leaderHint;
    server.on(options.tls === undefined ? "connection" : "secureConnection", (socket: net.Socket) => fake.accept(socket));
    server.on("tlsClientError", () => {}); // a plain client on the TLS port: refused
    await new Promise<void>((resolve) => server.listen(options.port ?? 0, "127.0.0.1", resolve));
    return fake;
  }

  get address(): string {
    const info = this.server.address() as net.AddressInfo;
    return `127.0.0.1:${info.port}`;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  get openConnections(): number {
    return this.sockets.size;
  }

  requestsOf(op: string): FakeRequest[] {
    return this.requests.filter((request) => request.op === op);
  }

  releaseHeld(): void {
    this.hold = false;
    for (const release of this.held.splice(0)) release();
  }

  get heldCount(): number {
    return this.held.length;
  }

  dropConnections(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  async close(): Promise<void> {
    this.releaseHeld();
    this.dropConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // Puts a message straight into a mailbox, as if sent.
  store(recipient: string, body: string, sender = "tester"): string {
    const id = `m${this.requests.length}-${this.clock}`;
    this.append(recipient, { id, sender, body: new TextEncoder().encode(body) });
    return id;
  }

  mailbox(name: string): StoredMessage[] {
    let messages = this.mailboxes.get(name);
    if (messages === undefined) this.mailboxes.set(name, (messages = []));
    return messages;
  }

  private accept(socket: net.Socket): void {
    this.connectionsAccepted++;
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => {});
    const decoder = new FrameDecoder();
    const session = { name: "anonymous", preambleBytes: 0 };
    socket.on("data", (chunk: Buffer) => {
      let rest = chunk;
      if (session.preambleBytes < BINARY_PREAMBLE.length) {
        const take = Math.min(BINARY_PREAMBLE.length - session.preambleBytes, rest.length);
        session.preambleBytes += take;
        rest = rest.subarray(take);
      }
      for (const payload of decoder.push(rest)) {
        const request = decodePayload(payload) as FakeRequest;
        this.requests.push(request);
        void this.answer(socket, session, request);
      }
    });
  }

  private async answer(socket: net.Socket, session: { name: string }, request: FakeRequest): Promise<void> {
    const fault = this.takeFault(request.op) ?? this.faultFor(request);
    if (fault?.kind === "drop") {
      socket.destroy();
      return;
    }
    if (fault?.kind === "ignore") return;
    // The client's own housekeeping (hello, leader discovery's status) is not counted.
    const counted = request.op !== "hello" && request.op !== "status";
    if (counted) this.inFlight++;
    this.inFlightMax = Math.max(this.inFlightMax, this.inFlight);
    try {
      const delayMs = this.delayMs(request);
      if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
      if (this.hold && request.op !== "hello" && request.op !== "status") await new Promise<void>((resolve) => this.held.push(resolve));
      let reply: Reply;
      if (fault?.kind === "apply-then-drop") {
        await this.execute(session, request, socket);
        socket.destroy();
        return;
      }
      if (fault?.kind === "error") {
        reply = { ok: false, code: fault.code, message: fault.message ?? `injected ${fault.code}`, ...(fault.leaderHint ? { leaderHint: fault.leaderHint } : {}) };
      } else {
        reply = await this.execute(session, request, socket);
        if (this.forwardedLeaderHint !== undefined && counted) reply = { ...reply, leaderHint: this.forwardedLeaderHint };
      }
      if (!socket.destroyed) socket.write(encodeFrame({ rid: request.rid, ...reply }));
    } finally {
      if (counted) this.inFlight--;
    }
  }

  private takeFault(op: string): Fault | undefined {
    const index = this.faults.findIndex((fault) => fault.op === undefined || fault.op === op);
    return index < 0 ? undefined : this.faults.splice(index, 1)[0];
  }

  private async execute(session: { name: string }, request: FakeRequest, socket: net.Socket): Promise<Reply> {
    if (request.op === "hello") {
      session.name = String(request.name);
      return { ok: true, name: session.name };
    }
    if (this.role === "follower") {
      return { ok: false, code: "NOT_LEADER", message: "not the leader", ...(this.leaderHint ? { leaderHint: this.leaderHint } : {}) };
    }
    switch (request.op) {
      case "send":
        return this.send(session.name, request);
      case "receive":
        return this.receive(request, socket);
      case "ack":
      case "nack":
      case "extend":
        return this.settle(request);
      case "list":
        return this.list(request);
      case "purge":
      case "delete": {
        const count = this.mailbox(String(request.mailbox)).length;
        if (request.op === "purge") this.mailboxes.set(String(request.mailbox), []);
        else this.mailboxes.delete(String(request.mailbox));
        return { ok: true, count };
      }
      case "status":
        return this.status();
      case "cluster":
        return { ok: true, message: `${String(request.action)} ${String(request.nodeId)} accepted` };
      case "config":
        return { ok: true, config: { order: "log", reorderWindowMs: 1000, ...(request.settings as object) } };
      default:
        return { ok: false, code: "INVALID", message: `unknown op '${request.op}'` };
    }
  }

  private send(sender: string, request: FakeRequest): Reply {
    const id = String(request.id);
    const seen = this.seenIds.get(id);
    if (seen !== undefined) return { ok: true, id, timestamp: seen, duplicate: true };
    let timestamp = 0n;
    for (const recipient of request.recipients as string[]) {
      const message: Omit<StoredMessage, "recipient" | "timestamp" | "deliveries" | "leased"> = { id, sender, body: request.body as Uint8Array };
      if (request.headers !== undefined) message.headers = request.headers as Record<string, string>;
      timestamp = this.append(recipient, message);
    }
    this.seenIds.set(id, timestamp);
    return { ok: true, id, timestamp, duplicate: false };
  }

  private append(recipient: string, message: Omit<StoredMessage, "recipient" | "timestamp" | "deliveries" | "leased">): bigint {
    const timestamp = TIMESTAMP_BASE + ++this.clock;
    this.mailbox(recipient).push({ ...message, recipient, timestamp, deliveries: 0, leased: false });
    return timestamp;
  }

  private async receive(request: FakeRequest, socket: net.Socket): Promise<Reply> {
    // The acks it carries first; then it does not wait (as a node does).
    const acks = this.ignoresReceiveAcks ? undefined : (request.ack as string[] | undefined);
    let acked = acks === undefined ? undefined : (this.settle({ rid: request.rid, op: "ack", mailbox: request.mailbox, ids: acks }) as { count: number }).count;
    const names = this.namesLeases && !this.ignoresLeaseAcks ? (request.ackLeases as string[] | undefined) : undefined;
    for (const name of names ?? []) {
      acked = (acked ?? 0) + (this.settle({ rid: request.rid, op: "ack", mailbox: request.mailbox, ids: this.leases.get(name) ?? [] }) as { count: number }).count;
      this.leases.delete(name);
    }
    const extra: Record<string, unknown> = {};
    if (acked !== undefined) extra.acked = acked;
    if (names !== undefined) extra.ackedLeases = names.length;
    const deadline = acked === undefined ? Date.now() + Number(request.waitMs ?? 0) : 0;
    const mailbox = this.mailbox(String(request.mailbox));
    for (;;) {
      const ready = mailbox.filter((message) => !message.leased).slice(0, Number(request.max ?? 1));
      if (ready.length > 0 || Date.now() >= deadline || socket.destroyed) {
        for (const message of ready) {
          message.leased = true;
          message.deliveries++;
        }
        const messages = ready.map(({ leased: _leased, ...message }) => message);
        if (this.namesLeases && messages.length > 0) {
          extra.lease = `${++this.leasesNamed}.0.${Date.now() + 30_000}`;
          this.leases.set(extra.lease as string, messages.map((message) => message.id));
        }
        return { ok: true, messages, ...extra };
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  private settle(request: FakeRequest): Reply {
    const mailbox = this.mailbox(String(request.mailbox));
    const ids = new Set(request.ids as string[]);
    let count = 0;
    for (const message of [...mailbox]) {
      if (!ids.has(message.id) || !message.leased) continue;
      count++;
      if (request.op === "ack") mailbox.splice(mailbox.indexOf(message), 1);
      if (request.op === "nack") message.leased = false;
    }
    return { ok: true, count };
  }

  private list(request: FakeRequest): Reply {
    const items = this.mailbox(String(request.mailbox)).map((message) => ({
      id: message.id,
      sender: message.sender,
      timestamp: message.timestamp,
      state: message.leased ? "leased" : "ready",
      deliveries: message.deliveries,
      bytes: message.body.length,
    }));
    return { ok: true, items };
  }

  private status(): Reply {
    const leader = this.statusLeader === "self" ? 1 : 2;
    const role = (id: number) => (id === leader ? "leader" : "follower");
    const address2 = this.statusLeader === "self" ? "127.0.0.1:2" : this.statusLeader;
    return {
      ok: true,
      self: 1,
      nodes: [
        { id: 1, address: this.address, role: role(1), term: 3, leader, commit: 42, applied: 42, lag: 0, clockOffsetMs: 0, healthy: true },
        { id: 2, address: address2, role: role(2), term: 3, leader, commit: 41, applied: 40, lag: 1, clockOffsetMs: 1.5, healthy: true },
        { id: 3, address: "127.0.0.1:3", role: role(3), term: 3, leader, commit: 42, applied: 42, lag: 0, clockOffsetMs: -0.4, healthy: false },
      ],
    };
  }
}
