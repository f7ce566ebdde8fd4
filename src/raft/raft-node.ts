// The Raft consensus core: a pure state machine stepped by messages, ticks and proposals, that
// hands its work to the driver as a Ready (persist, send, apply) and learns it is done by
// advance(). Modeled on etcd-io/raft (raft.go + rawnode.go), written for Ferry.
//
// Safety invariants kept here:
// - Term and vote reach stable storage before any vote response leaves (messagesAfterPersist),
//   and a candidate counts its own vote only once its vote is persisted (stepped on advance).
// - A follower acknowledges entries only after they are persisted (append responses go in
//   messagesAfterPersist); the leader counts its own entries once advance() says they are durable.
// - The leader commits by counting replicas only an entry of its own term (§5.4.2).
// - committedEntries never go beyond what this node has persisted.
// - At most one configuration change is pending (proposed, not applied) at a time.

import { assert } from "../util/assert.js";
import {
  applyConfChange,
  checkConf,
  confMembers,
  decodeConfChange,
  describeConfChange,
  encodeConfChange,
  isJoint,
  isLeaveJoint,
} from "./confchange.js";
import type { UnstableLog } from "./log-unstable.js";
import type { Progress } from "./progress.js";
import { RaftLog, entriesSizeBytes, entrySizeBytes } from "./raft-log.js";
import { ReadOnlyQueue } from "./read-only.js";
import { ProgressTracker } from "./tracker.js";
import { CompactedError, NONE, RaftError, SnapshotUnavailableError } from "./types.js";
import type {
  ConfChange,
  ConfState,
  Entry,
  HardState,
  Message,
  MessageType,
  NodeId,
  RaftConfig,
  RaftStatus,
  ReadState,
  Ready,
  Role,
  Snapshot,
  SoftState,
  LogStorage,
} from "./types.js";

// Messages a node sends only after the state they vouch for is durable.
const AFTER_PERSIST: ReadonlySet<MessageType> = new Set<MessageType>(["append-response", "vote-response", "prevote-response"]);
const VOTE_RESPONSES: ReadonlySet<MessageType> = new Set<MessageType>(["vote-response", "prevote-response"]);
// Messages that travel without a term: they are forwarded requests, valid in any term.
const TERMLESS: ReadonlySet<MessageType> = new Set<MessageType>(["propose", "read-index"]);

interface Outstanding {
  ready: Ready;
  selfMessages: Message[]; // stepped once the Ready is persisted
  lastEntry?: { index: number; term: number };
  snapshotIndex?: number;
  committedApplied?: boolean; // takeCommitted() already counted the Ready's committedEntries applied
}

export class RaftNode {
  private fenced = false;
  private readonly id: NodeId;
  private readonly config: RaftConfig;
  private readonly log: RaftLog;
  private readonly tracker: ProgressTracker;
  private readonly readOnly = new ReadOnlyQueue();
  // The configuration at index 0 (bootstrap), when known: started with nothing applied and no
  // compaction. Lets the leader hand a joining node the initial configuration as a snapshot at
  // index 0 when the storage has no snapshot to offer yet.
  private readonly initialConf: ConfState | undefined;
  // A node that starts with an empty log outside its own configuration is joining a running
  // cluster: the log from index 1 on only means something on top of the initial configuration,
  // which it may not have (an empty one, or the cluster's current one). It takes a snapshot
  // first, even one at index 0.
  private joining: boolean;
  // The log index the active configuration stems from (a snapshot's, or the last applied conf
  // change's): a conf change at or below it is already part of it (a snapshot may be restored
  // between ready() and advance(), after older conf changes were handed out for applying).
  private confIndex: number;

  private term = 0;
  private vote: NodeId = NONE;
  private lead: NodeId = NONE;
  private role: Role = "follower";
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private leadTransferee: NodeId = NONE;
  private pendingConfIndex = 0; // index of the last conf change this leader appended
  private uncommittedBytes = 0;
  private pendingReadIndex: Message[] = []; // ReadIndex requests waiting for a commit in this term
  // Proposals were appended since the last Ready: their appends go out when the Ready is made,
  // so a burst of proposals travels as one append per follower instead of one each.
  private broadcastPending = false;

  private messages: Message[] = [];
  private messagesAfterPersist: Message[] = [];
  private selfMessages: Message[] = [];
  private readStates: ReadState[] = [];
  private prevSoftState: SoftState;
  private prevHardState: HardState;
  private outstanding: Outstanding | undefined;

  constructor(config: RaftConfig, storage: LogStorage) {
    validateConfig(config);
    this.id = config.id;
    this.config = config;
    const { hardState, conf } = storage.initialState();
    // A node joining an existing cluster may start with an empty configuration: it learns the
    // real one from the leader's snapshot.
    if (conf.voters.length > 0) checkConf(conf);
    const applied = config.applied ?? snapshotIndexOf(storage);
    this.log = new RaftLog(storage, applied);
    assert(hardState.commit <= this.log.lastIndex(), `raft: commit ${hardState.commit} beyond last index ${this.log.lastIndex()}`);
    this.log.committed = Math.max(hardState.commit, this.log.applied);
    assert(this.log.committed <= this.log.lastIndex(), "raft: applied beyond the last index");
    const pristine = this.log.applied === 0 && storage.firstIndex() === 1;
    if (pristine && conf.voters.length > 0) this.initialConf = conf;
    this.joining = pristine && storage.lastIndex() === 0 && !confMembers(conf).includes(config.id);
    this.confIndex = this.log.applied;
    this.tracker = new ProgressTracker(conf, config.maxInflightMessages, config.maxInflightBytes);
    this.tracker.setConf(conf, this.log.lastIndex() + 1);
    this.reset(hardState.term);
    this.vote = hardState.vote;
    this.prevHardState = { ...hardState };
    this.prevSoftState = { leader: this.lead, role: this.role };
    this.logLine(`started term=${this.term} commit=${this.log.committed} applied=${this.log.applied} last=${this.log.lastIndex()}`);
  }

