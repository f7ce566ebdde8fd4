// NATS JetStream as a system under test: a 3-node cluster (bench/peers/nats.sh), one file
// stream with 3 replicas, js.publish awaiting the PubAck, a durable pull consumer with explicit
// acks. Two variants: the server's default sync (fsync every 2 minutes, acknowledged before
// fsync) and `sync_interval: always` where the server supports it (2.10+).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { assertPortsFree, isAlive, run } from "../lib/proc.js";
import { importPeerClient, PEERS_SCRIPTS_DIR, peerClientInstalled, peerClientVersion } from "./peer-clients.js";
import type { ClusterNode, DrainOptions, RunningCluster, Sender, SenderOptions, SystemUnderTest } from "./types.js";

const CLIENT_PORT_BASE = 14222;
const ROUTE_PORT_BASE = 16222;
const NODE_COUNT = 3;
const STREAM = "FERRYBENCH";
const SUBJECT_PREFIX = "ferrybench";
// Acks are fire-and-forget and the consumer is replicated (R3), so a small window would make the
// fetches wait on ack processing rather than measure delivery; 10,000 is what users raise it to.
const MAX_ACK_PENDING = 10_000;
const FETCH_EXPIRES_MS = 1000;
const IDLE_CHECK_MS = 100;
const SCRIPT = join(PEERS_SCRIPTS_DIR, "nats.sh");
const DRAIN_NODE = "n1"; // the server the drain's consumers connect to

// The part of nats.js 2.x the benchmark uses.
interface NatsModule {
  connect(options: Record<string, unknown>): Promise<NatsConnection>;
}
interface NatsConnection {
  jetstream(): JetStream;
  jetstreamManager(): Promise<JetStreamManager>;
  flush(): Promise<void>;
  close(): Promise<void>;
}
interface JetStream {
  publish(subject: string, data: Uint8Array, options?: { timeout?: number }): Promise<unknown>;
  consumers: { get(stream: string, durable: string): Promise<Consumer> };
}
interface JetStreamManager {
  streams: {
    add(config: Record<string, unknown>): Promise<unknown>;
    info(name: string): Promise<{ cluster?: { leader?: string } }>;
  };
  consumers: {
    add(stream: string, config: Record<string, unknown>): Promise<unknown>;
    info(stream: string, durable: string): Promise<{ cluster?: { leader?: string } }>;
  };
}
interface Consumer {
  consume(options: { max_messages: number; expires: number }): Promise<AsyncIterable<{ ack(): void }> & { stop(): void }>;
}

export function natsSystem(sync: "default" | "always"): SystemUnderTest {
  const always = sync === "always";
  return {
    name: always ? "nats-sync-always" : "nats",
    label: always ? "NATS JetStream R3 (sync always)" : "NATS JetStream R3 (default sync)",
    durability: always
      ? "PubAck after the stream's Raft quorum has it, each node fsyncing every write (sync_interval: always)"
      : "PubAck after the stream's Raft quorum has it in memory/page cache; fsync every 2 minutes (default sync_interval)",
    ackSemantics: "m.ack() is fire-and-forget (no ack of the ack); acks flushed before the figure is taken",
    unavailable: async () => {
      try {
        await run("nats-server", ["--version"]);
      } catch {
        return "nats-server is not installed (bench/peers/install.sh)";
      }
      if (!peerClientInstalled("nats")) return "the nats npm client is not installed (bench/peers/install.sh)";
      if (always) {
        try {
          await run(SCRIPT, ["supports-sync-always"]);
        } catch {
          const version = (await run("nats-server", ["--version"])).trim();
          return `${version} rejects 'sync_interval: always' (unknown field; the option arrived in 2.10)`;
        }
      }
      return undefined;
    },
    version: async () => `${(await run("nats-server", ["--version"])).trim()}, nats.js ${peerClientVersion("nats")}`,
    start: (workDir) => startNats(workDir, sync),
  };
}

