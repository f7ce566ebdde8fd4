// Broker apply-rate and memory benchmark.
//
//   npm run bench:broker                       LMDB with 1M stored messages, memory KV with 200k
//   npm run bench:broker -- --big              adds the LMDB run with 10M stored messages
//   npm run bench:broker -- --lmdb 2000000 --memory 100000 --batch 100 --mailboxes 1000
//   npm run bench:broker -- --lmdb 10000000 --memory 0     LMDB only (clean RssAnon)
//
// SEND: entries of `batch` SEND commands (256-byte bodies, assigned ids, round-robin over the
// mailboxes), decoded from their binary encoding as a replica would, applied until the store
// holds the target count. RECEIVE+ACK: entries of `batch` RECEIVE commands (10 messages each),
// then entries of `batch` ACK commands for what was received. Memory: JS heap used after a full
// GC and RssAnon from /proc/self/status, with the store full. Prints a table and writes
// bench/results/broker-<date>.json.
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Broker, type BrokerCommand, decodeCommands, encodeCommands, MAILBOX_DEFAULTS, msTimestamp } from "../src/broker/broker.js";
import type { OrderedKv } from "../src/broker/kv.js";
import { MemoryKv } from "../src/broker/kv-memory.js";
import type { ReceiveReply } from "../src/protocol/api.js";
import { LmdbKv } from "../src/storage/kv-lmdb.js";
import { resultPath } from "./lib/results.js";

const { values: options } = parseArgs({
  options: {
    lmdb: { type: "string", default: "1000000" },
    memory: { type: "string", default: "200000" },
    big: { type: "boolean", default: false },
    batch: { type: "string", default: "100" },
    mailboxes: { type: "string", default: "1000" },
    "body-bytes": { type: "string", default: "256" },
    "receive-messages": { type: "string", default: "200000" },
    "entries-per-turn": { type: "string", default: "10" },
    "commit-interval-ms": { type: "string", default: "100" },
    dir: { type: "string", default: join(tmpdir(), "ferry-bench-broker") },
  },
});
const BATCH = Number(options.batch);
let MAILBOXES = Number(options.mailboxes);
const COMMIT_INTERVAL_MS = Number(options["commit-interval-ms"]);
const BODY_BYTES = Number(options["body-bytes"]);
const RECEIVE_MESSAGES = Number(options["receive-messages"]);
const RECEIVE_MAX = 10;
const STEP_MS = 1; // entry timestamps advance 1 ms per entry
// Entries applied per event-loop turn, as a node applies a Ready batch of committed entries; the
// LMDB store commits once per turn (group commit).
const ENTRIES_PER_TURN = Number(options["entries-per-turn"]);
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

interface Row {
  store: string;
  mailboxes: number;
  stored: number;
  sendPerSecond: number;
  sendPerCpuSecond: number;
  receiveAckCommandsPerSecond: number;
  receiveAckMessagesPerSecond: number;
  receiveAckMessagesPerCpuSecond: number;
  heapUsedMB: number;
  rssAnonMB: number;
  diskMB?: number;
  flushMs?: number;
}

function gc(): void {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (collect === undefined) throw new Error("run with node --expose-gc");
  collect();
  collect();
}

function rssAnonMB(): number {
  const match = /RssAnon:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
  return match === null ? Number.NaN : Number(match[1]) / 1024;
}

function memory(): { heapUsedMB: number; rssAnonMB: number } {
  gc();
  return { heapUsedMB: process.memoryUsage().heapUsed / 1024 / 1024, rssAnonMB: rssAnonMB() };
}

const mailboxName = (i: number): string => `mailbox-${i % MAILBOXES}`;

class Driver {
  index = 0;
  nowMs = 1_700_000_000_000;
  constructor(readonly broker: Broker) {}
  apply(data: Uint8Array) {
    this.nowMs += STEP_MS;
    return this.broker.apply(++this.index, msTimestamp(this.nowMs), decodeCommands(data));
  }
}

// Rates are per wall-clock second and per CPU second of this process (all its threads): on a
// shared machine the second says what the code does with a core of its own.
interface Rate {
  perSecond: number;
  perCpuSecond: number;
}

function cpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

async function fill(driver: Driver, count: number, label: string): Promise<Rate> {
  const body = new Uint8Array(BODY_BYTES).fill(120);
  const cpuStart = cpuSeconds();
  let sent = 0;
  let elapsedMs = 0;
  let lastReport = 0;
  while (sent < count) {
    const commands: BrokerCommand[] = [];
    for (let i = 0; i < BATCH && sent + i < count; i++) {
      commands.push({ op: "send", sender: "bench", recipients: [mailboxName(sent + i)], body });
    }
    const data = encodeCommands(commands);
    const started = performance.now();
    const results = driver.apply(data);
    if (driver.index % ENTRIES_PER_TURN === 0) await nextTurn(); // the group commit happens here
    elapsedMs += performance.now() - started;
    if (!results[0]!.ok) throw new Error(`send failed: ${JSON.stringify(results[0])}`);
    sent += commands.length;
    if (sent - lastReport >= 1_000_000) {
      lastReport = sent;
      process.stderr.write(`${label}: ${sent} stored, ${Math.round(sent / (elapsedMs / 1000))} sends/s\n`);
    }
  }
  return { perSecond: sent / (elapsedMs / 1000), perCpuSecond: sent / (cpuSeconds() - cpuStart) };
}