  // ---------------------------------------------------------------- driver API

  tick(): void {
    if (this.role === "leader") this.tickHeartbeat();
    else this.tickElection();
  }

  campaign(): void {
    this.hup(false);
  }

  // A fenced node (its clock is off, say) never campaigns, not even when asked to by a leadership
  // transfer; it still votes and replicates. A fenced leader should transfer its leadership away.
  setFenced(fenced: boolean): void {
    if (fenced !== this.fenced) this.logLine(fenced ? "fenced: will not campaign" : "no longer fenced");
    this.fenced = fenced;
  }

  propose(data: Uint8Array): { index: number; term: number } {
    return this.proposeEntry("normal", data);
  }

  proposeConfChange(change: ConfChange): { index: number; term: number } {
    this.requireLeader();
    if (this.pendingConfIndex > this.log.applied) {
      throw new RaftError("CONF_CHANGE_PENDING", `conf change at ${this.pendingConfIndex} not yet applied`);
    }
    const joint = isJoint(this.tracker.conf);
    if (joint && !isLeaveJoint(change)) throw new RaftError("INVALID_CONF_CHANGE", "must leave the joint config first");
    if (!joint && isLeaveJoint(change)) throw new RaftError("INVALID_CONF_CHANGE", "not in a joint config");
    applyConfChange(this.tracker.conf, change); // throws INVALID_CONF_CHANGE when it is invalid
    const placed = this.proposeEntry("conf-change", encodeConfChange(change));
    this.pendingConfIndex = placed.index;
    return placed;
  }

  transferLeadership(to: NodeId): void {
    this.requireLeader();
    const progress = this.tracker.progress.get(to);
    if (to === this.id || progress === undefined || progress.learner) {
      this.logLine(`ignoring leadership transfer to ${to}: not another voter`);
      return;
    }
    if (this.leadTransferee === to) return;
    if (this.leadTransferee !== NONE) this.abortLeaderTransfer();
    this.electionElapsed = 0; // the transfer must finish within one election timeout
    this.leadTransferee = to;
    this.logLine(`transferring leadership to ${to}`);
    if (progress.match === this.log.lastIndex()) this.sendTimeoutNow(to);
    else this.sendAppend(to);
  }

  readIndex(context: Uint8Array): void {
    if (this.role === "leader") {
      this.handleReadIndex(this.message({ type: "read-index", to: this.id, from: this.id, context }));
      return;
    }
    if (this.lead === NONE) throw new RaftError("NOT_LEADER", "no leader known to confirm a read");
    this.send({ type: "read-index", to: this.lead, context });
  }

  reportUnreachable(id: NodeId): void {
    const progress = this.tracker.progress.get(id);
    if (this.role !== "leader" || progress === undefined) return;
    // Appends in flight are probably lost: go back to probing.
    if (progress.state === "replicate") progress.becomeProbe();
  }

  reportSnapshot(id: NodeId, ok: boolean): void {
    const progress = this.tracker.progress.get(id);
    if (this.role !== "leader" || progress === undefined || progress.state !== "snapshot") return;
    if (!ok) progress.pendingSnapshot = 0; // probe from match again
    progress.becomeProbe();
    // Wait for the follower's answer (ok) or the next heartbeat answer (failed) before sending.
    progress.probeSent = true;
    this.logLine(`snapshot to ${id} ${ok ? "done" : "failed"}; probing from ${progress.next}`);
  }

  step(message: Message): void {
    if (!this.checkTerm(message)) return;
    switch (message.type) {
      case "vote":
      case "prevote":
        this.handleVoteRequest(message);
        return;
      default:
        break;
    }
    if (this.role === "leader") this.stepLeader(message);
    else if (this.role === "follower") this.stepFollower(message);
    else this.stepCandidate(message);
  }

  hasReady(): boolean {
    if (this.outstanding !== undefined) return false;
    const soft = this.softState();
    if (soft.leader !== this.prevSoftState.leader || soft.role !== this.prevSoftState.role) return true;
    if (!hardStateEqual(this.hardState(), this.prevHardState)) return true;
    if (this.log.unstable.entries.length > 0 || this.log.unstable.snapshot !== undefined) return true;
    if (this.messages.length > 0 || this.messagesAfterPersist.length > 0 || this.selfMessages.length > 0) return true;
    return this.readStates.length > 0 || this.log.hasNextCommittedEntries();
  }

  ready(): Ready {
    assert(this.outstanding === undefined, "raft: ready() called again before advance()");
    if (this.broadcastPending) {
      this.broadcastPending = false;
      if (this.role === "leader") this.broadcastAppend();
    }
    const soft = this.softState();
    const hard = this.hardState();
    const committedEntries = this.log.nextCommittedEntries(this.config.maxCommittedBytesPerReady);
    const unstable = this.log.unstable;
    const ready: Ready = {
      entries: [...unstable.entries],
      messages: this.messages,
      messagesAfterPersist: this.messagesAfterPersist,
      committedEntries,
      readStates: this.readStates,
    };
    if (soft.leader !== this.prevSoftState.leader || soft.role !== this.prevSoftState.role) ready.softState = soft;
    if (!hardStateEqual(hard, this.prevHardState)) ready.hardState = hard;
    if (unstable.snapshot !== undefined) ready.snapshot = unstable.snapshot;
    const outstanding: Outstanding = { ready, selfMessages: this.selfMessages };
    const last = ready.entries[ready.entries.length - 1];
    if (last !== undefined) outstanding.lastEntry = { index: last.index, term: last.term };
    if (ready.snapshot !== undefined) outstanding.snapshotIndex = ready.snapshot.meta.index;
    const lastCommitted = committedEntries[committedEntries.length - 1];
    if (lastCommitted !== undefined) this.log.applying = lastCommitted.index;
    this.messages = [];
    this.messagesAfterPersist = [];
    this.selfMessages = [];
    this.readStates = [];
    this.prevSoftState = soft;
    this.outstanding = outstanding;
    return ready;
  }

