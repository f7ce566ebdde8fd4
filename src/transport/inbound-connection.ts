// The inbound half of a peer pair: a connection another node dialed to us. It authenticates the
// dialer (refusing a foreign cluster id or a wrong secret, with the reason logged on both sides),
// then receives data frames: Raft message batches, snapshot chunks (written to a snapshot sink as
// they arrive, the message delivered with the finished snapshot) and clock stamps (turned into
// samples, and remembered so our next frame to that peer echoes them).
import { crc32c } from "@node-rs/crc32";
import type { Socket } from "node:net";
import type { Message, NodeId, SnapshotMeta, SnapshotSink } from "../raft/types.js";
import { FramedSocket } from "./framed-socket.js";
import { type DataFrame, type HelloFrame, type PeerFrame, PEER_PROTOCOL_VERSION, type SnapshotChunk } from "./frames.js";
import { computeProof, createNonce, type HandshakeTranscript, verifyProof } from "./handshake.js";

// The four timestamps of one NTP-like exchange, in milliseconds. t1 and t4 are read on this
// node's clock, t2 and t3 on the peer's. src/clock turns them into an offset and a delay.
export interface ClockSample {
  t1Ms: number; // we sent a frame
  t2Ms: number; // the peer received it
  t3Ms: number; // the peer sent the frame carrying the echo
  t4Ms: number; // we received that frame
}

export interface InboundContext {
  selfId: NodeId;
  clusterId: string;
  secret: string;
  settingsProblem?: (theirs: string | undefined) => string | undefined; // see TransportOptions
  frameBytesMax: number;
  snapshotBytesMax: number;
  receiveSnapshot: SnapshotSinkFactory;
  handshakeTimeoutMs: number;
  peerIdleTimeoutMs: number;
  now(): number;
  log(event: string, fields: Record<string, unknown>): void;
  onAuthenticated(peer: NodeId, connection: InboundConnection): void; // connection.peerCommands is set
  onClosed(connection: InboundConnection): void;
  onSilent(peer: NodeId): void; // an authenticated peer sent nothing for peerIdleTimeoutMs
  onMessages(from: NodeId, messages: Message[]): void;
  onClockSample(from: NodeId, sample: ClockSample): void;
  setEcho(peer: NodeId, echo: [number, number]): void;
}

// Where an incoming snapshot goes, chunk by chunk: a node writes it to the snapshot's file
// (DiskRaftStorage.receiveSnapshot), so that it is never whole in memory; memorySnapshotSink
// assembles it in memory.
export type { SnapshotSink };
export type SnapshotSinkFactory = (meta: SnapshotMeta, dataBytes: number, checksum: number | undefined) => Promise<SnapshotSink>;

export const memorySnapshotSink: SnapshotSinkFactory = async (meta, dataBytes, checksum) => {
  const data = new Uint8Array(dataBytes);
  let receivedBytes = 0;
  return {
    write: async (chunk) => {
      data.set(chunk, receivedBytes);
      receivedBytes += chunk.length;
    },
    finish: async () => {
      if (receivedBytes !== dataBytes) throw new Error(`snapshot: received ${receivedBytes} of ${dataBytes} bytes`);
      if (checksum !== undefined && crc32c(data) !== checksum) throw new Error("snapshot: checksum does not match the sender's");
      return { meta, data };
    },
    abort: async () => {},
  };
};

// Received chunks not yet written to the sink, past which the connection stops reading until the
// writes catch up (a slow disk then slows the sender instead of filling our memory).
export const SNAPSHOT_UNWRITTEN_BYTES_MAX = 8 * 1024 * 1024;

interface IncomingStream {
  streamId: number;
  message: Message;
  totalBytes: number;
  receivedBytes: number; // arrived in order (written or queued for writing)
  unwrittenBytes: number;
  sink: Promise<SnapshotSink>;
  written: Promise<void>; // the writes so far, in order
  failed: boolean; // a write failed: the rest of the stream is dropped, the sender tries again
}

export class InboundConnection {
  private readonly connection: FramedSocket;
  private state: "await-hello" | "await-proof" | "ready" = "await-hello";
  private transcript: HandshakeTranscript | undefined;
  private readonly handshakeTimer: NodeJS.Timeout;
  private stream: IncomingStream | undefined;
  // Set while a finished snapshot is being delivered: messages that arrived after its last chunk
  // wait for it, so that they reach Raft in the order they were sent.
  private delivering: Promise<void> | undefined;
  private closed = false;
  peerId: NodeId = 0;
  peerCommands = 1; // the dialer's HelloFrame.commands

  constructor(
    socket: Socket,
    private readonly context: InboundContext,
  ) {
    this.connection = new FramedSocket(socket, context.frameBytesMax, context.now, {
      onFrame: (frame, receivedAtMs) => this.onFrame(frame, receivedAtMs),
      onClose: (reason) => this.onClose(reason),
    });
    this.handshakeTimer = setTimeout(
      () => this.connection.destroy(`handshake not done within ${context.handshakeTimeoutMs} ms`),
      context.handshakeTimeoutMs,
    );
  }

