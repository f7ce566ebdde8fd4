// Where the one-in-flight SEND tail comes from, against a running cluster (`npm start`, or any
// cluster whose nodes serve HTTP): sequential SENDs through the client library, then each node's
// WAL persist latency over exactly those sends, from the ferry_wal_persist_seconds histogram of
// its /metrics (read before and after, so other traffic before the run does not count).
//
//   npm start &                      # or any cluster
//   npm run bench:tail               # 10,000 sends after 5,000 warm-up (a fresh cluster is cold for ~4,000: docs/bench.md "Session 20")
//   npm run bench:tail -- --sends 20000 --seeds 127.0.0.1:12345 --http 127.0.0.1:13345,127.0.0.1:13346,127.0.0.1:13347
//
// What it showed here (docs/bench.md, session 5): 2-4% of every node's persists take over 1 ms
// and 1-2% over 2 ms, although the O_DSYNC write itself takes ~0.2 ms: the wake-ups of the pool
// thread and the main thread on this 2-vCPU machine. Prints a table and writes
// bench/results/tail-<date and time>.json.
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { connect } from "../src/client/index.js";
import { type HistogramReading, readHistogram, sharesAbove } from "./lib/prometheus.js";
import { resultPath } from "./lib/results.js";
import { Samples } from "./lib/samples.js";

const { values: options } = parseArgs({
  options: {
    seeds: { type: "string", default: "127.0.0.1:12345,127.0.0.1:12346,127.0.0.1:12347" },
    http: { type: "string", default: "127.0.0.1:13345,127.0.0.1:13346,127.0.0.1:13347" },
    sends: { type: "string", default: "10000" },
    warmup: { type: "string", default: "5000" },
    "body-bytes": { type: "string", default: "256" },
    mailbox: { type: "string", default: "bench-tail" },
  },
});
const SENDS = Number(options.sends);
const WARMUP = Number(options.warmup);
const BODY_BYTES = Number(options["body-bytes"]);
for (const [name, value] of [
  ["sends", SENDS],
  ["warmup", WARMUP],
  ["body-bytes", BODY_BYTES],
] as const) {
  if (!Number.isSafeInteger(value) || value < 0 || (name === "sends" && value === 0)) throw new Error(`--${name} must be a whole number${name === "sends" ? " above 0" : ""}`);
}
const HTTP = options.http.split(",").filter((address) => address.length > 0);
const PERSIST = "ferry_wal_persist_seconds";

async function persistHistogram(address: string): Promise<HistogramReading> {
  const response = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(5_000) });
  if (!response.ok) throw new Error(`${address}/metrics answered ${response.status}`);
  const reading = readHistogram(await response.text(), PERSIST);
  if (reading.size === 0) throw new Error(`${address}/metrics has no ${PERSIST} histogram`);
  return reading;
}

async function histograms(): Promise<HistogramReading[]> {
  return Promise.all(HTTP.map((address) => persistHistogram(address)));
}

const client = await connect({ seeds: options.seeds.split(","), name: "bench-tail" });
const body = new Uint8Array(BODY_BYTES);
for (let i = 0; i < WARMUP; i++) await client.send(options.mailbox, body);
const before = await histograms();
const samples = new Samples();
for (let i = 0; i < SENDS; i++) {
  const startedMs = performance.now();
  await client.send(options.mailbox, body);
  samples.add(performance.now() - startedMs);
}
const after = await histograms();
await client.close();

const latency = samples.summary();
const BOUNDS_SECONDS = [0.0005, 0.001, 0.002, 0.005];
const nodes = HTTP.map((address, index) => {
  const { count, above } = sharesAbove(before[index]!, after[index]!, BOUNDS_SECONDS);
  return { http: address, persists: count, above: above.map(({ boundSeconds, share }) => ({ overMs: boundSeconds * 1000, share })) };
});

console.log(`${SENDS} sequential SENDs (${BODY_BYTES}-byte bodies) after ${WARMUP} warm-up, one in flight`);
console.log(`client latency: p50 ${latency.p50Ms} ms, p90 ${latency.p90Ms}, p99 ${latency.p99Ms}, p99.9 ${latency.p999Ms}, max ${latency.maxMs}`);
console.log("WAL persists of each node over those sends (write + fdatasync, as the node measures it):");
console.table(
  nodes.map((node) => ({
    node: node.http,
    persists: node.persists,
    ...Object.fromEntries(node.above.map(({ overMs, share }) => [`> ${overMs} ms`, `${(share * 100).toFixed(2)}%`])),
  })),
);
const file = resultPath("tail-", ".json");
writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, sends: SENDS, warmup: WARMUP, bodyBytes: BODY_BYTES, latency, nodes }, null, 2)}\n`);
console.log(`wrote ${file}`);
