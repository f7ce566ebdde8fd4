// Ferry as a system under test: `ferry dev` (3 node processes, client ports 12345-12347, peer
// ports 22345-22347, fsync always) with its data in the run's temporary directory; the client
// library finds the leader itself and status() names it. Everything Ferry-specific the
// benchmark needs is in this file.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, openSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { assertPortsFree, isAlive, pidListeningOn, run, sleep } from "../lib/proc.js";
import type { ClusterNode, DrainOptions, RunningCluster, Sender, SystemUnderTest } from "./types.js";

const INCIDENT_CHARS_MAX = 300; // of a log line kept as an incident
const ROOT_DIR = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const FERRY_BIN = join(ROOT_DIR, "bin", "ferry.js"); // runs dist/, rebuilt before every run
const TSC_BIN = join(ROOT_DIR, "node_modules", "typescript", "bin", "tsc");
// The client library as users get it: the compiled package (dist/, built right before it is
// loaded), not src/ through tsx, whose transform adds a helper call to every function it creates
// (esbuild keepNames). Imported dynamically so the benchmark type-checks before dist/ exists.
const CLIENT_MODULE = join(ROOT_DIR, "dist", "client", "index.js");
const NODE_COUNT = 3;
// Overridable so the benchmark can run beside a cluster that already holds the default ports.
const CLIENT_PORT_FIRST = Number(process.env.FERRY_BENCH_CLIENT_PORT ?? 12345);
const PEER_PORT_FIRST = Number(process.env.FERRY_BENCH_PEER_PORT ?? 22345);
const CLIENT_PORTS = Array.from({ length: NODE_COUNT }, (_, index) => CLIENT_PORT_FIRST + index);
const PEER_PORTS = Array.from({ length: NODE_COUNT }, (_, index) => PEER_PORT_FIRST + index);
const SEEDS = CLIENT_PORTS.map((port) => `127.0.0.1:${port}`);
const CLUSTER_READY_TIMEOUT_MS = 60_000;
const BUILD_TIMEOUT_MS = 300_000;
const STOP_GRACE_MS = 5000;
const RECEIVE_WAIT_MS = 1000;
const ADMIN_WINDOW = 4;
const IDLE_CHECK_MS = 100;
// Per consumer: its RECEIVEs (the prefetch, depth / batch - 1: 1 for the benchmark's 200 of 400,
// and one more while it waits with nothing in hand), up to 4 ACK requests (consume()'s
// acksInFlightMax), a NACK.
const ACKS_IN_FLIGHT_PER_CONSUMER = 4;
function requestsPerConsumer(prefetch: number): number {
  return prefetch + 1 + ACKS_IN_FLIGHT_PER_CONSUMER + 1;
}
type DrainShape = Pick<DrainOptions, "consumers" | "batch" | "depth">;
function prefetchOf(options: DrainShape): number {
  return Math.max(0, Math.ceil(options.depth / options.batch) - 1);
}
// The drain's connection window: its consumers' requests (bench/client.ts's consume workload uses
// it too).
export function drainWindow(options: DrainShape): number {
  return options.consumers * requestsPerConsumer(prefetchOf(options));
}

function devArgs(workDir: string): string[] {
  return [
    FERRY_BIN,
    "dev",
    ...["--nodes", String(NODE_COUNT), "--data", join(workDir, "data"), "--fsync", "always"],
    ...["--client-port", String(CLIENT_PORT_FIRST), "--peer-port", String(PEER_PORT_FIRST)],
    // Extra Node.js flags for the nodes (bench/profile.ts passes --cpu-prof through this).
    ...(process.env.FERRY_BENCH_NODE_ARGS ? ["--node-args", process.env.FERRY_BENCH_NODE_ARGS] : []),
  ];
}

// The client API the benchmark uses (see docs/client.md).
interface FerryClient {
  send(recipient: string, body: Uint8Array, options?: { id?: string }): Promise<unknown>;
  consume(mailbox: string, options: { max: number; prefetch: number; waitMs: number; autoAck: boolean; signal: AbortSignal }): AsyncIterable<{ ack(): Promise<void> }>;
  status(): Promise<FerryStatus>;
  close(): Promise<void>;
}
interface FerryClientModule {
  connect(options: { seeds: string[]; window: number }): Promise<FerryClient>;
}
interface FerryStatus {
  nodes: Array<{ id: number; address: string; role: string }>;
  self: number;
}

