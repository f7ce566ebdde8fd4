// Micro-benchmark of Broker.apply on LmdbKv: the CPU a replica spends applying entries.
//
//   npm run bench:apply
//   npm run bench:apply -- --sends 200000 --baseline /tmp/ferry-base/src
//
// Scenarios (100 commands per entry, 256-byte bodies, 10 entries per event-loop turn so the
// store group-commits as in a node): SEND with client ids (time-ordered UUIDv7, as the client library
// sends by default) into one mailbox and round-robin over 1000 mailboxes; SEND with assigned ids into one
// mailbox; RECEIVE of 100 messages per command then ACK of 100 ids per command (client ids); the
// steady-state lifecycle of one mailbox (SEND, RECEIVE, ACK, dedupe sweep with a 1 s window).
// Two reference rows without the broker: the state store's own floor, LmdbKv's put of each
// message record (the broker's keys and record encoding) and its delete in key order, in entries
// of 100 records and the same group commits: what SEND and ACK cannot cost less than per record.
// Commands are decoded from their binary encoding outside the measured part; the measured part
// is apply plus the group commits. Rates are per CPU second of the process (all threads, through
// process.cpuUsage()) as well as per wall second: the machine is shared, CPU time is the figure
// that compares. `--baseline <dir>` runs every scenario also against the broker in <dir>
// (a copy of another version's src/), interleaved, so both versions see the same conditions.
// Prints a table and writes bench/results/apply-<date and time>.json.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type * as BrokerModule from "../src/broker/broker.js";
import type { BrokerCommand } from "../src/broker/broker.js";
import { uuidv7 } from "../src/client/ids.js";
import type { ReceiveReply } from "../src/protocol/api.js";
import type * as RecordsModule from "../src/broker/records.js";
import type * as LmdbModule from "../src/storage/kv-lmdb.js";
import { resultPath } from "./lib/results.js";

const { values: options } = parseArgs({
  options: {
    sends: { type: "string", default: "200000" },
    batch: { type: "string", default: "100" },
    "body-bytes": { type: "string", default: "256" },
    "entries-per-turn": { type: "string", default: "10" },
    rounds: { type: "string", default: "1" },
    only: { type: "string" },
    baseline: { type: "string" },
    dir: { type: "string", default: join(tmpdir(), "ferry-bench-apply") },
  },
});
const SENDS = Number(options.sends);
const BATCH = Number(options.batch);
const BODY_BYTES = Number(options["body-bytes"]);
const ENTRIES_PER_TURN = Number(options["entries-per-turn"]);
const ROUNDS = Number(options.rounds);
const RECEIVE_MESSAGES_PER_COMMAND = 100;
const RECEIVE_COMMANDS_PER_ENTRY = 10;
const STEP_MS = 1;

interface Version {
  name: string;
  broker: typeof BrokerModule;
  records: typeof RecordsModule;
  lmdb: typeof LmdbModule;
}

async function loadVersion(name: string, srcDir: string): Promise<Version> {
  const broker = (await import(join(srcDir, "broker", "broker.ts"))) as typeof BrokerModule;
  const records = (await import(join(srcDir, "broker", "records.ts"))) as typeof RecordsModule;
  const lmdb = (await import(join(srcDir, "storage", "kv-lmdb.ts"))) as typeof LmdbModule;
  return { name, broker, records, lmdb };
}

interface Measure {
  operations: number;
  wallMs: number;
  cpuMs: number;
}

const cpuMs = (): number => {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
};
const nextTurn = (): Promise<void> => new Promise((done) => setImmediate(done));

class Run {
  index = 0;
  nowMs = 1_700_000_000_000;
  readonly measure: Measure = { operations: 0, wallMs: 0, cpuMs: 0 };
  // Every entry applied, in order, when recording (a replica replays them).
  log: Array<{ data: Uint8Array; operations: number }> | undefined;
  constructor(
    readonly version: Version,
    readonly broker: BrokerModule.Broker,
    readonly replies = true, // false: as a follower applies (no request waits for the results)
  ) {}

