// The outbound half of a peer pair: one TCP connection from this node to one peer, which carries
// everything this node sends to it. It dials, authenticates (handshake.ts), then writes at most one
// batch frame per flush plus at most one snapshot chunk per event-loop turn, so heartbeats and
// appends overtake a large snapshot instead of queueing behind it. It reconnects with exponential
// backoff and jitter. Its queue is bounded in bytes: beyond the bound messages are dropped (Raft
// retransmits what matters) and the drop is logged.
import { crc32c } from "@node-rs/crc32";
import { connect } from "node:net";
import { connect as connectTls } from "node:tls";
import { type Message, type NodeId, snapshotDataBytes } from "../raft/types.js";
import { FramedSocket } from "./framed-socket.js";
import { estimateMessageBytes, type DataFrame, type PeerFrame, PEER_PROTOCOL_VERSION } from "./frames.js";
import { computeProof, createNonce, type HandshakeTranscript, verifyProof } from "./handshake.js";
import type { PeerTls } from "./peer-transport.js";

export interface LinkContext {
  selfId: NodeId;
  clusterId: string;
  secret: string;
  settings?: string; // sent in the hello (see TransportOptions)
  commands?: number; // sent in the hello (see TransportOptions)
  frameBytesMax: number;
  sendQueueBytesMax: number;
  socketBufferBytesMax: number;
  snapshotChunkBytes: number;
  handshakeTimeoutMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  tls?: PeerTls; // dial with mutual TLS (see TransportOptions.tls)
  now(): number;
  log(event: string, fields: Record<string, unknown>): void;
  takeEcho(peer: NodeId): [number, number] | undefined;
  scheduleFlush(): void;
  onSnapshotStatus(peer: NodeId, delivered: boolean): void;
  onUnreachable(peer: NodeId): void;
}

type LinkState = "idle" | "connecting" | "handshaking" | "ready" | "closed";

// Counters since start, for metrics and the status page.
export interface PeerLinkStats {
  peer: NodeId;
  connected: boolean;
  queuedMessages: number;
  queuedBytes: number;
  framesSent: number;
  bytesSent: number; // frame bytes handed to the socket
  messagesSent: number;
  messagesDropped: number; // send queue overflow or too large for a frame
  snapshotsSent: number;
  snapshotsFailed: number;
  reconnects: number; // successful handshakes after the first
}

// A snapshot being sent, from memory (data) or, for one kept on disk, from its file (reader: the
// next chunk is read while the one before is written).
interface SnapshotStream {
  streamId: number;
  message: Message; // snapshot.data emptied: the bytes travel in chunks
  totalBytes: number;
  offset: number;
  data: Uint8Array | undefined;
  checksum: number | undefined; // CRC32C of the data, sent with the first chunk
  reader: AsyncIterator<Uint8Array> | undefined;
  readChunk: Uint8Array | undefined; // read, not yet written
  reading: boolean;
}

let nextStreamId = 1;

export class PeerLink {
  private state: LinkState = "idle";
  private connection: FramedSocket | undefined;
  private queue: Message[] = [];
  private queueBytes = 0;
  private droppedMessages = 0;
  private stream: SnapshotStream | undefined; // being sent
  private pendingSnapshot: Message | undefined; // next to send; a newer one replaces it
  private failures = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private pingDue = false;
  private waitingForDrain = false;
  private transcript: HandshakeTranscript | undefined; // of the handshake in progress
  private readonly counters = { framesSent: 0, bytesSent: 0, messagesSent: 0, messagesDropped: 0, snapshotsSent: 0, snapshotsFailed: 0, handshakes: 0 };
  lastSentAtMs = 0;

  constructor(
    readonly peerId: NodeId,
    private address: string,
    private readonly context: LinkContext,
  ) {}

  get isReady(): boolean {
    return this.state === "ready";
  }

  stats(): PeerLinkStats {
    const { handshakes, ...counters } = this.counters;
    return {
      peer: this.peerId,
      connected: this.isReady,
      queuedMessages: this.queue.length,
      queuedBytes: this.queueBytes,
      ...counters,
      reconnects: Math.max(0, handshakes - 1),
    };
  }

  start(): void {
    this.dial();
  }

  setAddress(address: string): void {
    if (address === this.address) return;
    this.address = address;
    this.connection?.destroy("peer address changed");
  }

