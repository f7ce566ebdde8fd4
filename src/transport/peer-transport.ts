// Peer connections between the nodes of one cluster. Each node dials one outbound connection to
// every peer (PeerLink) and carries everything it sends to that peer on it; it accepts the peers'
// connections (InboundConnection) and receives on those. Sends are non-blocking and batched: all
// messages queued during one event-loop turn leave as one frame per peer (setImmediate flush).
// Every data frame also carries clock stamps; each echo that comes back makes a ClockSample for
// src/clock's offset estimator. Invariants: queues are bounded in bytes, frames in size, and a
// misbehaving connection is closed alone.
import { createServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import type { Message, NodeId } from "../raft/types.js";
import { type ClockSample, InboundConnection, type InboundContext, memorySnapshotSink, type SnapshotSinkFactory } from "./inbound-connection.js";
import { type LinkContext, PeerLink, type PeerLinkStats, splitAddress } from "./peer-link.js";

export type { ClockSample } from "./inbound-connection.js";

export interface PeerStats extends PeerLinkStats {
  messagesReceived: number;
}

export const PEER_FRAME_BYTES_MAX_DEFAULT = 32 * 1024 * 1024;
export const SEND_QUEUE_BYTES_MAX_DEFAULT = 16 * 1024 * 1024;
export const SOCKET_BUFFER_BYTES_MAX_DEFAULT = 4 * 1024 * 1024;
export const SNAPSHOT_CHUNK_BYTES_DEFAULT = 256 * 1024;
export const SNAPSHOT_BYTES_MAX_DEFAULT = 1024 * 1024 * 1024;
export const RECONNECT_MIN_MS_DEFAULT = 50;
export const RECONNECT_MAX_MS_DEFAULT = 2000;
export const HANDSHAKE_TIMEOUT_MS_DEFAULT = 5000;
export const CLOCK_PROBE_INTERVAL_MS_DEFAULT = 1000;
export const PEER_IDLE_TIMEOUT_MS_DEFAULT = 10_000;
// Room in a frame for the fields around a snapshot chunk.
const CHUNK_FRAME_OVERHEAD_BYTES = 64 * 1024;

export interface TransportOptions {
  selfId: NodeId;
  clusterId: string;
  secret: string; // peers prove it to each other (HMAC challenge-response, both directions)
  // Settings every node of the cluster must share (opaque here; the node's broker limits): sent in
  // the hello of each connection this node dials, and a dialer whose hello carries settings that
  // settingsProblem rejects (it returns why) is refused with that reason.
  settings?: string;
  settingsProblem?: (theirs: string | undefined) => string | undefined;
  // The newest set of log commands this node applies, sent in the hello of each connection it
  // dials; peerCommands() tells what each authenticated dialer sent (see HelloFrame.commands).
  commands?: number;
  listen: { host: string; port: number }; // port 0: any free port, see address()
  peers: Map<NodeId, string>; // "host:port" of each other node's peer listener
  // Mutual TLS on the peer port: every node presents `cert` (with `key`) and accepts peers whose
  // certificate `ca` signed (the chain, not the host name: peers are dialled by address). The
  // HMAC handshake still runs inside. Without it the peer port is plain TCP.
  tls?: PeerTls;
  onMessages(from: NodeId, messages: Message[]): void;
  onClockSample?(from: NodeId, sample: ClockSample): void;
  // A snapshot message finished streaming (delivered: true) or was abandoned (false); the driver
  // may tell the Raft core (reportSnapshot) so the follower leaves snapshot state on failure.
  onSnapshotStatus?(to: NodeId, delivered: boolean): void;
  // Messages to this peer were lost (its connection dropped, or its send queue overflowed): the
  // driver may tell the Raft core (reportUnreachable) so it probes instead of streaming appends.
  onUnreachable?(peer: NodeId): void;
  frameBytesMax?: number;
  sendQueueBytesMax?: number; // per peer, messages waiting to be written
  socketBufferBytesMax?: number; // per peer, bytes written but not yet taken by the kernel
  snapshotChunkBytes?: number;
  snapshotBytesMax?: number; // largest snapshot accepted from a peer
  // Where a snapshot from a peer is written as it arrives (default: assembled in memory).
  receiveSnapshot?: SnapshotSinkFactory;
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  handshakeTimeoutMs?: number;
  clockProbeIntervalMs?: number; // an idle peer still gets a frame this often (clock samples, liveness)
  // A peer silent this long on its connection to us is presumed stopped or cut off: both
  // connections with it are dropped and redialed. Must exceed clockProbeIntervalMs comfortably.
  peerIdleTimeoutMs?: number;
  log?: (event: string, fields: Record<string, unknown>) => void;
  now?: () => number; // the raw physical clock for clock samples (Date.now by default)
}

export interface PeerTls {
  key: string | Buffer;
  cert: string | Buffer;
  ca: string | Buffer;
}

export class PeerTransport {
  private readonly links = new Map<NodeId, PeerLink>();
  private readonly inbound = new Set<InboundConnection>();
  private readonly echoes = new Map<NodeId, [number, number]>();
  private readonly messagesReceived = new Map<NodeId, number>();
  private readonly commandsByPeer = new Map<NodeId, number>(); // kept after its connection closes
  private readonly linkContext: LinkContext;
  private readonly inboundContext: InboundContext;
  private readonly probeTimer: NodeJS.Timeout;
  private flushScheduled = false;
  private closed = false;

  private constructor(
    private readonly options: TransportOptions,
    private readonly server: Server,
  ) {
    const now = options.now ?? Date.now;
    const log = options.log ?? (() => {});
    const frameBytesMax = options.frameBytesMax ?? PEER_FRAME_BYTES_MAX_DEFAULT;
    const snapshotChunkBytes = options.snapshotChunkBytes ?? SNAPSHOT_CHUNK_BYTES_DEFAULT;
    if (snapshotChunkBytes + CHUNK_FRAME_OVERHEAD_BYTES > frameBytesMax) {
      throw new RangeError(`snapshotChunkBytes ${snapshotChunkBytes} does not fit in frameBytesMax ${frameBytesMax}`);
    }
    const probeIntervalMs = options.clockProbeIntervalMs ?? CLOCK_PROBE_INTERVAL_MS_DEFAULT;
    const peerIdleTimeoutMs = options.peerIdleTimeoutMs ?? PEER_IDLE_TIMEOUT_MS_DEFAULT;
    if (peerIdleTimeoutMs < 2 * probeIntervalMs) {
      throw new RangeError(`peerIdleTimeoutMs ${peerIdleTimeoutMs} must be at least twice clockProbeIntervalMs ${probeIntervalMs}`);
    }
    const handshakeTimeoutMs = options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS_DEFAULT;
    const common = { selfId: options.selfId, clusterId: options.clusterId, secret: options.secret, frameBytesMax, handshakeTimeoutMs, now, log };
    this.linkContext = {
      ...common,
      ...(options.settings === undefined ? {} : { settings: options.settings }),
      ...(options.commands === undefined ? {} : { commands: options.commands }),
      sendQueueBytesMax: options.sendQueueBytesMax ?? SEND_QUEUE_BYTES_MAX_DEFAULT,
      socketBufferBytesMax: options.socketBufferBytesMax ?? SOCKET_BUFFER_BYTES_MAX_DEFAULT,
      snapshotChunkBytes,
      reconnectMinMs: options.reconnectMinMs ?? RECONNECT_MIN_MS_DEFAULT,
      reconnectMaxMs: options.reconnectMaxMs ?? RECONNECT_MAX_MS_DEFAULT,
      ...(options.tls === undefined ? {} : { tls: options.tls }),
      takeEcho: (peer) => this.takeEcho(peer),
      scheduleFlush: () => this.scheduleFlush(),
      onSnapshotStatus: (peer, delivered) => options.onSnapshotStatus?.(peer, delivered),
      onUnreachable: (peer) => options.onUnreachable?.(peer),
    };
    this.inboundContext = {
      ...common,
      ...(options.settingsProblem === undefined ? {} : { settingsProblem: options.settingsProblem }),
      snapshotBytesMax: options.snapshotBytesMax ?? SNAPSHOT_BYTES_MAX_DEFAULT,
      receiveSnapshot: options.receiveSnapshot ?? memorySnapshotSink,
      peerIdleTimeoutMs,
      onSilent: (peer) => this.links.get(peer)?.reset("the peer went silent on its connection to us"),
      onAuthenticated: (peer, connection) => this.onAuthenticated(peer, connection),
      onClosed: (connection) => this.inbound.delete(connection),
      onMessages: (from, messages) => {
        this.messagesReceived.set(from, (this.messagesReceived.get(from) ?? 0) + messages.length);
        options.onMessages(from, messages);
      },
      onClockSample: (from, sample) => options.onClockSample?.(from, sample),
      setEcho: (peer, echo) => this.echoes.set(peer, echo),
    };
    this.probeTimer = setInterval(() => this.probeIdlePeers(probeIntervalMs), probeIntervalMs / 2);
    this.probeTimer.unref();
    server.on(options.tls === undefined ? "connection" : "secureConnection", (socket: Socket) => this.accept(socket));
    // A peer whose TLS handshake fails (no or a foreign certificate) never becomes a connection.
    // Node reports a handshake timeout here without closing the socket: close it, whatever failed.
    server.on("tlsClientError", (error: Error, socket: Socket) => {
      log("peer-tls-refused", { remote: `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? 0}`, error: error.message });
      socket.destroy();
    });
  }

  static async start(options: TransportOptions): Promise<PeerTransport> {
    validatePeers(options.selfId, options.peers);
    const tls = options.tls;
    const server =
      tls === undefined
        ? createServer()
        : createTlsServer({
            key: tls.key,
            cert: tls.cert,
            ca: tls.ca,
            requestCert: true,
            rejectUnauthorized: true,
            // The TLS handshake has the same bound as ours (which starts after it).
            handshakeTimeout: options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS_DEFAULT,
          });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.listen.port, options.listen.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const transport = new PeerTransport(options, server);
    transport.setPeers(options.peers);
    return transport;
  }

  address(): { host: string; port: number } {
    const bound = this.server.address();
    if (bound === null || typeof bound === "string") throw new Error("peer listener is not bound to a TCP port");
    return { host: bound.address, port: bound.port };
  }

  // Non-blocking: queues per destination and flushes once at the end of this event-loop turn.
  send(messages: Message[]): void {
    if (this.closed) return;
    for (const message of messages) {
      const link = this.links.get(message.to);
      if (link === undefined) {
        this.options.log?.("send-no-route", { to: message.to, type: message.type });
        continue;
      }
      link.enqueue(message);
    }
    this.scheduleFlush();
  }

  // Writes what send() queued now instead of at the end of the turn: for a caller about to do a
  // long piece of synchronous work (the leader applying entries) that would otherwise hold the
  // messages back.
  flush(): void {
    if (this.closed) return;
    for (const link of this.links.values()) link.flush();
  }

  setPeers(peers: Map<NodeId, string>): void {
    validatePeers(this.options.selfId, peers);
    for (const [peer, link] of this.links) {
      if (peers.has(peer)) continue;
      link.close();
      this.links.delete(peer);
      this.echoes.delete(peer);
    }
    for (const [peer, address] of peers) {
      const link = this.links.get(peer);
      if (link !== undefined) {
        link.setAddress(address);
        continue;
      }
      const created = new PeerLink(peer, address, this.linkContext);
      this.links.set(peer, created);
      created.start();
    }
  }

  // Peers with an authenticated outbound connection (what send() needs to deliver).
  connectedPeers(): NodeId[] {
    return [...this.links.values()].filter((link) => link.isReady).map((link) => link.peerId);
  }

  // Per configured peer, counters since start (for metrics and the status page).
  stats(): PeerStats[] {
    return [...this.links.values()].map((link) => ({ ...link.stats(), messagesReceived: this.messagesReceived.get(link.peerId) ?? 0 }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.probeTimer);
    for (const link of this.links.values()) link.close();
    this.links.clear();
    for (const connection of this.inbound) connection.destroy("transport closed");
    this.inbound.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.inbound.add(new InboundConnection(socket, this.inboundContext));
  }

  // A peer that restarted dials again while its old connection may linger: keep the newest.
  private onAuthenticated(peer: NodeId, connection: InboundConnection): void {
    for (const other of this.inbound) {
      if (other !== connection && other.peerId === peer) other.destroy("replaced by a newer connection from the same node");
    }
    this.commandsByPeer.set(peer, connection.peerCommands);
    this.options.log?.("peer-accepted", { peer, commands: connection.peerCommands });
  }

  // The set of log commands `peer` said it applies in the hello of its latest authenticated
  // connection to this node (1 for a node before the field); undefined: it never connected.
  peerCommands(peer: NodeId): number | undefined {
    return this.commandsByPeer.get(peer);
  }

  private takeEcho(peer: NodeId): [number, number] | undefined {
    const echo = this.echoes.get(peer);
    this.echoes.delete(peer);
    return echo;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.closed) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private probeIdlePeers(probeIntervalMs: number): void {
    const now = (this.options.now ?? Date.now)();
    let due = false;
    for (const link of this.links.values()) {
      if (!link.isReady || Math.abs(now - link.lastSentAtMs) < probeIntervalMs) continue;
      link.requestPing();
      due = true;
    }
    if (due) this.scheduleFlush();
  }
}

function validatePeers(selfId: NodeId, peers: Map<NodeId, string>): void {
  for (const [peer, address] of peers) {
    if (peer === selfId) throw new RangeError(`peers include this node's own id ${selfId}`);
    if (!Number.isSafeInteger(peer) || peer <= 0) throw new RangeError(`peer id ${peer} is not a positive integer`);
    splitAddress(address);
  }
}