  // Committed entries the driver may apply now, while a Ready's persist is still in flight: the
  // entries committed since that Ready was taken, so that applying them (and answering their
  // requests) does not wait for the disk write of newer entries. Contract: the driver has
  // applied the outstanding Ready's committedEntries already; the entries returned count as
  // applied (here and for that Ready's advance()). They were persisted by earlier Readies (the
  // usual bound, persistedLastIndex, holds). Stops before a configuration change, which is left
  // to the next Ready, and hands out nothing while a snapshot or a configuration change is
  // outstanding.
  takeCommitted(): Entry[] {
    const outstanding = this.outstanding;
    if (outstanding === undefined || outstanding.snapshotIndex !== undefined) return [];
    if (!outstanding.committedApplied && outstanding.ready.committedEntries.some((entry) => entry.type === "conf-change")) return [];
    const entries =
      this.config.bugs?.takeCommittedUnpersisted === true
        ? this.log.slice(this.log.applying + 1, this.log.committed + 1, this.config.maxCommittedBytesPerReady)
        : this.log.nextCommittedEntries(this.config.maxCommittedBytesPerReady);
    const confChange = entries.findIndex((entry) => entry.type === "conf-change");
    if (confChange >= 0) entries.length = confChange;
    if (entries.length === 0) return [];
    if (!outstanding.committedApplied) {
      outstanding.committedApplied = true;
      this.applyCommitted(outstanding.ready.committedEntries);
    }
    this.log.applying = entries[entries.length - 1]!.index;
    this.applyCommitted(entries);
    return entries;
  }

  advance(ready: Ready): void {
    const outstanding = this.outstanding;
    assert(outstanding !== undefined && outstanding.ready === ready, "raft: advance() without its ready()");
    this.outstanding = undefined;
    if (ready.hardState !== undefined) this.prevHardState = ready.hardState;
    if (outstanding.snapshotIndex !== undefined) {
      this.log.unstable.stableSnapshotTo(outstanding.snapshotIndex);
      this.log.appliedTo(outstanding.snapshotIndex);
    }
    if (outstanding.lastEntry !== undefined) {
      const stable = lastUnchangedEntry(this.log.unstable, ready.entries, outstanding.lastEntry);
      if (stable !== undefined) this.log.unstable.stableTo(stable.index, stable.term);
    }
    if (!outstanding.committedApplied) this.applyCommitted(ready.committedEntries);
    for (const message of outstanding.selfMessages) this.step(message);
    this.acknowledgeOwnEntries();
  }

  // The commit index alone: status() copies the configuration and the progress of every peer.
  committedIndex(): number {
    return this.log.committed;
  }

  status(): RaftStatus {
    const progress = new Map<NodeId, ReturnType<Progress["toStatus"]>>();
    if (this.role === "leader") for (const [id, p] of this.tracker.progress) progress.set(id, p.toStatus());
    return {
      id: this.id,
      term: this.term,
      vote: this.vote,
      commit: this.log.committed,
      applied: this.log.applied,
      lead: this.lead,
      role: this.role,
      firstIndex: this.log.firstIndex(),
      lastIndex: this.log.lastIndex(),
      conf: structuredCloneConf(this.tracker.conf),
      progress,
      leadTransferee: this.leadTransferee,
    };
  }

  // ---------------------------------------------------------------- roles

  private becomeFollower(term: number, lead: NodeId): void {
    this.reset(term);
    this.lead = lead;
    this.role = "follower";
    this.logLine(`became follower at term ${term}${lead === NONE ? "" : ` (leader ${lead})`}`);
  }

  private becomePreCandidate(): void {
    assert(this.role !== "leader", "raft: leader cannot become pre-candidate");
    // A pre-candidate keeps its term and vote: a pre-vote changes nothing on anyone's disk.
    this.tracker.resetVotes();
    this.lead = NONE;
    this.role = "pre-candidate";
    this.logLine(`became pre-candidate at term ${this.term}`);
  }

  private becomeCandidate(): void {
    assert(this.role !== "leader", "raft: leader cannot become candidate");
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = "candidate";
    this.logLine(`became candidate at term ${this.term}`);
  }

  private becomeLeader(): void {
    assert(this.role === "candidate", "raft: only a candidate becomes leader");
    this.reset(this.term);
    this.lead = this.id;
    this.role = "leader";
    this.tracker.progress.get(this.id)?.becomeReplicate();
    // Conf changes in the uncommitted tail may be pending; allow no new one until they apply.
    this.pendingConfIndex = this.log.lastIndex();
    // An entry of the new term lets the leader commit everything before it (§5.4.2).
    this.appendEntries([{ term: 0, index: 0, type: "normal", data: new Uint8Array(0) }]);
    this.logLine(`became leader at term ${this.term}`);
  }

  private reset(term: number): void {
    if (term !== this.term) {
      this.term = term;
      this.vote = NONE;
    }
    this.lead = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.config.electionTicks + Math.floor(this.config.random() * this.config.electionTicks);
    this.leadTransferee = NONE;
    this.tracker.resetVotes();
    this.tracker.resetProgress(this.log.lastIndex() + 1);
    const self = this.tracker.progress.get(this.id);
    if (self !== undefined) self.match = this.log.persistedLastIndex();
    this.pendingConfIndex = 0;
    this.uncommittedBytes = 0;
    this.broadcastPending = false;
    this.readOnly.clear();
    this.pendingReadIndex = [];
  }

