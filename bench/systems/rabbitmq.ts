// RabbitMQ quorum queues as a system under test: a 3-node cluster (bench/peers/rabbitmq.sh),
// one quorum queue per phase, publisher confirms, consumers with manual acks and a prefetch.
// A quorum queue fsyncs its Raft log before the leader confirms, as Ferry does.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { assertPortsFree, isAlive, run } from "../lib/proc.js";
import { importPeerClient, PEERS_SCRIPTS_DIR, peerClientInstalled, peerClientVersion } from "./peer-clients.js";
import type { ClusterNode, DrainOptions, RunningCluster, Sender, SystemUnderTest } from "./types.js";

const AMQP_PORT_BASE = 25672;
const DIST_PORT_BASE = 25682;
const NODE_COUNT = 3;
const QUEUE_PREFIX = "ferrybench-";
const SCRIPT = join(PEERS_SCRIPTS_DIR, "rabbitmq.sh");
const DPKG_VERSION_FORMAT = "-f=$" + "{Version}"; // dpkg-query's own placeholder syntax

// The part of amqplib 0.10 (promise API) the benchmark uses.
interface AmqpModule {
  connect(url: string): Promise<AmqpConnection>;
}
interface AmqpConnection {
  createConfirmChannel(): Promise<ConfirmChannel>;
  createChannel(): Promise<Channel>;
  close(): Promise<void>;
  on(event: "error" | "close", listener: (error?: Error) => void): void;
}
interface Channel {
  assertQueue(name: string, options: Record<string, unknown>): Promise<unknown>;
  prefetch(count: number): Promise<unknown>;
  consume(queue: string, onMessage: (message: unknown) => void, options: { noAck: boolean }): Promise<{ consumerTag: string }>;
  cancel(consumerTag: string): Promise<unknown>;
  ack(message: unknown): void;
  close(): Promise<void>;
  on(event: "error" | "close", listener: (error?: Error) => void): void;
}
interface ConfirmChannel extends Channel {
  sendToQueue(queue: string, content: Buffer, options: Record<string, unknown>, callback: (error: unknown) => void): boolean;
}

export const rabbitmqSystem: SystemUnderTest = {
  name: "rabbitmq",
  label: "RabbitMQ quorum queue",
  durability: "publisher confirm after the quorum queue's Raft log entry is fsynced on a majority",
  ackSemantics: "basic.ack is fire-and-forget (no confirmation); consumers use a prefetch window",
  unavailable: async () => {
    try {
      await run("dpkg-query", ["-W", DPKG_VERSION_FORMAT, "rabbitmq-server"]);
    } catch {
      return "rabbitmq-server is not installed (bench/peers/install.sh)";
    }
    if (!peerClientInstalled("amqplib")) return "the amqplib npm client is not installed (bench/peers/install.sh)";
    return undefined;
  },
  version: async () => {
    const version = await run("dpkg-query", ["-W", DPKG_VERSION_FORMAT, "rabbitmq-server"]);
    return `RabbitMQ ${version.trim()}, amqplib ${peerClientVersion("amqplib")}`;
  },
  start: startRabbitmq,
};

