// The node driver: wires the Raft core to storage, the peer transport, the broker state machine
// and the clock, and answers client requests once their entries are applied.
//
// One loop, run whenever something happened (a tick, a message, a proposal): propose the queued
// requests as batched entries, then take one Ready from the core, send what may go at once,
// persist (one write and one fsync for the whole Ready: group commit), send what had to wait for
// the persist, apply the committed entries, answer their requests, advance. While one Ready is
// being persisted the next one accumulates, so the fsync rate, not the request rate, bounds work.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Broker, StateFormatError } from "../broker/broker.js";
import type { BrokerCommand, BrokerResult, ReceiveCommand } from "../broker/commands.js";
import { replicatedSettings, replicatedSettingsProblem, resolveBrokerConfig } from "../broker/config.js";
import { COMMAND_SET, COMMAND_SET_ACKING_RECEIVE, COMMAND_SET_LEASE_ACKS, decodeCommands, encodeCommands, roundTripsExactly } from "../broker/commands.js";
import { StoreCommitError } from "../broker/kv.js";
import { leaseNamesProblem } from "../broker/validate.js";
import { TimestampAheadError } from "../clock/hlc.js";
import { centralOffsetMs } from "../clock/offset-estimator.js";
import type { AckReply, ClusterReply, ClusterRequest, ErrorReply, ListRequest, ReceiveReply, ReceiveRequest, Reply, Request, StatusReply } from "../protocol/api.js";
import { FerryError } from "../protocol/errors.js";
import { confMembers, decodeConfChange } from "../raft/confchange.js";
import { RaftNode } from "../raft/raft-node.js";
import type { ConfState, Entry, HardState, Ready, Snapshot } from "../raft/types.js";
import { RaftError, SnapshotUnavailableError, snapshotDataBytes } from "../raft/types.js";
import { LmdbKv, type LmdbKvOptions } from "../storage/kv-lmdb.js";
import { DiskRaftStorage } from "../storage/raft-storage.js";
import type { SnapshotWriter, StoredSnapshot } from "../storage/snapshots.js";
import { memorySnapshotSink } from "../transport/inbound-connection.js";
import { type PeerTls, PeerTransport } from "../transport/peer-transport.js";
import { assert } from "../util/assert.js";
import { type NodeConfig, parseHostPort } from "./config.js";
import { decodeEntry, encodeEntry } from "./entry-codec.js";
import { type Logger, silentLogger } from "./log.js";
import { AddressBook } from "./members.js";
import { NodeMetrics } from "./metrics.js";
import { InflightProposals, type PendingRequest, ProposalQueue } from "./proposals.js";
import { type Session, toBrokerCommand } from "./requests.js";
import { nodeSnapshotParts, readNodeSnapshot } from "./snapshot-codec.js";
import { SnapshotThread, SnapshotThreadError } from "./snapshot-thread.js";
import type { EntryTrace } from "./trace.js";
import { NodeTime } from "./time.js";
import { AppliedWaiters, MailboxWaiters } from "./waiters.js";

export interface NodeDependencies {
  log?: Logger;
  physicalNowMs?: () => number; // the clock source; tests inject a skewed one
  random?: () => number;
  peerTls?: PeerTls; // mutual TLS on the peer port (ferry start --peer-tls)
  trace?: EntryTrace; // records when each entry reached each stage here (FERRY_TRACE_DIR)
  // The set of log commands this node applies and tells its peers (COMMAND_SET); tests give an
  // older one to stand for a node of an earlier version in the cluster.
  commandSet?: number;
}

type Pending = PendingRequest<BrokerCommand, BrokerResult>;
const SHUTDOWN_TRANSFER_MS = 2_000;
const SNAPSHOT_SLICE_MS = 5; // longest run of snapshot reading before yielding to the event loop
const PROCESS_SLICE_MS = 10; // Readys handled in a row before yielding to the event loop
const SNAPSHOT_RESTORE_COMMIT_BYTES = 8 * 1024 * 1024; // restored state per state-store commit
const SNAPSHOT_WRITE_BYTES = 1024 * 1024; // snapshot bytes per file write while one is made
// A snapshot thread's read finds another index than the node's when a commit slips in before it
// (see snapshot-thread.ts); after this many in a row the node makes one snapshot itself.
const SNAPSHOT_THREAD_MISSES_MAX = 3;
const STATE_MAP_BYTES = 1024 * 1024 * 1024; // the state store's map (address space; the file grows as needed)
const STORE_RECOVERY_WINDOW_MS = 60_000; // NodeConfig.stateRecoveriesMax counts failures in this window
const REAPPLY_BYTES_MAX = 4 * 1024 * 1024; // log read per step when entries are re-applied after a store failure
const LOOKBACK_ENTRIES = 64; // entries read per step when looking back for the last stamp
// Committed entries applied per Ready, at most (one entry always): a follower catching up through
// a long log applies this much between turns of its event loop (16 MiB held it ~0.3 s at a time).
const APPLY_BYTES_PER_READY = 1024 * 1024;
// A node catching up (at least CATCH_UP_LAG_ENTRIES committed entries still to apply) commits the
// state store once its group wrote CATCH_UP_COMMIT_BYTES, rather than at its timer: a second of
// catch-up applies was one commit of 260-364 ms on the event loop. (Not in steady state: bounding
// every group so cost 5-10% of the pipelined SEND rate, docs/bench.md "Session 23".)
const CATCH_UP_COMMIT_BYTES = 4 * 1024 * 1024;
const CATCH_UP_LAG_ENTRIES = 64;

export class FerryNode {
  private readonly queue: ProposalQueue<BrokerCommand, BrokerResult>;
  private readonly inflight = new InflightProposals<BrokerCommand, BrokerResult>();
  private readonly mailboxWaiters = new MailboxWaiters();
  private readonly appliedWaiters = new AppliedWaiters();
  private readonly readWaiters = new Map<string, (index: number) => void>();
  private readonly fatalListeners: Array<(error: Error) => void> = [];
  private leaderWaiters: Array<() => void> = [];
  private scheduled = false;
  private processing = false;
  // Set while a Ready's persist is awaited after its committed entries were applied.
  private applyingEarly = false;
  // An early apply that threw: handleReady rethrows it once the persist is done, before advance().
  private earlyFailure: Error | undefined;
  private stopped = false;
  private ticker: NodeJS.Timeout | undefined;
  private readSequence = 0;
  private fencedTicks = 0;
  private fencedTransferTarget = 0; // the voter of the last transfer while fenced (0: none)
  private writtenHardState: HardState | undefined;
  private unwrittenHardState: HardState | undefined; // commit-only changes not yet written
  private leader = 0;
  private role = "follower";
  private memberIds: number[]; // the configuration's voters and learners (refreshPeers)
  private snapshotting = false;
  private snapshotThread: SnapshotThread | undefined; // started with the node
  private snapshotThreadReady = false;
  private snapshotThreadMisses = 0; // the thread's reads in a row that found another index
  private lastSnapshotIndex = 0;
  private bytesSinceSnapshot = 0; // entry bytes applied since the last snapshot began (or the start)
  private restoring: Promise<void> | undefined; // while a snapshot from the leader is restored
  private storeRecoveriesMs: number[] = []; // when the state store's failed commits were recovered from (recoverStore)
  private snapshotsInstalled = 0; // snapshots from the leader installed: a local one in the making is then stale
  private appliedIndex: number;
  readonly metrics: NodeMetrics;

  private constructor(
    readonly config: NodeConfig,
    private readonly raft: RaftNode,
    private readonly storage: DiskRaftStorage,
    private readonly broker: Broker,
    private readonly kv: LmdbKv,
    private readonly transport: PeerTransport,
    private readonly book: AddressBook,
    private readonly clock: NodeTime,
    private readonly log: Logger,
    private readonly trace: EntryTrace | undefined,
    private readonly commandSet: number,
  ) {
    this.queue = new ProposalQueue(config.pendingRequestsMax);
    // A commit the store refused in the background (its timer) is recovered from at once, not at
    // the next apply: reads fail until then.
    kv.setFailureListener((error) => setImmediate(() => this.recoverStoreWhenIdle(error)));
    this.appliedIndex = broker.appliedIndex();
    this.memberIds = confMembers(raft.status().conf);
    // A restart counts toward the next snapshot what the log already holds above the stored one.
    this.lastSnapshotIndex = latestSnapshotIndex(storage);
    this.bytesSinceSnapshot = storage.logBytesAfter(this.lastSnapshotIndex);
    this.metrics = new NodeMetrics(this, config.id);
  }

