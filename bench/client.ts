// Micro-benchmark of the CPU one pipelined SEND costs the client library and the server's
// client-connection path (src/client, src/server, src/protocol), without a cluster.
//
//   npm run bench:client
//   npm run bench:client -- --sends 200000 --baseline /tmp/ferry-base/src
//   npm run bench:client -- --workload consume
//
// `--workload consume` measures the benchmark's drain instead (bench/systems/ferry.ts's drain():
// 2 consume() loops of the benchmark's batches (SETTINGS_DEFAULT: 200, 1 prefetched), every
// message acked with ack(); the service answers each RECEIVE with a full batch of 256-byte
// messages, built from stored message records as a leader builds them (runServer), and each ACK
// with its count); `--sends` is then the number of messages consumed and acked, the figures per
// message.
//
// Two child processes per run, so each side's CPU is its own (process.cpuUsage, all threads):
// a server (FerryServer over a Service that answers every request at once, as a leader would
// after commit, with { id, timestamp, duplicate }) and a client (FerryClient) driving SENDs in a
// closed loop: `--connections` clients with `--window` requests in flight each, as
// bench/workloads.ts does. Both warm up first; the measured part is the `--sends` SENDs after
// that. The server's figure is everything its process did meanwhile: reading and decoding frames,
// validating, the service call, encoding and writing replies. `--baseline <dir>` (a copy of
// another version's src/) runs the same against that version, interleaved round by round, so both
// see the same machine. FERRY_BENCH_PROF=server|client writes that process's CPU profile to
// prof/; FERRY_BENCH_HEAP_PROF=server samples the server's allocations over the measured part,
// garbage included (prof/server-<pid>.heapprofile). `--forwarding` puts the service behind a ForwardingService, as a node's
// server has it (src/cli/node-start.ts). Prints a table and writes bench/results/client-<date>.json.
import { type ChildProcess, fork } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type * as ClientModule from "../src/client/index.js";
import type { Reply, Request } from "../src/protocol/api.js";
import type * as RecordsModule from "../src/broker/records.js";
import type * as StoredDeliveryModule from "../src/broker/stored-delivery.js";
import type * as ForwarderModule from "../src/server/forwarder.js";
import type * as ServerModule from "../src/server/index.js";
import { resultPath } from "./lib/results.js";
import { drain, drainWindow } from "./systems/ferry.js";
import { SETTINGS_DEFAULT } from "./workloads.js";

const { values: options } = parseArgs({
  options: {
    role: { type: "string", default: "main" },
    src: { type: "string", default: resolve("src") },
    port: { type: "string", default: "0" },
    sends: { type: "string", default: "300000" },
    warmup: { type: "string", default: "50000" },
    connections: { type: "string", default: "4" },
    window: { type: "string", default: "256" },
    "body-bytes": { type: "string", default: "256" },
    rounds: { type: "string", default: "3" },
    baseline: { type: "string" },
    forwarding: { type: "boolean", default: false },
    workload: { type: "string", default: "send" },
  },
});
const CONSUME = options.workload === "consume";
if (!CONSUME && options.workload !== "send") throw new Error(`--workload takes send or consume, not ${options.workload}`);
// The benchmark's drain settings (consumers, batch, depth), on a mailbox the fake service never
// runs out of.
const CONSUME_DRAIN = {
  target: "bench",
  consumers: SETTINGS_DEFAULT.drainConsumerCount,
  batch: SETTINGS_DEFAULT.drainBatchSize,
  depth: SETTINGS_DEFAULT.drainDepth,
  idleMs: SETTINGS_DEFAULT.drainIdleMs,
  onStart: () => {},
  onAcked: () => {},
};
const SENDS = Number(options.sends);
const WARMUP_SENDS = Number(options.warmup);
const CONNECTIONS = Number(options.connections);
const WINDOW = Number(options.window);
const BODY_BYTES = Number(options["body-bytes"]);
const ROUNDS = Number(options.rounds);

interface CpuReport {
  cpuUs: number;
  wallMs: number;
  socketWrites?: number;
}

type ParentMessage = { type: "start" } | { type: "stop" };
type ChildMessage = { type: "listening"; port: number } | { type: "warm" } | ({ type: "done" } & CpuReport);

function cpuUsNow(): number {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
}

function post(message: ChildMessage): void {
  process.send?.(message);
}

function nextMessage(child: ChildProcess | NodeJS.Process, type: ChildMessage["type"] | ParentMessage["type"]): Promise<ChildMessage & ParentMessage> {
  return new Promise((resolvePromise, reject) => {
    const onMessage = (message: { type: string }) => {
      if (message.type !== type) return;
      child.off("message", onMessage);
      resolvePromise(message as ChildMessage & ParentMessage);
    };
    child.on("message", onMessage);
    child.once("exit", (code) => reject(new Error(`child exited (${code}) before '${type}'`)));
  });
}