export const ferrySystem: SystemUnderTest = {
  name: "ferry",
  label: "Ferry (fsync always)",
  durability: "SEND acknowledged after the entry is fsynced on a majority of voters (fsync: always)",
  ackSemantics: "ACK resolves after the ack is committed through Raft (confirmed)",
  unavailable: async () => {
    if (!existsSync(CLIENT_MODULE)) return `the client library ${CLIENT_MODULE} does not exist yet`;
    return undefined;
  },
  version: async () => {
    const { createRequire } = await import("node:module");
    const require = createRequire(import.meta.url);
    const version = (require(join(ROOT_DIR, "package.json")) as { version: string }).version;
    return `Ferry ${version} (${await sourceRevision()})`;
  },
  start: startFerry,
};

// Which source was measured: the commit, and whether the work tree differed from it.
async function sourceRevision(): Promise<string> {
  try {
    const commit = (await run("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT_DIR })).trim();
    const dirty = (await run("git", ["status", "--porcelain", "--untracked-files=no"], { cwd: ROOT_DIR })).trim() !== "";
    return `git ${commit}${dirty ? " with uncommitted changes" : ""}`;
  } catch {
    return "not a git checkout";
  }
}

async function loadClient(): Promise<FerryClientModule> {
  return (await import(pathToFileURL(CLIENT_MODULE).href)) as FerryClientModule;
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(":") + 1));
}

async function waitForCluster(dev: ChildProcess, admin: FerryClient): Promise<ClusterNode[]> {
  const deadlineMs = performance.now() + CLUSTER_READY_TIMEOUT_MS;
  let lastError = "";
  while (performance.now() < deadlineMs) {
    if (dev.exitCode !== null) throw new Error(`ferry dev exited with code ${dev.exitCode}`);
    try {
      const current = await admin.status();
      const pids = CLIENT_PORTS.map(pidListeningOn);
      if (current.nodes.some((node) => node.role === "leader") && pids.every((pid) => pid !== undefined)) {
        return CLIENT_PORTS.map((port, index) => ({ name: `127.0.0.1:${port}`, pid: pids[index]!, clientPort: port }));
      }
    } catch (error) {
      lastError = (error as Error).message;
    }
    await sleep(250);
  }
  throw new Error(`the Ferry cluster had no leader after ${CLUSTER_READY_TIMEOUT_MS} ms: ${lastError}`);
}

// The nodes take a moment to listen: connect until they do (or the dev process dies).
async function connectWithin(client: FerryClientModule, dev: ChildProcess): Promise<FerryClient> {
  const deadlineMs = performance.now() + CLUSTER_READY_TIMEOUT_MS;
  for (;;) {
    if (dev.exitCode !== null) throw new Error(`ferry dev exited with code ${dev.exitCode}`);
    try {
      return await client.connect({ seeds: SEEDS, window: ADMIN_WINDOW });
    } catch (error) {
      if (performance.now() > deadlineMs) throw error;
      await sleep(250);
    }
  }
}

