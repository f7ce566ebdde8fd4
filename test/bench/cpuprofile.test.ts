// bench/lib/cpuprofile.ts charges every sample to the part of Ferry whose frame is innermost on
// its stack, limits samples to a time window, and draws a flame graph of the busy samples.
import assert from "node:assert/strict";
import { test } from "node:test";
import { type CpuProfile, flameGraphSvg, partTimes } from "../../bench/lib/cpuprofile.js";

function frame(id: number, functionName: string, url: string, children: number[] = []) {
  return { id, callFrame: { functionName, url, lineNumber: 0 }, children };
}

// root -> processImmediate (node internals) -> apply (broker) -> put (kv-lmdb) -> putSync (lmdb-js)
//                                            -> apply (broker) -> decode (lmdb-js read, no Ferry frame below)
//      -> (garbage collector), (idle), onData (transport)
const PROFILE: CpuProfile = {
  nodes: [
    frame(1, "(root)", "", [2, 7, 8, 9]),
    frame(2, "processImmediate", "node:internal/timers", [3]),
    frame(3, "apply", "file:///work/main/src/broker/broker.ts", [4, 6]),
    frame(4, "put", "file:///work/main/src/storage/kv-lmdb.ts", [5]),
    frame(5, "putSync", "file:///work/main/node_modules/lmdb/write.js"),
    frame(6, "getBinaryFast", "file:///work/main/node_modules/lmdb/read.js"),
    frame(7, "(garbage collector)", ""),
    frame(8, "(idle)", ""),
    frame(9, "onData", "file:///work/main/dist/transport/framed-socket.js"),
  ],
  startTime: 1000,
  endTime: 2000,
  // One sample per 100 µs: at 1100, 1200, ... 1800.
  samples: [5, 5, 6, 3, 7, 8, 8, 9],
  timeDeltas: [100, 100, 100, 100, 100, 100, 100, 100],
};

test("samples are charged to the innermost Ferry frame's part; GC and idle are their own", () => {
  const times = partTimes(PROFILE);
  assert.equal(times.idleUs, 200);
  assert.equal(times.busyUs, 600);
  assert.equal(times.parts.get("LMDB state store"), 200); // lmdb-js under kv-lmdb
  assert.equal(times.parts.get("broker (apply, list)"), 200); // lmdb-js read straight under the broker, and the broker's own
  assert.equal(times.parts.get("garbage collector"), 100);
  assert.equal(times.parts.get("peer transport"), 100);
});

test("a time window keeps only the samples taken inside it", () => {
  const times = partTimes(PROFILE, 1250, 1550); // samples at 1300, 1400, 1500
  assert.equal(times.busyUs, 300);
  assert.equal(times.parts.get("broker (apply, list)"), 200);
  assert.equal(times.parts.get("garbage collector"), 100);
  assert.equal(times.parts.get("LMDB state store"), undefined);
});

test("the flame graph has a title and a box per busy frame, none for idle", () => {
  const svg = flameGraphSvg(PROFILE, "node <1>");
  assert.match(svg, /^<svg [^>]+>\n<title>node &lt;1&gt;<\/title>/);
  assert.match(svg, /<title>putSync lmdb\/write\.js:1: 0 ms \(33\.3% of busy\)/);
  assert.match(svg, /<title>apply broker\/broker\.ts:1: 0 ms \(66\.7% of busy\)/);
  assert.doesNotMatch(svg, /\(idle\)/);
});