  enqueue(message: Message): void {
    if (message.type === "snapshot" && message.snapshot !== undefined) {
      if (snapshotDataBytes(message.snapshot) > this.context.snapshotChunkBytes) {
        this.enqueueSnapshot(message);
        return;
      }
      // Small enough to travel inline: its bytes now (a snapshot on disk reads them when asked).
      message = { ...message, snapshot: { meta: message.snapshot.meta, data: message.snapshot.data } };
    }
    const bytes = estimateMessageBytes(message);
    if (this.queueBytes + bytes > this.context.sendQueueBytesMax) {
      if (this.droppedMessages === 0) {
        this.context.log("send-queue-full", { peer: this.peerId, queueBytes: this.queueBytes, sendQueueBytesMax: this.context.sendQueueBytesMax });
        this.context.onUnreachable(this.peerId);
      }
      this.droppedMessages++;
      this.counters.messagesDropped++;
      if (message.type === "snapshot") this.reportSnapshot(false);
      return;
    }
    this.queue.push(message);
    this.queueBytes += bytes;
  }

  // Drops the current connection (if any); the usual backoff redials.
  reset(reason: string): void {
    this.connection?.destroy(reason);
  }

  requestPing(): void {
    this.pingDue = true;
  }

  close(): void {
    this.state = "closed";
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.handshakeTimer);
    this.connection?.destroy("transport closed");
    this.failStreams("transport closed");
    this.reportSnapshots(this.queue.filter((message) => message.type === "snapshot").length, false);
    this.queue = [];
    this.queueBytes = 0;
  }

  // Called once per event-loop turn by the transport: writes what is queued, if it can.
  flush(): void {
    if (this.state !== "ready" || this.connection === undefined) return;
    const connection = this.connection;
    if (connection.bufferedBytes > this.context.socketBufferBytesMax) {
      this.awaitDrain(connection);
      return;
    }
    if (this.queue.length > 0 || this.pingDue) this.writeBatch(connection);
    this.writeSnapshotChunk(connection);
  }

  private enqueueSnapshot(message: Message): void {
    if (this.pendingSnapshot !== undefined) {
      this.context.log("snapshot-replaced", { peer: this.peerId, index: this.pendingSnapshot.snapshot?.meta.index });
      this.reportSnapshot(false);
    }
    this.pendingSnapshot = message;
  }

  private writeBatch(connection: FramedSocket): void {
    const messages = this.queue;
    this.queue = [];
    this.queueBytes = 0;
    this.pingDue = false;
    if (this.droppedMessages > 0) {
      this.context.log("send-queue-recovered", { peer: this.peerId, droppedMessages: this.droppedMessages });
      this.droppedMessages = 0;
    }
    this.writeMessages(connection, messages);
  }

  // One frame for the whole batch; halves it when it would exceed the frame limit.
  private writeMessages(connection: FramedSocket, messages: Message[]): void {
    // A small snapshot travels inline; its status is known once the frame is written.
    const snapshots = messages.filter((message) => message.type === "snapshot").length;
    const onWritten = snapshots === 0 ? undefined : (error?: Error | null) => this.reportSnapshots(snapshots, !error);
    try {
      this.countFrame(connection.write(this.dataFrame({ messages }), onWritten));
      this.counters.messagesSent += messages.length;
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      if (messages.length === 1) {
        this.context.log("message-too-large", { peer: this.peerId, type: messages[0]!.type, reason: error.message });
        this.counters.messagesDropped++;
        this.reportSnapshots(snapshots, false);
        return;
      }
      const half = Math.ceil(messages.length / 2);
      this.writeMessages(connection, messages.slice(0, half));
      this.writeMessages(connection, messages.slice(half));
    }
  }

  private countFrame(bytes: number): void {
    this.counters.framesSent++;
    this.counters.bytesSent += bytes;
  }

  private reportSnapshots(count: number, delivered: boolean): void {
    for (let index = 0; index < count; index++) this.reportSnapshot(delivered);
  }

  private reportSnapshot(delivered: boolean): void {
    if (delivered) this.counters.snapshotsSent++;
    else this.counters.snapshotsFailed++;
    this.context.onSnapshotStatus(this.peerId, delivered);
  }

  private dataFrame(body: Pick<DataFrame, "messages" | "chunk">): DataFrame {
    const sentAtMs = this.context.now();
    this.lastSentAtMs = sentAtMs;
    const frame: DataFrame = { k: "data", sentAtMs, ...body };
    const echo = this.context.takeEcho(this.peerId);
    if (echo !== undefined) frame.echo = echo;
    return frame;
  }

  private writeSnapshotChunk(connection: FramedSocket): void {
    if (this.stream === undefined && this.pendingSnapshot !== undefined) this.startStream(this.pendingSnapshot);
    const stream = this.stream;
    if (stream === undefined) return;
    if (connection.bufferedBytes >= this.context.snapshotChunkBytes) {
      this.awaitDrain(connection);
      return;
    }
    let bytes: Uint8Array;
    if (stream.data !== undefined) {
      bytes = stream.data.subarray(stream.offset, Math.min(stream.offset + this.context.snapshotChunkBytes, stream.totalBytes));
    } else {
      if (stream.readChunk === undefined) {
        this.readSnapshotChunk(stream); // flushes again once it is read
        return;
      }
      bytes = stream.readChunk;
      stream.readChunk = undefined;
    }
    const end = stream.offset + bytes.length;
    const chunk = {
      streamId: stream.streamId,
      offset: stream.offset,
      totalBytes: stream.totalBytes,
      bytes,
      ...(stream.offset === 0 ? { message: stream.message } : {}),
      ...(stream.offset === 0 && stream.checksum !== undefined ? { checksum: stream.checksum } : {}),
    };
    const last = end === stream.totalBytes;
    if (!last && stream.reader !== undefined) this.readSnapshotChunk(stream);
    this.countFrame(connection.write(this.dataFrame({ chunk }), last ? (error) => this.finishStream(stream, !error) : undefined));
    stream.offset = end;
    if (last) this.stream = undefined;
    if (this.stream !== undefined || this.pendingSnapshot !== undefined) this.context.scheduleFlush();
  }

  private startStream(message: Message): void {
    this.pendingSnapshot = undefined;
    const snapshot = message.snapshot!;
    const reader = snapshot.readChunks?.(this.context.snapshotChunkBytes);
    this.stream = {
      streamId: nextStreamId++,
      message: { ...message, snapshot: { meta: snapshot.meta, data: new Uint8Array(0) } },
      totalBytes: snapshotDataBytes(snapshot),
      offset: 0,
      data: reader === undefined ? snapshot.data : undefined,
      // A snapshot on disk knows its checksum; one in memory gets it computed here.
      checksum: snapshot.checksum ?? (reader === undefined ? crc32c(snapshot.data) : undefined),
      reader,
      readChunk: undefined,
      reading: false,
    };
    this.context.log("snapshot-send-start", { peer: this.peerId, index: snapshot.meta.index, bytes: this.stream.totalBytes, fromDisk: reader !== undefined });
  }

  // Reads the next chunk of a snapshot streamed from disk, then flushes. A failed read (the
  // snapshot was superseded and its file closed, or it is damaged) fails the send: the core sends
  // the newer one.
  private readSnapshotChunk(stream: SnapshotStream): void {
    if (stream.reading || stream.readChunk !== undefined) return;
    stream.reading = true;
    stream.reader!.next().then(
      (result) => {
        stream.reading = false;
        if (this.stream !== stream) return;
        const expected = Math.min(this.context.snapshotChunkBytes, stream.totalBytes - stream.offset);
        if (result.done || result.value.length !== expected) {
          this.failStream(stream, "snapshot-read-short");
          return;
        }
        stream.readChunk = result.value;
        this.context.scheduleFlush();
      },
      (error: unknown) => {
        stream.reading = false;
        if (this.stream === stream) this.failStream(stream, `snapshot-read-failed: ${(error as Error).message}`);
      },
    );
  }

  private failStream(stream: SnapshotStream, reason: string): void {
    this.context.log("snapshot-send-end", { peer: this.peerId, index: stream.message.snapshot?.meta.index, delivered: false, reason });
    this.stream = undefined;
    void stream.reader?.return?.(undefined);
    this.reportSnapshot(false);
    // The receiver drops the partial stream when the next one starts (a new stream id).
  }

  private finishStream(stream: SnapshotStream, delivered: boolean): void {
    this.context.log("snapshot-send-end", { peer: this.peerId, index: stream.message.snapshot?.meta.index, delivered });
    this.reportSnapshot(delivered);
  }

  private failStreams(reason: string): void {
    for (const message of [this.stream?.message, this.pendingSnapshot]) {
      if (message === undefined) continue;
      this.context.log("snapshot-send-end", { peer: this.peerId, index: message.snapshot?.meta.index, delivered: false, reason });
      this.reportSnapshot(false);
    }
    void this.stream?.reader?.return?.(undefined);
    this.stream = undefined;
    this.pendingSnapshot = undefined;
  }

  private awaitDrain(connection: FramedSocket): void {
    if (this.waitingForDrain) return;
    this.waitingForDrain = true;
    connection.socket.once("drain", () => {
      this.waitingForDrain = false;
      this.context.scheduleFlush();
    });
  }

  private dial(): void {
    if (this.state === "closed") return;
    this.state = "connecting";
    const [host, port] = splitAddress(this.address);
    const tls = this.context.tls;
    const socket =
      tls === undefined
        ? connect({ host, port })
        : connectTls({ host, port, key: tls.key, cert: tls.cert, ca: tls.ca, checkServerIdentity: () => undefined });
    socket.setKeepAlive(true, 5000);
    const connection = new FramedSocket(socket, this.context.frameBytesMax, this.context.now, {
      onFrame: (frame) => this.onFrame(connection, frame),
      onClose: (reason) => this.onClose(connection, reason),
    });
    this.connection = connection;
    this.handshakeTimer = setTimeout(
      () => connection.destroy(`handshake not done within ${this.context.handshakeTimeoutMs} ms`),
      this.context.handshakeTimeoutMs,
    );
    socket.once(tls === undefined ? "connect" : "secureConnect", () => this.sendHello(connection));
  }

  private sendHello(connection: FramedSocket): void {
    this.state = "handshaking";
    const nonce = createNonce();
    this.transcript = { clusterId: this.context.clusterId, dialerId: this.context.selfId, acceptorId: this.peerId, dialerNonce: nonce, acceptorNonce: new Uint8Array(0) };
    const { settings, commands } = this.context;
    connection.write({
      k: "hello",
      version: PEER_PROTOCOL_VERSION,
      clusterId: this.context.clusterId,
      nodeId: this.context.selfId,
      nonce,
      ...(settings === undefined ? {} : { settings }),
      ...(commands === undefined ? {} : { commands }),
    });
  }

  private onFrame(connection: FramedSocket, frame: PeerFrame): void {
    if (connection !== this.connection) return;
    if (frame.k === "refuse") {
      this.context.log("handshake-refused", { peer: this.peerId, side: "dialer", reason: `peer refused: ${frame.reason}` });
      connection.destroy(`refused: ${frame.reason}`);
    } else if (frame.k === "welcome" && this.state === "handshaking") {
      this.onWelcome(connection, frame.clusterId, frame.nodeId, frame.nonce, frame.proof);
    } else if (frame.k === "ready" && this.state === "handshaking" && this.transcript?.acceptorNonce.length) {
      this.onReady();
    } else {
      connection.destroy(`unexpected ${frame.k} frame on an outbound connection`);
    }
  }

  private onWelcome(connection: FramedSocket, clusterId: string, nodeId: NodeId, nonce: Uint8Array, proof: Uint8Array): void {
    const refuse = (reason: string) => {
      this.context.log("handshake-refused", { peer: this.peerId, side: "dialer", reason });
      connection.endWith({ k: "refuse", reason }, reason);
    };
    if (clusterId !== this.context.clusterId) { refuse(`cluster id mismatch: ours ${this.context.clusterId}, theirs ${clusterId}`); return; }
    if (nodeId !== this.peerId) { refuse(`node id mismatch: expected ${this.peerId} at ${this.address}, found ${nodeId}`); return; }
    const transcript = { ...this.transcript!, acceptorNonce: nonce };
    this.transcript = transcript;
    if (!verifyProof(this.context.secret, "acceptor", transcript, proof)) { refuse("authentication failed: the peer does not know the cluster secret"); return; }
    connection.write({ k: "proof", proof: computeProof(this.context.secret, "dialer", transcript) });
  }

  private onReady(): void {
    clearTimeout(this.handshakeTimer);
    this.state = "ready";
    this.failures = 0;
    this.counters.handshakes++;
    this.context.log("peer-connected", { peer: this.peerId, address: this.address });
    this.pingDue = true; // starts the clock exchange at once
    this.context.scheduleFlush();
  }

  private onClose(connection: FramedSocket, reason: string): void {
    if (connection !== this.connection) return;
    clearTimeout(this.handshakeTimer);
    const wasReady = this.state === "ready";
    this.connection = undefined;
    this.transcript = undefined;
    this.waitingForDrain = false;
    if (this.state === "closed") return;
    this.state = "idle";
    this.failStreams(`connection lost: ${reason}`);
    if (wasReady) {
      this.context.log("peer-disconnected", { peer: this.peerId, reason });
      this.context.onUnreachable(this.peerId);
    }
    else if (this.failures === 0) this.context.log("peer-connect-failed", { peer: this.peerId, address: this.address, reason });
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    const ceilingMs = Math.min(this.context.reconnectMaxMs, this.context.reconnectMinMs * 2 ** Math.min(this.failures, 30));
    this.failures++;
    // Jitter in [ceiling/2, ceiling): nodes that lost a peer together do not redial in lockstep.
    const delayMs = ceilingMs / 2 + Math.random() * (ceilingMs / 2);
    this.reconnectTimer = setTimeout(() => this.dial(), delayMs);
    this.reconnectTimer.unref();
  }
}

export function splitAddress(address: string): [string, number] {
  const colon = address.lastIndexOf(":");
  const port = Number(address.slice(colon + 1));
  if (colon <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new RangeError(`peer address ${JSON.stringify(address)} is not host:port`);
  }
  return [address.slice(0, colon).replace(/^\[(.*)\]$/, "$1"), port];
}
