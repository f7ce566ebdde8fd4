// Replies as the client hands them out: the wire's loosely typed maps turned into the types of
// src/protocol/api.ts (bigint timestamps, byte bodies, numbers), tolerant of a field a server
// leaves out, so a reply never crashes the client.
import type { DeliveredMessage, ListItem, MessageState, NodeStatus, Timestamp } from "../protocol/api.js";
import type { ReplyRecord } from "./connection.js";
import { parseAddress } from "./options.js";

const encoder = new TextEncoder();

// The client address of the leader named by a status reply, when it is a usable address.
export function leaderAddressOf(reply: ReplyRecord): string | undefined {
  if (!Array.isArray(reply.nodes)) return undefined;
  const nodes = reply.nodes as NodeStatus[];
  const self = nodes.find((node) => node.id === reply.self);
  const leaderId = self?.leader ?? nodes.find((node) => node.role === "leader")?.id;
  const address = nodes.find((node) => node.id === leaderId && leaderId !== 0)?.address;
  if (typeof address !== "string") return undefined;
  try {
    parseAddress(address);
    return address;
  } catch {
    return undefined; // e.g. a node listening on port 0 in a test
  }
}

// Timestamps exceed 2^53: msgpack int64 decodes as bigint; accept a number or decimal string too.
export function toTimestamp(value: unknown): Timestamp {
  if (typeof value === "bigint") return value;
  if (typeof value === "number" && Number.isInteger(value)) return BigInt(value);
  if (typeof value === "string" && /^\d+$/.test(value)) return BigInt(value);
  return 0n;
}

export function toDeliveredMessage(raw: Record<string, unknown>): DeliveredMessage {
  const message: DeliveredMessage = {
    id: String(raw.id),
    sender: String(raw.sender ?? ""),
    recipient: String(raw.recipient ?? ""),
    timestamp: toTimestamp(raw.timestamp),
    deliveries: Number(raw.deliveries ?? 1),
    body: typeof raw.body === "string" ? encoder.encode(raw.body) : (raw.body as Uint8Array),
  };
  if (raw.headers !== undefined && raw.headers !== null) message.headers = raw.headers as Record<string, string>;
  if (raw.senderTime !== undefined && raw.senderTime !== null) message.senderTime = toTimestamp(raw.senderTime);
  return message;
}

export function toListItem(raw: Record<string, unknown>): ListItem {
  const item: ListItem = {
    id: String(raw.id),
    sender: String(raw.sender ?? ""),
    timestamp: toTimestamp(raw.timestamp),
    state: String(raw.state) as MessageState,
    deliveries: Number(raw.deliveries ?? 0),
    bytes: Number(raw.bytes ?? 0),
  };
  if (raw.senderTime !== undefined && raw.senderTime !== null) item.senderTime = toTimestamp(raw.senderTime);
  return item;
}
