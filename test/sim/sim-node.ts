// One simulated node: a real RaftNode driven the way src/node drives it, over a simulated disk.
//
// The disk (sim-disk.ts) only ever shows what was persisted: a Ready's hard state, entries and
// snapshot reach it when the simulated persist completes, some steps after the Ready was taken
// (with the "disk" model, when DiskRaftStorage.persist() resolved, once the persist was due). Until then the node keeps receiving messages and ticks, but no new
// Ready is taken (the core's contract: one Ready outstanding). A crash throws away the RaftNode,
// the state machine and the persist in flight; a restart builds a new RaftNode from the storage,
// with the state machine restored from the storage's snapshot (so committed entries after it
// are applied again, and the checker sees that they are the same ones).
//
// Driver contract (as src/node/node.ts): messages are sent at once, messagesAfterPersist only
// after the persist, then advance(). Committed entries are applied when the Ready is taken,
// before its persist (they were persisted by earlier Readies), and entries that commit while the
// persist is in flight are applied as they do (takeCommitted); a Ready with a snapshot applies
// its committed entries after the persist. After applying, the node takes a
// snapshot and compacts its log now and then, so lagging and new nodes need InstallSnapshot.

import { RaftNode } from "../../src/raft/raft-node.js";
import type { MemoryLogStorage } from "../../src/raft/memory-storage.js";
import type { ConfState, Entry, LogStorage, Message, NodeId, RaftConfig, RaftStatus, Ready, Role } from "../../src/raft/types.js";
import type { DiskRaftStorage, RecoveryReport } from "../../src/storage/raft-storage.js";
import type { LogView, SafetyChecker } from "./checker.js";
import { type LastWriteFault, type SimDisk, snapshotIndexOf, WalSimDisk } from "./sim-disk.js";
import { StateMachine } from "./state-machine.js";
import { describeEntries, type Trace } from "./trace.js";

// Bounds the work of one node in one step (persist completions and Ready batches).
const READIES_PER_STEP_MAX = 4;

export type NodeState = "running" | "crashed" | "stopped";

// What a node needs from the simulation around it.
export interface NodeEnvironment {
  readonly trace: Trace;
  readonly checker: SafetyChecker;
  step(): number;
  send(message: Message): void;
  persistDelaySteps(): number;
  persistStarted(node: SimNode, ready: Ready): void;
  applied(node: SimNode, entry: Entry): void;
  readAnswered(node: SimNode, context: Uint8Array, index: number): void;
  leaderCommitted(node: SimNode, index: number, term: number, conf: ConfState): void;
  recovered(node: SimNode, report: RecoveryReport): void; // "disk" model: the WAL was reopened
}

export interface NodeOptions {
  snapshotEntries: number; // snapshot and compact once this many entries were applied since the last one
  compactKeepEntries: number; // entries kept behind the snapshot (so a short lag still catches up by log)
}

interface PendingPersist {
  ready: Ready;
  doneStep: number;
}

export class SimNode {
  raft: RaftNode | undefined;
  machine = new StateMachine();
  state: NodeState = "crashed";
  role: Role = "follower";
  term = 0;
  leader: NodeId = 0;
  tickRate = 1;
  pausedUntilStep = 0;
  restartAtStep = 0;
  snapshotsInstalled = 0; // received from a leader (InstallSnapshot), over all restarts
  private tickCredit = 0;
  private persisting: PendingPersist | undefined;
  private leaderTermChecked = 0;
  private commitChecked = 0; // the checker has seen this node's log up to here as committed
  private durabilityChecked = 0; // as leader, commits up to here were checked to be on a majority

  constructor(
    readonly id: NodeId,
    readonly disk: SimDisk,
    private readonly config: (applied: number) => RaftConfig,
    private readonly environment: NodeEnvironment,
    private readonly options: NodeOptions,
  ) {}

  // The persisted log.
  get storage(): LogStorage {
    return this.disk.log;
  }

  get running(): boolean {
    return this.state === "running";
  }

  persistPending(): boolean {
    return this.persisting !== undefined;
  }

  // Entries in the persist in flight (what a torn write could keep a prefix of).
  pendingEntries(): number {
    return this.persisting?.ready.entries.length ?? 0;
  }

  paused(step: number): boolean {
    return step < this.pausedUntilStep;
  }