  // Applies one entry (decoded beforehand) and counts its CPU and wall time.
  async apply(data: Uint8Array, operations: number): Promise<BrokerModule.BrokerResult[]> {
    this.log?.push({ data, operations });
    const commands = this.version.broker.decodeCommands(data);
    // A leader's RECEIVEs from binary-protocol clients answer with the stored records
    // (src/node/requests.ts); the flag is not in the log, so it is set again here.
    if (this.replies) for (const command of commands) if (command.op === "receive") command.recordReplies = true;
    this.nowMs += STEP_MS;
    const index = ++this.index;
    const timestamp = this.version.broker.msTimestamp(this.nowMs);
    const wallStart = performance.now();
    const cpuStart = cpuMs();
    const results = this.broker.apply(index, timestamp, commands, this.replies);
    if (index % ENTRIES_PER_TURN === 0) await nextTurn(); // the group commit happens here
    this.measure.cpuMs += cpuMs() - cpuStart;
    this.measure.wallMs += performance.now() - wallStart;
    this.measure.operations += operations;
    return results;
  }
}

// replica: the RECEIVE+ACK entries are measured as a follower applies them (without replies),
// replayed from the log of a broker that answered them.
type Scenario = { name: string; mailboxes: number; clientIds: boolean; kind: "send" | "receive-ack" | "lifecycle" | "store-put" | "store-delete"; replica?: boolean };
const SCENARIOS: Scenario[] = [
  { name: "SEND client ids, 1 mailbox", mailboxes: 1, clientIds: true, kind: "send" },
  { name: "SEND client ids, 1000 mailboxes", mailboxes: 1000, clientIds: true, kind: "send" },
  { name: "SEND assigned ids, 1 mailbox", mailboxes: 1, clientIds: false, kind: "send" },
  { name: "RECEIVE+ACK 100/command, client ids, 1 mailbox", mailboxes: 1, clientIds: true, kind: "receive-ack" },
  { name: "RECEIVE+ACK 100/command, client ids, 1 mailbox, follower", mailboxes: 1, clientIds: true, kind: "receive-ack", replica: true },
  { name: "lifecycle SEND+RECEIVE+ACK+dedupe sweep, client ids, 1 mailbox", mailboxes: 1, clientIds: true, kind: "lifecycle" },
  { name: "store floor: put of each message record, no broker", mailboxes: 1, clientIds: true, kind: "store-put" },
  { name: "store floor: delete of each message record in key order, no broker", mailboxes: 1, clientIds: true, kind: "store-delete" },
];
// The lifecycle scenario shortens the dedupe window so that the sweep runs in steady state (at
// 1 ms of entry time per entry, the default 2-minute window would never pass in a run).
const LIFECYCLE_DEDUPE_WINDOW_MS = 1000;

// Steady state of one busy mailbox: an entry of `batch` SENDs, an entry with one RECEIVE of
// those messages, an entry with one ACK of their ids; dedupe records expire and are swept.
async function lifecycle(run: Run, scenario: Scenario, count: number, encode: typeof BrokerModule.encodeCommands): Promise<void> {
  const body = new Uint8Array(BODY_BYTES).fill(120);
  const mailbox = mailboxName(0, scenario.mailboxes);
  for (let done = 0; done < count; done += BATCH) {
    const sends: BrokerCommand[] = [];
    for (let i = 0; i < BATCH; i++) sends.push({ op: "send", sender: "bench", recipients: [mailbox], body, id: uuidv7() });
    await run.apply(encode(sends), 0);
    const [reply] = (await run.apply(encode([{ op: "receive", mailbox, max: BATCH, visibilityMs: 60_000 }]), 0)) as ReceiveReply[];
    if (!reply?.ok || reply.messages.length !== BATCH) throw new Error(`receive failed: ${JSON.stringify(reply)}`);
    const [acked] = await run.apply(encode([{ op: "ack", mailbox, ids: reply.messages.map((m) => m.id) }]), BATCH);
    if ((acked as { count: number }).count !== BATCH) throw new Error(`ack failed: ${JSON.stringify(acked)}`);
  }
}

const mailboxName = (i: number, mailboxes: number): string => `mailbox-${i % mailboxes}`;

async function fill(run: Run, scenario: Scenario, count: number, encode: typeof BrokerModule.encodeCommands): Promise<void> {
  const body = new Uint8Array(BODY_BYTES).fill(120);
  for (let sent = 0; sent < count; ) {
    const commands: BrokerCommand[] = [];
    for (let i = 0; i < BATCH && sent + i < count; i++) {
      const command: BrokerCommand = { op: "send", sender: "bench", recipients: [mailboxName(sent + i, scenario.mailboxes)], body };
      if (scenario.clientIds) command.id = uuidv7();
      commands.push(command);
    }
    const results = await run.apply(encode(commands), commands.length);
    if (results.some((result) => !result.ok)) throw new Error(`send failed: ${JSON.stringify(results.find((r) => !r.ok))}`);
    sent += commands.length;
  }
}

