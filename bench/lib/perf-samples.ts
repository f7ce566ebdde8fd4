// What `perf record -a -e cpu-clock` saw, by process and by kind of code: the part of
// `npm run bench:perf` (bench/perf.ts) that reads `perf script -F pid,tid,ip,sym,dso` and needs
// no perf to test.
//
// Why perf beside bench:profile's V8 profiles: V8's sampler stamps a thread's stack when the
// thread next runs, so time a node spends switched out (4 processes on 2 cores) lands on the
// frame it was switched out in, mostly socket and file writes. perf's cpu-clock samples count only
// time on a CPU, every thread and the kernel included, and the samples of swapper (pid 0) are the
// idle CPUs.

// One sample of `perf script -F pid,tid,time,ip,sym,dso` (perf record -k CLOCK_MONOTONIC: the time
// is in seconds on the clock of process.hrtime):
//   "20209/20209 80259.047864:      7fa7461f0b1f JS:*receive file:///…/broker.js:862:12 (/tmp/perf-20209.map)"
const SAMPLE_LINE = /^\s*(\d+)\/(\d+)\s+(\d+\.\d+):\s+([0-9a-f]+)\s+(.*?)\s+\(([^()]*)\)\s*$/;

export interface Sample {
  pid: number;
  tid: number;
  seconds: number;
  symbol: string;
  dso: string;
}

export function parseSample(line: string): Sample | undefined {
  const match = SAMPLE_LINE.exec(line);
  if (match === null) return undefined;
  return { pid: Number(match[1]), tid: Number(match[2]), seconds: Number(match[3]), symbol: match[5]!, dso: match[6]! };
}

// The kinds of code, in the order the table prints them. The JS tiers are those of V8 11 (Node
// 20): --perf-basic-prof names a function "JS:*name" when TurboFan compiled it, "JS:^name" for
// Sparkplug (baseline), "JS:~name" when the interpreter runs it, "JS:+name" for Maglev.
export const KINDS = [
  "JS, optimized (TurboFan)",
  "JS, baseline (Sparkplug)",
  "JS, interpreted",
  "JS, other code",
  "V8 builtins",
  "garbage collector",
  "V8 compiler",
  "V8 and Node runtime",
  "LMDB",
  "other native modules",
  "libc (memcpy, malloc)",
  "kernel",
  "unknown",
] as const;
export type Kind = (typeof KINDS)[number];

const GC_SYMBOL =
  /^(heap::|cppgc::|v8::internal::(Scavenger|ScavengerCollector|ScavengeJob|MarkCompactCollector|MinorMarkCompactCollector|ConcurrentMarking|IncrementalMarking|MarkingVisitor|MarkingVisitorBase|MainMarkingVisitor|MarkingWorklists|Sweeper|ArrayBufferSweeper|Heap|Evacuat|MemoryAllocator|MemoryChunk|PagedSpace|SemiSpace|NewSpace|PagedNewSpace|LargeObjectSpace|RememberedSet|SlotSet|TypedSlot|GCTracer|LocalHeap|Heap_|.*Barrier))/;
const COMPILER_SYMBOL = /^v8::internal::(compiler::|maglev::|baseline::|interpreter::Bytecode|Parser|ParserBase|Scanner|Compiler|OptimizingCompileDispatcher|.*CompilationJob)/;

export function kindOf(sample: Sample): Kind {
  const { symbol, dso } = sample;
  if (dso === "[kernel.kallsyms]" || dso.startsWith("[kernel")) return "kernel";
  if (symbol.startsWith("JS:")) {
    const tier = symbol.charAt(3);
    if (tier === "*") return "JS, optimized (TurboFan)";
    if (tier === "^") return "JS, baseline (Sparkplug)";
    if (tier === "~") return "JS, interpreted";
    return "JS, other code";
  }
  if (dso.includes("/perf-") && dso.endsWith(".map")) return "JS, other code"; // stubs, regexps
  if (symbol.startsWith("Builtins_")) return "V8 builtins";
  if (GC_SYMBOL.test(symbol)) return "garbage collector";
  if (COMPILER_SYMBOL.test(symbol)) return "V8 compiler";
  if (/lmdb/i.test(dso) || symbol.startsWith("mdb_")) return "LMDB";
  if (dso.endsWith(".node")) return "other native modules";
  if (/\/libc\.so|\/libc-|\/libstdc\+\+|\/libgcc|\/libm\.so|\/ld-linux/.test(dso)) return "libc (memcpy, malloc)";
  if (symbol === "[unknown]" || dso === "[unknown]") return "unknown";
  return "V8 and Node runtime";
}

// Samples counted by process group (a name the caller gives each pid; the rest is "others"),
// thread (main: tid === pid) and kind; idle is swapper's (pid 0).
export interface Counts {
  total: number;
  idle: number;
  groups: Map<string, GroupCounts>;
}
export interface GroupCounts {
  main: number;
  otherThreads: number;
  kinds: Map<Kind, number>;
  symbols: Map<string, number>; // main thread and others together
}

export const OTHERS = "others";

// Only the samples taken within [fromSeconds, toSeconds] count (the phase, not perf's start-up).
export function countSamples(lines: Iterable<string>, groupOf: (pid: number) => string | undefined, fromSeconds = 0, toSeconds = Number.POSITIVE_INFINITY): Counts {
  const counts: Counts = { total: 0, idle: 0, groups: new Map() };
  for (const line of lines) {
    const sample = parseSample(line);
    if (sample === undefined || sample.seconds < fromSeconds || sample.seconds > toSeconds) continue;
    counts.total++;
    if (sample.pid === 0) {
      counts.idle++;
      continue;
    }
    const name = groupOf(sample.pid) ?? OTHERS;
    let group = counts.groups.get(name);
    if (group === undefined) {
      group = { main: 0, otherThreads: 0, kinds: new Map(), symbols: new Map() };
      counts.groups.set(name, group);
    }
    if (sample.tid === sample.pid) group.main++;
    else group.otherThreads++;
    const kind = kindOf(sample);
    group.kinds.set(kind, (group.kinds.get(kind) ?? 0) + 1);
    const symbol = symbolName(sample);
    group.symbols.set(symbol, (group.symbols.get(symbol) ?? 0) + 1);
  }
  return counts;
}

// A symbol without the address perf adds to some (`foo+0x12`) and with JS paths shortened to the
// file's last two parts, so that the same function counts once.
function symbolName(sample: Sample): string {
  const symbol = sample.symbol.replace(/\+0x[0-9a-f]+$/, "");
  if (!symbol.startsWith("JS:")) return symbol;
  return symbol.replace(/(file:\/\/)?\/[^ ]*\/([^/ ]+\/[^/ ]+:\d+:\d+)$/, "$2");
}

export function topSymbols(group: GroupCounts, count: number): Array<[string, number]> {
  return [...group.symbols].sort((a, b) => b[1] - a[1]).slice(0, count);
}
