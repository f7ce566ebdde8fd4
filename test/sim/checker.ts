// Raft's safety properties, checked incrementally as the simulated cluster runs.
//
// The checker keeps a history across the whole run (and across crashes): which node led each
// term, every (index, term) that ever reached a persisted log, every committed entry, and the
// state hash after each applied index. Each event is checked against that history at once, so a
// violation is reported at the step that causes it.
//
// - Election safety: at most one leader per term.
// - Log matching: an (index, term) pair names one entry, and its predecessor's term is fixed too
//   (by induction the whole prefix is then the same), on persisted logs.
// - Leader completeness: a new leader's log holds every entry committed in an earlier term: one
//   whose commit a node saw while in a term below the leader's (Raft's Figure 3 counts the term of
//   the leader that committed an entry, not the entry's own term). A candidate of term T may win T
//   after later terms committed entries of term < T that it lacks (a vote granted before those
//   commits, its answer delayed while the candidate was paused): such a leader commits nothing,
//   as every majority has moved past T. Seed 772863 was a false report of exactly that.
// - State machine safety: every node applies the same entry at an index and reaches the same
//   state; a restored snapshot has the state the others had at that index.
// - Proposals: an applied value was proposed, sits where propose() put it, and is applied at
//   one index only (no duplicates).
// - Configuration: every node has the same configuration after applying the same index.
// - Linearizable reads: a ReadIndex answer is at least every commit index seen before the read
//   began (a read never misses a write that completed before it).

import type { ConfState, Entry, NodeId } from "../../src/raft/types.js";
import { decodeProposal, entryDigest } from "./state-machine.js";

interface LoggedEntry {
  digest: number;
  previousTerm: number | undefined; // undefined when the predecessor was compacted away
  node: NodeId;
}

interface CommittedEntry {
  term: number;
  // The lowest term of a node seen with the entry committed (its commit index or an apply): the
  // leader that committed it led that term or an earlier one.
  committedInTerm: number;
  digest: number | undefined; // known once someone applied it
  node: NodeId; // the first node seen committing or applying it
  how: "committed" | "applied";
}

// A node's log as the checker sees it: enough to read terms.
export interface LogView {
  firstIndex(): number;
  lastIndex(): number;
  term(index: number): number; // may throw for compacted indexes
}

const TERMS_PER_INDEX_KEY = 1 << 24;
const VIOLATIONS_KEPT_MAX = 20;

export class SafetyChecker {
  readonly violations: string[] = [];
  private readonly leaderByTerm = new Map<number, NodeId>();
  private readonly loggedEntries = new Map<number, LoggedEntry>(); // indexTermKey -> entry
  private readonly committedLog: CommittedEntry[] = []; // by index
  private readonly stateHashAfter: number[] = []; // by index
  private readonly proposals = new Map<number, { index: number; term: number }>();
  private readonly appliedAt = new Map<number, number>(); // proposal value -> index
  private committedIndexMax = 0;
  private readonly configurations = new Map<number, { conf: string; node: NodeId }>(); // applied index -> conf
  private readonly readFloors = new Map<number, number>(); // read id -> highest commit known when it began
  readsAnswered = 0;

  get committedProposals(): number {
    return this.appliedAt.size;
  }

  // node's configuration once it applied everything up to index: a function of the committed log,
  // so the same on every node.
  configurationAt(node: NodeId, index: number, conf: ConfState): void {
    const text = describeConf(conf);
    const known = this.configurations.get(index);
    if (known === undefined) this.configurations.set(index, { conf: text, node });
    else if (known.conf !== text) {
      this.report(`configuration: after applying ${index} n${node} has ${text}, n${known.node} had ${known.conf}`);
    }
  }

  // A ReadIndex read begins: it must see everything committed so far.
  readStarted(id: number): void {
    this.readFloors.set(id, this.committedIndexMax);
  }

  // node got the read index for read `id`: the read is served once it applied up to `index`.
  readAnswered(node: NodeId, id: number, index: number): void {
    const floor = this.readFloors.get(id);
    if (floor === undefined) {
      this.report(`linearizable reads: n${node} got an answer for read #${id}, which nobody asked`);
      return;
    }
    this.readsAnswered++;
    if (index < floor) {
      this.report(`linearizable reads: n${node} read #${id} at index ${index}, but ${floor} was committed before it began`);
    }
  }

  get leadersElected(): number {
    return this.leaderByTerm.size;
  }

  get failed(): boolean {
    return this.violations.length > 0;
  }

  step = 0; // the simulation step, to say where a violation was seen

  report(text: string): void {
    const line = `step ${this.step}: ${text}`;
    if (this.violations.length < VIOLATIONS_KEPT_MAX && !this.violations.includes(line)) this.violations.push(line);
  }

  leaderElected(node: NodeId, term: number): void {
    const known = this.leaderByTerm.get(term);
    if (known === undefined) this.leaderByTerm.set(term, node);
    else if (known !== node) this.report(`election safety: n${known} and n${node} both leader in term ${term}`);
  }

  // entries were just persisted by node; previousTerm is the term of the entry before the first
  // one (undefined when compacted).
  entriesPersisted(node: NodeId, entries: readonly Entry[], previousTerm: number | undefined): void {
    let before = previousTerm;
    for (const entry of entries) {
      this.logged(node, entry, before);
      before = entry.term;
    }
  }