  destroy(reason: string): void {
    this.connection.destroy(reason);
  }

  private onFrame(frame: PeerFrame, receivedAtMs: number): void {
    if (frame.k === "data" && this.state === "ready") this.onData(frame, receivedAtMs);
    else if (frame.k === "hello" && this.state === "await-hello") this.onHello(frame);
    else if (frame.k === "proof" && this.state === "await-proof") this.onProof(frame.proof);
    else if (frame.k === "refuse") {
      this.context.log("handshake-refused", { peer: this.peerId, side: "acceptor", reason: `peer refused: ${frame.reason}` });
      this.connection.destroy(`refused: ${frame.reason}`);
    } else this.violation(`unexpected ${frame.k} frame in state ${this.state}`);
  }

  private onHello(hello: HelloFrame): void {
    if (hello.version !== PEER_PROTOCOL_VERSION) { this.refuse(`protocol version ${hello.version} is not ${PEER_PROTOCOL_VERSION}`); return; }
    if (hello.clusterId !== this.context.clusterId) { this.refuse(`cluster id mismatch: ours ${this.context.clusterId}, theirs ${hello.clusterId}`); return; }
    if (hello.nodeId === this.context.selfId) { this.refuse(`node id ${hello.nodeId} is this node's own id`); return; }
    const settingsProblem = this.context.settingsProblem?.(hello.settings);
    if (settingsProblem !== undefined) {
      // Its own event: a misconfigured cluster, which the node logs as an error (not a transient).
      this.context.log("peer-settings-refused", { peer: hello.nodeId, reason: settingsProblem });
      this.refuse(settingsProblem);
      return;
    }
    this.peerId = hello.nodeId;
    this.peerCommands = hello.commands ?? 1;
    const nonce = createNonce();
    this.transcript = { clusterId: this.context.clusterId, dialerId: hello.nodeId, acceptorId: this.context.selfId, dialerNonce: hello.nonce, acceptorNonce: nonce };
    const proof = computeProof(this.context.secret, "acceptor", this.transcript);
    this.connection.write({ k: "welcome", clusterId: this.context.clusterId, nodeId: this.context.selfId, nonce, proof });
    this.state = "await-proof";
  }

  private onProof(proof: Uint8Array): void {
    if (!verifyProof(this.context.secret, "dialer", this.transcript!, proof)) {
      this.refuse("authentication failed: the peer does not know the cluster secret");
      return;
    }
    clearTimeout(this.handshakeTimer);
    this.state = "ready";
    this.connection.write({ k: "ready" });
    // A live peer sends at least a clock probe every second; silence means it is stopped or cut
    // off, and a dead TCP connection would otherwise linger for the OS keepalive (minutes).
    this.connection.socket.setTimeout(this.context.peerIdleTimeoutMs, () => {
      this.context.log("peer-silent", { peer: this.peerId, peerIdleTimeoutMs: this.context.peerIdleTimeoutMs });
      this.connection.destroy(`no frame for ${this.context.peerIdleTimeoutMs} ms`);
      this.context.onSilent(this.peerId);
    });
    this.context.onAuthenticated(this.peerId, this);
  }

  private onData(frame: DataFrame, receivedAtMs: number): void {
    if (frame.echo !== undefined) {
      const [t1Ms, t2Ms] = frame.echo;
      this.context.onClockSample(this.peerId, { t1Ms, t2Ms, t3Ms: frame.sentAtMs, t4Ms: receivedAtMs });
    }
    this.context.setEcho(this.peerId, [frame.sentAtMs, receivedAtMs]);
    if (frame.messages !== undefined && frame.messages.length > 0) this.deliver(frame.messages);
    if (frame.chunk !== undefined) this.onChunk(frame.chunk);
  }

  private deliver(messages: Message[]): void {
    for (const message of messages) {
      if (message.from !== this.peerId || message.to !== this.context.selfId) {
        this.violation(`message from ${message.from} to ${message.to} on the connection of node ${this.peerId}`);
        return;
      }
    }
    if (this.delivering === undefined) {
      this.context.onMessages(this.peerId, messages);
      return;
    }
    this.deliverAfter(
      this.delivering.then(() => {
        if (!this.closed) this.context.onMessages(this.peerId, messages);
      }),
    );
  }

  // Makes `delivery` the one later messages wait for, until it is done.
  private deliverAfter(delivery: Promise<void>): void {
    this.delivering = delivery;
    void delivery.then(() => {
      if (this.delivering === delivery) this.delivering = undefined;
    });
  }