async function startNats(workDir: string, sync: string): Promise<RunningCluster> {
  await assertPortsFree([0, 1, 2].flatMap((index) => [CLIENT_PORT_BASE + index, ROUTE_PORT_BASE + index]));
  try {
    await run(SCRIPT, ["start", workDir, sync]);
  } catch (error) {
    await run(SCRIPT, ["stop", workDir]).catch(() => {}); // nodes that did start must not outlive the run
    throw error;
  }
  const nodes: ClusterNode[] = [];
  for (let index = 1; index <= NODE_COUNT; index++) {
    const pid = Number(readFileSync(join(workDir, `n${index}`, "nats.pid"), "utf8").trim());
    nodes.push({ name: `n${index}`, pid, clientPort: CLIENT_PORT_BASE + index - 1 });
  }
  const nats = await importPeerClient<NatsModule>("nats");
  const connectTo = (node: string) => {
    const first = nodes.find((candidate) => candidate.name === node) ?? nodes[0]!;
    const others = nodes.filter((candidate) => candidate !== first);
    return nats.connect({
      servers: [first, ...others].map((candidate) => `127.0.0.1:${candidate.clientPort}`),
      noRandomize: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 100,
    });
  };
  const admin = await connectTo("n1");
  const manager = await admin.jetstreamManager();
  await manager.streams.add({
    name: STREAM,
    subjects: [`${SUBJECT_PREFIX}.>`],
    storage: "file",
    num_replicas: NODE_COUNT,
  });
  const opened: NatsConnection[] = [admin];
  return {
    nodes,
    prepare: async () => {},
    leader: async () => {
      const info = await manager.streams.info(STREAM);
      if (!info.cluster?.leader) throw new Error("the stream has no leader");
      return info.cluster.leader;
    },
    openSender: async (options) => openSender(await connectTo(options.node), options, opened),
    drain: async (options) => drain(await connectTo(DRAIN_NODE), manager, options, opened),
    drainPlacement: async (target) => {
      const stream = (await manager.streams.info(STREAM)).cluster?.leader ?? "?";
      const consumer = (await manager.consumers.info(STREAM, durableOf(target))).cluster?.leader ?? "?";
      return `stream leader ${stream}, consumer leader ${consumer}${stream === consumer ? " (one node)" : " (two nodes)"}; consumers connected to ${DRAIN_NODE}`;
    },
    kill: (node) => {
      const target = nodes.find((candidate) => candidate.name === node);
      if (target && isAlive(target.pid)) process.kill(target.pid, "SIGKILL");
    },
    stop: async () => {
      await Promise.allSettled(opened.map((connection) => connection.close()));
      await run(SCRIPT, ["stop", workDir]);
    },
  };
}

function openSender(connection: NatsConnection, options: SenderOptions, opened: NatsConnection[]): Sender {
  opened.push(connection);
  const jetstream = connection.jetstream();
  const subject = `${SUBJECT_PREFIX}.${options.target}`;
  return {
    send: async (body, timeoutMs) => {
      await jetstream.publish(subject, body, { timeout: timeoutMs });
    },
    close: () => connection.close(),
  };
}

function durableOf(target: string): string {
  return `drain-${target}`;
}

async function drain(
  connection: NatsConnection,
  manager: JetStreamManager,
  options: DrainOptions,
  opened: NatsConnection[],
): Promise<number> {
  opened.push(connection);
  const durable = durableOf(options.target);
  await manager.consumers.add(STREAM, {
    durable_name: durable,
    ack_policy: "explicit",
    filter_subject: `${SUBJECT_PREFIX}.${options.target}`,
    max_ack_pending: MAX_ACK_PENDING,
  });
  let acked = 0;
  let lastMessageMs = performance.now();
  // consume() keeps a buffer of up to `depth` messages per consumer (pull requests refilled as it
  // drains), the same depth Ferry's consumers and RabbitMQ's prefetch get. fetch() of one batch
  // at a time drained 47,000-64,000 msg/s where consume() with 400 drained 52,000-97,000 (3
  // interleaved pairs).
  const consumers = await Promise.all(Array.from({ length: options.consumers }, () => connection.jetstream().consumers.get(STREAM, durable)));
  options.onStart();
  const loop = async (own: Consumer) => {
    const messages = await own.consume({ max_messages: options.depth, expires: FETCH_EXPIRES_MS });
    const idle = setInterval(() => {
      if (acked >= options.expected || performance.now() - lastMessageMs >= options.idleMs) messages.stop();
    }, IDLE_CHECK_MS);
    try {
      for await (const message of messages) {
        message.ack();
        lastMessageMs = performance.now();
        acked++;
        options.onAcked(1);
        if (acked >= options.expected) messages.stop();
      }
    } finally {
      clearInterval(idle);
    }
  };
  await Promise.all(consumers.map(loop));
  await connection.flush(); // the acks have reached the server
  return acked;
}