  private logged(node: NodeId, entry: Entry, previousTerm: number | undefined): void {
    const key = entry.index * TERMS_PER_INDEX_KEY + entry.term;
    const digest = entryDigest(entry);
    const known = this.loggedEntries.get(key);
    if (known === undefined) {
      this.loggedEntries.set(key, { digest, previousTerm, node });
      return;
    }
    const where = `${entry.index}/t${entry.term}`;
    if (known.digest !== digest) {
      this.report(`log matching: entry ${where} differs between n${known.node} and n${node}`);
    } else if (known.previousTerm !== undefined && previousTerm !== undefined && known.previousTerm !== previousTerm) {
      this.report(
        `log matching: before ${where} n${known.node} has term ${known.previousTerm}, n${node} has term ${previousTerm}`,
      );
    } else if (known.previousTerm === undefined) {
      known.previousTerm = previousTerm;
    }
  }

  // The leader of term `term` has this log (its persisted log plus what it is about to persist).
  leaderLogChecked(node: NodeId, term: number, log: LogView): void {
    const first = log.firstIndex();
    const last = log.lastIndex();
    for (let index = Math.max(first, 1); index <= this.committedIndexMax; index++) {
      const entry = this.committedLog[index];
      if (entry === undefined || entry.committedInTerm >= term) continue;
      if (index > last) {
        this.report(`leader completeness: n${node} leads term ${term} without committed ${index}/t${entry.term} (last ${last})`);
        return;
      }
      const has = log.term(index);
      if (has !== entry.term) {
        this.report(`leader completeness: n${node} leads term ${term} with ${index}/t${has}, committed was ${index}/t${entry.term}`);
        return;
      }
    }
  }

  proposed(value: number, index: number, term: number): void {
    this.proposals.set(value, { index, term });
  }

  // node applied entry; stateHash is its state after it; nodeTerm is the node's current term.
  applied(node: NodeId, entry: Entry, stateHash: number, nodeTerm: number): void {
    this.committedEntry(node, entry, nodeTerm);
    const knownHash = this.stateHashAfter[entry.index];
    if (knownHash === undefined) this.stateHashAfter[entry.index] = stateHash;
    else if (knownHash !== stateHash) {
      this.report(`state machine safety: n${node} state after ${entry.index} differs from other nodes'`);
    }
    const value = decodeProposal(entry);
    if (value !== undefined) this.proposalApplied(node, value, entry);
  }

  // node's commit index covers (index, term): a correct node only ever learns a commit index
  // below which its log is the committed log, so this is checked like an applied entry.
  // nodeTerm is the node's current term.
  committed(node: NodeId, index: number, term: number, nodeTerm: number): void {
    const known = this.committedLog[index];
    if (known === undefined) {
      this.committedLog[index] = { term, committedInTerm: nodeTerm, digest: undefined, node, how: "committed" };
      this.committedIndexMax = Math.max(this.committedIndexMax, index);
    } else if (known.term === term) {
      known.committedInTerm = Math.min(known.committedInTerm, nodeTerm);
    } else {
      this.report(`state machine safety: n${node} committed ${index}/t${term}, n${known.node} ${known.how} ${index}/t${known.term}`);
    }
  }

  private committedEntry(node: NodeId, entry: Entry, nodeTerm: number): void {
    const digest = entryDigest(entry);
    const known = this.committedLog[entry.index];
    if (known === undefined) {
      this.committedLog[entry.index] = { term: entry.term, committedInTerm: nodeTerm, digest, node, how: "applied" };
      this.committedIndexMax = Math.max(this.committedIndexMax, entry.index);
    } else if (known.term !== entry.term || (known.digest !== undefined && known.digest !== digest)) {
      this.report(
        `state machine safety: n${node} applied ${entry.index}/t${entry.term}, n${known.node} ${known.how} ${entry.index}/t${known.term}` +
          (known.term === entry.term ? " with different data" : ""),
      );
    } else {
      known.committedInTerm = Math.min(known.committedInTerm, nodeTerm);
      known.digest ??= digest;
    }
  }

  private proposalApplied(node: NodeId, value: number, entry: Entry): void {
    const proposal = this.proposals.get(value);
    if (proposal === undefined) {
      this.report(`proposals: n${node} applied value v${value} at ${entry.index}, never proposed`);
      return;
    }
    if (proposal.index !== entry.index || proposal.term !== entry.term) {
      this.report(
        `proposals: n${node} applied v${value} at ${entry.index}/t${entry.term}, proposed at ${proposal.index}/t${proposal.term}`,
      );
    }
    const index = this.appliedAt.get(value);
    if (index === undefined) this.appliedAt.set(value, entry.index);
    else if (index !== entry.index) this.report(`proposals: v${value} applied at ${index} and at ${entry.index} (duplicate)`);
  }

  // node restored its state machine from a snapshot taken at (index, term).
  snapshotRestored(node: NodeId, index: number, term: number, stateHash: number): void {
    if (index === 0) return;
    const known = this.committedLog[index];
    if (known !== undefined && known.term !== term) {
      this.report(`state machine safety: n${node} restored snapshot ${index}/t${term}, committed was ${index}/t${known.term}`);
    }
    const knownHash = this.stateHashAfter[index];
    if (knownHash === undefined) this.stateHashAfter[index] = stateHash;
    else if (knownHash !== stateHash) this.report(`state machine safety: n${node} snapshot state at ${index} differs`);
  }

}

function describeConf(conf: ConfState): string {
  const ids = (list: readonly NodeId[]) => [...list].sort((a, b) => a - b).join(",");
  let text = `voters=(${ids(conf.voters)})`;
  if (conf.learners.length > 0) text += ` learners=(${ids(conf.learners)})`;
  if (conf.votersOutgoing.length > 0) text += ` outgoing=(${ids(conf.votersOutgoing)})`;
  if (conf.learnersNext.length > 0) text += ` learnersNext=(${ids(conf.learnersNext)})`;
  if (conf.autoLeave) text += " autoLeave";
  return text;
}