  // ---------------------------------------------------------------- time

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(false);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.config.electionTicks) {
      this.electionElapsed = 0;
      if (this.config.checkQuorum && !this.checkQuorumActive()) return;
      if (this.leadTransferee !== NONE) {
        this.logLine(`leadership transfer to ${this.leadTransferee} timed out`);
        this.abortLeaderTransfer();
      }
    }
    if (this.heartbeatElapsed >= this.config.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.broadcastHeartbeat(this.readOnly.lastContext());
    }
  }

  // CheckQuorum: a leader that did not hear from a quorum within an election timeout steps down,
  // so a partitioned leader stops serving (and stops holding followers' leases).
  private checkQuorumActive(): boolean {
    if (!this.tracker.quorumActive(this.id)) {
      this.logLine("stepping down: no quorum heard within an election timeout");
      this.becomeFollower(this.term, NONE);
      return false;
    }
    for (const [id, progress] of this.tracker.progress) {
      if (id === this.id) continue;
      progress.activeBefore = progress.recentActive;
      progress.recentActive = false;
    }
    return true;
  }

  // ---------------------------------------------------------------- elections

  private promotable(): boolean {
    return this.tracker.isVoter(this.id) && !this.fenced;
  }

  private hup(transfer: boolean): void {
    if (this.role === "leader") return;
    if (!this.promotable()) {
      this.logLine("not campaigning: not a voter, or fenced");
      return;
    }
    if (this.hasUnappliedConfChanges()) {
      this.logLine("not campaigning: committed conf changes are not yet applied");
      return;
    }
    if (this.config.preVote && !transfer) this.runCampaign("pre-election", false);
    else this.runCampaign("election", transfer);
  }

  private hasUnappliedConfChanges(): boolean {
    try {
      const pageBytes = this.config.maxCommittedBytesPerReady;
      return this.log.someCommittedUnapplied(pageBytes, (entry) => entry.type === "conf-change");
    } catch (error) {
      if (error instanceof CompactedError) return false;
      throw error;
    }
  }

  private runCampaign(kind: "pre-election" | "election", transfer: boolean): void {
    let voteType: MessageType;
    let term: number;
    if (kind === "pre-election") {
      this.becomePreCandidate();
      voteType = "prevote";
      term = this.term + 1; // the term it would campaign in; its own term does not move
    } else {
      this.becomeCandidate();
      voteType = "vote";
      term = this.term;
    }
    const responseType: MessageType = voteType === "vote" ? "vote-response" : "prevote-response";
    for (const id of this.tracker.voterIds()) {
      if (id === this.id) {
        // Our own vote counts once it is persisted, like everybody else's.
        this.send({ type: responseType, to: this.id, term });
        continue;
      }
      const message: Partial<Message> & { type: MessageType; to: NodeId } = {
        type: voteType,
        to: id,
        term,
        index: this.log.lastIndex(),
        logTerm: this.log.lastTerm(),
      };
      if (transfer) message.leaderTransfer = true;
      this.send(message);
    }
  }

  private handleVoteRequest(m: Message): void {
    const responseType: MessageType = m.type === "vote" ? "vote-response" : "prevote-response";
    // A pre-vote for a future term binds nothing, but is refused while we hear from a leader
    // (thesis §9.6): a node that was cut off must not unseat a working leader when it returns.
    const canVote =
      this.vote === m.from ||
      (this.vote === NONE && this.lead === NONE) ||
      (m.type === "prevote" && m.term > this.term && !this.inLeaderLease());
    const upToDate = this.config.bugs?.skipVoteLogCheck === true || this.log.isUpToDate(m.index, m.logTerm);
    if (canVote && upToDate) {
      this.logLine(`granting ${m.type} to ${m.from} at term ${m.term}`);
      this.send({ type: responseType, to: m.from, term: m.term });
      if (m.type === "vote") {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      let reason = `leader ${this.lead} is alive`;
      if (!upToDate) reason = "its log is behind";
      else if (this.vote !== NONE && !(m.type === "prevote" && m.term > this.term)) reason = `voted for ${this.vote}`;
      this.logLine(`rejecting ${m.type} from ${m.from} at term ${m.term}: ${reason}`);
      this.send({ type: responseType, to: m.from, term: this.term, reject: true });
    }
  }

  // We heard from a leader (or are one) within the election timeout.
  private inLeaderLease(): boolean {
    return this.lead !== NONE && this.electionElapsed < this.config.electionTicks;
  }

  private poll(m: Message): void {
    this.tracker.recordVote(m.from, !m.reject);
    const result = this.tracker.voteResult();
    if (result === "won") {
      if (this.role === "pre-candidate") {
        this.runCampaign("election", false);
      } else {
        this.becomeLeader();
        this.broadcastAppend();
      }
    } else if (result === "lost") {
      this.becomeFollower(this.term, NONE);
    }
  }

  // Handles the term of an incoming message. Returns false when the message is to be dropped.
  private checkTerm(m: Message): boolean {
    if (TERMLESS.has(m.type) || m.term === this.term) return true;
    if (m.term > this.term) {
      if (m.type === "vote" || m.type === "prevote") {
        // Lease: while we hear from a leader, a (pre)candidate is likely a partitioned or
        // restarted node with a stale view; ignoring it keeps it from disrupting the cluster.
        if (this.config.checkQuorum && this.inLeaderLease() && m.leaderTransfer !== true) {
          this.logLine(`ignoring ${m.type} from ${m.from} at term ${m.term}: leader lease`);
          return false;
        }
      }
      if (m.type === "prevote") return true; // answering a pre-vote never changes our term
      if (m.type === "prevote-response" && !m.reject) return true; // the term moves when we win
      const lead = m.type === "append" || m.type === "heartbeat" || m.type === "snapshot" ? m.from : NONE;
      this.becomeFollower(m.term, lead);
      return true;
    }
    // A stale term.
    if ((this.config.checkQuorum || this.config.preVote) && (m.type === "heartbeat" || m.type === "append")) {
      // A deposed leader that we ignore would never learn of the new term (with CheckQuorum or
      // PreVote nobody else bumps it): tell it.
      this.send({ type: "append-response", to: m.from });
    } else if (m.type === "prevote") {
      this.send({ type: "prevote-response", to: m.from, reject: true });
    }
    return false;
  }

  // ---------------------------------------------------------------- per-role steps

  private stepLeader(m: Message): void {
    switch (m.type) {
      case "propose":
        this.handleForwardedProposal(m);
        return;
      case "read-index":
        this.handleReadIndex(m);
        return;
      case "append-response":
        this.handleAppendResponse(m);
        return;
      case "heartbeat-response":
        this.handleHeartbeatResponse(m);
        return;
      default:
        return; // nothing else means anything to a leader at its own term
    }
  }

  private stepCandidate(m: Message): void {
    const myResponse: MessageType = this.role === "pre-candidate" ? "prevote-response" : "vote-response";
    switch (m.type) {
      case "append":
        this.becomeFollower(m.term, m.from);
        this.handleAppend(m);
        return;
      case "heartbeat":
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case "snapshot":
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      default:
        if (m.type === myResponse) this.poll(m);
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case "append":
        this.heardFromLeader(m.from);
        this.handleAppend(m);
        return;
      case "heartbeat":
        this.heardFromLeader(m.from);
        this.handleHeartbeat(m);
        return;
      case "snapshot":
        this.heardFromLeader(m.from);
        this.handleSnapshot(m);
        return;
      case "timeout-now":
        this.logLine(`received timeout-now from ${m.from}: campaigning`);
        this.hup(true);
        return;
      case "read-index-response":
        this.readStates.push({ index: m.index, context: m.context ?? new Uint8Array(0) });
        return;
      case "propose":
        if (this.lead !== NONE) this.send({ ...m, to: this.lead });
        return;
      default:
        return;
    }
  }

  private heardFromLeader(from: NodeId): void {
    this.electionElapsed = 0;
    this.lead = from;
  }

  // ---------------------------------------------------------------- proposals

  private requireLeader(): void {
    if (this.role !== "leader") {
      throw new RaftError("NOT_LEADER", this.lead === NONE ? "no leader" : `leader is ${this.lead}`);
    }
  }

  private proposeEntry(type: Entry["type"], data: Uint8Array): { index: number; term: number } {
    this.requireLeader();
    if (this.leadTransferee !== NONE) {
      throw new RaftError("PROPOSAL_DROPPED", `leadership transfer to ${this.leadTransferee} in progress`);
    }
    if (!this.tracker.progress.has(this.id)) throw new RaftError("PROPOSAL_DROPPED", "this node was removed");
    const entry: Entry = { term: 0, index: 0, type, data };
    if (!this.increaseUncommittedBytes([entry])) {
      throw new RaftError("PROPOSAL_DROPPED", `uncommitted log over ${this.config.maxUncommittedBytes} bytes`);
    }
    const last = this.appendEntries([entry]);
    this.broadcastPending = true;
    return { index: last, term: this.term };
  }

  private handleForwardedProposal(m: Message): void {
    if (this.leadTransferee !== NONE || m.entries.length === 0) return;
    const entries = m.entries.map((entry) => ({ ...entry, term: 0, index: 0 }));
    if (entries.some((entry) => entry.type === "conf-change")) return; // only via proposeConfChange
    if (!this.increaseUncommittedBytes(entries)) return;
    this.appendEntries(entries);
    this.broadcastPending = true;
  }

  // The uncommitted-bytes limit; a single entry always fits into an empty budget.
  private increaseUncommittedBytes(entries: Entry[]): boolean {
    const size = entriesSizeBytes(entries);
    const limit = this.config.maxUncommittedBytes;
    if (limit > 0 && this.uncommittedBytes > 0 && this.uncommittedBytes + size > limit) return false;
    this.uncommittedBytes += size;
    return true;
  }

  // Appends entries of the current term to the leader's log (not yet durable).
  private appendEntries(entries: Entry[]): number {
    let index = this.log.lastIndex();
    const stamped = entries.map((entry) => ({ ...entry, term: this.term, index: ++index }));
    return this.log.append(stamped);
  }

  // ---------------------------------------------------------------- replication (leader)

  private broadcastAppend(): void {
    for (const id of this.tracker.progress.keys()) if (id !== this.id) this.sendAppend(id);
  }

  // The commit index moved: see RaftConfig.eagerCommitBroadcast. Lazily, only followers with
  // entries to receive get an append now; the others learn the commit from the next append or
  // heartbeat (which carries min(match, commit)).
  // `unpaused`: a follower whose progress was just unpaused gets an append even when empty.
  private broadcastCommit(unpaused: NodeId = NONE): void {
    if (this.config.eagerCommitBroadcast !== false) {
      this.broadcastAppend();
      return;
    }
    for (const id of this.tracker.progress.keys()) if (id !== this.id) this.maybeSendAppend(id, id === unpaused);
  }

  private sendAppend(to: NodeId): void {
    this.maybeSendAppend(to, true);
  }

  // Sends the follower its next batch, or a snapshot when the entries it needs are compacted.
  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const progress = this.tracker.progress.get(to);
    if (progress === undefined || progress.isPaused()) return false;
    const prevIndex = progress.next - 1;
    const prevTerm = this.log.term(prevIndex);
    let entries: Entry[] | undefined;
    if (prevTerm !== undefined) {
      try {
        entries = this.log.slice(progress.next, this.log.lastIndex() + 1, this.config.maxMessageBytes);
      } catch (error) {
        if (!(error instanceof CompactedError)) throw error;
      }
    }
    if (prevTerm === undefined || entries === undefined) return this.maybeSendSnapshot(to, progress);
    if (entries.length === 0 && !sendIfEmpty) return false;
    this.send({ type: "append", to, index: prevIndex, logTerm: prevTerm, entries, commit: this.log.committed });
    const last = entries[entries.length - 1];
    progress.sentEntries(entries.length, last?.index ?? prevIndex, entriesSizeBytes(entries));
    return true;
  }

  private maybeSendSnapshot(to: NodeId, progress: Progress): boolean {
    if (!progress.recentActive) return false; // do not ship a snapshot to a node that may be down
    let snapshot: Snapshot;
    try {
      snapshot = this.log.snapshot();
    } catch (error) {
      if (!(error instanceof SnapshotUnavailableError)) throw error;
      if (this.initialConf === undefined || this.log.firstIndex() !== 1) return false; // try later
      // Nothing compacted and no snapshot yet: the initial configuration and the empty state.
      snapshot = { meta: { index: 0, term: 0, conf: this.initialConf }, data: new Uint8Array(0) };
    }
    progress.becomeSnapshot(snapshot.meta.index);
    this.logLine(`sending snapshot ${snapshot.meta.term}/${snapshot.meta.index} to ${to}`);
    this.send({ type: "snapshot", to, snapshot });
    return true;
  }

  private sendHeartbeat(to: NodeId, context: Uint8Array | undefined): void {
    const progress = this.tracker.progress.get(to);
    if (progress === undefined) return;
    // Never tell a follower to commit beyond what it is known to have.
    const commit = Math.min(progress.match, this.log.committed);
    const message: Partial<Message> & { type: MessageType; to: NodeId } = { type: "heartbeat", to, commit };
    if (context !== undefined) message.context = context;
    this.send(message);
  }

  private broadcastHeartbeat(context: Uint8Array | undefined): void {
    for (const id of this.tracker.progress.keys()) if (id !== this.id) this.sendHeartbeat(id, context);
  }

  private handleAppendResponse(m: Message): void {
    const progress = this.tracker.progress.get(m.from);
    if (progress === undefined) return;
    progress.recentActive = true;
    if (m.reject) {
      this.handleAppendRejection(m, progress);
      return;
    }
    const wasPaused = progress.isPaused();
    // An answer at match itself still ends probing, and a snapshot the follower already covered.
    if (progress.maybeUpdate(m.index) || (progress.match === m.index && progress.state !== "replicate")) {
      if (progress.state === "probe") {
        progress.becomeReplicate();
      } else if (progress.state === "snapshot" && progress.match + 1 >= this.log.firstIndex()) {
        // The follower caught up through the snapshot; the log can take it from here.
        progress.becomeProbe();
        progress.becomeReplicate();
      } else if (progress.state === "replicate") {
        progress.inflights.freeLE(m.index);
      }
      if (this.maybeCommit()) this.broadcastCommit(wasPaused ? m.from : NONE);
      else if (wasPaused) this.sendAppend(m.from);
      while (this.maybeSendAppend(m.from, false)) {
        // Fill the inflight window.
      }
      if (m.from === this.leadTransferee && progress.match === this.log.lastIndex()) {
        this.logLine(`${m.from} caught up: sending timeout-now`);
        this.sendTimeoutNow(m.from);
      }
    }
  }

  private handleAppendRejection(m: Message, progress: Progress): void {
    if (m.index === 0) {
      // Index 0 matches on every initialized node: the follower is joining and has no
      // configuration yet. Only a snapshot (the initial one at index 0, if nothing newer) helps.
      if (progress.state !== "snapshot") this.maybeSendSnapshot(m.from, progress);
      return;
    }
    // Fast backtracking: skip, in one round trip, all our entries of terms the follower lacks.
    let nextProbe = m.rejectHint;
    if ((m.rejectTerm ?? 0) > 0) nextProbe = this.log.findConflictByTerm(m.rejectHint, m.rejectTerm!).index;
    if (progress.maybeDecreaseTo(m.index, nextProbe)) {
      if (progress.state === "replicate") progress.becomeProbe();
      this.sendAppend(m.from);
    }
  }

  private handleHeartbeatResponse(m: Message): void {
    const progress = this.tracker.progress.get(m.from);
    if (progress === undefined) return;
    progress.recentActive = true;
    progress.probeSent = false;
    if (m.reject && m.rejectHint < progress.match) {
      // The follower lost its log (see handleHeartbeat). Lowering match is always safe: it only
      // holds back future commits; what is committed stays committed.
      this.logLine(`${m.from} lost its log beyond ${m.rejectHint} (match was ${progress.match}): probing from there`);
      progress.forgetMatch(m.rejectHint);
    }
    // A full window may be full of lost appends: let one more through to find out.
    if (progress.state === "replicate" && progress.inflights.full()) progress.inflights.freeFirst();
    if (progress.match < this.log.lastIndex() || progress.state === "probe") this.sendAppend(m.from);
    if (m.context === undefined || m.context.length === 0) return;
    const acks = this.readOnly.recordAck(m.from, m.context);
    if (acks === undefined) return;
    const votes = new Map<NodeId, boolean>();
    for (const id of acks) votes.set(id, true);
    if (this.tracker.voteResultFor(votes) !== "won") return;
    for (const read of this.readOnly.release(m.context)) this.answerReadIndex(read.request, read.index);
  }

  private maybeCommit(): boolean {
    const index = this.tracker.committedIndex();
    if (index <= this.log.committed || !Number.isFinite(index)) return false;
    const term = this.log.term(index);
    // Counting replicas commits only an entry of the current term (§5.4.2, Figure 8).
    if (term !== this.term && this.config.bugs?.commitPreviousTermByCount !== true) return false;
    this.log.commitTo(index);
    this.releasePendingReadIndex();
    return true;
  }

  // The leader's own entries count toward the commit once the driver persisted them.
  private acknowledgeOwnEntries(): void {
    if (this.role !== "leader") return;
    const self = this.tracker.progress.get(this.id);
    if (self === undefined) return;
    if (self.maybeUpdate(this.log.persistedLastIndex()) && this.maybeCommit()) this.broadcastCommit();
  }

  private sendTimeoutNow(to: NodeId): void {
    this.send({ type: "timeout-now", to });
  }

  private abortLeaderTransfer(): void {
    this.leadTransferee = NONE;
  }

  // ---------------------------------------------------------------- replication (follower)

  private handleAppend(m: Message): void {
    if (m.index === 0 && this.joining) {
      // The log from index 1 on only makes sense on top of the initial configuration, which is
      // not in the log: ask for a snapshot (rejecting index 0 tells the leader so).
      this.logLine("rejecting append from the log's start: no configuration yet, need a snapshot");
      this.send({ type: "append-response", to: m.from, index: 0, reject: true, rejectHint: 0, rejectTerm: 0 });
      return;
    }
    if (m.index < this.log.committed) {
      this.send({ type: "append-response", to: m.from, index: this.log.committed });
      return;
    }
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      this.send({ type: "append-response", to: m.from, index: lastNew });
      return;
    }
    // Consistency check failed: hint the leader where our log could match.
    const hint = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    this.logLine(`rejecting append at ${m.logTerm}/${m.index}: hint ${hint.term}/${hint.index}`);
    this.send({ type: "append-response", to: m.from, index: m.index, reject: true, rejectHint: hint.index, rejectTerm: hint.term });
  }

  private handleHeartbeat(m: Message): void {
    const response: Partial<Message> & { type: MessageType; to: NodeId } = { type: "heartbeat-response", to: m.from };
    // The leader sends commit = min(our match, its commit): a commit beyond our last index means
    // we lost entries we once acknowledged (the data directory was wiped). Commit nothing on
    // its word, and tell it where our log ends so it probes (and snapshots) us from there.
    if (m.commit > this.log.lastIndex()) {
      this.logLine(`heartbeat commit ${m.commit} is beyond our last index ${this.log.lastIndex()}: our log was lost`);
      response.reject = true;
      response.rejectHint = this.log.lastIndex();
    } else {
      this.log.commitTo(m.commit);
    }
    if (m.context !== undefined) response.context = m.context;
    this.send(response);
  }

  private handleSnapshot(m: Message): void {
    const snapshot = m.snapshot;
    assert(snapshot !== undefined, "raft: snapshot message without a snapshot");
    if (this.restore(snapshot)) {
      this.logLine(`restored snapshot ${snapshot.meta.term}/${snapshot.meta.index}`);
      this.send({ type: "append-response", to: m.from, index: this.log.lastIndex() });
    } else {
      this.send({ type: "append-response", to: m.from, index: this.log.committed });
    }
  }

  private restore(snapshot: Snapshot): boolean {
    const { index, term, conf } = snapshot.meta;
    const joining = this.joining && confMembers(conf).length > 0;
    if (index < this.log.committed || (index === this.log.committed && !joining)) return false;
    // The leader only sends snapshots to members; if the snapshot's configuration lacks us, we
    // were added after it was taken, and the entries that follow it will add us. (etcd refuses
    // such a snapshot, which strands a node added after the leader's last snapshot.)
    if (!confMembers(conf).includes(this.id)) this.logLine(`restoring snapshot ${term}/${index} that predates this node's membership`);
    if (!joining && this.log.matchTerm(index, term)) {
      // We have the snapshot's last entry: the log is fine, just move the commit forward.
      this.log.commitTo(index);
      return false;
    }
    this.log.restore(snapshot);
    this.tracker.setConf(conf, this.log.lastIndex() + 1);
    this.confIndex = index;
    this.joining = false;
    return true;
  }

  // ---------------------------------------------------------------- ReadIndex

  private handleReadIndex(m: Message): void {
    if (this.tracker.isSingleVoter(this.id)) {
      this.answerReadIndex(m, this.log.committed);
      return;
    }
    // Until the leader committed an entry of its term it does not know the commit index.
    if (!this.committedEntryInCurrentTerm()) {
      this.pendingReadIndex.push(m);
      return;
    }
    this.startReadIndexRound(m);
  }

  private startReadIndexRound(m: Message): void {
    const context = m.context ?? new Uint8Array(0);
    if (this.readOnly.has(context)) return;
    this.readOnly.add(this.log.committed, m);
    this.readOnly.recordAck(this.id, context);
    this.broadcastHeartbeat(context);
  }

  private answerReadIndex(request: Message, index: number): void {
    const context = request.context ?? new Uint8Array(0);
    if (request.from === this.id || request.from === NONE) {
      this.readStates.push({ index, context });
    } else {
      this.send({ type: "read-index-response", to: request.from, index, context });
    }
  }

  private committedEntryInCurrentTerm(): boolean {
    return this.log.term(this.log.committed) === this.term;
  }

  private releasePendingReadIndex(): void {
    if (this.pendingReadIndex.length === 0 || !this.committedEntryInCurrentTerm()) return;
    const pending = this.pendingReadIndex;
    this.pendingReadIndex = [];
    for (const m of pending) this.startReadIndexRound(m);
  }

  // ---------------------------------------------------------------- applying

  private applyCommitted(entries: Entry[]): void {
    if (entries.length === 0) return;
    for (const entry of entries) if (entry.type === "conf-change") this.applyConfChangeEntry(entry);
    this.log.appliedTo(entries[entries.length - 1]!.index);
    if (this.role === "leader") {
      this.uncommittedBytes = Math.max(0, this.uncommittedBytes - entriesSizeBytes(entries));
      this.maybeAutoLeaveJoint();
    }
  }

  private applyConfChangeEntry(entry: Entry): void {
    if (entry.index <= this.confIndex) return; // a restored snapshot already includes it
    this.confIndex = entry.index;
    const change = decodeConfChange(entry.data);
    let conf: ReturnType<typeof applyConfChange>;
    try {
      conf = applyConfChange(this.tracker.conf, change);
    } catch (error) {
      if (!(error instanceof RaftError)) throw error;
      // Validated when proposed; a committed change that no longer applies is a no-op everywhere.
      this.logLine(`ignoring committed conf change ${entry.index} (${describeConfChange(change)}): ${error.message}`);
      return;
    }
    this.logLine(`applied conf change ${entry.index}: ${describeConfChange(change)}`);
    this.switchToConf(conf);
  }

  private switchToConf(conf: RaftStatus["conf"]): void {
    const before = new Set(this.tracker.progress.keys());
    this.tracker.setConf(conf, this.log.lastIndex() + 1);
    if (this.role !== "leader") return;
    const self = this.tracker.progress.get(this.id);
    if (self === undefined || self.learner) {
      this.logLine("stepping down: removed from the configuration");
      this.becomeFollower(this.term, NONE);
      return;
    }
    if (this.leadTransferee !== NONE && !this.tracker.isVoter(this.leadTransferee)) this.abortLeaderTransfer();
    // The quorum changed: the commit may move. New members get a first (probing) append now
    // rather than at the next heartbeat.
    if (this.maybeCommit()) {
      this.broadcastAppend();
      return;
    }
    for (const id of this.tracker.progress.keys()) {
      if (id !== this.id) this.maybeSendAppend(id, !before.has(id));
    }
  }

  private maybeAutoLeaveJoint(): void {
    const conf = this.tracker.conf;
    if (!conf.autoLeave || !isJoint(conf) || this.log.applied < this.pendingConfIndex) return;
    this.logLine("leaving the joint configuration automatically");
    const leave = encodeConfChange({ transition: "auto", changes: [] });
    this.appendEntries([{ term: 0, index: 0, type: "conf-change", data: leave }]);
    this.pendingConfIndex = this.log.lastIndex();
    this.broadcastAppend();
  }

  // ---------------------------------------------------------------- plumbing

  private message(fields: Partial<Message> & { type: MessageType; to: NodeId }): Message {
    return {
      from: this.id,
      term: TERMLESS.has(fields.type) ? 0 : this.term,
      logTerm: 0,
      index: 0,
      entries: [],
      commit: 0,
      reject: false,
      rejectHint: 0,
      ...fields,
    };
  }

  private send(fields: Partial<Message> & { type: MessageType; to: NodeId }): void {
    const message = this.message(fields);
    if (message.to === this.id) {
      this.selfMessages.push(message);
      return;
    }
    const early = this.config.bugs?.voteBeforePersist === true && VOTE_RESPONSES.has(message.type);
    if (AFTER_PERSIST.has(message.type) && !early) this.messagesAfterPersist.push(message);
    else this.messages.push(message);
  }

  private softState(): SoftState {
    return { leader: this.lead, role: this.role };
  }

  private hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  private logLine(line: string): void {
    this.config.logger?.(`raft ${this.id} [term ${this.term}] ${line}`);
  }
}