  // (Re)starts from what the disk holds.
  start(): void {
    const snapshot = this.disk.restartSnapshot();
    this.machine = StateMachine.fromSnapshot(snapshot.data);
    if (this.machine.appliedIndex !== snapshot.meta.index) {
      this.environment.checker.report(
        `n${this.id}: snapshot ${snapshot.meta.index} holds state machine at ${this.machine.appliedIndex}`,
      );
    }
    this.environment.checker.snapshotRestored(this.id, snapshot.meta.index, snapshot.meta.term, this.machine.hash);
    this.raft = new RaftNode(this.config(snapshot.meta.index), this.storage);
    this.state = "running";
    this.role = "follower";
    this.leader = 0;
    this.term = this.storage.initialState().hardState.term;
    this.tickCredit = 0;
    this.persisting = undefined;
    this.commitChecked = this.storage.initialState().hardState.commit;
  }

  // Loses everything in memory and the persist in flight, except that a torn write may leave the
  // first `tornEntries` entries of that persist on disk (a WAL whose tail did not make it; the
  // hard state, written after the entries, is lost).
  // With the "disk" model, lastWrite says what becomes of the write in flight (tornEntries is not
  // used: the real WAL and its recovery decide what a torn write keeps).
  crash(tornEntries = 0, lastWrite: LastWriteFault = "drop", random: () => number = () => 0): void {
    const lost = this.persisting?.ready;
    const wal = this.disk instanceof WalSimDisk ? this.disk : undefined;
    const kept = wal !== undefined || lost === undefined || lost.snapshot !== undefined ? [] : lost.entries.slice(0, tornEntries);
    if (kept.length > 0) {
      (this.storage as MemoryLogStorage).append(kept);
      this.environment.checker.entriesPersisted(this.id, kept, termOrUndefined(this.storage, kept[0]!.index - 1));
    }
    this.environment.trace.add(
      () =>
        `crash n${this.id}` +
        (lost ? ` (loses unpersisted ${describeEntries(lost.entries)}${lost.hardState ? ` hs t${lost.hardState.term}` : ""})` : "") +
        (kept.length > 0 ? ` (torn write keeps ${describeEntries(kept)})` : "") +
        (wal !== undefined && lastWrite !== "drop" ? ` (last write: ${lastWrite})` : ""),
    );
    wal?.crash(lastWrite, random);
    this.raft = undefined;
    this.persisting = undefined;
    this.state = "crashed";
  }

  stop(): void {
    this.raft = undefined;
    this.persisting = undefined;
    this.state = "stopped";
  }

  deliver(message: Message): void {
    this.raft!.step(message);
    // A vote response is how a candidate becomes leader: look at once, so that a leadership too
    // short to reach a Ready (stepped down again before the next one) is still seen.
    if (message.type === "vote-response") this.observeRole();
    else if (message.type === "append-response" && this.role === "leader") this.checkLeaderCommit();
  }

  // A leader's commit index just moved (an acknowledgement arrived, or its own persist): the
  // entry must be durable on a majority (of both halves when joint) at this very moment.
  private checkLeaderCommit(): void {
    const status = this.raft!.status();
    if (status.role !== "leader" || status.commit <= this.durabilityChecked) return;
    this.durabilityChecked = status.commit;
    // The leader need not hold the entry on its own disk yet (a majority of others may): read its
    // term from the Ready being persisted, else from storage.
    const pending = this.persisting?.ready.entries ?? [];
    const first = pending[0]?.index ?? Number.POSITIVE_INFINITY;
    const term =
      status.commit >= first && status.commit < first + pending.length
        ? pending[status.commit - first]!.term
        : termOrUndefined(this.storage, status.commit);
    if (term === undefined) return; // compacted: committed long ago
    this.environment.leaderCommitted(this, status.commit, term, status.conf);
  }

  // Advances the node's clock by one step at its own rate; returns the ticks it took (0, 1 or 2).
  tick(): number {
    this.tickCredit += this.tickRate;
    let ticks = 0;
    while (this.tickCredit >= 1) {
      this.tickCredit -= 1;
      this.raft!.tick();
      ticks++;
    }
    return ticks;
  }

  // Completes a due persist and takes new Readies, a bounded number of times.
  pump(): void {
    const step = this.environment.step();
    for (let round = 0; round < READIES_PER_STEP_MAX && this.running; round++) {
      if (this.persisting !== undefined) {
        if (this.persisting.doneStep > step) {
          if (this.persisting.ready.snapshot === undefined) for (const entry of this.raft!.takeCommitted()) this.apply(entry);
          return;
        }
        if (!this.disk.persistDone()) {
          // Due: its fsync may complete now; it is persisted once the storage says so.
          this.disk.releasePersist();
          return;
        }
        this.completePersist(this.persisting.ready);
        continue;
      }
      if (!this.raft!.hasReady()) return;
      this.takeReady(step);
    }
  }

