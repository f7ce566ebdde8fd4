// Test helpers: a broker on a KV with an auto-incrementing log index and millisecond clock.
import { Broker, type BrokerCommand, type BrokerConfig, type BrokerResult, MAILBOX_DEFAULTS, msTimestamp } from "../../src/broker/broker.js";
import { KEY_END, type OrderedKv } from "../../src/broker/kv.js";
import { MemoryKv } from "../../src/broker/kv-memory.js";
import type { ListReply, ReceiveReply } from "../../src/protocol/api.js";

export const text = (value: string): Uint8Array => new TextEncoder().encode(value);

// Small limits for property tests, so that random runs reach every limit and sweep: few
// mailboxes, tiny bodies, short windows, bounded sweeps.
export const PROPERTY_CONFIG: Partial<BrokerConfig> = {
  dedupeWindowMs: 3000,
  mailboxesMax: 3,
  expirySweepMax: 2,
  promoteMax: 2,
  // Three client ids in the generator: both where dedupe records live (inline and id records).
  dedupeIdsInMemoryMax: 2,
  dedupeSweepMax: 1, // the sweep lags: lists outlive their window
  recipientsMax: 3,
  senderTimeAheadMsMax: 3000,
  bodyBytesMax: 12,
  // Records of ~50-70 bytes: blocks of 1-3 messages, so an entry's messages to one mailbox often
  // take several blocks, and removals empty blocks and leave others partly removed.
  messageBlockBytesMax: 150,
  mailbox: { ...MAILBOX_DEFAULTS, deliveriesMax: 2, visibilityMs: 1000 },
};
export const PROPERTY_START_MS = 1_000_000;
export const read = (value: Uint8Array): string => new TextDecoder().decode(value);

export class Harness {
  readonly broker: Broker;
  index = 0;
  nowMs = 1_000_000;

  constructor(
    config?: Partial<BrokerConfig>,
    readonly kv: OrderedKv = new MemoryKv(),
  ) {
    this.broker = new Broker(kv, config);
  }

  apply(...commands: BrokerCommand[]): BrokerResult[] {
    return this.broker.apply(++this.index, msTimestamp(this.nowMs), commands);
  }

  one(command: BrokerCommand): BrokerResult {
    return this.apply(command)[0]!;
  }

  send(recipient: string | string[], body: string, extra: Partial<BrokerCommand & { op: "send" }> = {}): BrokerResult {
    const recipients = Array.isArray(recipient) ? recipient : [recipient];
    return this.one({ op: "send", sender: "alice", recipients, body: text(body), ...extra });
  }

  receive(mailbox: string, max = 10, visibilityMs?: number): ReceiveReply {
    const command: BrokerCommand = { op: "receive", mailbox, max };
    if (visibilityMs !== undefined) command.visibilityMs = visibilityMs;
    const result = this.one(command);
    if (!result.ok) throw new Error(`receive failed: ${result.code} ${result.message}`);
    return result as ReceiveReply;
  }

  list(mailbox: string, limit?: number, cursor?: string): ListReply {
    const request: Parameters<Broker["list"]>[0] = { op: "list", mailbox };
    if (limit !== undefined) request.limit = limit;
    if (cursor !== undefined) request.cursor = cursor;
    const reply = this.broker.list(request, msTimestamp(this.nowMs));
    if (!reply.ok) throw new Error(`list failed: ${reply.code} ${reply.message}`);
    return reply;
  }

  bodies(mailbox: string): string[] {
    return this.receive(mailbox, 1000).messages.map((message) => read(message.body));
  }

  advance(ms: number): void {
    this.nowMs += ms;
  }
}

// Every entry of a KV in key order, for byte-identity comparisons. A grouping store is committed
// first: some data (mailbox counters) is written once per commit.
export function dump(kv: OrderedKv): Array<[string, string]> {
  (kv as { commit?: () => void }).commit?.();
  return kv.scan("", KEY_END, Number.POSITIVE_INFINITY).map((entry) => [entry.key, Buffer.from(entry.value).toString("hex")]);
}