async function receiveAndAck(driver: Driver, messages: number): Promise<{ commands: number; messages: number; messagesPerCpuSecond: number }> {
  const cpuStart = cpuSeconds();
  let received = 0;
  let commands = 0;
  let elapsedMs = 0;
  let cursor = 0;
  while (received < messages) {
    const receives: BrokerCommand[] = [];
    for (let i = 0; i < BATCH; i++) receives.push({ op: "receive", mailbox: mailboxName(cursor++), max: RECEIVE_MAX, visibilityMs: 60_000 });
    const receiveData = encodeCommands(receives);
    let started = performance.now();
    const replies = driver.apply(receiveData) as ReceiveReply[];
    if (driver.index % ENTRIES_PER_TURN === 0) await nextTurn();
    elapsedMs += performance.now() - started;
    const acks: BrokerCommand[] = replies.map((reply, i) => ({
      op: "ack",
      mailbox: (receives[i] as { mailbox: string }).mailbox,
      ids: reply.messages.map((message) => message.id),
    }));
    const nonEmpty = acks.filter((ack) => (ack as { ids: string[] }).ids.length > 0);
    if (nonEmpty.length === 0) break;
    const ackData = encodeCommands(nonEmpty);
    started = performance.now();
    const counts = driver.apply(ackData);
    if (driver.index % ENTRIES_PER_TURN === 0) await nextTurn();
    elapsedMs += performance.now() - started;
    for (const count of counts) received += (count as { count: number }).count;
    commands += receives.length + nonEmpty.length;
  }
  return {
    commands: commands / (elapsedMs / 1000),
    messages: received / (elapsedMs / 1000),
    messagesPerCpuSecond: received / (cpuSeconds() - cpuStart),
  };
}

function directorySizeMB(path: string): number {
  let bytes = 0;
  for (const name of ["data.mdb"]) bytes += statSync(join(path, name)).blocks * 512;
  return bytes / 1024 / 1024;
}

const config = { mailbox: { ...MAILBOX_DEFAULTS, messagesMax: 100_000_000, bytesMax: 1e12 } };

async function runLmdb(stored: number, groupCommit = true): Promise<Row> {
  const path = join(options.dir, `lmdb-${stored}`);
  rmSync(path, { recursive: true, force: true });
  mkdirSync(path, { recursive: true });
  const kv = new LmdbKv({ path, groupCommit, commitIntervalMs: COMMIT_INTERVAL_MS });
  const row = await measure(groupCommit ? `lmdb, commit every ${COMMIT_INTERVAL_MS} ms` : "lmdb, commit per entry", kv, stored);
  const started = performance.now();
  await kv.flushed();
  row.flushMs = Math.round(performance.now() - started);
  row.diskMB = Math.round(directorySizeMB(path));
  await kv.close();
  rmSync(path, { recursive: true, force: true });
  return row;
}

async function measure(store: string, kv: OrderedKv, stored: number): Promise<Row> {
  const driver = new Driver(new Broker(kv, config));
  const sendRate = await fill(driver, stored, store);
  await nextTurn();
  const full = memory();
  const rates = await receiveAndAck(driver, Math.min(RECEIVE_MESSAGES, stored));
  return {
    store,
    mailboxes: MAILBOXES,
    stored,
    sendPerSecond: Math.round(sendRate.perSecond),
    sendPerCpuSecond: Math.round(sendRate.perCpuSecond),
    receiveAckCommandsPerSecond: Math.round(rates.commands),
    receiveAckMessagesPerSecond: Math.round(rates.messages),
    receiveAckMessagesPerCpuSecond: Math.round(rates.messagesPerCpuSecond),
    heapUsedMB: Math.round(full.heapUsedMB),
    rssAnonMB: Math.round(full.rssAnonMB),
  };
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const baseline = memory();
  // --memory 0 skips the memory row, so RssAnon of the LMDB rows is not inflated by freed heap.
  if (Number(options.memory) > 0) rows.push(await measure("memory", new MemoryKv(), Number(options.memory)));
  gc();
  rows.push(await runLmdb(Number(options.lmdb)));
  gc();
  rows.push(await runLmdb(Math.min(100_000, Number(options.lmdb)), false));
  gc();
  const manyMailboxes = MAILBOXES;
  MAILBOXES = 10; // a job-queue shape: few, busy mailboxes
  rows.push(await runLmdb(Number(options.lmdb)));
  MAILBOXES = manyMailboxes;
  if (options.big) {
    gc();
    rows.push(await runLmdb(10_000_000));
  }
  console.log(`batch ${BATCH} commands/entry, ${ENTRIES_PER_TURN} entries/turn, ${BODY_BYTES}-byte bodies, RECEIVE max ${RECEIVE_MAX}`);
  console.log(`baseline before any store: heap ${Math.round(baseline.heapUsedMB)} MB, RssAnon ${Math.round(baseline.rssAnonMB)} MB`);
  console.table(rows);
  const file = resultPath("broker-", `${options.big ? "-big" : ""}${Number(options.memory) > 0 ? "" : "-lmdb"}.json`);
  writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, batch: BATCH, entriesPerTurn: ENTRIES_PER_TURN, commitIntervalMs: COMMIT_INTERVAL_MS, bodyBytes: BODY_BYTES, mailboxes: MAILBOXES, receiveMax: RECEIVE_MAX, baseline, rows }, null, 2)}\n`);
  console.log(`wrote ${file}`);
}

await main();