  private takeReady(step: number): void {
    const raft = this.raft!;
    const ready = raft.ready();
    if (ready.softState !== undefined || (ready.hardState !== undefined && ready.hardState.term !== this.term)) {
      this.observeRole();
    }
    if (this.role === "leader" && this.term > this.leaderTermChecked) {
      this.leaderTermChecked = this.term;
      this.environment.checker.leaderLogChecked(this.id, this.term, logWithReady(this.storage, ready));
    }
    // Storage must never be asked to rewrite a committed entry (DiskRaftStorage refuses it).
    const first = ready.entries[0];
    if (first !== undefined && ready.snapshot === undefined && first.index <= this.commitChecked) {
      this.environment.checker.report(`n${this.id}: Ready hands out entry ${first.index} for persisting, at or below commit ${this.commitChecked}`);
    }
    if (ready.hardState !== undefined && ready.hardState.commit > this.commitChecked) this.commitAdvanced(ready);
    for (const read of ready.readStates) this.environment.readAnswered(this, read.context, read.index);
    for (const message of ready.messages) this.environment.send(message);
    if (ready.snapshot === undefined) for (const entry of ready.committedEntries) this.apply(entry);
    this.persisting = { ready, doneStep: step + this.environment.persistDelaySteps() };
    this.disk.startPersist(ready);
    this.environment.persistStarted(this, ready);
  }

  // The node's commit index moved: everything up to it in its log is committed from now on.
  private commitAdvanced(ready: Ready): void {
    const commit = ready.hardState!.commit;
    const log = logWithReady(this.storage, ready);
    if (commit > log.lastIndex()) {
      this.environment.checker.report(`n${this.id}: commit ${commit} beyond its last index ${log.lastIndex()}`);
      return;
    }
    for (let index = Math.max(this.commitChecked + 1, log.firstIndex()); index <= commit; index++) {
      this.environment.checker.committed(this.id, index, log.term(index), this.term);
    }
    this.commitChecked = commit;
  }

  // Reads role and term from the core when a Ready says they may have changed.
  private observeRole(): RaftStatus {
    const status = this.raft!.status();
    const changed = status.role !== this.role || status.term !== this.term || status.lead !== this.leader;
    this.term = status.term;
    this.leader = status.lead;
    this.role = status.role;
    if (changed) this.environment.trace.add(() => `role n${this.id} ${status.role} t${status.term} lead=n${status.lead}`);
    if (status.role === "leader") this.environment.checker.leaderElected(this.id, status.term);
    // The commit a new leader starts with was reached under earlier configurations: only what it
    // commits itself is checked against its own.
    if (changed && status.role === "leader") this.durabilityChecked = status.commit;
    return status;
  }

  private completePersist(ready: Ready): void {
    this.persisting = undefined;
    const environment = this.environment;
    this.disk.finishPersist(ready);
    if (ready.entries.length > 0) {
      environment.checker.entriesPersisted(this.id, ready.entries, termOrUndefined(this.storage, ready.entries[0]!.index - 1));
    }
    environment.trace.add(() => `persist n${this.id} ${describeEntries(ready.entries)}${describeHardState(ready)}`);
    for (const message of ready.messagesAfterPersist) environment.send(message);
    if (ready.snapshot !== undefined) {
      this.restoreSnapshot(ready);
      for (const entry of ready.committedEntries) this.apply(entry);
    }
    this.raft!.advance(ready);
    const status = this.observeRole(); // advance() counts the node's own persisted vote: it may win here
    // The core's configuration is the one at the applied index, unless a snapshot beyond it was
    // restored in memory since this Ready was taken (it comes out in the next Ready).
    const snapshotPending = status.firstIndex - 1 > this.machine.appliedIndex;
    const confMayChange = ready.snapshot !== undefined || ready.committedEntries.some((entry) => entry.type === "conf-change");
    if (confMayChange && !snapshotPending) this.environment.checker.configurationAt(this.id, this.machine.appliedIndex, status.conf);
    if (this.role === "leader") this.checkLeaderCommit();
    this.maybeCompact();
  }

  private restoreSnapshot(ready: Ready): void {
    const snapshot = ready.snapshot!;
    this.snapshotsInstalled++;
    this.machine = StateMachine.fromSnapshot(snapshot.data);
    this.environment.trace.add(() => `restore n${this.id} snapshot ${snapshot.meta.index}/t${snapshot.meta.term}`);
    if (this.machine.appliedIndex !== snapshot.meta.index) {
      this.environment.checker.report(`n${this.id}: snapshot ${snapshot.meta.index} holds state at ${this.machine.appliedIndex}`);
    }
    this.environment.checker.snapshotRestored(this.id, snapshot.meta.index, snapshot.meta.term, this.machine.hash);
  }

