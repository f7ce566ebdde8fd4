// The node's metrics, in Prometheus form (prom-client, a registry of our own per node so tests
// can run several nodes in one process). Counters and histograms are updated on the hot path by
// plain increments; collection (gauges of raft and clock state) happens only when scraped.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

export interface MetricsSource {
  raftState(): { term: number; commit: number; applied: number; lastIndex: number; isLeader: boolean; lagByPeer: Map<number, number> };
  clockState(): { healthy: boolean; offsetMs: number | undefined; peers: Array<{ peer: number; offsetMs: number; delayMs: number }> };
  queueState(): { pendingRequests: number; inflightEntries: number; longPollWaiters: number };
  brokerState(): { freshHeads: number; dedupeIdsInMemory: number };
}

const LATENCY_BUCKETS_SECONDS = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

export class NodeMetrics {
  readonly registry = new Registry();
  readonly readies = new Counter({ name: "ferry_raft_readies_total", help: "Ready batches handled", registers: [this.registry] });
  readonly entriesPersisted = new Counter({ name: "ferry_wal_entries_persisted_total", help: "log entries written", registers: [this.registry] });
  readonly persistSeconds = new Histogram({ name: "ferry_wal_persist_seconds", help: "time to persist one Ready (write + fdatasync)", buckets: LATENCY_BUCKETS_SECONDS, registers: [this.registry] });
  readonly entriesProposed = new Counter({ name: "ferry_entries_proposed_total", help: "entries proposed by this node as leader", registers: [this.registry] });
  readonly commandsProposed = new Counter({ name: "ferry_commands_proposed_total", help: "client commands proposed (many per entry)", registers: [this.registry] });
  readonly entriesApplied = new Counter({ name: "ferry_entries_applied_total", help: "entries applied to the state machine", registers: [this.registry] });
  readonly storeRecoveries = new Counter({
    name: "ferry_state_store_recoveries_total",
    help: "commits the state store (LMDB) refused and the node recovered from by re-applying its WAL",
    registers: [this.registry],
  });
  readonly applySeconds = new Histogram({ name: "ferry_apply_seconds", help: "time to apply the committed entries of one Ready", buckets: LATENCY_BUCKETS_SECONDS, registers: [this.registry] });
  // Counted in plain numbers per request (requestCounts) and handed to prom-client when scraped:
  // a prom-client inc() hashes and validates its labels and allocates on every call.
  readonly requests = new Counter({
    name: "ferry_requests_total",
    help: "client requests executed by this node",
    labelNames: ["op", "outcome"],
    registers: [this.registry],
    collect: () => this.publishRequestCounts(),
  });
  readonly snapshots = new Counter({ name: "ferry_snapshots_total", help: "snapshots taken (made) or installed (received)", labelNames: ["kind"], registers: [this.registry] });
  readonly snapshotThreadReads = new Counter({
    name: "ferry_snapshot_thread_reads_total",
    help: "snapshots the snapshot thread read at the index due (opened), or found at another index and left to the next apply (retried)",
    labelNames: ["result"],
    registers: [this.registry],
  });

  // The client-facing server's counters since it started (connections accepted and refused,
  // requests refused before the node, failed logins, unauthorized requests, ...), read when
  // scraped, as ferry_server_events_total{event}. The node does not know the server: the caller
  // hands a reader.
  addServerCounters(read: () => Record<string, number>): void {
    new Counter({
      name: "ferry_server_events_total",
      help: "client-port events since the server started, by event (e.g. authFailures, unauthorized, connectionsRejected)",
      labelNames: ["event"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [event, count] of Object.entries(read())) this.inc({ event }, count);
      },
    });
  }

  // ferry_requests_total by op, then outcome: totals since the node started.
  private readonly requestCounts = new Map<string, Map<string, number>>();

  countRequest(op: string, outcome: string): void {
    let byOutcome = this.requestCounts.get(op);
    if (byOutcome === undefined) this.requestCounts.set(op, (byOutcome = new Map()));
    byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + 1);
  }

  private publishRequestCounts(): void {
    this.requests.reset();
    for (const [op, byOutcome] of this.requestCounts) for (const [outcome, count] of byOutcome) this.requests.inc({ op, outcome }, count);
  }

  constructor(source: MetricsSource, nodeId: number) {
    this.registry.setDefaultLabels({ node: String(nodeId) });
    collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    new Gauge({
      name: "ferry_raft_term",
      help: "current term",
      registers,
      collect() {
        this.set(source.raftState().term);
      },
    });
    new Gauge({
      name: "ferry_raft_commit_index",
      help: "commit index",
      registers,
      collect() {
        this.set(source.raftState().commit);
      },
    });
    new Gauge({
      name: "ferry_raft_applied_index",
      help: "applied index",
      registers,
      collect() {
        this.set(source.raftState().applied);
      },
    });
    new Gauge({
      name: "ferry_raft_is_leader",
      help: "1 on the leader",
      registers,
      collect() {
        this.set(source.raftState().isLeader ? 1 : 0);
      },
    });
    new Gauge({
      name: "ferry_raft_follower_lag_entries",
      help: "leader's view: entries each follower is behind",
      labelNames: ["peer"],
      registers,
      collect() {
        this.reset();
        for (const [peer, lag] of source.raftState().lagByPeer) this.set({ peer: String(peer) }, lag);
      },
    });
    new Gauge({
      name: "ferry_clock_healthy",
      help: "0 when the skew guard has fenced this node",
      registers,
      collect() {
        this.set(source.clockState().healthy ? 1 : 0);
      },
    });
    new Gauge({
      name: "ferry_clock_offset_ms",
      help: "this node's clock minus the cluster's (disciplined)",
      registers,
      collect() {
        const offset = source.clockState().offsetMs;
        if (offset !== undefined) this.set(offset);
      },
    });
    new Gauge({
      name: "ferry_clock_peer_offset_ms",
      help: "each peer's clock minus ours (raw), from the minimum-delay sample",
      labelNames: ["peer"],
      registers,
      collect() {
        this.reset();
        for (const peer of source.clockState().peers) this.set({ peer: String(peer.peer) }, peer.offsetMs);
      },
    });
    new Gauge({
      name: "ferry_clock_peer_rtt_ms",
      help: "round-trip time to each peer, from the minimum-delay sample",
      labelNames: ["peer"],
      registers,
      collect() {
        this.reset();
        for (const peer of source.clockState().peers) this.set({ peer: String(peer.peer) }, peer.delayMs);
      },
    });
    new Gauge({
      name: "ferry_pending_requests",
      help: "requests waiting to be proposed",
      registers,
      collect() {
        this.set(source.queueState().pendingRequests);
      },
    });
    new Gauge({
      name: "ferry_inflight_entries",
      help: "entries proposed and not yet applied",
      registers,
      collect() {
        this.set(source.queueState().inflightEntries);
      },
    });
    new Gauge({
      name: "ferry_broker_fresh_heads",
      help: "heads of messages not yet received this node keeps for RECEIVE (a follower's; see freshHeadsInMemoryMax)",
      registers,
      collect() {
        this.set(source.brokerState().freshHeads);
      },
    });
    new Gauge({
      name: "ferry_broker_dedupe_ids_in_memory",
      help: "client ids whose dedupe record is inline in a dedupe list (see dedupeIdsInMemoryMax)",
      registers,
      collect() {
        this.set(source.brokerState().dedupeIdsInMemory);
      },
    });
    new Gauge({
      name: "ferry_long_poll_waiters",
      help: "RECEIVEs waiting for a message",
      registers,
      collect() {
        this.set(source.queueState().longPollWaiters);
      },
    });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
