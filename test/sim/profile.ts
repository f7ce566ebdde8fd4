// How often each fault and each operation happens in a simulated run.
//
// A profile gives the average rates; every seed then scales each rate by its own random factor
// (seedProfile), so some seeds are calm and others stormy, and a batch of seeds covers both
// without anyone tuning by hand.

import type { NetworkFaults } from "./network.js";
import type { Random } from "./random.js";

export interface FaultProfile {
  network: NetworkFaults;
  partitionPerStep: number; // chance per step of a new partition (replacing the current one)
  isolateLeaderShare: number; // of partitions, this share at least cuts off the leader (others: random kinds)
  healPerStep: number; // chance per step that a partition heals
  crashPerStep: number; // chance per step that a running node crashes
  restartDelayStepsMin: number;
  restartDelayStepsMax: number;
  pausePerStep: number; // chance per step that a node stops ticking and receiving for a while
  pauseStepsMax: number;
  persistDelayStepsMax: number; // a Ready's persist completes 0..this many steps after it starts
  slowPersistProbability: number; // chance of a persist taking up to 10x longer
  // Chance that a node loses power while persisting a Ready that changes its term or vote (the
  // window in which a vote must not have left yet).
  crashDuringPersistProbability: number;
  // Chance that a leader loses power while persisting a Ready that moves its commit index (the
  // crash of Raft's Figure 8, right after a commit).
  crashLeaderDuringPersistProbability: number;
  // Chance that a crash with a persist in flight keeps a prefix of its entries (a torn write).
  tornWriteProbability: number;
  // "disk" storage model: of crashes with a persist in flight not torn, the chance that its write
  // reaches the disk whole but with one bit flipped (recovery must cut it off as a torn tail).
  bitFlipProbability: number;
  clockRateMin: number; // ticks per step; each node gets its own rate in [min, max]
  clockRateMax: number;
  clockChangePerStep: number; // chance per step that one node's clock rate changes (or it jumps)
  clockJumpShare: number; // of clock changes, this share are jumps ahead
  clockJumpTicksMax: number;
  proposalPerStep: number;
  readPerStep: number; // ReadIndex reads
  // Of proposals, this share goes to any node that believes it leads, not the newest leader: a
  // stale leader cut off from the others grows a log suffix that a later leader must overwrite.
  staleLeaderProposalShare: number;
  confChangePerStep: number;
  transferPerStep: number;
  snapshotEntriesMin: number; // a node snapshots and compacts once this many entries are applied
  snapshotEntriesMax: number;
  // The core's flow-control limits; each seed picks one of each. Small ones split catch-up into
  // many appends, which widens the windows in which bugs show.
  maxMessageBytesChoices: number[];
  maxInflightMessagesChoices: number[];
}

export const DEFAULT_PROFILE: FaultProfile = {
  network: {
    dropProbability: 0.03,
    duplicateProbability: 0.02,
    delayStepsMin: 1,
    delayStepsMax: 3,
    reorderProbability: 0.03,
    reorderDelayStepsMax: 12,
  },
  partitionPerStep: 0.006,
  isolateLeaderShare: 0,
  healPerStep: 0.012,
  crashPerStep: 0.004,
  restartDelayStepsMin: 5,
  restartDelayStepsMax: 80,
  pausePerStep: 0.002,
  pauseStepsMax: 40,
  persistDelayStepsMax: 3,
  slowPersistProbability: 0.02,
  crashDuringPersistProbability: 0.01,
  crashLeaderDuringPersistProbability: 0.002,
  tornWriteProbability: 0.3,
  bitFlipProbability: 0.5,
  clockRateMin: 0.6,
  clockRateMax: 1.4,
  clockChangePerStep: 0.003,
  clockJumpShare: 0.3,
  clockJumpTicksMax: 30,
  proposalPerStep: 0.35,
  readPerStep: 0.05,
  staleLeaderProposalShare: 0.15,
  confChangePerStep: 0.006,
  transferPerStep: 0.003,
  snapshotEntriesMin: 8,
  snapshotEntriesMax: 60,
  maxMessageBytesChoices: [64, 512, 65536],
  maxInflightMessagesChoices: [4, 16, 256],
};

// More crashes during slow persists and more leader churn: what the planted bugs need to show.
export const STORMY_PROFILE: FaultProfile = {
  ...DEFAULT_PROFILE,
  network: { ...DEFAULT_PROFILE.network, dropProbability: 0.08, reorderProbability: 0.08 },
  partitionPerStep: 0.02,
  healPerStep: 0.02,
  crashPerStep: 0.02,
  restartDelayStepsMin: 1,
  restartDelayStepsMax: 30,
  persistDelayStepsMax: 6,
  slowPersistProbability: 0.1,
  transferPerStep: 0.01,
};

// For the planted-bug hunt: frequent crashes inside long persists, quick restarts, isolated
// leaders, and replication one entry per message, so that the races the bugs open get hit.
export const HUNT_PROFILE: FaultProfile = {
  ...STORMY_PROFILE,
  // A slow network next to short election timeouts: split votes and leader churn.
  network: { ...STORMY_PROFILE.network, delayStepsMax: 6, reorderProbability: 0.1, reorderDelayStepsMax: 15 },
  crashPerStep: 0.03,
  restartDelayStepsMax: 6,
  persistDelayStepsMax: 8,
  slowPersistProbability: 0,
  crashDuringPersistProbability: 0.2,
  crashLeaderDuringPersistProbability: 0.1,
  partitionPerStep: 0.03,
  isolateLeaderShare: 0.8,
  healPerStep: 0.03,
  proposalPerStep: 0.2,
  staleLeaderProposalShare: 0.8,
  maxMessageBytesChoices: [1],
  maxInflightMessagesChoices: [4, 8],
};

export const PROFILES: Record<string, FaultProfile> = { default: DEFAULT_PROFILE, stormy: STORMY_PROFILE, hunt: HUNT_PROFILE };

// The profile of one seed: each rate scaled by a factor in [0, 2) (so the mean stays the same).
export function seedProfile(base: FaultProfile, random: Random): FaultProfile {
  const scale = (rate: number): number => rate * random.between(0, 2);
  return {
    ...base,
    network: {
      ...base.network,
      dropProbability: scale(base.network.dropProbability),
      duplicateProbability: scale(base.network.duplicateProbability),
      reorderProbability: scale(base.network.reorderProbability),
    },
    partitionPerStep: scale(base.partitionPerStep),
    crashPerStep: scale(base.crashPerStep),
    pausePerStep: scale(base.pausePerStep),
    slowPersistProbability: scale(base.slowPersistProbability),
    crashDuringPersistProbability: scale(base.crashDuringPersistProbability),
    crashLeaderDuringPersistProbability: scale(base.crashLeaderDuringPersistProbability),
    confChangePerStep: scale(base.confChangePerStep),
    transferPerStep: scale(base.transferPerStep),
    persistDelayStepsMax: random.range(0, base.persistDelayStepsMax),
  };
}
