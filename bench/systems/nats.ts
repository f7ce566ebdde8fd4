// NATS JetStream as a system under test: a 3-node cluster (bench/peers/nats.sh), one file
// stream with 3 replicas, js.publish awaiting the PubAck, a durable pull consumer with explicit
// acks. Two variants: the server's default sync (fsync every 2 minutes, acknowledged before
// fsync) and `sync_interval: always` where the server supports it (2.10+).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { assertPortsFree, isAlive, run, sleep } from "../lib/proc.js";
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
// Before each drain the consumer's leader is stepped down until it sits on the stream leader's
// node, and the consumers connect to that node: NATS's best case, measured the same way every
// round. With its placement left as created, one node doing the work drained 64,958-80,661 msg/s
// and two nodes 50,665-57,542 (docs/bench.md "Session 33"); a comparison with whichever came up
// measured the placement more than either system.
// nats-server 2.9 often hands the consumer's leadership back and forth between the two other
// nodes: 0-8 stepdowns per drain in session 34.
const CONSUMER_STEPDOWNS_MAX = 40;
const LEADER_WAIT_MS = 30_000;
const STEPDOWN_TIMEOUT_MS = 5_000;

// The part of nats.js 2.x the benchmark uses.
interface NatsModule {
  connect(options: Record<string, unknown>): Promise<NatsConnection>;
}
interface NatsConnection {
  jetstream(): JetStream;
  jetstreamManager(): Promise<JetStreamManager>;
  flush(): Promise<void>;
  close(): Promise<void>;
  request(subject: string, payload?: Uint8Array, options?: { timeout?: number }): Promise<{ data: Uint8Array }>;
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
  // How the last drain was placed (drainPlacement).
  const placed = new Map<string, Placement>();
  return {
    nodes,
    prepare: async () => {},
    leader: async () => {
      const info = await manager.streams.info(STREAM);
      if (!info.cluster?.leader) throw new Error("the stream has no leader");
      return info.cluster.leader;
    },
    openSender: async (options) => openSender(await connectTo(options.node), options, opened),
    drain: async (options) => {
      const durable = durableOf(options.target);
      await manager.consumers.add(STREAM, {
        durable_name: durable,
        ack_policy: "explicit",
        filter_subject: `${SUBJECT_PREFIX}.${options.target}`,
        max_ack_pending: MAX_ACK_PENDING,
      });
      const placement = await colocate(admin, manager, durable);
      placed.set(options.target, placement);
      return drain(await connectTo(placement.connectedTo), durable, options, opened);
    },
    drainPlacement: async (target) => {
      const placement = placed.get(target);
      if (placement === undefined) return undefined;
      // Read again after the drain: a leader that moved during it shows here.
      const stream = await leaderOf(() => manager.streams.info(STREAM));
      const consumer = await leaderOf(() => manager.consumers.info(STREAM, durableOf(target)));
      const where = stream === consumer ? "one node" : "two nodes";
      const steps = `${placement.stepdowns} consumer leader stepdown${placement.stepdowns === 1 ? "" : "s"} before it`;
      return `stream leader ${stream}, consumer leader ${consumer} (${where}); consumers connected to ${placement.connectedTo}; ${steps}`;
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

interface Placement {
  connectedTo: string; // the stream leader's node, where the consumers connect
  stepdowns: number;
}

// A request made while a consumer elects its leader has no responder (nats.js error 503) or no
// answer (TIMEOUT): it is asked again.
function electing(error: unknown): boolean {
  const code = (error as { code?: string }).code;
  return code === "503" || code === "TIMEOUT";
}

// The leader `info` names, once there is one (other than `not`).
async function leaderOf(info: () => Promise<{ cluster?: { leader?: string } }>, not?: string): Promise<string> {
  const deadline = performance.now() + LEADER_WAIT_MS;
  for (;;) {
    const leader = await info().then(
      (answer) => answer.cluster?.leader,
      (error: unknown) => {
        if (electing(error)) return undefined;
        throw error;
      },
    );
    if (leader && leader !== not) return leader;
    if (performance.now() > deadline) throw new Error(`no leader${not === undefined ? "" : ` other than ${not}`} within ${LEADER_WAIT_MS} ms`);
    await sleep(20);
  }
}

// Steps the consumer's leader down until it is on the stream leader's node (each stepdown elects
// another replica); fails after CONSUMER_STEPDOWNS_MAX requests rather than measure another case.
// `stepdowns` counts the ones made, not the requests asked again.
async function colocate(admin: NatsConnection, manager: JetStreamManager, durable: string): Promise<Placement> {
  const stream = await leaderOf(() => manager.streams.info(STREAM));
  let stepdowns = 0;
  for (let requests = 0; ; requests++) {
    const consumer = await leaderOf(() => manager.consumers.info(STREAM, durable));
    if (consumer === stream) return { connectedTo: stream, stepdowns };
    if (requests === CONSUMER_STEPDOWNS_MAX) throw new Error(`the consumer's leader stayed off the stream leader's node ${stream} after ${requests} stepdown requests`);
    const reply = await admin.request(`$JS.API.CONSUMER.LEADER.STEPDOWN.${STREAM}.${durable}`, new Uint8Array(0), { timeout: STEPDOWN_TIMEOUT_MS }).catch((error: unknown) => {
      if (electing(error)) return undefined;
      throw error;
    });
    if (reply === undefined) continue;
    const answer = JSON.parse(new TextDecoder().decode(reply.data)) as { success?: boolean; error?: { description?: string } };
    if (answer.success !== true) throw new Error(`consumer leader stepdown refused: ${answer.error?.description ?? JSON.stringify(answer)}`);
    stepdowns++;
    await leaderOf(() => manager.consumers.info(STREAM, durable), consumer); // the election
  }
}

async function drain(connection: NatsConnection, durable: string, options: DrainOptions, opened: NatsConnection[]): Promise<number> {
  opened.push(connection);
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