async function receiveAndAck(run: Run, scenario: Scenario, encode: typeof BrokerModule.encodeCommands): Promise<void> {
  let cursor = 0;
  for (;;) {
    const receives: BrokerCommand[] = [];
    for (let i = 0; i < RECEIVE_COMMANDS_PER_ENTRY; i++) {
      receives.push({ op: "receive", mailbox: mailboxName(cursor++, scenario.mailboxes), max: RECEIVE_MESSAGES_PER_COMMAND, visibilityMs: 60_000 });
    }
    const replies = (await run.apply(encode(receives), 0)) as ReceiveReply[];
    const acks: BrokerCommand[] = [];
    let received = 0;
    replies.forEach((reply, i) => {
      if (!reply.ok) throw new Error(`receive failed: ${JSON.stringify(reply)}`);
      received += reply.messages.length;
      if (reply.messages.length > 0) acks.push({ op: "ack", mailbox: (receives[i] as { mailbox: string }).mailbox, ids: reply.messages.map((m) => m.id) });
    });
    if (acks.length === 0) return;
    const counts = await run.apply(encode(acks), received);
    const acked = counts.reduce((sum, count) => sum + (count as { count: number }).count, 0);
    if (acked !== received) throw new Error(`acked ${acked} of ${received}`);
  }
}

// The store floor rows: LmdbKv alone, one transaction per entry of BATCH records, a turn (the group
// commit's timer) every ENTRIES_PER_TURN entries, as Run.apply does; the records are those a
// SEND of a BODY_BYTES body with a client id stores, keyed as the broker keys them.
async function storeFloor(version: Version, kv: LmdbModule.LmdbKv, kind: "store-put" | "store-delete"): Promise<Measure> {
  const { records } = version;
  const mailbox = mailboxName(0, 1);
  const body = new Uint8Array(BODY_BYTES).fill(120);
  const keys: string[] = [];
  const values: Uint8Array[] = [];
  for (let i = 0; i < SENDS; i++) {
    keys.push(records.messageKey(mailbox, records.seqOf(1 + Math.floor(i / BATCH), i % BATCH)));
    const message = { id: uuidv7(), sender: "bench", timestamp: 1n << 50n, hiddenUntilMs: 0, expiresAtMs: 0, headers: undefined, body, senderTime: undefined };
    values.push(records.encodeMessage(message).slice());
  }
  const measure: Measure = { operations: 0, wallMs: 0, cpuMs: 0 };
  const pass = async (measured: boolean, write: (i: number) => void): Promise<void> => {
    for (let start = 0, entry = 1; start < SENDS; start += BATCH, entry++) {
      const end = Math.min(SENDS, start + BATCH);
      const wallStart = performance.now();
      const cpuStart = cpuMs();
      kv.transaction(() => {
        for (let i = start; i < end; i++) write(i);
      });
      if (entry % ENTRIES_PER_TURN === 0) await nextTurn();
      if (!measured) continue;
      measure.cpuMs += cpuMs() - cpuStart;
      measure.wallMs += performance.now() - wallStart;
      measure.operations += end - start;
    }
    await nextTurn();
    kv.commit();
  };
  await pass(kind === "store-put", (i) => kv.put(keys[i]!, values[i]!));
  if (kind === "store-delete") await pass(true, (i) => kv.delete(keys[i]!));
  return measure;
}

interface Row {
  scenario: string;
  version: string;
  operations: number;
  perCpuSecond: number;
  perWallSecond: number;
  cpuUsPerOperation: number;
}

// A follower's apply of the same entries (no replies) into a store of its own: the fill, then the
// measured entries.
async function replay(
  version: Version,
  path: string,
  config: Partial<BrokerModule.BrokerConfig>,
  fillLog: Array<{ data: Uint8Array; operations: number }>,
  measuredLog: Array<{ data: Uint8Array; operations: number }>,
): Promise<Measure> {
  rmSync(path, { recursive: true, force: true });
  mkdirSync(path, { recursive: true });
  const kv = new version.lmdb.LmdbKv({ path });
  const broker = new version.broker.Broker(kv, config);
  const filled = new Run(version, broker, false);
  for (const { data, operations } of fillLog) await filled.apply(data, operations);
  await nextTurn();
  kv.commit();
  const run = new Run(version, broker, false);
  run.index = filled.index;
  run.nowMs = filled.nowMs;
  for (const { data, operations } of measuredLog) await run.apply(data, operations);
  await kv.close();
  rmSync(path, { recursive: true, force: true });
  return run.measure;
}

