// An in-memory Service for the server's tests: mailboxes with leases, ids, dedupe, long polls,
// paging. Not replicated and not durable; it follows the node's contract closely enough that the
// server's behaviour (encoding, ordering, limits) can be tested without a cluster.
// `gate` lets a test hold requests and release them in any order; `calls` records what reached
// the service, so tests can assert that bad input never does.
import type {
  AckReply,
  ClusterReply,
  ListItem,
  ListReply,
  PurgeReply,
  ReceiveReply,
  Reply,
  Request,
  SendReply,
  StatusReply,
} from "../../src/protocol/api.js";
import { MAILBOX_DEFAULTS } from "../../src/broker/commands.js";
import { FerryError } from "../../src/protocol/errors.js";
import type { Service, Session } from "../../src/server/service.js";

interface StoredMessage {
  id: string;
  sender: string;
  recipient: string;
  timestamp: bigint;
  deliveries: number;
  body: Uint8Array;
  leasedUntilMs: number; // 0: not leased
}

export const VISIBILITY_MS_DEFAULT = 30_000;

export class FakeService implements Service {
  readonly calls: Array<{ request: Request; session: Session }> = [];
  gate: ((request: Request) => Promise<void> | undefined) | undefined;
  private readonly mailboxes = new Map<string, StoredMessage[]>();
  private readonly seenIds = new Set<string>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private sequence = 0;
  private lastTimestamp = 0n;

  helpLines(): string[] {
    return ["(fake service for tests)"];
  }

  async execute(request: Request, session: Session, signal: AbortSignal, waitSignal?: AbortSignal): Promise<Reply> {
    this.calls.push({ request, session });
    await this.gate?.(request);
    switch (request.op) {
      case "send":
        return this.send(request.recipients, request.body, session.identity, request.id);
      case "receive":
        return this.receive(request.mailbox, request.max, request.waitMs ?? 0, request.visibilityMs, waitSignal ?? signal);
      case "ack":
      case "nack":
      case "extend":
        return this.settle(request.op, request.mailbox, request.ids, request.op === "extend" ? request.visibilityMs : 0);
      case "list":
        return this.list(request.mailbox, request.limit ?? 100, request.cursor);
      case "purge":
      case "delete":
        return this.purge(request.mailbox);
      case "status":
        return this.status();
      case "cluster":
        return { ok: true, message: `${request.action} ${request.nodeId} accepted` } satisfies ClusterReply;
      case "config":
        return { ok: true, config: { ...MAILBOX_DEFAULTS, ...request.settings } };
    }
  }

  private nextTimestamp(): bigint {
    const physical = BigInt(Date.now()) << 16n;
    this.lastTimestamp = physical > this.lastTimestamp ? physical : this.lastTimestamp + 1n;
    return this.lastTimestamp;
  }

  private send(recipients: string[], body: Uint8Array, sender: string, id: string | undefined): SendReply {
    const timestamp = this.nextTimestamp();
    if (id !== undefined && this.seenIds.has(id)) return { ok: true, id, timestamp, duplicate: true };
    const messageId = id ?? `m${++this.sequence}`;
    if (id !== undefined) this.seenIds.add(id);
    for (const recipient of recipients) {
      const mailbox = this.mailboxes.get(recipient) ?? [];
      mailbox.push({ id: messageId, sender, recipient, timestamp, deliveries: 0, body: Uint8Array.from(body), leasedUntilMs: 0 });
      this.mailboxes.set(recipient, mailbox);
      for (const wake of this.waiters.get(recipient) ?? []) wake();
    }
    return { ok: true, id: messageId, timestamp, duplicate: false };
  }

  private take(mailboxName: string, max: number, visibilityMs: number): ReceiveReply {
    const now = Date.now();
    const taken = (this.mailboxes.get(mailboxName) ?? []).filter((message) => message.leasedUntilMs <= now).slice(0, max);
    for (const message of taken) {
      message.deliveries += 1;
      message.leasedUntilMs = now + visibilityMs;
    }
    return {
      ok: true,
      messages: taken.map((message) => ({
        id: message.id,
        sender: message.sender,
        recipient: message.recipient,
        timestamp: message.timestamp,
        deliveries: message.deliveries,
        body: message.body,
      })),
    };
  }

  private async receive(mailboxName: string, max: number, waitMs: number, visibilityMs: number | undefined, signal: AbortSignal): Promise<ReceiveReply> {
    const visibility = visibilityMs ?? VISIBILITY_MS_DEFAULT;
    const first = this.take(mailboxName, max, visibility);
    if (first.messages.length > 0 || waitMs === 0 || signal.aborted) return first;
    await new Promise<void>((resolve) => {
      const waiters = this.waiters.get(mailboxName) ?? new Set();
      this.waiters.set(mailboxName, waiters);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, waitMs);
      waiters.add(done);
      signal.addEventListener("abort", done);
    });
    return this.take(mailboxName, max, visibility);
  }

  private settle(op: "ack" | "nack" | "extend", mailboxName: string, ids: string[], visibilityMs: number): AckReply {
    const now = Date.now();
    const mailbox = this.mailboxes.get(mailboxName) ?? [];
    let count = 0;
    for (const id of new Set(ids)) {
      const index = mailbox.findIndex((message) => message.id === id && message.leasedUntilMs > now);
      if (index === -1) continue;
      count += 1;
      if (op === "ack") mailbox.splice(index, 1);
      else mailbox[index]!.leasedUntilMs = op === "nack" ? 0 : now + visibilityMs;
    }
    return { ok: true, count };
  }

  private list(mailboxName: string, limit: number, cursor: string | undefined): ListReply {
    const now = Date.now();
    const start = cursor === undefined ? 0 : Number(cursor);
    if (!Number.isSafeInteger(start) || start < 0) throw new FerryError("INVALID", `bad cursor '${cursor}'`);
    const mailbox = this.mailboxes.get(mailboxName) ?? [];
    const items: ListItem[] = mailbox.slice(start, start + limit).map((message) => ({
      id: message.id,
      sender: message.sender,
      timestamp: message.timestamp,
      state: message.leasedUntilMs > now ? "leased" : "ready",
      deliveries: message.deliveries,
      bytes: message.body.length,
    }));
    const reply: ListReply = { ok: true, items };
    if (start + limit < mailbox.length) reply.next = String(start + limit);
    return reply;
  }

  private purge(mailboxName: string): PurgeReply {
    const count = this.mailboxes.get(mailboxName)?.length ?? 0;
    this.mailboxes.delete(mailboxName);
    return { ok: true, count };
  }

  private status(): StatusReply {
    return {
      ok: true,
      self: 1,
      nodes: [{ id: 1, address: "127.0.0.1:0", role: "leader", term: 1, leader: 1, commit: this.sequence, applied: this.sequence, healthy: true }],
    };
  }
}
