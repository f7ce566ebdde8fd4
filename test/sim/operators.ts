// The clients and the operator of the simulated cluster: proposals of unique values, ReadIndex
// reads, membership changes (new learners, promotions, removals including the leader's, joint
// swaps) and leadership transfers. Removed nodes are shut down once they are out of the
// configuration for good. It owns the client stream of randomness.

import { confMembers, decodeConfChange, describeConfChange, emptyConf, isJoint } from "../../src/raft/confchange.js";
import type { ConfChange, ConfState, Entry, NodeId } from "../../src/raft/types.js";
import { RaftError } from "../../src/raft/types.js";
import type { Cluster } from "./cluster.js";
import type { Random } from "./random.js";
import type { SimNode } from "./sim-node.js";
import { encodeProposal } from "./state-machine.js";

const SPARE_NODES_MAX = 4; // node ids beyond the initial voters that membership changes may add
const PROPOSAL_PADDING_BYTES_MAX = 48;
export const READ_CONTEXT_BYTES = 4; // a read's context is its number
const VOTERS_MIN = 3; // removals stop here

export class Operators {
  readonly confChangeIndexes = new Set<number>(); // applied conf-change entries
  private nextValue = 1;
  private nextRead = 1;
  private nextNodeId: NodeId;
  private readonly removals = new Map<NodeId, number>(); // node id -> index of the entry removing it

  constructor(
    private readonly cluster: Cluster,
    readonly random: Random,
  ) {
    this.nextNodeId = cluster.initialVoters + 1;
  }

  // One step of client traffic; membership changes and transfers only while faults run.
  run(chaos: boolean): void {
    const { profile } = this.cluster;
    const random = this.random;
    if (random.chance(profile.proposalPerStep)) this.propose();
    if (random.chance(profile.readPerStep)) this.read();
    if (chaos) {
      if (random.chance(profile.confChangePerStep)) this.changeMembership();
      if (random.chance(profile.transferPerStep)) this.transferLeadership();
    }
  }

  // A fresh proposal value (values are never reused).
  takeValue(): number {
    return this.nextValue++;
  }

  private propose(): void {
    const target = this.proposalTarget();
    if (target === undefined) return;
    const value = this.takeValue();
    const { checker, trace } = this.cluster;
    try {
      const placed = target.raft!.propose(encodeProposal(value, this.random.int(PROPOSAL_PADDING_BYTES_MAX)));
      checker.proposed(value, placed.index, placed.term);
      trace.add(() => `propose v${value} on n${target.id} at ${placed.index}/t${placed.term}`);
    } catch (error) {
      if (!(error instanceof RaftError)) throw error;
      trace.add(() => `propose v${value} on n${target.id} refused: ${error.code}`);
    }
  }

  // A linearizable read through ReadIndex, on the same kind of node a proposal would go to.
  private read(): void {
    const target = this.proposalTarget();
    if (target === undefined) return;
    const id = this.nextRead++;
    const context = new Uint8Array(READ_CONTEXT_BYTES);
    new DataView(context.buffer).setUint32(0, id);
    try {
      target.raft!.readIndex(context);
      this.cluster.checker.readStarted(id);
      this.cluster.trace.add(() => `read #${id} asked on n${target.id}`);
    } catch (error) {
      if (!(error instanceof RaftError)) throw error;
      this.cluster.trace.add(() => `read #${id} on n${target.id} refused: ${error.code}`);
    }
  }

  // Mostly the newest leader; sometimes any node that believes it leads (a stale leader on the
  // wrong side of a partition grows a log suffix that must later be thrown away), or any node.
  private proposalTarget(): SimNode | undefined {
    const random = this.random;
    const leader = this.cluster.leaderNode();
    const draw = random.float();
    const stale = this.cluster.profile.staleLeaderProposalShare;
    if (leader !== undefined && draw < 0.9 - stale) return leader;
    const leaders = this.cluster.nodes.filter((n) => n.running && n.role === "leader");
    if (leaders.length > 0 && draw < 0.9) return random.pick(leaders);
    const running = this.cluster.nodes.filter((n) => n.running);
    return running.length > 0 ? random.pick(running) : undefined;
  }