  static async start(config: NodeConfig, dependencies: NodeDependencies = {}): Promise<FerryNode> {
    const log = dependencies.log ?? silentLogger;
    const brokerConfig = resolveBrokerConfig(config.broker); // a bad value stops the start here
    const settings = replicatedSettings(brokerConfig);
    const commandSet = dependencies.commandSet ?? COMMAND_SET;
    await mkdir(config.dataDir, { recursive: true });
    const initialConf: ConfState | undefined = config.join
      ? undefined
      : { voters: config.members.map((m) => m.id), learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
    const storage = await DiskRaftStorage.open(join(config.dataDir, "raft"), { fsync: config.fsync, initialConf });
    let kv: LmdbKv | undefined;
    try {
      kv = new LmdbKv({ ...stateStoreOptions(config), commitIntervalMs: config.stateCommitMs });
      const broker = new Broker(kv, brokerConfig);
      const book = await AddressBook.load(config.dataDir, config.members);
      await restoreFromStoredSnapshot(storage, broker, book);
      const clock = NodeTime.create(config.clockMaxOffsetMs, dependencies.physicalNowMs ?? Date.now, log);
      clock.observe(storedSnapshotTimestamp(storage));
      const raft = new RaftNode(
        {
          id: config.id,
          electionTicks: config.electionTicks,
          heartbeatTicks: config.heartbeatTicks,
          preVote: true,
          checkQuorum: true,
          maxMessageBytes: 1024 * 1024,
          maxInflightMessages: 256,
          maxInflightBytes: 0,
          maxCommittedBytesPerReady: APPLY_BYTES_PER_READY,
          maxUncommittedBytes: 256 * 1024 * 1024,
          // Followers learn a new commit index from the next append or heartbeat rather than from
          // an extra append each: per request at one in flight, 5 socket writes across the cluster
          // instead of 9, and a cross-process wake-up is the largest cost of a lightly loaded node.
          eagerCommitBroadcast: false,
          random: dependencies.random ?? Math.random,
          applied: broker.appliedIndex(),
          logger: (line) => log("debug", "raft", { line }),
        },
        storage,
      );
      let node: FerryNode | undefined;
      const listen = parseHostPort(config.peerListen);
      const transport = await PeerTransport.start({
        selfId: config.id,
        clusterId: config.clusterId,
        secret: config.secret,
        settings,
        settingsProblem: (theirs) => replicatedSettingsProblem(settings, theirs),
        commands: commandSet,
        listen,
        peers: peersToDial(config.id, book, confMembers(raft.status().conf)),
        onMessages: (_from, messages) => node?.receive(messages),
        onClockSample: (from, sample) => clock.sample(from, sample),
        onSnapshotStatus: (to, delivered) => node?.raft.reportSnapshot(to, delivered),
        // Written to the snapshot's file as it arrives (a sender that gives no checksum, an older
        // Ferry, gets it assembled in memory as before).
        snapshotBytesMax: config.snapshotBytesMax,
        receiveSnapshot: (meta, dataBytes, checksum) =>
          checksum === undefined ? memorySnapshotSink(meta, dataBytes, checksum) : storage.receiveSnapshot(meta, dataBytes, checksum),
        onUnreachable: (peer) => node?.raft.reportUnreachable(peer),
        now: () => clock.physicalNowMs(),
        // A peer refused for other broker settings is a misconfigured cluster: an error, not noise.
        log: (event, fields) => log(event === "peer-settings-refused" ? "error" : "debug", event, fields),
        ...(dependencies.peerTls === undefined ? {} : { tls: dependencies.peerTls }),
      });
      node = new FerryNode(config, raft, storage, broker, kv, transport, book, clock, log, dependencies.trace, commandSet);
      node.startTicking();
      node.startSnapshotThread();
      return node;
    } catch (error) {
      // Nothing may keep the directory (the WAL's lock, LMDB) after a failed start.
      await kv?.close().catch(() => undefined);
      await storage.close().catch(() => undefined);
      // A store or stored snapshot of another layout: say which directory it is.
      if (error instanceof StateFormatError) throw error.inDirectory(config.dataDir);
      throw error;
    }
  }

  onFatal(listener: (error: Error) => void): void {
    this.fatalListeners.push(listener);
  }

  // ---- client requests ----

  // Not async: a SEND on the leader goes from here to the proposal queue synchronously, and its
  // answer reaches the caller through one promise reaction (the metrics count), not a chain of
  // async frames. Anything thrown on the way becomes a rejection, as from an async function.
  execute(request: Request, session: Session, signal?: AbortSignal, waitSignal?: AbortSignal): Promise<Reply> {
    let answer: Promise<Reply>;
    try {
      answer = this.executeRequest(request, session, signal, waitSignal);
    } catch (error) {
      answer = Promise.reject(error);
    }
    const op = request.op;
    return answer.then(
      (reply) => {
        this.metrics.countRequest(op, "ok");
        return reply;
      },
      (error: unknown) => {
        this.metrics.countRequest(op, error instanceof FerryError ? error.code : "INTERNAL");
        throw error;
      },
    );
  }

  // May throw synchronously (execute turns that into a rejection).
  private executeRequest(request: Request, session: Session, signal?: AbortSignal, waitSignal?: AbortSignal): Promise<Reply> {
    if (this.stopped) throw new FerryError("SHUTTING_DOWN", "this node is stopping; retry on another node");
    switch (request.op) {
      case "status":
        return Promise.resolve(this.status());
      case "list":
        return this.list(request, signal) as Promise<Reply>;
      case "cluster":
        return this.cluster(request);
      case "receive":
        return this.receiveWaiting(request, session, signal, waitSignal ?? signal);
      case "send":
        return this.propose(toBrokerCommand(request, session), signal, request.after) as Promise<Reply>;
      default:
        return this.propose(toBrokerCommand(request, session), signal) as Promise<Reply>;
    }
  }

  // May throw synchronously when a leader is known (callers turn that into a rejection).
  private propose(command: BrokerCommand, signal?: AbortSignal, after?: bigint): Promise<BrokerResult> {
    if (this.leader === 0) return this.waitForLeader(signal).then(() => this.proposeAsLeader(command, signal, after));
    return this.proposeAsLeader(command, signal, after);
  }

  private proposeAsLeader(command: BrokerCommand, signal?: AbortSignal, after?: bigint): Promise<BrokerResult> {
    this.requireLeader();
    if (after !== undefined) this.observeCausalToken(after);
    return this.enqueue(command, signal);
  }

  // A client's causal token (the timestamp of the last message it saw): everything stamped from
  // now on is above it. A token far in the future is refused rather than dragging the clock.
  private observeCausalToken(after: bigint): void {
    try {
      this.clock.update(after);
    } catch (error) {
      if (error instanceof TimestampAheadError) throw new FerryError("INVALID", `causal token ${after} is too far ahead of this cluster's clock`);
      throw error;
    }
  }

  // Right after a start or during an election no leader is known. Rather than fail at once, a
  // request waits (a few election timeouts at most) for one to emerge.
  private waitForLeader(signal?: AbortSignal): Promise<void> {
    const timeoutMs = Math.min(this.config.requestTimeoutMs, this.config.tickMs * this.config.electionTicks * 4);
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal?.addEventListener("abort", done, { once: true });
      this.leaderWaiters.push(done);
    });
  }

  // No timer and no abort listener per request: a per-request setTimeout and an 'abort' listener
  // on the connection's signal (shared by all its requests, so adding and removing one walks a
  // list as long as the requests in flight) cost more than the rest of the bookkeeping. The tick
  // expires requests past their deadline (expireRequests); a request whose connection went away
  // completes normally and its answer is dropped by the connection.
  private enqueue(command: BrokerCommand, signal?: AbortSignal): Promise<BrokerResult> {
    if (signal?.aborted) return Promise.reject(new FerryError("TIMEOUT", "aborted by the caller before it was proposed"));
    return new Promise<BrokerResult>((resolve, reject) => {
      this.queue.push(new PendingCommand(command, Date.now() + this.config.requestTimeoutMs, resolve, reject));
      this.schedule();
    });
  }

  private expireRequests(): void {
    const nowMs = Date.now();
    const timeout = () => new FerryError("TIMEOUT", `no answer within ${this.config.requestTimeoutMs} ms; the request may or may not have been applied`);
    this.queue.expire(nowMs, timeout);
    this.inflight.expire(nowMs, timeout);
  }

  // RECEIVE with a wait: lease what is visible; if nothing is, park until the mailbox gains
  // visible messages (woken by the apply loop) or a lease/delay ends, then try again. Once
  // waitSignal is aborted (see Service.execute) it waits no more: it answers with what it has.
  private async receiveWaiting(request: ReceiveRequest, session: Session, signal?: AbortSignal, waitSignal?: AbortSignal): Promise<ReceiveReply> {
    const waitMs = Math.min(request.waitMs ?? 0, this.config.waitMsMax);
    const deadline = Date.now() + waitMs;
    const command = toBrokerCommand(request, session) as ReceiveCommand;
    const carriesAcks = command.ack !== undefined || command.ackLeases !== undefined;
    if (command.ackLeases !== undefined && !this.membersApply(COMMAND_SET_LEASE_ACKS)) return this.receiveLeasesAsIds(command, signal, request.after);
    if (command.ack !== undefined && !this.membersApply(COMMAND_SET_ACKING_RECEIVE)) return this.receiveAckingSplit(command, signal, request.after);
    for (;;) {
      const reply = (await this.propose(command, signal, request.after)) as ReceiveReply;
      const remaining = deadline - Date.now();
      // A RECEIVE that carried acks never waits (ReceiveRequest.ack): they were applied, and
      // proposing it again would apply them again.
      if (reply.messages.length > 0 || carriesAcks || remaining <= 0 || signal?.aborted || waitSignal?.aborted || this.stopped) return reply;
      const nowMs = this.clock.physicalNowMs();
      const visibleAt = this.broker.nextVisibleAt(request.mailbox, nowMs + remaining);
      const untilVisible = visibleAt === undefined ? remaining : Number(visibleAt >> 16n) - nowMs + 1;
      await this.mailboxWaiters.wait(request.mailbox, Math.min(remaining, Math.max(0, untilVisible)), waitSignal);
      // Stopped (see Service.execute): answer with nothing rather than lease once more, maybe
      // for a client that is gone.
      if (waitSignal?.aborted) return reply;
    }
  }

  // A RECEIVE that carries acks, while a member may not apply that command (an older version, see
  // COMMAND_SET): an ACK of the ids, then, once it is applied, the RECEIVE without them and
  // without a wait, and the ACK's count as `acked`. The same outcome in two commands; an ACK that
  // fails (a bad id) fails the request, and then nothing is leased, as in the one command.
  private async receiveAckingSplit(command: ReceiveCommand, signal: AbortSignal | undefined, after: bigint | undefined): Promise<ReceiveReply> {
    const { ack, ...receive } = command;
    const acked = (await this.propose({ op: "ack", mailbox: command.mailbox, ids: ack! }, signal, after)) as AckReply;
    const reply = (await this.propose(receive, signal)) as ReceiveReply;
    return { ...reply, acked: acked.count };
  }

  // A RECEIVE that acks batches by lease name, while a member may not apply that command (an older
  // version, see COMMAND_SET): the ids those batches leased, as this node's state lists them now,
  // join its acks, and it goes out as a RECEIVE with acks (split as above if need be). An ACK of
  // them acks what the names would, except a message whose lease ended and that was leased again
  // before the command applies (then acked, as by id). Ids past one command's idsPerRequestMax go
  // out first as ACKs of their own. It answers at once, as the one command would, and says how
  // many names it took (ackedLeases).
  private async receiveLeasesAsIds(command: ReceiveCommand, signal: AbortSignal | undefined, after: bigint | undefined): Promise<ReceiveReply> {
    const { ackLeases, ...receive } = command;
    const problem = leaseNamesProblem(ackLeases, command.ack?.length ?? 0, this.broker.config);
    if (problem !== undefined) return problem as unknown as ReceiveReply;
    while (this.restoring !== undefined) await this.restoring; // a snapshot is half restored
    const ids = [...(command.ack ?? []), ...this.broker.leaseIds(command.mailbox, ackLeases!)];
    const perCommand = this.broker.config.idsPerRequestMax;
    let acked = 0;
    while (ids.length > perCommand) {
      const reply = (await this.propose({ op: "ack", mailbox: command.mailbox, ids: ids.splice(0, perCommand) }, signal, after)) as AckReply | ErrorReply;
      if (!reply.ok) return reply as unknown as ReceiveReply;
      acked += reply.count;
    }
    let reply: ReceiveReply;
    if (ids.length === 0) reply = (await this.propose(receive, signal, after)) as ReceiveReply;
    else if (this.membersApply(COMMAND_SET_ACKING_RECEIVE)) reply = (await this.propose({ ...receive, ack: ids }, signal, after)) as ReceiveReply;
    else reply = await this.receiveAckingSplit({ ...receive, ack: ids }, signal, after);
    if (!reply.ok) return reply;
    return { ...reply, acked: acked + (reply.acked ?? 0), ackedLeases: ackLeases!.length };
  }

  // Whether this node and every member of the configuration apply the command set `set`: what
  // each peer said in the hello of its latest connection to this node (none yet: not known).
  private membersApply(set: number): boolean {
    if (this.commandSet < set) return false;
    for (const id of this.memberIds) {
      if (id !== this.config.id && (this.transport.peerCommands(id) ?? 0) < set) return false;
    }
    return true;
  }

  // LIST is linearizable by default: a ReadIndex round proves this node's state is current.
  private async list(request: ListRequest, signal?: AbortSignal): Promise<unknown> {
    if (!request.stale) await this.readBarrier(signal);
    while (this.restoring !== undefined) await this.restoring; // a snapshot is half restored
    let reply: ReturnType<Broker["list"]>;
    try {
      reply = this.broker.list(request, this.clock.now());
    } catch (error) {
      // Between a refused commit and its recovery (the same turn's end) the store reads nothing.
      if (error instanceof StoreCommitError) throw new FerryError("UNHEALTHY", "the state store is recovering from a refused commit; retry");
      throw error;
    }
    if (reply.ok === false) throw new FerryError(reply.code, reply.message);
    return reply;
  }

  private readBarrier(signal?: AbortSignal): Promise<void> {
    const context = `${this.config.id}:${++this.readSequence}`;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readWaiters.delete(context);
        reject(new FerryError("TIMEOUT", "the read could not be confirmed by a quorum in time"));
      }, this.config.requestTimeoutMs);
      const onAbort = () => {
        clearTimeout(timer);
        this.readWaiters.delete(context);
        reject(new FerryError("TIMEOUT", "aborted by the caller"));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.readWaiters.set(context, (index) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.appliedWaiters.wait(index, this.appliedIndex).then(resolve);
      });
      try {
        this.raft.readIndex(new TextEncoder().encode(context));
      } catch (error) {
        clearTimeout(timer);
        this.readWaiters.delete(context);
        reject(this.translate(error));
        return;
      }
      this.schedule();
    });
  }

  private requireLeader(): void {
    if (this.role === "leader") return;
    const hint = this.book.get(this.leader)?.client;
    if (this.leader === 0) throw new FerryError("NO_QUORUM", "no leader is known right now; retry shortly", undefined);
    throw new FerryError("NOT_LEADER", `node ${this.config.id} is not the leader; node ${this.leader} is`, hint);
  }

  private translate(error: unknown): FerryError {
    if (error instanceof FerryError) return error;
    if (error instanceof RaftError) {
      if (error.code === "NOT_LEADER") {
        return new FerryError(this.leader ? "NOT_LEADER" : "NO_QUORUM", error.message, this.book.get(this.leader)?.client);
      }
      if (error.code === "PROPOSAL_DROPPED") return new FerryError("OVERLOADED", error.message);
      return new FerryError("CONFLICT", error.message);
    }
    return new FerryError("INTERNAL", (error as Error).message);
  }

  // ---- the loop ----

  private startTicking(): void {
    this.ticker = setInterval(() => {
      this.clock.tick();
      this.fenceIfClockIsOff();
      this.raft.tick();
      this.expireRequests();
      this.schedule();
    }, this.config.tickMs);
  }

  // Skew guard: a node whose clock is off by more than clockMaxOffsetMs must not lead (its
  // timestamps would mislead every lease and TTL). It refuses to campaign and a leader hands its
  // leadership away, retrying every election timeout until it moves: to the most caught-up voter
  // whose clock agrees with the cluster's, and not to the one the previous attempt failed with
  // while there is another. A fenced voter never campaigns, so a transfer to it fails, and while
  // a transfer is pending the leader drops proposals: choosing by progress alone, a fenced leader
  // with a fenced follower first in order kept the leadership and refused writes.
  private fenceIfClockIsOff(): void {
    const fenced = !this.clock.healthy();
    this.raft.setFenced(fenced);
    if (!fenced || this.role !== "leader") {
      this.fencedTransferTarget = 0;
      return;
    }
    this.fencedTicks++;
    if (this.fencedTicks % this.config.electionTicks !== 1) return;
    const target = this.mostCaughtUpVoter({ preferAgreeingClocks: true, avoid: this.fencedTransferTarget });
    this.fencedTransferTarget = target;
    this.log("warn", "fenced-leader-transferring", { to: target, reason: this.clock.healthReason() });
    if (target) this.raft.transferLeadership(target);
  }

  private receive(messages: import("../raft/types.js").Message[]): void {
    if (this.stopped) return;
    for (const message of messages) {
      if (this.trace !== undefined && message.type === "append" && message.entries.length > 0) {
        this.trace.record("append-received", message.index + message.entries.length, message.entries.length);
      }
      this.raft.step(message);
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.process();
    });
  }

  private async process(): Promise<void> {
    if (this.stopped) return;
    if (this.processing) {
      if (this.applyingEarly) this.applyCommittedEarly();
      return;
    }
    this.processing = true;
    try {
      this.proposeQueued();
      let sliceStartMs = performance.now();
      while (this.raft.hasReady() && !this.stopped) {
        await this.handleReady(this.raft.ready());
        this.proposeQueued();
        // A Ready whose writes are done at once continues in a microtask: a node with a backlog
        // of persisted entries (a follower catching up) applied all of it in one task (0.3-0.5 s).
        if (performance.now() - sliceStartMs >= PROCESS_SLICE_MS) {
          await new Promise((resolve) => setImmediate(resolve));
          sliceStartMs = performance.now();
        }
      }
    } catch (error) {
      this.fail(error as Error);
    } finally {
      this.processing = false;
    }
  }

  // Turns queued requests into entries: up to entryCommandsMax commands or entryBytesMax bytes
  // each, while fewer than inflightEntriesMax entries wait to be applied.
  private proposeQueued(): void {
    if (this.queue.length === 0) return;
    if (this.role !== "leader") {
      this.queue.failAll(this.notLeaderError());
      return;
    }
    while (this.queue.length > 0 && this.inflight.size < this.config.inflightEntriesMax) {
      const batch = this.queue.take(this.config.entryCommandsMax, this.config.entryBytesMax);
      const timestamp = this.clock.now();
      // The broker stamps command i with timestamp + i: reserve those values.
      this.clock.observe(timestamp + BigInt(batch.length));
      const commands = batch.map((p) => p.command);
      const data = encodeEntry("commands", timestamp, encodeCommands(commands));
      try {
        const { index, term } = this.raft.propose(data);
        this.inflight.add(index, { term, requests: batch, commands: roundTripsExactly(commands) ? commands : undefined });
        this.metrics.entriesProposed.inc();
        this.metrics.commandsProposed.inc(batch.length);
        this.trace?.record("proposed", index, batch.length);
      } catch (error) {
        const failure = this.translate(error);
        for (const pending of batch) pending.fail(failure);
        return;
      }
    }
  }

  private async handleReady(ready: Ready): Promise<void> {
    if (ready.softState) this.changeRole(ready.softState.role, ready.softState.leader);
    this.transport.send(ready.messages);
    // What is queued leaves now, not at the end of the turn, when this Ready has long work to do:
    // - a leader's appends of new entries: the followers start their writes before this node
    //   encodes and writes its own copy (under the drain's load they reached the first follower
    //   0.26-0.36 ms after the proposal instead of 0.44-0.55, docs/bench.md "Session 32");
    // - before an apply, whatever is queued (appends, a follower's answers to earlier Readies):
    //   held back, they left the other nodes idle for the whole apply.
    if ((ready.entries.length > 0 && ready.messages.length > 0) || ready.committedEntries.length > 0) this.transport.flush();
    this.metrics.readies.inc();
    if (ready.snapshot) {
      await this.persist(ready);
      await this.installSnapshot(ready.snapshot);
      if (this.stopped) return;
      this.transport.send(ready.messagesAfterPersist);
      this.applyEntries(ready.committedEntries);
    } else {
      // The committed entries are durable here already (the raft core never hands out more than
      // this node persisted) and on a majority: apply them, and answer their requests, while this
      // Ready's new entries are being written. Applying after the write made every answer under
      // load wait for the next entry's disk write as well as its own.
      // Entries that commit meanwhile are applied as the news arrives (applyCommittedEarly).
      const persisted = this.persist(ready);
      try {
        this.applyEntries(ready.committedEntries);
        this.applyingEarly = true;
        await persisted;
      } catch (error) {
        await persisted.catch(() => {});
        throw error;
      } finally {
        this.applyingEarly = false;
      }
      const failure = this.earlyFailure;
      if (failure !== undefined) {
        // Fatal (a broker bug): the broker fell back to its last commit, so nothing may advance,
        // answer or snapshot past it; process() hands the error to fail().
        this.earlyFailure = undefined;
        throw failure;
      }
      this.transport.send(ready.messagesAfterPersist);
    }
    for (const readState of ready.readStates) {
      const context = new TextDecoder().decode(readState.context);
      const waiter = this.readWaiters.get(context);
      this.readWaiters.delete(context);
      waiter?.(readState.index);
    }
    this.raft.advance(ready);
    if (ready.committedEntries.some((e) => e.type === "conf-change")) this.refreshPeers();
    this.maybeSnapshot();
  }

  // Only entries, a snapshot, a term or a vote must be durable before the Ready's messages go
  // out (etcd's MustSync). A hard state that only moved the commit index is kept in memory and
  // written with the next write: Raft recomputes commit after a crash, so losing it is harmless,
  // and skipping the write keeps a disk round trip off the leader's commit path.
  private async persist(ready: Ready): Promise<void> {
    const hardState = ready.hardState ?? this.unwrittenHardState;
    const before = this.writtenHardState;
    const termOrVoteChanged = hardState !== undefined && (!before || hardState.term !== before.term || hardState.vote !== before.vote);
    if (ready.entries.length === 0 && !ready.snapshot && !termOrVoteChanged) {
      this.unwrittenHardState = hardState;
      return;
    }
    const startedMs = performance.now(); // not startTimer(): a closure and two hrtime arrays per Ready
    await this.storage.persist({ hardState, entries: ready.entries, snapshot: ready.snapshot });
    this.metrics.persistSeconds.observe((performance.now() - startedMs) / 1000);
    this.metrics.entriesPersisted.inc(ready.entries.length);
    const last = ready.entries[ready.entries.length - 1];
    if (this.trace !== undefined && last !== undefined) this.trace.record("written", last.index, ready.entries.length);
    if (hardState) this.writtenHardState = hardState;
    this.unwrittenHardState = undefined;
  }

  // While a Ready's persist is in flight: entries committed since it was taken.
  private applyCommittedEarly(): void {
    if (this.earlyFailure !== undefined) return;
    try {
      const entries = this.raft.takeCommitted();
      if (entries.length > 0) this.applyEntries(entries);
    } catch (error) {
      this.earlyFailure = error as Error;
    }
  }

  private commitCatchUpGroup(): void {
    try {
      this.kv.commit();
    } catch (error) {
      // A commit LMDB refused: the failure listener recovers the store, as after a timer commit.
      if (!(error instanceof StoreCommitError)) throw error;
    }
  }

  private applyEntries(entries: Entry[]): void {
    if (entries.length === 0) return;
    const startedMs = performance.now();
    this.trace?.record("apply-start", entries[entries.length - 1]!.index, entries.length);
    // One LMDB transaction per entry (inside Broker.apply); an entry holds a whole batch of commands.
    for (const entry of entries) {
      this.applyEntry(entry);
      this.bytesSinceSnapshot += entry.data.length;
    }
    this.appliedIndex = entries[entries.length - 1]!.index;
    if (this.kv.groupBytesWritten() >= CATCH_UP_COMMIT_BYTES && !this.kv.commitsHeld() && this.raft.committedIndex() - this.appliedIndex >= CATCH_UP_LAG_ENTRIES) {
      this.commitCatchUpGroup(); // not while the snapshot thread opens its read (holdCommits)
    }
    this.metrics.applySeconds.observe((performance.now() - startedMs) / 1000);
    this.metrics.entriesApplied.inc(entries.length);
    for (const mailbox of this.broker.takeWakeups()) this.mailboxWaiters.wake(mailbox);
    this.appliedWaiters.applied(this.appliedIndex);
    this.trace?.record("apply-end", this.appliedIndex, entries.length);
  }

  private applyEntry(entry: Entry): void {
    if (entry.type === "conf-change") {
      this.recordMemberAddress(entry.data);
      this.broker.advance(entry.index);
      return;
    }
    const decoded = decodeEntry(entry.data);
    if (!decoded) {
      this.broker.advance(entry.index);
      return;
    }
    let results: BrokerResult[] | undefined;
    // The leader applies the commands it encoded this entry from, when they are exactly what the
    // entry decodes to (about a microsecond per SEND, and its garbage, off the busiest node).
    const commands = this.inflight.heldCommands(entry.index, entry.term) ?? decodeCommands(decoded.payload, this.commandSet);
    this.clock.observe(decoded.timestamp + BigInt(commands.length));
    // Results nobody waits for (a follower's apply) are not built in full: RECEIVE then reads no
    // more of its records than the delivery state needs.
    const replies = this.inflight.awaitsResults(entry.index, entry.term);
    try {
      results = this.broker.apply(entry.index, decoded.timestamp, commands, replies);
    } catch (error) {
      // The store refused the commit of a group that this apply closed: recover, then apply again.
      if (!this.recoverStore(error, entry.index - 1)) throw error;
      results = this.broker.apply(entry.index, decoded.timestamp, commands, replies);
    }
    this.inflight.applied(entry.index, entry.term, () => results!);
  }

  // ---- state store commit failures ----

  // The state store refused a commit (StoreCommitError): it fell back to its last successful
  // commit, and the entries applied since are still in the WAL (the log is compacted only below a
  // state that is durable, see maybeSnapshot). Reloads the broker from the store and re-applies
  // those entries, up to `upTo`, which is what the broker held before the failure: the state
  // machine is deterministic, so the state is the same. Their requests were answered already.
  // Returns false when that cannot be done (another error, the entries gone, a snapshot being
  // restored, or more than stateRecoveriesMax failures in a minute): the caller fails the node.
  private recoverStore(error: unknown, upTo: number): boolean {
    if (!(error instanceof StoreCommitError) || this.restoring !== undefined) return false;
    const nowMs = performance.now();
    this.storeRecoveriesMs = this.storeRecoveriesMs.filter((atMs) => nowMs - atMs < STORE_RECOVERY_WINDOW_MS);
    if (this.storeRecoveriesMs.length >= this.config.stateRecoveriesMax) return false;
    this.storeRecoveriesMs.push(nowMs);
    if (!this.kv.recover()) return false;
    this.broker.reload();
    const from = this.broker.appliedIndex() + 1;
    if (from <= upTo && from < this.storage.firstIndex()) return false;
    for (let lo = from; lo <= upTo; ) {
      const entries = this.storage.entries(lo, upTo + 1, REAPPLY_BYTES_MAX);
      if (entries.length === 0) return false;
      for (const entry of entries) this.reapply(entry);
      lo = entries[entries.length - 1]!.index + 1;
    }
    for (const mailbox of this.broker.takeWakeups()) this.mailboxWaiters.wake(mailbox);
    this.metrics.storeRecoveries.inc();
    this.log("warn", "state-store-recovered", { error: error.message, reapplied: Math.max(0, upTo - from + 1), from, to: upTo });
    return true;
  }

  // The failure listener's path: between turns the broker has applied exactly this.appliedIndex.
  private recoverStoreWhenIdle(error: StoreCommitError): void {
    if (this.stopped || !this.kv.failed) return; // an apply met the failure and recovered already
    try {
      if (this.recoverStore(error, this.appliedIndex)) return;
    } catch (failure) {
      this.fail(failure as Error);
      return;
    }
    this.fail(error);
  }

  // An entry applied again after a recovery: only the broker's state; nothing else changes.
  private reapply(entry: Entry): void {
    const decoded = entry.type === "normal" ? decodeEntry(entry.data) : undefined;
    if (decoded === undefined) this.broker.advance(entry.index);
    else this.broker.apply(entry.index, decoded.timestamp, decodeCommands(decoded.payload, this.commandSet), false);
  }

  private changeRole(role: string, leader: number): void {
    const wasLeader = this.role === "leader";
    this.role = role;
    this.leader = leader;
    if (leader !== 0) for (const wake of this.leaderWaiters.splice(0)) wake();
    this.log("info", "role", { role, leader, term: this.raft.status().term });
    if (wasLeader && role !== "leader") {
      const error = new FerryError("NOT_LEADER", "leadership was lost before the request was applied; it may or may not have been applied", this.book.get(leader)?.client);
      this.inflight.failAll(error);
      this.queue.failAll(error);
      this.mailboxWaiters.wakeAll();
    }
    if (role === "leader") this.clock.observe(this.maxTimestampInLog());
  }

  // A new leader stamps nothing below what its log already holds (HLC monotonic across leaders).
  // Stamps increase with log order, so the last entry with commands holds the largest one: look
  // back from the end of the log until one is found. Applied entries count too: a restarted node
  // (its HLC starts at its own high-water mark) or one that restored a snapshot has not observed
  // the stamps of entries it did not apply in this run, which another leader may have stamped
  // ahead of this node's clock.
  private maxTimestampInLog(): bigint {
    const floor = this.clock.lastTimestamp();
    const first = this.storage.firstIndex();
    for (let hi = this.storage.lastIndex() + 1; hi > first; hi -= LOOKBACK_ENTRIES) {
      const entries = this.storage.entries(Math.max(first, hi - LOOKBACK_ENTRIES), hi, Number.MAX_SAFE_INTEGER);
      for (let i = entries.length - 1; i >= 0; i--) {
        const entry = entries[i]!;
        const decoded = entry.type === "normal" ? decodeEntry(entry.data) : undefined;
        if (!decoded) continue;
        // Command i is stamped timestamp + i (applyEntry observes the same bound).
        const last = decoded.timestamp + BigInt(decodeCommands(decoded.payload, this.commandSet).length);
        return last > floor ? last : floor;
      }
    }
    return floor;
  }

  private notLeaderError(): FerryError {
    if (this.leader === 0) return new FerryError("NO_QUORUM", "no leader is known right now; retry shortly");
    return new FerryError("NOT_LEADER", `node ${this.leader} is the leader`, this.book.get(this.leader)?.client);
  }

  private fail(error: Error): void {
    this.log("fatal", "node-failed", { error: error.stack ?? error.message });
    void this.shutdown();
    for (const listener of this.fatalListeners) listener(error);
  }

  // ---- snapshots ----

  // Every snapshotEntries applied entries, or snapshotLogBytes of them, the state machine's state
  // becomes a snapshot; the log below it (less a margin for slow followers) is deleted once the
  // state is durable past it.
  private maybeSnapshot(): void {
    if (this.snapshotting) return;
    const entriesSince = this.appliedIndex - this.lastSnapshotIndex;
    // A node without a snapshot waits a share of snapshotEntries more (snapshotStagger): members
    // that start together then snapshot at different indexes, and keep that distance after, instead
    // of all reading and writing their whole state at the same moment.
    const due = this.config.snapshotEntries + (this.lastSnapshotIndex === 0 ? snapshotStagger(this.config.id, this.config.snapshotEntries) : 0);
    if (entriesSince < due && this.bytesSinceSnapshot < this.config.snapshotLogBytes) return;
    this.snapshotting = true;
    void this.makeSnapshot();
  }

  private async makeSnapshot(): Promise<void> {
    let source: SnapshotSource | undefined;
    let writer: SnapshotWriter | undefined;
    try {
      source = await this.openSnapshotSource();
      if (source === undefined) return; // tried again at the next apply
      const { index, term, conf, catchUpEntries, superseded } = source;
      writer = await this.storage.createSnapshot({ index, term, conf });
      if (!(await this.writeSnapshotData(source, writer))) return; // stopping, or superseded
      const info = await writer.finish();
      // Kept as its file: nothing reads it back until the transport streams it to a follower.
      const snapshot = await this.storage.openSnapshot(info.meta);
      if (superseded() || index < this.storage.firstIndex() - 1) {
        await snapshot.close();
        return;
      }
      await this.storage.adoptSnapshot(snapshot); // checked in this same turn
      await this.kv.flushed();
      const compactTo = index - catchUpEntries;
      if (compactTo > this.storage.firstIndex()) await this.storage.compact(compactTo);
      this.lastSnapshotIndex = Math.max(this.lastSnapshotIndex, index);
      this.metrics.snapshots.inc({ kind: "made" });
      this.log("info", "snapshot", { index, term, bytes: info.dataBytes, thread: source.thread });
    } catch (error) {
      if (this.stopped) return;
      // The store refused the commit that makes the state durable: the failure listener recovers
      // it; this snapshot is dropped and the next Ready tries again (lastSnapshotIndex stays).
      if (error instanceof StoreCommitError) this.log("warn", "snapshot-dropped", { index: source?.index, error: error.message });
      // The thread is gone: later snapshots are made on the event loop, the next one at once.
      else if (error instanceof SnapshotThreadError) this.snapshotThreadFailure(error);
      else this.fail(error as Error);
    } finally {
      source?.cancel(); // a no-op once read through
      await writer?.abort(); // a no-op once finished
      this.snapshotting = false;
    }
  }

  // Streams the source's bytes to the snapshot's file. False when the node stops meanwhile, or
  // when a snapshot from the leader replaced the state (source.superseded).
  private async writeSnapshotData(source: SnapshotSource, writer: SnapshotWriter): Promise<boolean> {
    for (;;) {
      const read = await source.read();
      if (read.bytes.length > 0) await writer.write(read.bytes);
      if (read.done) return true;
      if (this.stopped || source.superseded()) return false;
    }
  }

  // The state after the applied index as snapshot bytes, with what the snapshot's metadata needs,
  // all taken at that index: read and encoded by the snapshot thread (snapshot-thread.ts), or on
  // this thread in slices when there is none (snapshotThreadNice -1, a thread that failed), it is
  // not up yet (~0.1 s after the start) or it missed SNAPSHOT_THREAD_MISSES_MAX times in a row.
  // Undefined when the thread's read found another index (a commit slipped in; the next apply
  // tries again) or a commit failed (the failure listener recovers the store).
  private async openSnapshotSource(): Promise<SnapshotSource | undefined> {
    const thread = this.snapshotThreadReady && this.snapshotThreadMisses < SNAPSHOT_THREAD_MISSES_MAX ? this.snapshotThread : undefined;
    let taken: { index: number; chunks?: Iterable<Uint8Array> };
    try {
      if (thread === undefined) taken = this.broker.snapshot(); // commits the store's open group first
      else {
        this.kv.commit();
        taken = { index: this.broker.appliedIndex() };
      }
    } catch (error) {
      // Recovered from by the failure listener; the next apply tries the snapshot again.
      if (error instanceof StoreCommitError) return undefined;
      throw error;
    }
    const { index, chunks } = taken;
    // The bytes of the entries up to index: entries applied while the thread opens its read count
    // toward the next snapshot (zeroing the count after that await lost them, so the next margin
    // was taken at a too-small average entry size: kept 6 entries instead of 2 in a CI run).
    const bytesAtIndex = this.bytesSinceSnapshot;
    // Started at once: from then on return() releases the broker's read view, whatever happens.
    const brokerChunks = chunks?.[Symbol.iterator]();
    const firstChunk = brokerChunks?.next();
    const entriesSince = index - this.lastSnapshotIndex;
    const catchUpEntries = catchUpMargin(this.config, entriesSince, bytesAtIndex);
    const term = this.storage.term(index);
    const conf = this.raft.status().conf;
    const members = this.book.all();
    // The HLC has observed every applied entry's stamps, so it bounds the state's stamps.
    const lastTimestamp = this.clock.lastTimestamp();
    // A snapshot from the leader installed while this one is read replaces the state and the log
    // below it: this one is then stale, and its index may lie below the log (saving it would fail,
    // which was fatal: found by the long chaos run, seed 1753365461).
    const installsBefore = this.snapshotsInstalled;
    const superseded = () => this.snapshotsInstalled !== installsBefore;
    const meta = { index, term, conf, catchUpEntries, superseded };
    if (brokerChunks !== undefined) {
      this.bytesSinceSnapshot = 0;
      this.snapshotThreadMisses = 0;
      const parts = nodeSnapshotParts(members, resumed(firstChunk!, brokerChunks), lastTimestamp);
      return { ...meta, thread: false, read: this.sliceReader(parts), cancel: () => brokerChunks.return?.(undefined) };
    }
    // Commits wait until the thread's read transaction is open (see snapshot-thread.ts).
    const release = this.kv.holdCommits();
    let opened: boolean;
    try {
      opened = await thread!.open(index, members, lastTimestamp);
    } finally {
      release();
    }
    if (!opened) {
      this.metrics.snapshotThreadReads.inc({ result: "retried" });
      if (++this.snapshotThreadMisses === SNAPSHOT_THREAD_MISSES_MAX) this.log("warn", "snapshot-thread-missed", { index, misses: this.snapshotThreadMisses });
      return undefined;
    }
    this.metrics.snapshotThreadReads.inc({ result: "opened" });
    this.snapshotThreadMisses = 0;
    if (!superseded()) this.bytesSinceSnapshot -= bytesAtIndex; // an install meanwhile zeroed it
    return { ...meta, thread: true, read: () => thread!.next(), cancel: () => thread!.cancel() };
  }

  // Starts the snapshot thread (with the node), unless snapshotThreadNice is -1.
  private startSnapshotThread(): void {
    if (this.config.snapshotThreadNice < 0) return;
    const thread = new SnapshotThread({ store: stateStoreOptions(this.config), nice: this.config.snapshotThreadNice, batchBytes: SNAPSHOT_WRITE_BYTES });
    this.snapshotThread = thread;
    thread.started().then(
      (niceApplied) => {
        this.snapshotThreadReady = true;
        this.log("info", "snapshot-thread", { nice: this.config.snapshotThreadNice, niceApplied });
      },
      (error: Error) => this.snapshotThreadFailure(error),
    );
  }

  // The thread is gone (its start failed, or it failed since): snapshots are made on the event loop.
  private snapshotThreadFailure(error: Error): void {
    this.snapshotThreadReady = false;
    if (!this.stopped) this.log("warn", "snapshot-thread-failed", { error: error.message });
  }

  // Snapshot bytes read on the event loop, SNAPSHOT_WRITE_BYTES per read, at most
  // SNAPSHOT_SLICE_MS at a time before yielding to it. Read in one go, a 49 MB state stalled
  // every node for ~0.6 s at once, leader included, so writes stopped (found in the benchmark's
  // failover phase); and assembled in memory, a 341 MB one stalled each node for ~1.2 s in the
  // copy alone and cost the leader its leadership (found draining a backlog of 1.3 M messages).
  private sliceReader(parts: Iterator<Uint8Array>): SnapshotSource["read"] {
    return async () => {
      const batch: Uint8Array[] = [];
      let bytes = 0;
      let sliceEndMs = performance.now() + SNAPSHOT_SLICE_MS;
      while (bytes < SNAPSHOT_WRITE_BYTES) {
        if (performance.now() >= sliceEndMs) {
          await new Promise((resolve) => setImmediate(resolve));
          if (this.stopped) break;
          sliceEndMs = performance.now() + SNAPSHOT_SLICE_MS;
        }
        const next = parts.next();
        if (next.done === true) return { bytes: Buffer.concat(batch, bytes), done: true };
        batch.push(next.value);
        bytes += next.value.length;
      }
      return { bytes: Buffer.concat(batch, bytes), done: false };
    };
  }

  // After persist(): the storage's latest snapshot is this one, kept as its file; the state is
  // restored from it a piece at a time (a received snapshot is never whole in memory), for at most
  // SNAPSHOT_SLICE_MS at a time, yielding to the event loop in between (a 341 MB snapshot held it
  // ~3 s in one go). Meanwhile nothing applies (process() waits for this Ready) and stale LISTs
  // wait; a node stopped halfway restores from the stored snapshot again when it starts.
  private async installSnapshot(snapshot: Snapshot): Promise<void> {
    if (snapshotDataBytes(snapshot) === 0) {
      // The leader's initial configuration as an index-0 snapshot (a joining node before any
      // real snapshot exists): there is no state to restore; the log follows from index 1.
      this.refreshPeers();
      return;
    }
    const stored = this.storage.snapshot();
    assert(stored.meta.index === snapshot.meta.index && stored.meta.term === snapshot.meta.term, "an installed snapshot is the storage's latest");
    const { members, broker, lastTimestamp } = readNodeSnapshot(stored.reader());
    // The state store's group is committed every SNAPSHOT_RESTORE_COMMIT_BYTES: left to its timer,
    // one commit wrote the whole restored state at once (1.45 s of event loop for 341 MB).
    let bytesSinceCommit = 0;
    const counted = (function* () {
      for (const piece of broker) {
        bytesSinceCommit += piece.length;
        yield piece;
      }
    })();
    const steps = this.broker.restoring(counted);
    const startedMs = performance.now();
    let longestStepMs = 0;
    let restored!: () => void;
    this.restoring = new Promise<void>((resolve) => (restored = resolve));
    try {
      for (let done = false; !done; ) {
        const sliceEndMs = performance.now() + SNAPSHOT_SLICE_MS;
        while (!done && performance.now() < sliceEndMs && bytesSinceCommit < SNAPSHOT_RESTORE_COMMIT_BYTES) {
          const stepStartMs = performance.now();
          done = steps.next().done === true;
          longestStepMs = Math.max(longestStepMs, performance.now() - stepStartMs);
        }
        if (done) break;
        if (bytesSinceCommit >= SNAPSHOT_RESTORE_COMMIT_BYTES) {
          this.kv.commit(); // safe halfway: the applied index is written last
          bytesSinceCommit = 0;
        }
        await new Promise((resolve) => setImmediate(resolve));
        if (this.stopped) {
          steps.return();
          return;
        }
      }
    } finally {
      this.restoring = undefined;
      restored();
    }
    this.clock.observe(lastTimestamp);
    for (const member of members) if (!this.book.get(member.id)) this.book.set(member);
    this.appliedIndex = snapshot.meta.index;
    this.lastSnapshotIndex = snapshot.meta.index;
    this.bytesSinceSnapshot = 0;
    this.snapshotsInstalled++;
    this.refreshPeers();
    this.metrics.snapshots.inc({ kind: "installed" });
    this.log("info", "snapshot-installed", {
      index: snapshot.meta.index,
      term: snapshot.meta.term,
      bytes: snapshotDataBytes(snapshot),
      restoreMs: Math.round(performance.now() - startedMs),
      longestStepMs: Math.round(longestStepMs),
    });
  }

  // ---- membership ----

  private async cluster(request: ClusterRequest): Promise<ClusterReply> {
    if (this.leader === 0) await this.waitForLeader();
    this.requireLeader();
    if (request.action === "transfer") return this.transfer(request.nodeId);
    if (request.action === "remove") {
      await this.changeConf({ transition: "auto", changes: [{ type: "remove-node", nodeId: request.nodeId }] });
      return { ok: true, message: `node ${request.nodeId} removed` };
    }
    if (!request.peerAddress || !request.clientAddress) {
      throw new FerryError("INVALID", "cluster add needs the new node's peer and client addresses");
    }
    const context = new TextEncoder().encode(JSON.stringify({ id: request.nodeId, peer: request.peerAddress, client: request.clientAddress }));
    await this.changeConf({ transition: "auto", changes: [{ type: "add-learner", nodeId: request.nodeId }], context });
    await this.waitCaughtUp(request.nodeId);
    await this.changeConf({ transition: "auto", changes: [{ type: "add-voter", nodeId: request.nodeId }], context });
    return { ok: true, message: `node ${request.nodeId} added as a voter` };
  }

  private async changeConf(change: import("../raft/types.js").ConfChange): Promise<void> {
    let proposed: { index: number; term: number };
    try {
      proposed = this.raft.proposeConfChange(change);
    } catch (error) {
      throw this.translate(error);
    }
    this.schedule();
    await this.waitApplied(proposed.index, this.config.requestTimeoutMs * 3);
    if (this.storage.term(proposed.index) !== proposed.term) {
      throw new FerryError("NOT_LEADER", "leadership changed before the membership change committed");
    }
  }

  // A learner is promoted once its log is within a small distance of the leader's. It must have
  // acknowledged something first: a fresh log is short, so a learner that never answered would
  // otherwise count as caught up at once and become a voter that cannot vote.
  private async waitCaughtUp(nodeId: number): Promise<void> {
    const deadline = Date.now() + this.config.requestTimeoutMs * 6;
    for (;;) {
      const status = this.raft.status();
      const progress = status.progress.get(nodeId);
      if (progress && progress.match > 0 && status.lastIndex - progress.match <= 64) return;
      if (Date.now() > deadline) throw new FerryError("TIMEOUT", `node ${nodeId} did not catch up in time; it stays a learner`);
      await new Promise((resolve) => setTimeout(resolve, this.config.tickMs));
    }
  }

  private async transfer(nodeId: number): Promise<ClusterReply> {
    const target = nodeId || this.mostCaughtUpVoter();
    if (!target) throw new FerryError("INVALID", "no other voter to transfer leadership to");
    this.raft.transferLeadership(target);
    this.schedule();
    const deadline = Date.now() + this.config.tickMs * this.config.electionTicks * 2;
    while (this.role === "leader" && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, this.config.tickMs));
    if (this.role === "leader") throw new FerryError("TIMEOUT", `leadership did not move to node ${target}`);
    return { ok: true, message: `leadership transferred to node ${this.leader || target}` };
  }

  // The voter to hand leadership to: the most caught-up one. For a fenced leader
  // (preferAgreeingClocks), first those whose raw clock agrees with the cluster's median as this
  // node measures it (peers do not report their fencing; a peer whose raw clock is off but
  // disciplined back may rank low, so this is used only while fenced, not for a shutdown or
  // `cluster transfer 0`), and `avoid` last.
  private mostCaughtUpVoter(options: { preferAgreeingClocks?: boolean; avoid?: number } = {}): number {
    const status = this.raft.status();
    const offsets = options.preferAgreeingClocks ? this.clock.peerOffsets() : new Map<number, { offsetMs: number }>();
    const clusterMs = centralOffsetMs([...offsets.values()].map((offset) => offset.offsetMs));
    const clockAgrees = (id: number): boolean => {
      const offset = offsets.get(id);
      return offset !== undefined && Math.abs(offset.offsetMs - clusterMs) <= this.config.clockMaxOffsetMs;
    };
    // Ranked by (clock agrees, if asked; not avoided; progress), each deciding only on a tie of the one before.
    const rank = (id: number, match: number): number[] => [clockAgrees(id) ? 1 : 0, id === options.avoid ? 0 : 1, match];
    let best = 0;
    let bestRank: number[] | undefined;
    for (const id of status.conf.voters) {
      const progress = status.progress.get(id);
      if (id === this.config.id || !progress) continue;
      const candidate = rank(id, progress.match);
      if (bestRank === undefined || isRankedHigher(candidate, bestRank)) [best, bestRank] = [id, candidate];
    }
    return best;
  }

  private waitApplied(index: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new FerryError("TIMEOUT", `index ${index} was not applied in time`)), timeoutMs);
      this.appliedWaiters.wait(index, this.appliedIndex).then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private recordMemberAddress(data: Uint8Array): void {
    const change = decodeConfChange(data);
    if (!change.context || change.context.length === 0) return;
    try {
      const member = JSON.parse(new TextDecoder().decode(change.context)) as { id: number; peer: string; client: string };
      if (Number.isInteger(member.id) && member.peer && member.client) this.book.set(member);
    } catch {
      this.log("warn", "conf-change-context-unreadable", {});
    }
  }

  private refreshPeers(): void {
    this.memberIds = confMembers(this.raft.status().conf);
    this.transport.setPeers(peersToDial(this.config.id, this.book, this.memberIds));
  }

  // ---- status, metrics and shutdown ----

  raftState() {
    const status = this.raft.status();
    const lagByPeer = new Map<number, number>();
    for (const [id, progress] of status.progress) if (id !== this.config.id) lagByPeer.set(id, status.lastIndex - progress.match);
    return { term: status.term, commit: status.commit, applied: this.appliedIndex, lastIndex: status.lastIndex, isLeader: status.role === "leader", lagByPeer };
  }

  clockState() {
    return {
      healthy: this.clock.healthy(),
      offsetMs: this.clock.offsetMs(),
      peers: [...this.clock.peerOffsets().values()].map((p) => ({ peer: p.peer, offsetMs: p.offsetMs, delayMs: p.delayMs })),
    };
  }

  queueState() {
    return { pendingRequests: this.queue.length, inflightEntries: this.inflight.size, longPollWaiters: this.mailboxWaiters.count };
  }

  brokerState() {
    return { freshHeads: this.broker.freshHeadsInMemory(), dedupeIdsInMemory: this.broker.dedupeIdsInMemory() };
  }

  // Liveness and readiness for health checks: unhealthy when fenced or without a leader.
  health(): { healthy: boolean; reason: string } {
    if (this.stopped) return { healthy: false, reason: "stopping" };
    if (!this.clock.healthy()) return { healthy: false, reason: `clock: ${this.clock.healthReason()}` };
    if (this.leader === 0) return { healthy: false, reason: "no leader known" };
    return { healthy: true, reason: this.role === "leader" ? "leader" : `following node ${this.leader}` };
  }

  status(): StatusReply {
    const status = this.raft.status();
    const ids = confMembers(status.conf);
    const offsets = this.clock.peerOffsets();
    const nodes = ids.map((id) => {
      const self = id === this.config.id;
      const progress = status.progress.get(id);
      const learner = status.conf.learners.includes(id);
      return {
        id,
        address: this.book.get(id)?.client ?? "",
        role: self ? (learner ? "learner" : status.role) : id === status.lead ? "leader" : learner ? "learner" : "follower",
        term: status.term,
        leader: status.lead,
        commit: self ? status.commit : (progress ? Math.min(progress.match, status.commit) : -1),
        applied: self ? this.appliedIndex : (progress?.match ?? -1),
        lag: progress ? status.lastIndex - progress.match : undefined,
        clockOffsetMs: self ? this.clock.offsetMs() : offsets.get(id)?.offsetMs,
        healthy: self ? this.clock.healthy() : (progress?.heardRecently ?? true),
      };
    });
    return { ok: true, nodes, self: this.config.id };
  }

  // Graceful stop: refuse new requests, let in-flight ones finish (bounded), hand leadership to
  // the most caught-up voter, flush, close.
  async stop(): Promise<void> {
    if (this.stopped) return;
    if (this.role === "leader" && this.raft.status().conf.voters.length > 1) {
      try {
        const deadline = Date.now() + SHUTDOWN_TRANSFER_MS;
        while (this.inflight.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
        const target = this.mostCaughtUpVoter();
        if (target) {
          this.raft.transferLeadership(target);
          this.schedule();
          while (this.role === "leader" && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
        }
      } catch (error) {
        this.log("warn", "transfer-on-stop-failed", { error: (error as Error).message });
      }
    }
    await this.shutdown();
  }

  private async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.ticker);
    const error = new FerryError("SHUTTING_DOWN", "the node is stopping; retry on another node");
    this.queue.failAll(error);
    this.inflight.failAll(error);
    this.mailboxWaiters.wakeAll();
    while (this.processing) await new Promise((resolve) => setTimeout(resolve, 5));
    await this.transport.close();
    await this.book.flushed();
    await this.clock.close();
    await this.storage.close();
    await this.snapshotThread?.close(); // its handle on the store goes before the store's
    await this.kv.close();
  }
}