  private onChunk(chunk: SnapshotChunk): void {
    if (chunk.offset === 0) {
      if (chunk.message?.type !== "snapshot" || chunk.message.snapshot === undefined) { this.violation("first snapshot chunk without its message"); return; }
      if (chunk.totalBytes > this.context.snapshotBytesMax) {
        this.violation(`snapshot of ${chunk.totalBytes} bytes exceeds snapshotBytesMax ${this.context.snapshotBytesMax}`);
        return;
      }
      // A new stream replaces an unfinished one: the sender gave up on it.
      if (this.stream !== undefined) this.abandon(this.stream, "replaced by a newer stream");
      const meta = chunk.message.snapshot.meta;
      const sink = this.context.receiveSnapshot(meta, chunk.totalBytes, chunk.checksum);
      this.stream = {
        streamId: chunk.streamId,
        message: chunk.message,
        totalBytes: chunk.totalBytes,
        receivedBytes: 0,
        unwrittenBytes: 0,
        sink,
        written: sink.then(() => undefined),
        failed: false,
      };
      this.context.log("snapshot-receive-start", { peer: this.peerId, index: meta.index, bytes: chunk.totalBytes });
    }
    const stream = this.stream;
    if (stream === undefined || stream.streamId !== chunk.streamId || stream.receivedBytes !== chunk.offset || stream.totalBytes !== chunk.totalBytes) {
      this.violation(`snapshot chunk out of sequence (stream ${chunk.streamId}, offset ${chunk.offset})`);
      return;
    }
    stream.receivedBytes += chunk.bytes.length;
    if (stream.failed) return;
    const bytes = chunk.bytes;
    stream.unwrittenBytes += bytes.length;
    if (stream.unwrittenBytes > SNAPSHOT_UNWRITTEN_BYTES_MAX) this.connection.socket.pause();
    stream.written = stream.written.then(async () => {
      if (stream.failed) return;
      await (await stream.sink).write(bytes);
      stream.unwrittenBytes -= bytes.length;
      if (stream.unwrittenBytes <= SNAPSHOT_UNWRITTEN_BYTES_MAX / 2 && !this.closed) this.connection.socket.resume();
    });
    stream.written.catch((error: unknown) => this.failStream(stream, error));
    if (stream.receivedBytes < stream.totalBytes) return;
    this.stream = undefined;
    const delivered = stream.written.then(async () => {
      const sink = await stream.sink;
      if (stream.failed) return;
      if (this.closed) {
        this.context.log("snapshot-receive-abandoned", { peer: this.peerId, index: stream.message.snapshot?.meta.index, receivedBytes: stream.receivedBytes, reason: "connection closed" });
        await sink.abort();
        return;
      }
      const snapshot = await sink.finish();
      this.context.log("snapshot-receive-end", { peer: this.peerId, index: snapshot.meta.index, bytes: stream.totalBytes });
      if (!this.closed) this.context.onMessages(this.peerId, [{ ...stream.message, snapshot }]);
    });
    this.deliverAfter(delivered.catch((error: unknown) => this.failStream(stream, error)));
  }

  // A write or the finish failed (a full disk, a checksum mismatch): the snapshot is dropped and
  // the connection kept. The sender learns nothing; Raft sends the snapshot again when it finds
  // this follower still behind.
  private failStream(stream: IncomingStream, error: unknown): void {
    if (stream.failed) return;
    stream.failed = true;
    this.context.log("snapshot-receive-failed", { peer: this.peerId, index: stream.message.snapshot?.meta.index, error: (error as Error).message });
    void stream.sink.then((sink) => sink.abort()).catch(() => undefined);
    if (!this.closed) this.connection.socket.resume();
  }

  // An unfinished stream given up: its sink is aborted once the writes in flight are done.
  private abandon(stream: IncomingStream, reason: string): void {
    if (this.stream === stream) this.stream = undefined;
    if (stream.failed) return;
    stream.failed = true;
    this.context.log("snapshot-receive-abandoned", { peer: this.peerId, index: stream.message.snapshot?.meta.index, receivedBytes: stream.receivedBytes, reason });
    void stream.written
      .catch(() => undefined)
      .then(() => stream.sink)
      .then((sink) => sink.abort())
      .catch(() => undefined);
  }

  private refuse(reason: string): void {
    this.context.log("handshake-refused", { peer: this.peerId, side: "acceptor", reason });
    this.connection.endWith({ k: "refuse", reason }, reason);
  }

  private violation(reason: string): void {
    this.context.log("peer-protocol-violation", { peer: this.peerId, reason });
    this.connection.destroy(reason);
  }

  private onClose(reason: string): void {
    this.closed = true;
    clearTimeout(this.handshakeTimer);
    if (this.stream !== undefined) this.abandon(this.stream, `connection closed: ${reason}`);
    if (reason.startsWith("framing lost") || reason.startsWith("invalid frame")) {
      this.context.log("peer-protocol-violation", { peer: this.peerId, reason });
    } else if (this.state === "ready") this.context.log("peer-inbound-closed", { peer: this.peerId, reason });
    this.context.onClosed(this);
  }
}