async function runScenario(version: Version, scenario: Scenario, round: number): Promise<Row> {
  const path = join(options.dir, `${version.name}-${round}-${scenario.mailboxes}-${scenario.kind}-${scenario.clientIds}`);
  rmSync(path, { recursive: true, force: true });
  mkdirSync(path, { recursive: true });
  const kv = new version.lmdb.LmdbKv({ path });
  const config = {
    mailbox: { ...version.broker.MAILBOX_DEFAULTS, messagesMax: 100_000_000, bytesMax: 1e12 },
    ...(scenario.kind === "lifecycle" ? { dedupeWindowMs: LIFECYCLE_DEDUPE_WINDOW_MS } : {}),
  };
  if (scenario.kind === "store-put" || scenario.kind === "store-delete") {
    const measure = await storeFloor(version, kv, scenario.kind);
    await kv.close();
    rmSync(path, { recursive: true, force: true });
    return row(version, scenario, measure);
  }
  const fillRun = new Run(version, new version.broker.Broker(kv, config));
  if (scenario.replica) fillRun.log = [];
  if (scenario.kind === "lifecycle") await lifecycle(fillRun, scenario, SENDS, version.broker.encodeCommands);
  else await fill(fillRun, scenario, SENDS, version.broker.encodeCommands);
  let measure = fillRun.measure;
  if (scenario.kind === "receive-ack") {
    await nextTurn();
    kv.commit();
    const run = new Run(version, fillRun.broker);
    run.index = fillRun.index;
    run.nowMs = fillRun.nowMs;
    if (scenario.replica) run.log = [];
    await receiveAndAck(run, scenario, version.broker.encodeCommands);
    measure = run.measure;
    if (scenario.replica) measure = await replay(version, `${path}-replica`, config, fillRun.log!, run.log!);
  }
  await kv.close();
  rmSync(path, { recursive: true, force: true });
  return row(version, scenario, measure);
}

function row(version: Version, scenario: Scenario, measure: Measure): Row {
  return {
    scenario: scenario.name,
    version: version.name,
    operations: measure.operations,
    perCpuSecond: Math.round(measure.operations / (measure.cpuMs / 1000)),
    perWallSecond: Math.round(measure.operations / (measure.wallMs / 1000)),
    cpuUsPerOperation: Math.round((measure.cpuMs * 1000 * 100) / measure.operations) / 100,
  };
}

async function main(): Promise<void> {
  const versions = [await loadVersion("current", resolve("src"))];
  if (options.baseline !== undefined) versions.unshift(await loadVersion("baseline", resolve(options.baseline)));
  const scenarios = options.only === undefined ? SCENARIOS : SCENARIOS.filter((s) => s.name.toLowerCase().includes(options.only!.toLowerCase()));
  const rows: Row[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const scenario of scenarios) {
      for (const version of versions) {
        const row = await runScenario(version, scenario, round);
        process.stderr.write(`${row.version}: ${row.scenario}: ${row.perCpuSecond}/CPU s, ${row.perWallSecond}/s\n`);
        rows.push(row);
      }
    }
  }
  console.log(`${SENDS} SENDs per scenario, ${BATCH} commands/entry, ${ENTRIES_PER_TURN} entries/turn, ${BODY_BYTES}-byte bodies, LMDB group commit`);
  console.log("SEND rows count SENDs; RECEIVE+ACK and lifecycle rows count messages received and acked; store floor rows count records");
  console.table(rows);
  const file = resultPath("apply-", ".json");
  writeFileSync(
    file,
    `${JSON.stringify({ date: new Date().toISOString(), node: process.version, sends: SENDS, batch: BATCH, entriesPerTurn: ENTRIES_PER_TURN, bodyBytes: BODY_BYTES, rounds: ROUNDS, rows }, null, 2)}\n`,
  );
  console.log(`wrote ${file}`);
}

await main();
