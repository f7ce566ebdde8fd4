// A TCP socket seen as a stream of peer frames. Reading enforces the frame size limit before
// buffering (a hostile length cannot make us allocate) and validates each frame; any framing or
// decoding error closes this connection only, with the reason handed to onClose.
import type { Socket } from "node:net";
import { FrameDecoder } from "../protocol/binary.js";
import { decodePeerFrame, encodePeerFrame, type PeerFrame } from "./frames.js";

export interface FramedSocketHandlers {
  // receivedAtMs: the local clock when the bytes holding this frame arrived (t2 / t4 of a sample).
  onFrame(frame: PeerFrame, receivedAtMs: number): void;
  onClose(reason: string): void;
}

export class FramedSocket {
  private readonly decoder: FrameDecoder;
  private closeReason = "closed by peer";
  private closed = false;

  constructor(
    readonly socket: Socket,
    private readonly frameBytesMax: number,
    private readonly now: () => number,
    private readonly handlers: FramedSocketHandlers,
  ) {
    this.decoder = new FrameDecoder(frameBytesMax);
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
    socket.on("error", (error: Error) => {
      if (!this.closed) this.closeReason = error.message;
    });
    socket.on("close", () => {
      this.closed = true;
      this.handlers.onClose(this.closeReason);
    });
  }

  get isClosed(): boolean {
    return this.closed || this.socket.destroyed;
  }

  // Bytes accepted by write() but not yet handed to the kernel: the backpressure signal.
  get bufferedBytes(): number {
    return this.socket.writableLength;
  }

  // Returns the encoded size; throws RangeError when the frame exceeds the limit (nothing sent).
  write(frame: PeerFrame, onWritten?: (error?: Error | null) => void): number {
    const bytes = encodePeerFrame(frame);
    if (bytes.length - 4 > this.frameBytesMax) {
      throw new RangeError(`frame of ${bytes.length - 4} bytes exceeds frameBytesMax ${this.frameBytesMax}`);
    }
    if (!this.isClosed) this.socket.write(bytes, onWritten);
    return bytes.length;
  }

  destroy(reason: string): void {
    if (this.closed) return;
    this.closeReason = reason;
    this.socket.destroy();
  }

  // Sends a last frame (a refusal) and closes once it is flushed.
  endWith(frame: PeerFrame, reason: string): void {
    if (this.closed) return;
    this.closeReason = reason;
    this.socket.end(encodePeerFrame(frame));
    // A peer that never reads must not keep the socket half-open forever.
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private receive(chunk: Buffer): void {
    if (this.closed) return;
    const receivedAtMs = this.now();
    let payloads: Buffer[];
    try {
      payloads = this.decoder.push(chunk);
    } catch (error) {
      this.destroy(`framing lost: ${(error as Error).message}`);
      return;
    }
    for (const payload of payloads) {
      if (this.isClosed) return;
      let frame: PeerFrame;
      try {
        frame = decodePeerFrame(payload);
      } catch (error) {
        this.destroy(`invalid frame: ${(error as Error).message}`);
        return;
      }
      this.handlers.onFrame(frame, receivedAtMs);
    }
  }
}