// An iterator's values again, its first one already taken.
function* resumed<T>(first: IteratorResult<T>, rest: Iterator<T>): Generator<T> {
  if (first.done) return;
  yield first.value;
  for (let next = rest.next(); !next.done; next = rest.next()) yield next.value;
}

// The index of the latest snapshot the storage holds (0: none).
function latestSnapshotIndex(storage: DiskRaftStorage): number {
  try {
    return storage.snapshot().meta.index;
  } catch (error) {
    if (error instanceof SnapshotUnavailableError) return 0;
    throw error;
  }
}

// Entries a node without a snapshot adds to snapshotEntries before its first one: 0, 1/8, 2/8 or
// 3/8 of it by node id, so the members of a cluster started together (and the three nodes sharing
// a host in a dev cluster) do not all snapshot at the same index. All three at once in the
// benchmark's failover load took its p99 from ~7 to 12-18 ms (docs/bench.md "Session 20").
export function snapshotStagger(nodeId: number, snapshotEntries: number): number {
  return Math.floor((((nodeId - 1) % 4) * snapshotEntries) / 8);
}

// The log entries kept below a snapshot for followers slightly behind: snapshotCatchUpEntries, but
// no more than a quarter of snapshotLogBytes at the average size of the entries since the last one.
export function catchUpMargin(config: Pick<NodeConfig, "snapshotCatchUpEntries" | "snapshotLogBytes">, entries: number, bytes: number): number {
  if (entries <= 0 || bytes <= 0) return config.snapshotCatchUpEntries;
  const averageBytes = bytes / entries;
  return Math.min(config.snapshotCatchUpEntries, Math.floor(config.snapshotLogBytes / 4 / averageBytes));
}