  private apply(entry: Entry): void {
    if (entry.index !== this.machine.appliedIndex + 1) {
      this.environment.checker.report(`n${this.id}: committed entry ${entry.index} handed out after applied ${this.machine.appliedIndex}`);
      if (entry.index <= this.machine.appliedIndex) return;
    }
    // The contract: only persisted entries are handed out for applying.
    const persistedTerm = termOrUndefined(this.storage, entry.index);
    if (persistedTerm !== entry.term && entry.index >= this.storage.firstIndex()) {
      this.environment.checker.report(
        `n${this.id}: committed entry ${entry.index}/t${entry.term} handed out, the disk has ${persistedTerm === undefined ? "nothing" : `t${persistedTerm}`} there`,
      );
    }
    this.machine.appliedIndex = entry.index - 1;
    this.machine.apply(entry);
    this.environment.checker.applied(this.id, entry, this.machine.hash, this.term);
    this.environment.applied(this, entry);
  }

  private maybeCompact(): void {
    const applied = this.machine.appliedIndex;
    const snapshotIndex = snapshotIndexOf(this.storage);
    if (applied - snapshotIndex < this.options.snapshotEntries) return;
    this.takeSnapshot();
  }

  // Snapshots the state machine at its applied index and compacts the log behind it.
  takeSnapshot(): void {
    const applied = this.machine.appliedIndex;
    if (applied <= snapshotIndexOf(this.storage) || this.disk.snapshotBusy()) return;
    const meta = { index: applied, term: this.storage.term(applied), conf: this.raft!.status().conf };
    const compactThrough = Math.max(1, applied - this.options.compactKeepEntries);
    this.disk.saveSnapshot(meta, this.machine.snapshotData(), compactThrough);
    this.environment.trace.add(() => `snapshot n${this.id} at ${applied}, compacting through ${compactThrough}`);
  }

  // The "disk" model reopened the WAL (at the start, or after a crash). Entries a torn write kept
  // are on disk now: the checker sees the whole recovered log, against every other node's.
  recovered(storage: DiskRaftStorage, report: RecoveryReport): void {
    const torn = report.tornTail;
    this.environment.trace.add(
      () =>
        `recover n${this.id} log=${storage.firstIndex()}..${storage.lastIndex()} hs=t${storage.initialState().hardState.term}` +
        (torn ? ` (torn tail cut at ${torn.path}:${torn.offsetBytes}: ${torn.problem})` : ""),
    );
    this.environment.recovered(this, report);
    if (storage.lastIndex() >= storage.firstIndex()) {
      const entries = storage.entries(storage.firstIndex(), storage.lastIndex() + 1, Number.POSITIVE_INFINITY);
      this.environment.checker.entriesPersisted(this.id, entries, termOrUndefined(storage, storage.firstIndex() - 1));
    }
  }
}

function termOrUndefined(storage: LogStorage, index: number): number | undefined {
  if (index < storage.firstIndex() - 1 || index > storage.lastIndex()) return undefined;
  return storage.term(index);
}

function describeHardState(ready: Ready): string {
  const hs = ready.hardState;
  const snapshot = ready.snapshot ? ` snap=${ready.snapshot.meta.index}` : "";
  return (hs ? ` hs=t${hs.term} vote=${hs.vote} commit=${hs.commit}` : "") + snapshot;
}

// The log a node has once this Ready is persisted: storage with ready.entries laid over it.
function logWithReady(storage: LogStorage, ready: Ready): LogView {
  const entries = ready.entries;
  if (ready.snapshot !== undefined || entries.length === 0) {
    const snapshot = ready.snapshot;
    if (snapshot === undefined) return storage;
    const base = snapshot.meta;
    return {
      firstIndex: () => base.index + 1,
      lastIndex: () => (entries.length > 0 ? entries[entries.length - 1]!.index : base.index),
      term: (index) => (index === base.index ? base.term : entries[index - entries[0]!.index]!.term),
    };
  }
  const first = entries[0]!.index;
  const last = entries[entries.length - 1]!.index;
  return {
    firstIndex: () => storage.firstIndex(),
    lastIndex: () => last,
    term: (index) => (index >= first ? entries[index - first]!.term : storage.term(index)),
  };
}