// The last of the persisted entries that the unstable log still holds unchanged. An append that
// arrived while they were being persisted may have replaced a suffix of them: the prefix before it
// is durable all the same and must not be handed out again (it may be at or below the commit
// index by now, which storage must refuse; found by the simulator over the real WAL).
function lastUnchangedEntry(unstable: UnstableLog, persisted: Entry[], last: { index: number; term: number }): { index: number; term: number } | undefined {
  if (unstable.term(last.index) === last.term) return last;
  let unchanged: Entry | undefined;
  for (const entry of persisted) {
    if (unstable.term(entry.index) !== entry.term) break;
    unchanged = entry;
  }
  return unchanged;
}

function hardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

function snapshotIndexOf(storage: LogStorage): number {
  try {
    return storage.snapshot().meta.index;
  } catch (error) {
    if (error instanceof SnapshotUnavailableError) return storage.firstIndex() - 1;
    throw error;
  }
}

function structuredCloneConf(conf: RaftStatus["conf"]): RaftStatus["conf"] {
  return {
    voters: [...conf.voters],
    learners: [...conf.learners],
    votersOutgoing: [...conf.votersOutgoing],
    learnersNext: [...conf.learnersNext],
    autoLeave: conf.autoLeave,
  };
}

function validateConfig(config: RaftConfig): void {
  const positive = (name: string, value: number) =>
    assert(Number.isInteger(value) && value > 0, `raft config: ${name} must be a positive integer, got ${value}`);
  positive("id", config.id);
  positive("electionTicks", config.electionTicks);
  positive("heartbeatTicks", config.heartbeatTicks);
  positive("maxMessageBytes", config.maxMessageBytes);
  positive("maxInflightMessages", config.maxInflightMessages);
  positive("maxCommittedBytesPerReady", config.maxCommittedBytesPerReady);
  assert(config.heartbeatTicks < config.electionTicks, "raft config: heartbeatTicks must be below electionTicks");
  assert(config.maxInflightBytes >= 0 && config.maxUncommittedBytes >= 0, "raft config: byte limits must be >= 0");
}