// The peers the transport dials: the configuration's members. A joining node has no configuration
// until the leader's first snapshot reaches it, yet must answer the leader to get that snapshot
// (replies travel on our own outbound connection), so until then it dials every known member.
function peersToDial(selfId: number, book: AddressBook, members: number[]): Map<number, string> {
  return book.peersOf(selfId, members.length > 0 ? members : book.all().map((member) => member.id));
}

// A request waiting for its entry: settles its promise once (the first of settle, fail wins).
class PendingCommand implements Pending {
  readonly bytes: number;
  private settled = false;

  constructor(
    readonly command: BrokerCommand,
    readonly deadlineMs: number,
    private readonly resolve: (result: BrokerResult) => void,
    private readonly reject: (error: Error) => void,
  ) {
    this.bytes = commandBytes(command);
  }

  settle(result: BrokerResult): void {
    if (this.settled) return;
    this.settled = true;
    if (result.ok === false) this.reject(new FerryError(result.code, result.message));
    else this.resolve(result);
  }

  fail(error: FerryError): void {
    if (this.settled) return;
    this.settled = true;
    this.reject(error);
  }
}

function commandBytes(command: BrokerCommand): number {
  return command.op === "send" ? command.body.length + 64 : 64;
}

// The HLC floor recorded in the stored snapshot (0n without one): the entries it replaced are not
// in the log any more, so a restarted node that becomes leader would not see their stamps.
// Reads only the snapshot's head.
function storedSnapshotTimestamp(storage: DiskRaftStorage): bigint {
  try {
    const snapshot = storage.snapshot();
    return snapshot.dataBytes === 0 ? 0n : readNodeSnapshot(snapshot.reader()).lastTimestamp;
  } catch {
    return 0n;
  }
}