async function startRabbitmq(workDir: string): Promise<RunningCluster> {
  await assertPortsFree([0, 1, 2].flatMap((index) => [AMQP_PORT_BASE + index, DIST_PORT_BASE + index]));
  try {
    await run(SCRIPT, ["start", workDir], { timeoutMs: 300_000 });
  } catch (error) {
    await run(SCRIPT, ["stop", workDir]).catch(() => {}); // nodes that did start must not outlive the run
    throw error;
  }
  const nodes: ClusterNode[] = [];
  for (let index = 1; index <= NODE_COUNT; index++) {
    const pid = Number(readFileSync(join(workDir, `n${index}`, "rabbit.pid"), "utf8").trim());
    nodes.push({ name: `ferrybench${index}@localhost`, pid, clientPort: AMQP_PORT_BASE + index - 1 });
  }
  const amqp = await importPeerClient<AmqpModule>("amqplib");
  const opened: AmqpConnection[] = [];
  const connectTo = async (node: string) => {
    const target = nodes.find((candidate) => candidate.name === node) ?? nodes[0]!;
    const connection = await amqp.connect(`amqp://guest:guest@127.0.0.1:${target.clientPort}`);
    connection.on("error", () => {}); // a killed node closes connections; the workload sees failed sends
    opened.push(connection);
    return connection;
  };
  const ctl = (node: string, args: string[]) =>
    run(SCRIPT, ["ctl", workDir, node.replace(/^ferrybench(\d+)@.*$/, "$1"), ...args]);
  return {
    nodes,
    prepare: async (target) => {
      const connection = await connectTo(nodes[0]!.name);
      const channel = await connection.createChannel();
      await channel.assertQueue(QUEUE_PREFIX + target, { durable: true, arguments: { "x-queue-type": "quorum" } });
      await connection.close();
    },
    leader: async (target) => {
      // Ask a node that is still alive: after a kill -9 node 1 may be the one that is gone.
      const alive = nodes.find((node) => isAlive(node.pid)) ?? nodes[0]!;
      const output = await ctl(alive.name, ["list_queues", "name", "leader", "--formatter", "json", "--quiet"]);
      const rows = JSON.parse(output) as Array<{ name: string; leader: string }>;
      const row = rows.find((candidate) => candidate.name === QUEUE_PREFIX + target);
      if (!row?.leader) throw new Error(`queue ${QUEUE_PREFIX + target} has no leader: ${output.trim()}`);
      return row.leader;
    },
    openSender: async (options) => openSender(await connectTo(options.node), options.target),
    drain: async (options) => drain(await connectTo(nodes[0]!.name), options),
    kill: (node) => {
      const target = nodes.find((candidate) => candidate.name === node);
      if (target && isAlive(target.pid)) process.kill(target.pid, "SIGKILL");
    },
    stop: async () => {
      await Promise.allSettled(opened.map((connection) => connection.close()));
      await run(SCRIPT, ["stop", workDir], { timeoutMs: 120_000 });
    },
  };
}

async function openSender(connection: AmqpConnection, target: string): Promise<Sender> {
  const channel = await connection.createConfirmChannel();
  channel.on("error", () => {});
  const queue = QUEUE_PREFIX + target;
  return {
    send: (body, timeoutMs) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no confirm within ${timeoutMs} ms`)), timeoutMs);
        try {
          channel.sendToQueue(queue, Buffer.from(body.buffer, body.byteOffset, body.byteLength), { persistent: true }, (error) => {
            clearTimeout(timer);
            if (error) reject(error instanceof Error ? error : new Error(`nack: ${String(error)}`));
            else resolve();
          });
        } catch (error) {
          clearTimeout(timer);
          reject(error as Error);
        }
      }),
    close: () => connection.close(),
  };
}

async function drain(connection: AmqpConnection, options: DrainOptions): Promise<number> {
  const queue = QUEUE_PREFIX + options.target;
  let acked = 0;
  const channels: Array<{ channel: Channel; consumerTag: string }> = [];
  await new Promise<void>((resolve, reject) => {
    let idleTimer = setTimeout(resolve, options.idleMs);
    const onMessage = (channel: Channel) => (message: unknown) => {
      if (message === null) return; // the consumer was cancelled
      channel.ack(message);
      acked++;
      options.onAcked(1);
      clearTimeout(idleTimer);
      if (acked >= options.expected) resolve();
      else idleTimer = setTimeout(resolve, options.idleMs);
    };
    void (async () => {
      const opened: Channel[] = [];
      for (let index = 0; index < options.consumers; index++) {
        const channel = await connection.createChannel();
        await channel.prefetch(options.depth);
        opened.push(channel);
      }
      options.onStart();
      for (const channel of opened) {
        const { consumerTag } = await channel.consume(queue, onMessage(channel), { noAck: false });
        channels.push({ channel, consumerTag });
      }
    })().catch(reject);
  });
  // Closing the channels flushes the acks already written and returns unacked messages.
  await Promise.allSettled(channels.map(({ channel, consumerTag }) => channel.cancel(consumerTag)));
  await Promise.allSettled(channels.map(({ channel }) => channel.close()));
  await connection.close();
  return acked;
}
