// The fault injector: partitions (halves, an isolated leader, one-way links, a bridge node),
// crashes with restarts (sometimes keeping a torn prefix of the persist in flight; with the
// "disk" storage model, tearing the write in flight or flipping a bit in it), power loss
// inside a persist, pauses, clock-rate changes and clock jumps, each at the rate of the run's
// profile. It owns the fault stream of randomness.

import type { Ready } from "../../src/raft/types.js";
import type { Cluster } from "./cluster.js";
import type { Random } from "./random.js";
import type { LastWriteFault } from "./sim-disk.js";
import type { SimNode } from "./sim-node.js";

export class FaultInjector {
  private crashesDue: SimNode[] = [];

  constructor(
    private readonly cluster: Cluster,
    readonly random: Random,
  ) {}

  // One chaos step's worth of faults.
  inject(): void {
    const { profile, network, trace } = this.cluster;
    const random = this.random;
    if (random.chance(profile.partitionPerStep)) this.partition();
    else if (network.hasPartition() && random.chance(profile.healPerStep)) {
      network.heal();
      trace.add(() => "heal network");
    }
    if (random.chance(profile.crashPerStep)) this.crashOne();
    if (random.chance(profile.pausePerStep)) this.pauseOne();
    if (random.chance(profile.clockChangePerStep)) this.changeClock();
  }

  // A node started persisting a Ready: maybe the power goes before it completes.
  persistStarted(node: SimNode, ready: Ready): void {
    const hardState = ready.hardState;
    if (hardState === undefined) return;
    // Votes, and a leader that just moved its commit index (Figure 8's crash); a follower's
    // commit-only changes are most Readies and dilute the rate where it matters.
    const persisted = node.storage.initialState().hardState;
    const voted = hardState.term !== persisted.term || hardState.vote !== persisted.vote;
    const { profile } = this.cluster;
    const probability = voted
      ? profile.crashDuringPersistProbability
      : node.role === "leader"
        ? profile.crashLeaderDuringPersistProbability
        : 0;
    if (!this.random.chance(probability)) return;
    // Crashing here, inside pump(), would pull the node out from under its own loop: do it at the
    // end of the step, before the persist (which takes at least until the next step) completes.
    this.crashesDue.push(node);
  }

  // At the end of a step: the power losses decided during it.
  crashDuringPersist(): void {
    for (const node of this.crashesDue) {
      if (!node.running || !node.persistPending()) continue;
      this.cluster.trace.add(() => `power loss n${node.id} during persist`);
      this.cluster.counters.powerLosses++;
      this.crash(node);
    }
    this.crashesDue = [];
  }

  restartDue(): void {
    for (const node of this.cluster.nodes) {
      if (node.state === "crashed" && node.restartAtStep <= this.cluster.step() && node.disk.ready()) this.restart(node);
    }
  }

  restart(node: SimNode): void {
    node.start();
    this.cluster.trace.add(
      () =>
        `restart n${node.id} term=${node.term} log=${node.storage.firstIndex()}..${node.storage.lastIndex()} applied=${node.machine.appliedIndex}`,
    );
  }

  private partition(): void {
    const { nodes, network, trace, counters, profile } = this.cluster;
    const random = this.random;
    const live = nodes.filter((n) => n.state !== "stopped").map((n) => n.id);
    if (live.length < 2) return;
    network.heal();
    counters.partitions++;
    const kind = random.chance(profile.isolateLeaderShare) ? 1 : random.int(4);
    const shuffled = random.shuffle([...live]);
    if (kind === 0) {
      const cut = random.range(1, shuffled.length - 1);
      const sides = [shuffled.slice(0, cut), shuffled.slice(cut)];
      network.partition(sides);
      trace.add(() => `partition halves {${sides[0]!.join(",")}} | {${sides[1]!.join(",")}}`);
    } else if (kind === 1) {
      const leader = this.cluster.leaderNode()?.id ?? shuffled[0]!;
      const rest = live.filter((id) => id !== leader);
      network.partition([[leader], rest]);
      trace.add(() => `partition isolate leader n${leader}`);
    } else if (kind === 2) {
      const links = random.range(1, live.length);
      const cut: string[] = [];
      for (let i = 0; i < links; i++) {
        const from = random.pick(live);
        const to = random.pick(live.filter((id) => id !== from));
        network.block(from, to);
        cut.push(`${from}->${to}`);
      }
      trace.add(() => `partition one-way links ${cut.join(" ")}`);
    } else {
      if (shuffled.length < 3) return;
      const bridge = shuffled[0]!;
      const cut = random.range(2, shuffled.length - 1);
      const sides = [shuffled.slice(1, cut), shuffled.slice(cut)];
      network.partition(sides);
      trace.add(() => `partition bridge n${bridge} between {${sides[0]!.join(",")}} | {${sides[1]!.join(",")}}`);
    }
  }

  private crashOne(): void {
    const running = this.cluster.nodes.filter((n) => n.running);
    if (running.length === 0) return;
    this.crash(this.random.pick(running));
  }

  private crash(node: SimNode): void {
    const { profile } = this.cluster;
    if (node.disk.model === "disk") {
      // What the write in flight (if any reached the page cache) becomes; recovery sorts it out.
      let lastWrite: LastWriteFault = "drop";
      if (node.persistPending()) {
        if (this.random.chance(profile.tornWriteProbability)) lastWrite = "tear";
        else if (this.random.chance(profile.bitFlipProbability)) lastWrite = "flip";
      }
      if (lastWrite === "tear") this.cluster.counters.tornWrites++;
      if (lastWrite === "flip") this.cluster.counters.bitFlips++;
      node.crash(0, lastWrite, () => this.random.float());
    } else {
      const pending = node.pendingEntries();
      const torn = pending > 0 && this.random.chance(profile.tornWriteProbability) ? this.random.range(1, pending) : 0;
      if (torn > 0) this.cluster.counters.tornWrites++;
      node.crash(torn);
    }
    node.restartAtStep = this.cluster.step() + this.random.range(profile.restartDelayStepsMin, profile.restartDelayStepsMax);
    this.cluster.counters.crashes++;
  }

  private pauseOne(): void {
    const step = this.cluster.step();
    const running = this.cluster.nodes.filter((n) => n.running && !n.paused(step));
    if (running.length === 0) return;
    const node = this.random.pick(running);
    node.pausedUntilStep = step + this.random.range(1, this.cluster.profile.pauseStepsMax);
    this.cluster.counters.pauses++;
    this.cluster.trace.add(() => `pause n${node.id} until step ${node.pausedUntilStep}`);
  }

  // A node's clock changes its rate, or (now and then) jumps ahead: a burst of ticks at once, as
  // after a process stall, which can fire its election timer without any silence from the leader.
  private changeClock(): void {
    const { profile } = this.cluster;
    const node = this.random.pick(this.cluster.nodes);
    this.cluster.counters.clockChanges++;
    if (node.running && this.random.chance(profile.clockJumpShare)) {
      const ticks = this.random.range(1, profile.clockJumpTicksMax);
      this.cluster.counters.clockJumps++;
      this.cluster.trace.add(() => `clock n${node.id} jumps ${ticks} ticks`);
      for (let i = 0; i < ticks; i++) node.raft!.tick();
      return;
    }
    node.tickRate = this.random.between(profile.clockRateMin, profile.clockRateMax);
    this.cluster.trace.add(() => `clock n${node.id} rate ${node.tickRate.toFixed(2)} ticks/step`);
  }
}