// A snapshot the storage kept may be newer than the state machine (the node crashed after
// receiving it and before the state was durable): restore from it before replaying the log.
function isRankedHigher(a: number[], b: number[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! > b[i]!;
  return false;
}

async function restoreFromStoredSnapshot(storage: DiskRaftStorage, broker: Broker, book: AddressBook): Promise<void> {
  let snapshot: StoredSnapshot;
  try {
    snapshot = storage.snapshot();
  } catch {
    return;
  }
  if (snapshot.meta.index <= broker.appliedIndex() || snapshot.dataBytes === 0) return;
  const { members, broker: chunks } = readNodeSnapshot(snapshot.reader());
  broker.restore(chunks);
  for (const member of members) if (!book.get(member.id)) book.set(member);
}

// The state store's directory and map size, as the node opens it and its snapshot thread reads it.
function stateStoreOptions(config: NodeConfig): LmdbKvOptions {
  return { path: join(config.dataDir, "state"), mapSizeBytes: STATE_MAP_BYTES };
}

// Where a snapshot's bytes come from (FerryNode.openSnapshotSource), with its metadata, all as of
// its index.
interface SnapshotSource {
  index: number;
  term: number;
  conf: ConfState;
  catchUpEntries: number; // log entries kept below it
  superseded: () => boolean; // a snapshot from the leader replaced the state meanwhile
  thread: boolean; // read by the snapshot thread
  read(): Promise<{ bytes: Uint8Array; done: boolean }>;
  cancel(): void; // releases its read of the state; a no-op once read through
}
