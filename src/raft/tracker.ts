// The active configuration, the leader's Progress of every member, and the votes of an election.
//
// Invariants: there is exactly one Progress per member of the configuration (voters of both
// halves, learners, future learners); progress.learner mirrors the configuration; only voters
// count toward commit and elections.

import { confMembers } from "./confchange.js";
import { Progress } from "./progress.js";
import { jointCommittedIndex, jointQuorumActive, jointVoteResult } from "./quorum.js";
import type { JointVoters, VoteResult } from "./quorum.js";
import type { ConfState, NodeId } from "./types.js";

export class ProgressTracker {
  conf: ConfState;
  private voters: JointVoters;
  readonly progress = new Map<NodeId, Progress>();
  readonly votes = new Map<NodeId, boolean>();

  constructor(
    conf: ConfState,
    private readonly inflightCountMax: number,
    private readonly inflightBytesMax: number,
  ) {
    this.conf = conf;
    this.voters = { incoming: new Set(conf.voters), outgoing: new Set(conf.votersOutgoing) };
  }

  // Switches to a new configuration: keeps the progress of members that stay, creates progress
  // for new ones (next = nextIndex), drops the rest.
  setConf(conf: ConfState, nextIndex: number): void {
    this.conf = conf;
    this.voters = { incoming: new Set(conf.voters), outgoing: new Set(conf.votersOutgoing) };
    const members = new Set(confMembers(conf));
    for (const id of [...this.progress.keys()]) if (!members.has(id)) this.progress.delete(id);
    for (const id of members) {
      const learner = !this.isVoter(id);
      const existing = this.progress.get(id);
      if (existing !== undefined) {
        existing.learner = learner;
      } else {
        const progress = new Progress(nextIndex, this.inflightCountMax, this.inflightBytesMax, learner);
        // A new member counts as active so CheckQuorum does not depose the leader before it
        // had a chance to hear from it.
        progress.recentActive = true;
        this.progress.set(id, progress);
      }
    }
  }

  // Fresh progress for every member (a new leader, or a node resetting its term).
  resetProgress(nextIndex: number): void {
    this.progress.clear();
    this.setConf(this.conf, nextIndex);
  }

  isVoter(id: NodeId): boolean {
    return this.voters.incoming.has(id) || this.voters.outgoing.has(id);
  }

  voterIds(): NodeId[] {
    return [...new Set([...this.voters.incoming, ...this.voters.outgoing])].sort((a, b) => a - b);
  }

  isSingleVoter(id: NodeId): boolean {
    const all = this.voterIds();
    return all.length === 1 && all[0] === id;
  }

  committedIndex(): number {
    return jointCommittedIndex(this.voters, (id) => this.progress.get(id)?.match);
  }

  recordVote(id: NodeId, granted: boolean): void {
    if (!this.votes.has(id)) this.votes.set(id, granted);
  }

  voteResult(): VoteResult {
    return jointVoteResult(this.voters, this.votes);
  }

  // The outcome of an arbitrary set of answers (ReadIndex acknowledgements).
  voteResultFor(votes: ReadonlyMap<NodeId, boolean>): VoteResult {
    return jointVoteResult(this.voters, votes);
  }

  tally(): { granted: number; rejected: number } {
    let granted = 0;
    let rejected = 0;
    for (const [id, vote] of this.votes) {
      if (!this.isVoter(id)) continue;
      if (vote) granted++;
      else rejected++;
    }
    return { granted, rejected };
  }

  resetVotes(): void {
    this.votes.clear();
  }

  quorumActive(selfId: NodeId): boolean {
    return jointQuorumActive(this.voters, (id) => id === selfId || this.progress.get(id)?.recentActive === true);
  }
}
