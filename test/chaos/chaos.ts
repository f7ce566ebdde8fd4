// The chaos run: a real 3-node cluster whose peer links each go through a LinkProxy, producers
// and consumers running throughout, and a seeded schedule of faults (partitions, an isolated
// leader, one-way links, kill -9 and restart, SIGSTOP/SIGCONT pauses, clock jumps). At the end every fault is
// healed, the mailboxes are drained, and the history is checked against the contract
// (contract.ts). The schedule comes from the seed; which node is the leader when a fault
// "isolate the leader" starts depends on the run, so a replay repeats the schedule, not every
// interleaving.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type FerryClient } from "../../src/client/index.js";
import { FerryError } from "../../src/protocol/errors.js";
import { sleep, TestCluster } from "../e2e/harness.js";
import { waitFor } from "../e2e/tools.js";
import { checkContract, type DeliveryRecord, type History, type SendRecord, type StoredItem } from "./contract.js";
import { type CutMode, LinkProxy } from "./proxy.js";

export interface ChaosOptions {
  seed: number;
  faultMs: number; // how long faults are injected
  log: (line: string) => void;
}

export interface ChaosReport {
  seed: number;
  schedule: string[];
  problems: string[];
  acknowledged: number;
  delivered: number;
  sendErrors: number;
  receiveErrors: number;
  dump: string;
}

const MAILBOXES = ["chaos-a", "chaos-b"];
const AUDIT = "chaos-audit";
const PRODUCERS = 2;
const SENDS_IN_FLIGHT_PER_PRODUCER = 4;
const VISIBILITY_MS = 2_000;
const NODE_IDS = [1, 2, 3];

// mulberry32: a small seeded generator, enough for a fault schedule.
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Fault =
  | { kind: "isolate"; node: number | "leader"; mode: CutMode; ms: number }
  | { kind: "one-way"; from: number | "leader"; to: number | "other"; mode: CutMode; ms: number }
  | { kind: "kill"; node: number | "leader"; downMs: number }
  | { kind: "pause"; node: number | "leader"; ms: number }
  | { kind: "clock"; node: number | "leader"; jumpMs: number; ms: number }
  | { kind: "calm"; ms: number };

export function makeSchedule(seed: number, faultMs: number): Fault[] {
  const next = random(seed);
  const pick = <T>(items: T[]): T => items[Math.floor(next() * items.length)]!;
  const duration = (min: number, max: number) => Math.round(min + next() * (max - min));
  const target = (): number | "leader" => (next() < 0.5 ? "leader" : pick(NODE_IDS));
  const faults: Fault[] = [];
  let total = 0;
  while (total < faultMs) {
    const roll = next();
    let fault: Fault;
    if (roll < 0.25) fault = { kind: "isolate", node: target(), mode: next() < 0.5 ? "reset" : "blackhole", ms: duration(1_000, 3_500) };
    else if (roll < 0.4) fault = { kind: "one-way", from: target(), to: next() < 0.5 ? "other" : pick(NODE_IDS), mode: next() < 0.5 ? "reset" : "blackhole", ms: duration(1_000, 3_500) };
    else if (roll < 0.65) fault = { kind: "kill", node: target(), downMs: duration(300, 2_500) };
    else if (roll < 0.8) fault = { kind: "pause", node: target(), ms: duration(500, 3_000) };
    else if (roll < 0.9) fault = { kind: "clock", node: target(), jumpMs: (next() < 0.5 ? -1 : 1) * duration(300, 3_000), ms: duration(1_500, 4_000) };
    else fault = { kind: "calm", ms: duration(500, 1_500) };
    faults.push(fault);
    total += ("ms" in fault ? fault.ms : fault.downMs) + 700;
  }
  return faults;
}

