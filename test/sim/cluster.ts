// What the fault injector and the operators see of a running simulation (simulation.ts).

import type { ConfState, NodeId } from "../../src/raft/types.js";
import type { SafetyChecker } from "./checker.js";
import type { SimNetwork } from "./network.js";
import type { FaultProfile } from "./profile.js";
import type { SimNode } from "./sim-node.js";
import type { Trace } from "./trace.js";

// Counters of injected events, reported in SimulationStats.
export interface EventCounters {
  partitions: number;
  crashes: number;
  powerLosses: number;
  pauses: number;
  clockChanges: number; // including jumps
  clockJumps: number;
  tornWrites: number; // crashes that kept a prefix of the persist in flight (disk: tore the write in flight)
  bitFlips: number; // disk: crashes that wrote the write in flight whole, with one bit flipped
  tornTailRecoveries: number; // disk: reopens whose recovery cut off a damaged tail
  transfers: number;
}

export interface Cluster {
  readonly nodes: SimNode[]; // indexed by id - 1
  readonly network: SimNetwork;
  readonly trace: Trace;
  readonly checker: SafetyChecker;
  readonly profile: FaultProfile;
  readonly counters: EventCounters;
  readonly initialVoters: number;
  step(): number;
  leaderNode(): SimNode | undefined; // the running leader with the highest term
  addNode(id: NodeId, conf: ConfState): SimNode; // started at once, or once its disk is open
}