  private changeMembership(): void {
    const leader = this.cluster.leaderNode();
    if (leader === undefined) return;
    const conf = leader.raft!.status().conf;
    const change = this.chooseConfChange(leader, conf);
    if (change === undefined) return;
    const { trace } = this.cluster;
    try {
      const placed = leader.raft!.proposeConfChange(change);
      trace.add(() => `conf-change ${describeConfChange(change)} on n${leader.id} at ${placed.index}/t${placed.term}`);
    } catch (error) {
      if (!(error instanceof RaftError)) throw error;
      trace.add(() => `conf-change ${describeConfChange(change)} on n${leader.id} refused: ${error.code}`);
    }
  }

  private chooseConfChange(leader: SimNode, conf: ConfState): ConfChange | undefined {
    const random = this.random;
    if (isJoint(conf)) return conf.autoLeave ? undefined : { transition: "auto", changes: [] };
    const members = confMembers(conf).length;
    const initial = this.cluster.initialVoters;
    const choices: Array<() => ConfChange | undefined> = [];
    if (conf.learners.length > 0) {
      choices.push(() => ({ transition: "auto", changes: [{ type: "add-voter", nodeId: random.pick(conf.learners) }] }));
      choices.push(() => ({ transition: "auto", changes: [{ type: "remove-node", nodeId: random.pick(conf.learners) }] }));
      if (conf.voters.length > VOTERS_MIN) {
        // Swap a learner in for a voter in one joint step.
        choices.push(() => ({
          transition: random.chance(0.5) ? "auto" : "joint",
          changes: [
            { type: "add-voter", nodeId: random.pick(conf.learners) },
            { type: "remove-node", nodeId: random.pick(conf.voters) },
          ],
        }));
      }
    }
    if (this.nextNodeId <= initial + SPARE_NODES_MAX && members < initial + 2) {
      choices.push(() => this.addLearner(leader));
    }
    if (conf.voters.length > VOTERS_MIN) {
      // The leader goes with a fair share of the removals.
      choices.push(() => {
        const id = random.chance(0.3) ? leader.id : random.pick(conf.voters);
        return { transition: "auto", changes: [{ type: "remove-node", nodeId: id }] };
      });
    }
    return choices.length > 0 ? random.pick(choices)() : undefined;
  }

  // Starts a brand-new node with an empty log and an empty configuration (it learns the real one
  // from the leader) and asks to add it as a learner.
  private addLearner(leader: SimNode): ConfChange {
    const id = this.nextNodeId++;
    this.cluster.addNode(id, emptyConf());
    this.cluster.trace.add(() => `new node n${id} (empty), asking n${leader.id} to add it`);
    return { transition: "auto", changes: [{ type: "add-learner", nodeId: id }] };
  }

  private transferLeadership(): void {
    const leader = this.cluster.leaderNode();
    if (leader === undefined) return;
    const voters = leader.raft!.status().conf.voters.filter((id) => id !== leader.id);
    if (voters.length === 0) return;
    const to = this.random.pick(voters);
    const { trace } = this.cluster;
    try {
      leader.raft!.transferLeadership(to);
      this.cluster.counters.transfers++;
      trace.add(() => `transfer leadership n${leader.id} -> n${to}`);
    } catch (error) {
      if (!(error instanceof RaftError)) throw error;
      trace.add(() => `transfer leadership n${leader.id} -> n${to} refused: ${error.code}`);
    }
  }

  confChangeApplied(node: SimNode, entry: Entry): void {
    const change = decodeConfChange(entry.data);
    this.confChangeIndexes.add(entry.index);
    for (const single of change.changes) {
      if (single.type === "remove-node" && !this.removals.has(single.nodeId)) this.removals.set(single.nodeId, entry.index);
    }
    this.cluster.trace.add(() => `apply n${node.id} ${entry.index} conf-change ${describeConfChange(change)}`);
  }

  // An operator shuts a node down once it is out of the configuration for good (a joint
  // configuration still counts its outgoing voters); its id is never reused.
  stopRemovedNodes(): void {
    const { nodes, trace } = this.cluster;
    for (const [id, index] of this.removals) {
      const witness = nodes.find((n) => n.running && n.machine.appliedIndex >= index && !confMembers(n.raft!.status().conf).includes(id));
      if (witness === undefined) continue;
      this.removals.delete(id);
      const node = nodes[id - 1];
      if (node === undefined || node.state === "stopped") continue;
      node.stop();
      trace.add(() => `stop n${id} (removed from the cluster, seen by n${witness.id})`);
    }
  }
}
