// The one interface every system under test implements, so the workloads in bench/workloads.ts
// run unchanged against Ferry, NATS JetStream and RabbitMQ. An adapter starts its own 3-node
// cluster on loopback, creates the replicated queue/stream/mailbox under test, and hands out
// senders and a drainer. Every figure then comes from the same code path for every system.

export interface ClusterNode {
  name: string; // the system's own name for the node (n1, ferrybench1@localhost, node id)
  pid: number; // the server process, for CPU and memory figures and for kill -9
  clientPort: number;
}

export interface Sender {
  // Resolves when the system acknowledges the message as durable by its own rule (see
  // SystemUnderTest.durability); rejects on error or after timeoutMs.
  send(body: Uint8Array, timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

export interface SenderOptions {
  target: string; // the queue/subject/mailbox of this phase: phases never see each other's messages
  node: string; // the node to connect to (systems whose client finds the leader may ignore it)
  inFlightMax: number; // requests this connection will have outstanding at most
}

export interface DrainOptions {
  target: string;
  expected: number; // stop after this many messages were received and acknowledged
  consumers: number; // concurrent consumer loops (or channels)
  batch: number; // messages per fetch (RECEIVE)
  // Messages a consumer may hold unacknowledged at once, the same for every system: Ferry's
  // consume() prefetches depth / batch - 1 batches ahead (held and requested stay within depth,
  // and so do its leased and unacked messages: each batch's acks ride on the RECEIVE that
  // replaces it), NATS's consume() buffers depth messages (requested and not yet handed out),
  // RabbitMQ's channel has a prefetch of depth (delivered and not yet acked).
  depth: number;
  idleMs: number; // stop early when nothing arrives for this long
  // Called once, when the drain's setup is done (connections open, channels or the consumer
  // made) and just before the first request for messages: the drain is timed from here, so
  // that making a replicated consumer (a Raft group of its own in NATS) is not counted as
  // draining. Systems call it at most once; if none does, the drain is timed from its call.
  onStart: () => void;
  onAcked: (count: number) => void;
}

export interface RunningCluster {
  nodes: ClusterNode[];
  // Creates the replicated queue/stream/mailbox of a phase (a no-op where sending creates it).
  prepare(target: string): Promise<void>;
  // The node leading the replicated queue/stream/log that holds `target`.
  leader(target: string): Promise<string>;
  openSender(options: SenderOptions): Promise<Sender>;
  // Receives and acknowledges until `expected` or idle; returns how many were acknowledged.
  drain(options: DrainOptions): Promise<number>;
  // kill -9 of the named node's server process.
  kill(node: string): void;
  stop(): Promise<void>;
  // Where the drain of `target` was led, for the record, when the system places it on its own:
  // NATS's consumer of the drain elects a leader of its own, and its drain rate depends on where
  // (docs/bench.md "Session 33"); the adapter moves it to the stream leader's node first and says
  // how many stepdowns that took.
  drainPlacement?(target: string): Promise<string | undefined>;
  // The servers' own log lines at warn level and above (a node that failed, recovered or fenced
  // itself), read after stop(); absent where the system's log is not ours to read.
  incidents?(): string[];
}

export interface SystemUnderTest {
  name: string; // short key: ferry, nats, nats-sync-always, rabbitmq
  label: string; // for tables and plots
  durability: string; // when a send is acknowledged, in one sentence
  ackSemantics: string; // what an ack costs the consumer (confirmed or fire-and-forget)
  // Why the system cannot run here (not installed, not built), or undefined when it can.
  unavailable(): Promise<string | undefined>;
  version(): Promise<string>;
  start(workDir: string): Promise<RunningCluster>;
}
