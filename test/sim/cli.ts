// The simulator's command line (test/sim/main.ts calls runCli): runs a range of seeds and prints
// one replay command and the trace for every seed that breaks a property.
//
//   npm run sim -- --seeds N [--from S] [--nodes K] [--steps M] [--profile P] [--storage memory|disk]
//                  [--bug B] [--verbose] [--trace]
//
// Without --nodes the cluster size cycles 3, 5, 7 with the seed. The last line is always
//   sim: <N> seeds, <V> violations, <C> proposals committed, <F> faults injected
// where V counts the seeds that failed. The exit code is 1 when V > 0, 2 on bad arguments.

import { parseArgs } from "node:util";
import type { PlantedBugs } from "../../src/raft/types.js";
import { PROFILES } from "./profile.js";
import { STORAGE_MODELS, type StorageModel } from "./sim-disk.js";
import { runSimulation, type SimulationOptions, type SimulationResult, type SimulationStats } from "./simulation.js";

export const DEFAULT_STEPS = 1200;
const NODE_COUNTS = [3, 5, 7];
const TRACE_LINES_SHOWN = 400; // of a failing seed's trace, when several seeds run
const BUG_NAMES = ["commitPreviousTermByCount", "voteBeforePersist", "skipVoteLogCheck", "takeCommittedUnpersisted"] as const;

export interface RunOptions {
  seeds: number;
  from: number;
  nodes: number | undefined;
  steps: number;
  profile: string;
  storage: StorageModel;
  bug: (typeof BUG_NAMES)[number] | undefined;
  verbose: boolean;
  trace: boolean; // print the trace of every seed, passing or not
}

export function nodesForSeed(seed: number, nodes: number | undefined): number {
  return nodes ?? NODE_COUNTS[seed % NODE_COUNTS.length]!;
}

export function simulationOptions(options: RunOptions, seed: number, trace: boolean): SimulationOptions {
  const bugs: PlantedBugs | undefined = options.bug ? { [options.bug]: true } : undefined;
  return {
    seed,
    nodes: nodesForSeed(seed, options.nodes),
    steps: options.steps,
    profile: PROFILES[options.profile]!,
    storage: options.storage,
    ...(bugs ? { bugs } : {}),
    trace,
  };
}

export function replayCommand(options: RunOptions, seed: number): string {
  let command = `npm run sim -- --seeds 1 --from ${seed} --nodes ${nodesForSeed(seed, options.nodes)}`;
  if (options.steps !== DEFAULT_STEPS) command += ` --steps ${options.steps}`;
  if (options.profile !== "default") command += ` --profile ${options.profile}`;
  if (options.storage !== "memory") command += ` --storage ${options.storage}`;
  if (options.bug) command += ` --bug ${options.bug}`;
  return command;
}

function parseOptions(argv: string[]): RunOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      seeds: { type: "string", default: "100" },
      from: { type: "string", default: "1" },
      nodes: { type: "string" },
      steps: { type: "string", default: String(DEFAULT_STEPS) },
      profile: { type: "string", default: "default" },
      storage: { type: "string", default: "memory" },
      bug: { type: "string" },
      verbose: { type: "boolean", default: false },
      trace: { type: "boolean", default: false },
    },
    strict: true,
  });
  const integer = (name: string, text: string, min: number): number => {
    const value = Number(text);
    if (!Number.isSafeInteger(value) || value < min) throw new Error(`--${name} must be an integer >= ${min}, got '${text}'`);
    return value;
  };
  const nodes = values.nodes === undefined ? undefined : integer("nodes", values.nodes, 1);
  if (nodes !== undefined && !NODE_COUNTS.includes(nodes)) throw new Error(`--nodes must be 3, 5 or 7, got ${nodes}`);
  if (!(values.profile in PROFILES)) throw new Error(`--profile must be one of ${Object.keys(PROFILES).join(", ")}`);
  const storage = values.storage as StorageModel;
  if (!STORAGE_MODELS.includes(storage)) throw new Error(`--storage must be one of ${STORAGE_MODELS.join(", ")}`);
  const bug = values.bug as RunOptions["bug"];
  if (bug !== undefined && !BUG_NAMES.includes(bug)) throw new Error(`--bug must be one of ${BUG_NAMES.join(", ")}`);
  return {
    seeds: integer("seeds", values.seeds, 1),
    from: integer("from", values.from, 0),
    nodes,
    steps: integer("steps", values.steps, 1),
    profile: values.profile,
    storage,
    bug,
    verbose: values.verbose,
    trace: values.trace,
  };
}

type Print = (line: string) => void;

function describeStats(stats: SimulationStats): string {
  return Object.entries(stats)
    .map(([name, value]) => `${name}=${value}`)
    .join(" ");
}

async function printFailure(options: RunOptions, result: SimulationResult, print: Print): Promise<void> {
  print(`\nFAIL seed ${result.seed} (${result.nodes} nodes):`);
  for (const violation of result.violations) print(`  ${violation}`);
  print(`replay: ${replayCommand(options, result.seed)}`);
  const traced = await runSimulation(simulationOptions(options, result.seed, true));
  if (traced.violations.join("\n") !== result.violations.join("\n")) {
    print("WARNING: the traced rerun did not reproduce the same violations (the run is not deterministic)");
  }
  const lines = traced.trace;
  const shown = options.verbose || options.seeds === 1 ? lines : lines.slice(-TRACE_LINES_SHOWN);
  print(
    shown.length < lines.length
      ? `trace (last ${shown.length} of ${lines.length} lines; --verbose or --seeds 1 shows all):`
      : `trace (${lines.length} lines):`,
  );
  for (const line of shown) print(line);
}

// Runs the seeds argv asks for; returns the process exit code.
export async function runCli(argv: string[], print: Print = (line) => console.log(line)): Promise<number> {
  let options: RunOptions;
  try {
    options = parseOptions(argv);
  } catch (error) {
    print(`sim: ${(error as Error).message}`);
    return 2;
  }
  const started = process.hrtime.bigint();
  const cpuStarted = process.cpuUsage();
  let failed = 0;
  let committed = 0;
  let faults = 0;
  const totals: Record<string, number> = {};
  for (let seed = options.from; seed < options.from + options.seeds; seed++) {
    const result = await runSimulation(simulationOptions(options, seed, options.trace));
    if (options.trace) for (const line of result.trace) print(line);
    committed += result.committedProposals;
    faults += result.faultsInjected;
    for (const [name, value] of Object.entries(result.stats)) totals[name] = (totals[name] ?? 0) + value;
    if (options.verbose) {
      print(
        `seed ${seed}: ${result.nodes} nodes, ${result.steps} steps, ${result.committedProposals} committed, ` +
          `${result.faultsInjected} faults, ${result.violations.length === 0 ? "ok" : "FAIL"}`,
      );
    }
    if (result.violations.length > 0) {
      failed++;
      await printFailure(options, result, print);
    }
  }
  print(`sim: totals ${describeStats(totals as unknown as SimulationStats)}`);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuStarted);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  print(
    `sim: ${seconds.toFixed(1)} s wall, ${cpuSeconds.toFixed(1)} s cpu, ${(options.seeds / cpuSeconds).toFixed(1)} seeds per cpu-second`,
  );
  print(`sim: ${options.seeds} seeds, ${failed} violations, ${committed} proposals committed, ${faults} faults injected`);
  return failed > 0 ? 1 : 0;
}