function describeFault(fault: Fault): string {
  switch (fault.kind) {
    case "isolate":
      return `isolate ${fault.node} (${fault.mode}) for ${fault.ms} ms`;
    case "one-way":
      return `cut ${fault.from} -> ${fault.to} (${fault.mode}) for ${fault.ms} ms`;
    case "kill":
      return `kill -9 ${fault.node}, restart after ${fault.downMs} ms`;
    case "pause":
      return `SIGSTOP ${fault.node} for ${fault.ms} ms`;
    case "clock":
      return `clock of ${fault.node} jumps ${fault.jumpMs > 0 ? "+" : ""}${fault.jumpMs} ms for ${fault.ms} ms`;
    case "calm":
      return `calm for ${fault.ms} ms`;
  }
}

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const { seed, log } = options;
  const schedule = makeSchedule(seed, options.faultMs);
  const proxies = new Map<string, LinkProxy>();
  // Filled in below; the proxies resolve their target lazily.
  let cluster: TestCluster | undefined;
  for (const from of NODE_IDS) {
    for (const to of NODE_IDS) {
      if (from === to) continue;
      proxies.set(`${from}>${to}`, await LinkProxy.start(() => cluster!.nodes.get(to)!.peer));
    }
  }
  cluster = new TestCluster({
    nodes: 3,
    peerAddressFor: (from, to) => proxies.get(`${from}>${to}`)!.address,
    extraArgs: ["--snapshot-entries", "400", "--snapshot-catch-up-entries", "50"],
    nodeEnv: (id) => ({ FERRY_CLOCK_FILE: clockFile(id) }),
  });
  const clockFile = (id: number) => join(cluster!.root, `clock-offset-${id}`);
  for (const id of NODE_IDS) writeFileSync(clockFile(id), "0");
  const paused = new Set<number>();
  const clients: FerryClient[] = [];
  const history: History = { acknowledged: [], attempted: new Set(), deliveries: new Map(), audit: new Map() };
  let sendErrors = 0;
  let receiveErrors = 0;
  try {
    await cluster.start();
    // A node that exits other than by our SIGKILL failed by itself (a fatal error): a bug.
    const crashes: string[] = [];
    const watch = (id: number) =>
      cluster!.nodes.get(id)!.child?.once("exit", (code, signal) => {
        if (signal !== "SIGKILL") crashes.push(`node ${id} exited by itself (code ${code}, signal ${signal})`);
      });
    const respawn = (id: number) => {
      cluster!.spawn(id);
      watch(id);
    };
    for (const id of NODE_IDS) watch(id);
    const seeds = cluster.seeds();
    const open = async (name: string, timeoutMs: number) => {
      const client = await connect({ seeds, name, timeoutMs, attemptTimeoutMs: 1_000, reconnectMaxMs: 500 });
      clients.push(client);
      return client;
    };

    // Producers: each message goes to one consumed mailbox and to the audit mailbox (one
    // message, atomically in both). A failed send is retried with the same id until it is
    // acknowledged: the retries are what the dedupe must absorb.
    let producing = true;
    const producer = async (index: number) => {
      const client = await open(`producer-${index}`, 8_000);
      const pick = random(seed * 31 + index);
      let sequence = 0;
      const lane = async () => {
        while (producing) {
          const id = `p${index}-${sequence++}`;
          const mailbox = MAILBOXES[Math.floor(pick() * MAILBOXES.length)]!;
          history.attempted.add(id);
          for (;;) {
            try {
              const reply = await client.send([mailbox, AUDIT], id, { id });
              history.acknowledged.push({ id, mailbox, timestamp: reply.timestamp } satisfies SendRecord);
              break;
            } catch (error) {
              sendErrors++;
              if (error instanceof FerryError && !error.retryable) throw error;
              await sleep(100);
            }
          }
        }
      };
      await Promise.all(Array.from({ length: SENDS_IN_FLIGHT_PER_PRODUCER }, lane));
    };

    // One consumer per mailbox, so its receives are sequential and their order is the order the
    // cluster leased in. Acks may fail; the message then comes back (at-least-once). The second
    // mailbox's consumer sends each batch's acks on its next RECEIVE (ReceiveOptions.ack), as
    // consume() does; the first's go in an ACK of their own.
    let consuming = true;
    const consumer = async (mailbox: string, acksRide: boolean) => {
      const client = await open(`consumer-${mailbox}`, 5_000);
      const records: DeliveryRecord[] = [];
      history.deliveries.set(mailbox, records);
      let acks: string[] = [];
      while (consuming) {
        let batch: Awaited<ReturnType<FerryClient["receive"]>>;
        try {
          const options = { max: 50, waitMs: 300, visibilityMs: VISIBILITY_MS, ...(acks.length > 0 ? { ack: acks } : {}) };
          acks = []; // lost with the RECEIVE if it fails: those messages come back
          batch = (await client.receiveBatch(mailbox, options)).messages;
        } catch (error) {
          receiveErrors++;
          if (error instanceof FerryError && !error.retryable && error.code !== "TIMEOUT") throw error;
          await sleep(100);
          continue;
        }
        for (const message of batch) records.push({ id: message.id, mailbox, timestamp: message.timestamp, deliveries: message.deliveries });
        if (batch.length === 0) continue;
        if (acksRide) {
          acks = batch.map((m) => m.id);
          continue;
        }
        await client
          .ack(
            mailbox,
            batch.map((m) => m.id),
          )
          .catch(() => {
            receiveErrors++;
          });
      }
      if (acks.length > 0) await client.ack(mailbox, acks).catch(() => receiveErrors++);
    };

    const workers = [...Array.from({ length: PRODUCERS }, (_, i) => producer(i)), ...MAILBOXES.map((mailbox, i) => consumer(mailbox, i % 2 === 1))];
    const producers = workers.slice(0, PRODUCERS);
    const consumers = workers.slice(PRODUCERS);
    // A worker that throws (a non-retryable error) ends the run with that error.
    const failed = Promise.race(workers.map((w) => w.then(() => new Promise<never>(() => {}))));
    failed.catch(() => {}); // observed through the races below

    const leaderNow = async (): Promise<number> => cluster!.waitForLeader(10_000).catch(() => NODE_IDS[0]!);
    const resolveNode = async (node: number | "leader") => (node === "leader" ? leaderNow() : node);
    const setLinks = (cut: (from: number, to: number) => boolean, mode: CutMode | undefined) => {
      for (const from of NODE_IDS) {
        for (const to of NODE_IDS) {
          if (from === to || !cut(from, to)) continue;
          const proxy = proxies.get(`${from}>${to}`)!;
          if (mode) proxy.cut(mode);
          else proxy.heal();
        }
      }
    };
    const runFault = async (fault: Fault) => {
      switch (fault.kind) {
        case "isolate": {
          const node = await resolveNode(fault.node);
          log(`  isolate node ${node} (${fault.mode})`);
          const touches = (from: number, to: number) => from === node || to === node;
          setLinks(touches, fault.mode);
          await sleep(fault.ms);
          setLinks(touches, undefined);
          return;
        }
        case "one-way": {
          const from = await resolveNode(fault.from);
          const to = fault.to === "other" || fault.to === from ? NODE_IDS.find((id) => id !== from)! : fault.to;
          log(`  cut ${from} -> ${to} (${fault.mode})`);
          const link = (a: number, b: number) => a === from && b === to;
          setLinks(link, fault.mode);
          await sleep(fault.ms);
          setLinks(link, undefined);
          return;
        }
        case "kill": {
          const node = await resolveNode(fault.node);
          log(`  kill -9 node ${node}`);
          paused.delete(node);
          await cluster!.kill(node, "SIGKILL");
          await sleep(fault.downMs);
          // An overlapping fault may have restarted it already: never two processes on one dir.
          if (!cluster!.nodes.get(node)!.child) respawn(node);
          return;
        }
        case "pause": {
          const node = await resolveNode(fault.node);
          const child = cluster!.nodes.get(node)!.child;
          if (!child) return;
          log(`  SIGSTOP node ${node}`);
          paused.add(node);
          child.kill("SIGSTOP");
          await sleep(fault.ms);
          child.kill("SIGCONT");
          paused.delete(node);
          return;
        }
        case "clock": {
          const node = await resolveNode(fault.node);
          log(`  clock of node ${node} jumps ${fault.jumpMs} ms`);
          writeFileSync(clockFile(node), String(fault.jumpMs));
          await sleep(fault.ms);
          writeFileSync(clockFile(node), "0");
          return;
        }
        case "calm":
          await sleep(fault.ms);
      }
    };

    await Promise.race([
      (async () => {
        // About one fault in four overlaps the next one (two at a time at most), so faults also
        // combine: a node down while another is cut off, a pause during a partition.
        const overlapping = random(seed ^ 0x5bd1e995);
        let background: Promise<void> | undefined;
        for (const fault of schedule) {
          log(describeFault(fault));
          if (!background && overlapping() < 0.25) {
            background = runFault(fault).finally(() => {
              background = undefined;
            });
          } else {
            await runFault(fault);
          }
          await sleep(700);
        }
        await background;
      })(),
      failed,
    ]);

    // Heal everything, let the cluster settle, stop producing, drain.
    log("heal");
    for (const id of NODE_IDS) writeFileSync(clockFile(id), "0");
    for (const proxy of proxies.values()) proxy.heal();
    for (const node of cluster.nodes.values()) node.child?.kill("SIGCONT");
    for (const node of cluster.nodes.values()) if (!node.child) respawn(node.id);
    await cluster.waitForLeader(30_000);
    await cluster.waitAllKnowLeader(30_000);
    producing = false;
    await Promise.race([Promise.all(producers), failed]);
    log(`producers done: ${history.acknowledged.length} acknowledged, ${sendErrors} send errors`);
    const checker = await open("checker", 10_000);
    await waitFor(
      "the consumers to drain every mailbox",
      async () => {
        for (const mailbox of MAILBOXES) if ((await retrying(() => checker.list(mailbox, { limit: 1 }))).items.length > 0) return false;
        return true;
      },
      60_000,
      () => cluster!.dump(),
    );
    consuming = false;
    await Promise.race([Promise.all(consumers), failed]);
    // Dead letters (a message released past its maximum deliveries) count as delivered there.
    for (const mailbox of MAILBOXES) {
      const records: DeliveryRecord[] = [];
      for (;;) {
        const batch = await retrying(() => checker.receive(`${mailbox}:dlq`, { max: 500 }));
        if (batch.length === 0) break;
        for (const m of batch) records.push({ id: m.id, mailbox: `${mailbox}:dlq`, timestamp: m.timestamp, deliveries: m.deliveries });
        await retrying(() =>
          checker.ack(
            `${mailbox}:dlq`,
            batch.map((m) => m.id),
          ),
        );
      }
      if (records.length > 0) history.deliveries.set(`${mailbox}:dlq`, records);
    }
    // Every node's own linearizable view of the audit mailbox.
    for (const node of cluster.nodes.values()) {
      const reader = await connect({ seeds: [node.client], timeoutMs: 20_000 });
      clients.push(reader);
      history.audit.set(node.id, await retrying(() => listAll(reader, AUDIT)));
    }
    const problems = checkContract(history);
    problems.push(...crashes);
    let delivered = 0;
    for (const records of history.deliveries.values()) delivered += records.length;
    return {
      seed,
      schedule: schedule.map(describeFault),
      problems,
      acknowledged: history.acknowledged.length,
      delivered,
      sendErrors,
      receiveErrors,
      dump: cluster.dump(),
    };
  } catch (error) {
    // Whatever went wrong, the nodes' logs are what explains it.
    (error as Error).message += `\nseed ${seed}; schedule:\n${schedule.map(describeFault).join("\n")}\n${cluster.dump()}`;
    throw error;
  } finally {
    for (const node of cluster.nodes.values()) node.child?.kill("SIGCONT");
    await Promise.all(clients.map((client) => client.close()));
    await cluster.stop();
    await Promise.all([...proxies.values()].map((proxy) => proxy.close()));
  }
}

// The end of a run has no faults, but a leader elected during the heal may still move once:
// retryable errors get a few more tries.
async function retrying<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof FerryError && error.retryable) || attempt >= 5) throw error;
      await sleep(500);
    }
  }
}

async function listAll(client: FerryClient, mailbox: string): Promise<StoredItem[]> {
  const items: StoredItem[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await client.list(mailbox, { limit: 1000, ...(cursor === undefined ? {} : { cursor }) });
    for (const item of page.items) items.push({ id: item.id, timestamp: item.timestamp });
    if (page.next === undefined) return items;
    cursor = page.next;
  }
}