async function startFerry(workDir: string): Promise<RunningCluster> {
  for (const port of [...CLIENT_PORTS, ...PEER_PORTS]) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new Error(`FERRY_BENCH_CLIENT_PORT / FERRY_BENCH_PEER_PORT give port ${port}; each needs 3 ports in 1..65535`);
    }
  }
  await assertPortsFree([...CLIENT_PORTS, ...PEER_PORTS]);
  // `ferry dev` starts its nodes through bin/ferry.js, i.e. dist/: build it so the run measures
  // the source as it is now, never a stale build.
  await run(process.execPath, [TSC_BIN, "-p", "tsconfig.json"], { cwd: ROOT_DIR, timeoutMs: BUILD_TIMEOUT_MS });
  const logPath = join(workDir, "ferry-dev.log");
  const log = openSync(logPath, "a");
  // Its own process group, so stop() can end the dev process and the nodes it started together.
  const dev = spawn(process.execPath, devArgs(workDir), { cwd: ROOT_DIR, detached: true, stdio: ["ignore", log, log] });
  const client = await loadClient();
  let nodes: ClusterNode[];
  let admin: FerryClient;
  try {
    admin = await connectWithin(client, dev);
    nodes = await waitForCluster(dev, admin);
  } catch (error) {
    if (dev.pid !== undefined && isAlive(dev.pid)) process.kill(-dev.pid, "SIGKILL");
    throw error;
  }
  const opened: FerryClient[] = [admin];
  return {
    nodes,
    prepare: async () => {}, // a mailbox exists once something is sent to it
    leader: async () => {
      const leader = (await admin.status()).nodes.find((node) => node.role === "leader");
      if (!leader) throw new Error("the Ferry cluster has no leader");
      return `127.0.0.1:${portOf(leader.address)}`;
    },
    openSender: async (options) => {
      const connection = await client.connect({ seeds: SEEDS, window: options.inFlightMax });
      opened.push(connection);
      return openSender(connection, options.target);
    },
    drain: async (options) => {
      const connection = await client.connect({ seeds: SEEDS, window: drainWindow(options) });
      opened.push(connection);
      options.onStart();
      return drain(connection, options);
    },
    kill: (node) => {
      const target = nodes.find((candidate) => candidate.name === node);
      if (target && isAlive(target.pid)) process.kill(target.pid, "SIGKILL");
    },
    stop: async () => {
      await Promise.allSettled(opened.map((connection) => connection.close()));
      if (dev.pid !== undefined && isAlive(dev.pid)) process.kill(-dev.pid, "SIGTERM");
      const deadlineMs = performance.now() + STOP_GRACE_MS;
      while (nodes.some((node) => isAlive(node.pid)) && performance.now() < deadlineMs) await sleep(100);
      for (const node of nodes) if (isAlive(node.pid)) process.kill(node.pid, "SIGKILL");
    },
    // The nodes' log lines look like "<time> <level> node<id> <event> <fields>".
    incidents: () =>
      readFileSync(logPath, "utf8")
        .split("\n")
        .filter((line) => / (warn|error|fatal) node\d+ /.test(line))
        .map((line) => line.slice(0, INCIDENT_CHARS_MAX)),
  };
}

function openSender(client: FerryClient, mailbox: string): Sender {
  return {
    send: async (body) => {
      await client.send(mailbox, body);
    },
    close: async () => {},
  };
}

// Each consumer is the client library's consume() loop as users run it (docs/client.md): acks of
// one event-loop turn coalesced into one request (the RECEIVE that replaces the batch, or an ACK,
// at most 4 of those outstanding), batches prefetched after a full one so that the messages held
// and requested stay within DrainOptions.depth (for the benchmark's 200-message batches of 400:
// 1 requested while one is handled, 2 while none is), as the peers' consumers keep windows of the
// same depth, with asynchronous acks. An ack still counts only once Ferry confirms it is durable.
// The acks in flight are counted, not kept: holding every ack's promise until the end keeps
// hundreds of thousands of objects alive, and the collector's work on them costs the load
// generator ~1 µs per message of the CPU the nodes share, which the peers' fire-and-forget acks
// never pay. (bench/client.ts runs it against a fake server.)
export async function drain(client: Pick<FerryClient, "consume">, options: DrainOptions): Promise<number> {
  let acked = 0;
  let received = 0;
  let lastMessageMs = performance.now();
  const stop = new AbortController();
  const idle = setInterval(() => {
    if (performance.now() - lastMessageMs >= options.idleMs) stop.abort();
  }, IDLE_CHECK_MS);
  let inFlight = 0;
  let failure: unknown;
  let loopsDone = false;
  let allSettled: () => void = () => {};
  const settled = new Promise<void>((resolve) => {
    allSettled = resolve;
  });
  const settle = (): void => {
    if (--inFlight === 0 && loopsDone) allSettled();
  };
  const onAck = (): void => {
    acked++;
    options.onAcked(1);
    settle();
  };
  const onAckError = (error: unknown): void => {
    failure ??= error;
    settle();
  };
  const loop = async () => {
    const prefetch = prefetchOf(options);
    for await (const message of client.consume(options.target, { max: options.batch, prefetch, waitMs: RECEIVE_WAIT_MS, autoAck: false, signal: stop.signal })) {
      lastMessageMs = performance.now();
      inFlight++;
      message.ack().then(onAck, onAckError);
      if (++received >= options.expected) stop.abort();
    }
  };
  try {
    await Promise.all(Array.from({ length: options.consumers }, loop));
    loopsDone = true;
    if (inFlight > 0) await settled;
  } finally {
    clearInterval(idle);
  }
  if (failure !== undefined) throw failure;
  return acked;
}
