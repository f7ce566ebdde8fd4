// Interleaved A/B of two Ferry checkouts on a dev cluster (3 nodes, fsync always, data in /tmp/abdata):
// 100,000 pipelined SENDs (4 connections x 256 in flight), then a drain (4 consume() loops of 100,
// prefetch 3), per version per round; throughput and the 3 nodes' CPU per message (/proc/<pid>/stat).
// Each checkout needs its dist/ built (npx tsc -p tsconfig.json). Ports 12345-12347 must be free.
//
//   node docs/experiments/ab-cluster.mjs <checkout A> <checkout B> [rounds]
import { execSync, spawn } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
const [rootA, rootB, roundsArg] = process.argv.slice(2);
const rounds = Number(roundsArg ?? 3);
const TICK = 100; // clock ticks per second
const cpuOf = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" "); return (Number(f[11]) + Number(f[12])) / TICK; };
const pidsOn = (ports) => ports.map((p) => Number(execSync(`ss -ltnpH 'sport = :${p}' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2`).toString().trim()));
async function once(root) {
  rmSync("/tmp/abdata", { recursive: true, force: true });
  const child = spawn("node", [`${root}/bin/ferry.js`, "dev", "--data", "/tmp/abdata", "--fsync", "always"], { stdio: "ignore", detached: true });
  const { connect } = await import(`${root}/dist/client/index.js`);
  let client;
  for (let i = 0; i < 100; i++) { try { client = await connect({ seeds: ["127.0.0.1:12345", "127.0.0.1:12346", "127.0.0.1:12347"], window: 256 }); await client.status(); break; } catch { await sleep(200); } }
  const pids = pidsOn([12345, 12346, 12347]);
  // warm-up
  await Promise.all(Array.from({ length: 256 }, (_, i) => client.send("warm", new Uint8Array(256))));
  const senders = [];
  for (let i = 0; i < 4; i++) senders.push(await connect({ seeds: ["127.0.0.1:12345", "127.0.0.1:12346", "127.0.0.1:12347"], window: 256 }));
  const body = new Uint8Array(256).fill(120);
  const N = 100_000;
  let issued = 0;
  const c0 = pids.map(cpuOf); const t0 = performance.now();
  await Promise.all(senders.flatMap((s) => Array.from({ length: 256 }, async () => { while (issued < N) { issued++; await s.send("thr", body); } })));
  const t1 = performance.now(); const c1 = pids.map(cpuOf);
  // drain
  const consumers = [];
  let received = 0;
  const ac = new AbortController();
  const drainer = await connect({ seeds: ["127.0.0.1:12345", "127.0.0.1:12346", "127.0.0.1:12347"], window: 4 * 8 });
  const t2 = performance.now();
  let acked = 0;
  await new Promise((done) => {
    for (let c = 0; c < 4; c++) consumers.push((async () => {
      try {
        for await (const m of drainer.consume("thr", { max: 100, prefetch: 3, waitMs: 1000, autoAck: false, signal: ac.signal })) {
          m.ack().then(() => { if (++acked >= N) done(); }, () => {});
          if (++received >= N) ac.abort();
        }
      } catch {}
    })());
  });
  const t3 = performance.now(); const c3 = pids.map(cpuOf);
  await drainer.close().catch(() => {});
  ac.abort();
  for (const s of senders) await s.close().catch(() => {});
  await client.close().catch(() => {});
  try { process.kill(-child.pid, "SIGTERM"); } catch {}
  await sleep(1500);
  try { process.kill(-child.pid, "SIGKILL"); } catch {}
  const sum = (a, b) => a.reduce((x, v, i) => x + v - b[i], 0);
  return { fill: Math.round(N / ((t1 - t0) / 1000)), fillCpuUs: +(sum(c1, c0) * 1e6 / N).toFixed(1), drain: Math.round(N / ((t3 - t2) / 1000)), drainCpuUs: +(sum(c3, c1) * 1e6 / N).toFixed(1) };
}
const results = { A: [], B: [] };
// The order alternates from round to round: the first cluster after a pause runs slower (an A/A
// run gave 43.3k against 51.6k msg/s for the same checkout).
for (let r = 0; r < rounds; r++) for (const [name, root] of r % 2 === 0 ? [["A", rootA], ["B", rootB]] : [["B", rootB], ["A", rootA]]) { const x = await once(root); results[name].push(x); console.log(name, JSON.stringify(x)); }
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
for (const name of ["A", "B"]) console.log(name, "median", ["fill", "fillCpuUs", "drain", "drainCpuUs"].map((k) => `${k}=${med(results[name].map((x) => x[k]))}`).join(" "));
process.exit(0);
