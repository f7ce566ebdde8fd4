// The inbound half of a peer pair: a connection another node dialed to us. It authenticates the
// dialer (refusing a foreign cluster id or a wrong secret, with the reason logged on both sides),
// then receives data frames: Raft message batches, snapshot chunks (reassembled here, delivered
// whole) and clock stamps (turned into samples, and remembered so our next frame to that peer
// echoes them).
import type { Socket } from "node:net";
import type { Message, NodeId } from "../raft/types.js";
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
  frameBytesMax: number;
  snapshotBytesMax: number;
  handshakeTimeoutMs: number;
  peerIdleTimeoutMs: number;
  now(): number;
  log(event: string, fields: Record<string, unknown>): void;
  onAuthenticated(peer: NodeId, connection: InboundConnection): void;
  onClosed(connection: InboundConnection): void;
  onSilent(peer: NodeId): void; // an authenticated peer sent nothing for peerIdleTimeoutMs
  onMessages(from: NodeId, messages: Message[]): void;
  onClockSample(from: NodeId, sample: ClockSample): void;
  setEcho(peer: NodeId, echo: [number, number]): void;
}

interface Reassembly {
  streamId: number;
  message: Message;
  data: Uint8Array;
  receivedBytes: number;
}

export class InboundConnection {
  private readonly connection: FramedSocket;
  private state: "await-hello" | "await-proof" | "ready" = "await-hello";
  private transcript: HandshakeTranscript | undefined;
  private readonly handshakeTimer: NodeJS.Timeout;
  private reassembly: Reassembly | undefined;
  peerId: NodeId = 0;

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
    this.peerId = hello.nodeId;
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
    this.context.onMessages(this.peerId, messages);
  }

  private onChunk(chunk: SnapshotChunk): void {
    if (chunk.offset === 0) {
      if (chunk.message?.type !== "snapshot" || chunk.message.snapshot === undefined) { this.violation("first snapshot chunk without its message"); return; }
      if (chunk.totalBytes > this.context.snapshotBytesMax) {
        this.violation(`snapshot of ${chunk.totalBytes} bytes exceeds snapshotBytesMax ${this.context.snapshotBytesMax}`);
        return;
      }
      // A new stream replaces an unfinished one: the sender gave up on it.
      this.reassembly = { streamId: chunk.streamId, message: chunk.message, data: new Uint8Array(chunk.totalBytes), receivedBytes: 0 };
    }
    const reassembly = this.reassembly;
    if (reassembly === undefined || reassembly.streamId !== chunk.streamId || reassembly.receivedBytes !== chunk.offset || reassembly.data.length !== chunk.totalBytes) {
      this.violation(`snapshot chunk out of sequence (stream ${chunk.streamId}, offset ${chunk.offset})`);
      return;
    }
    reassembly.data.set(chunk.bytes, chunk.offset);
    reassembly.receivedBytes += chunk.bytes.length;
    if (reassembly.receivedBytes < reassembly.data.length) return;
    this.reassembly = undefined;
    const message = reassembly.message;
    this.deliver([{ ...message, snapshot: { meta: message.snapshot!.meta, data: reassembly.data } }]);
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
    clearTimeout(this.handshakeTimer);
    if (reason.startsWith("framing lost") || reason.startsWith("invalid frame")) {
      this.context.log("peer-protocol-violation", { peer: this.peerId, reason });
    } else if (this.state === "ready") this.context.log("peer-inbound-closed", { peer: this.peerId, reason });
    this.context.onClosed(this);
  }
}
