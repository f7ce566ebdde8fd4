// Shared helpers for the transport tests: transports on 127.0.0.1 port 0 wired to each other.
import type { Message, MessageType, NodeId } from "../../src/raft/types.js";
import { type ClockSample, PeerTransport, type TransportOptions } from "../../src/transport/peer-transport.js";

export interface Received {
  from: NodeId;
  messages: Message[];
}

export interface TestNode {
  id: NodeId;
  transport: PeerTransport;
  received: Received[]; // one entry per onMessages call, i.e. per frame
  samples: Array<{ from: NodeId; sample: ClockSample }>;
  logs: Array<{ event: string; fields: Record<string, unknown> }>;
}

export function message(from: NodeId, to: NodeId, type: MessageType = "heartbeat", index = 0): Message {
  return { type, from, to, term: 1, logTerm: 0, index, entries: [], commit: 0, reject: false, rejectHint: 0 };
}

export async function startNode(id: NodeId, overrides: Partial<TransportOptions> = {}): Promise<TestNode> {
  const node: Partial<TestNode> & { received: Received[]; samples: TestNode["samples"]; logs: TestNode["logs"] } = {
    id,
    received: [],
    samples: [],
    logs: [],
  };
  node.transport = await PeerTransport.start({
    selfId: id,
    clusterId: "test-cluster",
    secret: "test-secret",
    listen: { host: "127.0.0.1", port: 0 },
    peers: new Map(),
    reconnectMinMs: 10,
    reconnectMaxMs: 100,
    onMessages: (from, messages) => node.received.push({ from, messages }),
    onClockSample: (from, sample) => node.samples.push({ from, sample }),
    log: (event, fields) => node.logs.push({ event, fields }),
    ...overrides,
  });
  return node as TestNode;
}

export function addressOf(node: TestNode): string {
  return `127.0.0.1:${node.transport.address().port}`;
}

// Tells every node about every other one.
export function wire(nodes: TestNode[]): void {
  for (const node of nodes) {
    node.transport.setPeers(new Map(nodes.filter((other) => other !== node).map((other) => [other.id, addressOf(other)])));
  }
}

export async function waitFor(what: string, predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

export async function waitConnected(nodes: TestNode[]): Promise<void> {
  await waitFor("all peers connected", () => nodes.every((node) => node.transport.connectedPeers().length === nodes.length - 1));
}

export function messagesFrom(node: TestNode, from: NodeId): Message[] {
  return node.received.filter((batch) => batch.from === from).flatMap((batch) => batch.messages);
}

export async function closeAll(nodes: TestNode[]): Promise<void> {
  await Promise.all(nodes.map((node) => node.transport.close()));
}
