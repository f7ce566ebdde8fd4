// The simulated network: every message sent is put in flight with a delay in steps, and may be
// dropped, duplicated or held back (reordered) on the way. Links are directed, so a partition can
// be one-way (a->b works, b->a does not). A link's state is looked up when a message arrives, so
// a partition also catches messages that were already in flight.
//
// Deterministic: messages due at the same step are delivered in the order they were queued.

import type { Message, NodeId } from "../../src/raft/types.js";
import type { Random } from "./random.js";

export interface NetworkFaults {
  dropProbability: number;
  duplicateProbability: number;
  delayStepsMin: number; // >= 1: a message is never delivered in the step it was sent
  delayStepsMax: number;
  reorderProbability: number; // chance of an extra delay that lets later messages overtake
  reorderDelayStepsMax: number;
}

export const RELIABLE_NETWORK: NetworkFaults = {
  dropProbability: 0,
  duplicateProbability: 0,
  delayStepsMin: 1,
  delayStepsMax: 2,
  reorderProbability: 0,
  reorderDelayStepsMax: 0,
};

export type DropReason = "lost" | "link-down";

export interface NetworkListener {
  dropped(message: Message, reason: DropReason): void;
  duplicated(message: Message): void;
}

const LINK_KEY_NODES_MAX = 1 << 16;

export interface NetworkCounters {
  sent: number;
  delivered: number;
  lost: number; // dropped at random
  cut: number; // dropped by a partition
  duplicated: number;
}

export class SimNetwork {
  private readonly inFlight = new Map<number, Message[]>(); // delivery step -> messages
  private readonly blockedLinks = new Set<number>(); // from * LINK_KEY_NODES_MAX + to
  faults: NetworkFaults;
  readonly counters: NetworkCounters = { sent: 0, delivered: 0, lost: 0, cut: 0, duplicated: 0 };

  constructor(
    private readonly random: Random,
    faults: NetworkFaults,
    private readonly listener: NetworkListener,
  ) {
    this.faults = faults;
  }

  send(message: Message, step: number): void {
    this.counters.sent++;
    if (this.random.chance(this.faults.dropProbability)) {
      this.counters.lost++;
      this.listener.dropped(message, "lost");
      return;
    }
    this.enqueue(message, step + this.delaySteps());
    if (this.random.chance(this.faults.duplicateProbability)) {
      this.counters.duplicated++;
      this.listener.duplicated(message);
      this.enqueue(message, step + this.delaySteps());
    }
  }

  // Puts a message back for a later step (its receiver is paused), without new faults.
  hold(message: Message, deliveryStep: number): void {
    this.enqueue(message, deliveryStep);
  }

  // Removes and returns the messages due at this step whose link is up; the others are dropped.
  deliverable(step: number): Message[] {
    const due = this.inFlight.get(step);
    if (due === undefined) return [];
    this.inFlight.delete(step);
    const delivered: Message[] = [];
    for (const message of due) {
      if (this.isBlocked(message.from, message.to)) {
        this.counters.cut++;
        this.listener.dropped(message, "link-down");
      } else {
        this.counters.delivered++;
        delivered.push(message);
      }
    }
    return delivered;
  }

  inFlightCount(): number {
    let count = 0;
    for (const messages of this.inFlight.values()) count += messages.length;
    return count;
  }

  block(from: NodeId, to: NodeId): void {
    this.blockedLinks.add(linkKey(from, to));
  }

  unblock(from: NodeId, to: NodeId): void {
    this.blockedLinks.delete(linkKey(from, to));
  }

  isBlocked(from: NodeId, to: NodeId): boolean {
    return this.blockedLinks.size > 0 && this.blockedLinks.has(linkKey(from, to));
  }

  hasPartition(): boolean {
    return this.blockedLinks.size > 0;
  }

  // Cuts every link between two different groups, both ways. Nodes in no group are untouched.
  partition(groups: readonly (readonly NodeId[])[]): void {
    for (let g = 0; g < groups.length; g++) {
      for (let h = 0; h < groups.length; h++) {
        if (g === h) continue;
        for (const from of groups[g]!) for (const to of groups[h]!) this.block(from, to);
      }
    }
  }

  heal(): void {
    this.blockedLinks.clear();
  }

  private delaySteps(): number {
    let delay = this.random.range(this.faults.delayStepsMin, this.faults.delayStepsMax);
    if (this.random.chance(this.faults.reorderProbability)) delay += this.random.range(1, this.faults.reorderDelayStepsMax);
    return Math.max(1, delay);
  }

  private enqueue(message: Message, deliveryStep: number): void {
    const bucket = this.inFlight.get(deliveryStep);
    if (bucket === undefined) this.inFlight.set(deliveryStep, [message]);
    else bucket.push(message);
  }
}

function linkKey(from: NodeId, to: NodeId): number {
  return from * LINK_KEY_NODES_MAX + to;
}