// Defaults for the limits (ticks are driver units; Ferry's driver ticks every 100 ms).
export const DEFAULT_ELECTION_TICKS = 10;
export const DEFAULT_HEARTBEAT_TICKS = 1;
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;
export const DEFAULT_MAX_INFLIGHT_MESSAGES = 256;
export const DEFAULT_MAX_INFLIGHT_BYTES = 0;
export const DEFAULT_MAX_COMMITTED_BYTES_PER_READY = 64 * 1024 * 1024;
export const DEFAULT_MAX_UNCOMMITTED_BYTES = 0;

// A RaftConfig with the defaults above; `random` must come from the caller (seeded in tests).
export function defaultRaftConfig(id: NodeId, random: () => number, overrides: Partial<RaftConfig> = {}): RaftConfig {
  return {
    id,
    electionTicks: DEFAULT_ELECTION_TICKS,
    heartbeatTicks: DEFAULT_HEARTBEAT_TICKS,
    preVote: true,
    checkQuorum: true,
    maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES,
    maxInflightMessages: DEFAULT_MAX_INFLIGHT_MESSAGES,
    maxInflightBytes: DEFAULT_MAX_INFLIGHT_BYTES,
    maxCommittedBytesPerReady: DEFAULT_MAX_COMMITTED_BYTES_PER_READY,
    maxUncommittedBytes: DEFAULT_MAX_UNCOMMITTED_BYTES,
    random,
    ...overrides,
  };
}

export { entrySizeBytes };
