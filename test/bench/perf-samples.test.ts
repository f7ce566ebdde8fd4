import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { countSamples, kindOf, parseSample, topSymbols } from "../../bench/lib/perf-samples.js";

// Lines as `perf script -F pid,tid,time,ip,sym,dso` prints them.
const LINES = [
  "20209/20209 80259.100000:      7fa7461f0b1f JS:*receive file:///work/main/dist/broker/broker.js:862:12 (/tmp/perf-20209.map)",
  "20209/20209 80259.100100:      7fa74605f870 JS:^Readable.push node:internal/streams/readable:387:35 (/tmp/perf-20209.map)",
  "20209/20209 80259.100200:      7fa74605f871 JS:~lazy file:///work/main/dist/node/node.js:10:1 (/tmp/perf-20209.map)",
  "20209/20209 80259.100300:           14c5937 Builtins_CallFunction_ReceiverIsNullOrUndefined (/usr/bin/node)",
  "20209/20218 80259.100400:           1f00000 v8::internal::Scavenger::ScavengeObject<v8::internal::FullHeapObjectSlot> (/usr/bin/node)",
  "20209/20219 80259.100500:           1f00001 v8::internal::compiler::GraphReducer::ReduceTop (/usr/bin/node)",
  "20209/20209 80259.100600:           1f00002 v8::internal::String::ComputeAndSetRawHash (/usr/bin/node)",
  "20209/20209 80259.100700:      7f0000000001 mdb_page_malloc (/work/main/node_modules/@lmdb/lmdb-linux-x64/node.abi115.glibc.node)",
  "20209/20209 80259.100800:      7f0000000002 __memmove_avx512_unaligned_erms (/usr/lib/x86_64-linux-gnu/libc.so.6)",
  "20209/20209 80259.100900:  ffffffff815fabb1 copy_folio_from_iter_atomic ([kernel.kallsyms])",
  "20210/20210 80259.101000:      7fa7461f0b1f JS:*receive file:///work/main/dist/broker/broker.js:862:12 (/tmp/perf-20210.map)",
  "    0/0     80259.101100:  ffffffff8225f42b pv_native_safe_halt ([kernel.kallsyms])",
  "    0/0     80259.101200:  ffffffff8225f42b pv_native_safe_halt ([kernel.kallsyms])",
  "  777/777   80259.101300:  ffffffff8225f42c some_other_process ([kernel.kallsyms])",
  "20209/20209 80260.500000:      7fa7461f0b1f JS:*receive file:///work/main/dist/broker/broker.js:862:12 (/tmp/perf-20209.map)",
  "20209/20209 ", // a sample line perf could not name: not counted
  "",
];

describe("perf samples", () => {
  it("reads pid, tid, time, symbol and object of a line", () => {
    assert.deepEqual(parseSample(LINES[0]!), {
      pid: 20209,
      tid: 20209,
      seconds: 80259.1,
      symbol: "JS:*receive file:///work/main/dist/broker/broker.js:862:12",
      dso: "/tmp/perf-20209.map",
    });
    assert.equal(parseSample(LINES[15]!), undefined);
    assert.equal(parseSample(""), undefined);
  });

  it("sorts code by kind: the JS tiers, builtins, GC, compiler, runtime, LMDB, libc, kernel", () => {
    const kinds = LINES.slice(0, 10).map((line) => kindOf(parseSample(line)!));
    assert.deepEqual(kinds, [
      "JS, optimized (TurboFan)",
      "JS, baseline (Sparkplug)",
      "JS, interpreted",
      "V8 builtins",
      "garbage collector",
      "V8 compiler",
      "V8 and Node runtime",
      "LMDB",
      "libc (memcpy, malloc)",
      "kernel",
    ]);
  });

  it("counts by process (others: pids not named), main thread against other threads, and idle (pid 0)", () => {
    const names = new Map([
      [20209, "leader"],
      [20210, "follower"],
    ]);
    const counts = countSamples(LINES, (pid) => names.get(pid));
    assert.equal(counts.total, 15);
    assert.equal(counts.idle, 2);
    const leader = counts.groups.get("leader")!;
    assert.equal(leader.main, 9);
    assert.equal(leader.otherThreads, 2);
    assert.equal(leader.kinds.get("JS, optimized (TurboFan)"), 2);
    assert.equal(counts.groups.get("follower")!.main, 1);
    assert.equal(counts.groups.get("others")!.main, 1);
    // The same function counts once whatever its path; the busiest first.
    assert.deepEqual(topSymbols(leader, 1), [["JS:*receive broker/broker.js:862:12", 2]]);
  });

  it("counts only the samples within the phase's span", () => {
    const counts = countSamples(LINES, () => "node", 80259.1005, 80259.1012);
    assert.equal(counts.total, 8); // 80259.1006 ... 80259.1012, the later sample at 80260.5 left out
    assert.equal(counts.idle, 2);
    assert.equal(counts.groups.get("node")!.main + counts.groups.get("node")!.otherThreads, 6);
  });
});