// Samples every allocation of the measured part, garbage included (--heap-prof keeps only what
// is still live at exit); the returned function writes prof/server-<pid>.heapprofile.
async function startAllocationSampling(): Promise<() => Promise<void>> {
  const { Session } = await import("node:inspector/promises");
  const session = new Session();
  session.connect();
  await session.post("HeapProfiler.startSampling", { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as object);
  return async () => {
    const { profile } = (await session.post("HeapProfiler.stopSampling")) as { profile: unknown };
    mkdirSync("prof", { recursive: true });
    writeFileSync(join("prof", `server-${process.pid}.heapprofile`), JSON.stringify(profile));
    session.disconnect();
  };
}

const RECORD_RING = 1024;

// A leader that has just committed: answers every SEND at once.
async function runServer(src: string): Promise<void> {
  const { FerryServer } = (await import(pathToFileURL(join(src, "server", "index.ts")).href)) as typeof ServerModule;
  let timestamp = 1_700_000_000_000n << 16n;
  const service = {
    async execute(request: Request): Promise<Reply> {
      timestamp += 1n;
      if (request.op === "send") return { ok: true, id: request.id ?? "assigned", timestamp, duplicate: false };
      if (request.op === "status") return { ok: true, nodes: [], self: 1 };
      // A RECEIVE that carries acks (since session 38) answers with their count, as a leader does.
      if (request.op === "receive") return request.ack === undefined ? { ok: true, messages: deliveries(request.max) } : { ok: true, messages: deliveries(request.max), acked: request.ack.length };
      if (request.op === "ack") return { ok: true, count: request.ids.length };
      throw new Error(`unexpected ${request.op}`);
    },
  };
  // What a leader's RECEIVE hands out, from stored records as the leader has them (ids as the
  // broker assigns them, entry index ~ number; a ring of records encoded before the measured part):
  // a version with src/broker/stored-delivery.ts answers with StoredDelivery over each record, as a
  // leader does for binary-protocol clients since session 35; an older one decodes each record into
  // the plain DeliveredMessage its broker built. Both decode the record's head, as RECEIVE does.
  const records = (await import(pathToFileURL(join(src, "broker", "records.ts")).href)) as typeof RecordsModule;
  const storedDeliveryPath = join(src, "broker", "stored-delivery.ts");
  const stored = existsSync(storedDeliveryPath) ? ((await import(pathToFileURL(storedDeliveryPath).href)) as typeof StoredDeliveryModule) : undefined;
  const body = new Uint8Array(BODY_BYTES).fill(97);
  const ring = Array.from({ length: RECORD_RING }, (_, n) =>
    records
      .encodeMessage({
        id: `${Math.floor(n / 256 + 1).toString(36)}~${(n % 256).toString(36)}`,
        sender: "bench",
        timestamp: timestamp + BigInt(n),
        hiddenUntilMs: 0,
        expiresAtMs: 0,
        headers: undefined,
        body,
        senderTime: undefined,
      })
      .slice(),
  );
  let delivered = 0;
  const deliveries = (max: number) =>
    Array.from({ length: max }, () => {
      const record = ring[delivered++ % RECORD_RING]!;
      const head = records.decodeMessageHead(record);
      if (stored !== undefined) return new stored.StoredDelivery("bench", 1, record, head);
      const message = records.decodeMessage(record, head);
      return { id: message.id, sender: message.sender, recipient: "bench", timestamp: message.timestamp, deliveries: 1, body: message.body };
    });
  let served: ServerModule.Service = service;
  if (options.forwarding) {
    const { ForwardingService } = (await import(pathToFileURL(join(src, "server", "forwarder.ts")).href)) as typeof ForwarderModule;
    served = new ForwardingService(service, { proof: () => "bench", name: "bench" }); // never forwards: the fake service leads
  }
  const server = await FerryServer.start({ port: 0, service: served, log: () => {} });
  post({ type: "listening", port: server.address().port });
  await nextMessage(process, "start");
  const heapProfile = process.env.FERRY_BENCH_HEAP_PROF === "server" ? await startAllocationSampling() : undefined;
  const cpuStart = cpuUsNow();
  const writesStart = server.stats.socketWrites;
  const startMs = performance.now();
  await nextMessage(process, "stop");
  await heapProfile?.();
  post({ type: "done", cpuUs: cpuUsNow() - cpuStart, wallMs: performance.now() - startMs, socketWrites: server.stats.socketWrites - writesStart });
  await server.close();
  process.exit(0);
}

async function runClient(src: string, port: number): Promise<void> {
  const { connect } = (await import(pathToFileURL(join(src, "client", "index.ts")).href)) as typeof ClientModule;
  // The drain runs its consumers on one connection.
  const connections = CONSUME ? 1 : CONNECTIONS;
  const window = CONSUME ? drainWindow(CONSUME_DRAIN) : WINDOW;
  const clients = await Promise.all(Array.from({ length: connections }, () => connect({ seeds: [`127.0.0.1:${port}`], window, discoverLeader: false })));
  const body = new Uint8Array(BODY_BYTES).fill(97);
  const drive = CONSUME ? (count: number) => consumeAll(clients[0]!, count) : async (count: number) => {
    let issued = 0;
    const worker = async (client: ClientModule.FerryClient) => {
      while (issued < count) {
        issued++;
        await client.send("bench", body);
      }
    };
    await Promise.all(clients.flatMap((client) => Array.from({ length: WINDOW }, () => worker(client))));
  };
  await drive(WARMUP_SENDS);
  post({ type: "warm" });
  await nextMessage(process, "start");
  const cpuStart = cpuUsNow();
  const startMs = performance.now();
  await drive(SENDS);
  post({ type: "done", cpuUs: cpuUsNow() - cpuStart, wallMs: performance.now() - startMs });
  await Promise.all(clients.map((client) => client.close()));
  process.exit(0);
}

// The benchmark's drain (bench/systems/ferry.ts's), until `count` messages are acked.
async function consumeAll(client: ClientModule.FerryClient, count: number): Promise<void> {
  const acked = await drain(client, { ...CONSUME_DRAIN, expected: count });
  if (acked < count) throw new Error(`${acked} of ${count} messages acked`);
}

function spawn(role: "server" | "client", src: string, port = 0): ChildProcess {
  const self = fileURLToPath(import.meta.url);
  const args = ["--role", role, "--src", src, "--port", String(port)];
  for (const name of ["sends", "warmup", "connections", "window", "body-bytes", "workload"] as const) args.push(`--${name}`, String(options[name]));
  if (options.forwarding) args.push("--forwarding");
  return fork(self, args, { execArgv: ["--import", "tsx", ...(process.env.FERRY_BENCH_PROF === role ? ["--cpu-prof", "--cpu-prof-dir=prof"] : [])] });
}

interface Row {
  version: string;
  round: number;
  sends: number;
  sendsPerSecond: number;
  clientCpuUsPerSend: number;
  serverCpuUsPerSend: number;
  sendsPerServerWrite: number;
}

async function runOnce(version: string, src: string, round: number): Promise<Row> {
  const server = spawn("server", src);
  const { port } = (await nextMessage(server, "listening")) as unknown as { port: number };
  const client = spawn("client", src, port);
  await nextMessage(client, "warm");
  const serverDone = nextMessage(server, "done");
  const clientDone = nextMessage(client, "done");
  server.send({ type: "start" });
  client.send({ type: "start" });
  const clientReport = (await clientDone) as unknown as CpuReport;
  server.send({ type: "stop" });
  const serverReport = (await serverDone) as unknown as CpuReport;
  const perSend = (cpuUs: number) => Math.round((cpuUs / SENDS) * 100) / 100;
  return {
    version,
    round,
    sends: SENDS,
    sendsPerSecond: Math.round(SENDS / (clientReport.wallMs / 1000)),
    clientCpuUsPerSend: perSend(clientReport.cpuUs),
    serverCpuUsPerSend: perSend(serverReport.cpuUs),
    sendsPerServerWrite: Math.round((SENDS / (serverReport.socketWrites ?? 1)) * 10) / 10,
  };
}

async function main(): Promise<void> {
  const versions: Array<[string, string]> = [["current", resolve("src")]];
  if (options.baseline !== undefined) versions.unshift(["baseline", resolve(options.baseline)]);
  const rows: Row[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const [version, src] of versions) {
      const row = await runOnce(version, src, round);
      process.stderr.write(`${version}: client ${row.clientCpuUsPerSend} µs/send, server ${row.serverCpuUsPerSend} µs/send, ${row.sendsPerSecond}/s\n`);
      rows.push(row);
    }
  }
  if (CONSUME) console.log(`${SENDS} messages consumed and acked per run after ${WARMUP_SENDS} warm-up: the benchmark's drain (${CONSUME_DRAIN.consumers} consume() loops, batches of ${CONSUME_DRAIN.batch}, depth ${CONSUME_DRAIN.depth}), ${BODY_BYTES}-byte bodies (the "send" columns are per message)`);
  else console.log(`${SENDS} SENDs per run after ${WARMUP_SENDS} warm-up, ${CONNECTIONS} connections x ${WINDOW} in flight, ${BODY_BYTES}-byte bodies${options.forwarding ? ", behind a ForwardingService" : ""}`);
  console.table(rows);
  const file = resultPath("client-", ".json");
  writeFileSync(
    file,
    `${JSON.stringify({ date: new Date().toISOString(), node: process.version, workload: options.workload, sends: SENDS, warmupSends: WARMUP_SENDS, connections: CONNECTIONS, window: WINDOW, bodyBytes: BODY_BYTES, rounds: ROUNDS, forwarding: options.forwarding, rows }, null, 2)}\n`,
  );
  console.log(`wrote ${file}`);
}

if (options.role === "server") await runServer(options.src);
else if (options.role === "client") await runClient(options.src, Number(options.port));
else await main();
