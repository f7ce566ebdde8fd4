// Flow control against a scripted socket, where the test decides when written bytes "reach the
// kernel": work waits while unsent replies exceed writeBufferBytesMax, and starts again when they
// are sent, even below the socket's own high-water mark (where Node emits no 'drain').
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { Socket } from "node:net";
import { test } from "node:test";
import { emptyStats } from "../../src/server/connection.js";
import { resolveLimits } from "../../src/server/limits.js";
import { TextConnection } from "../../src/server/text-connection.js";
import { FakeService } from "./fake-service.js";
import { waitUntil, waitUntilStable } from "./helpers.js";

class ScriptedSocket extends EventEmitter {
  remoteAddress = "127.0.0.1";
  remotePort = 1;
  paused = false;
  writableEnded = false;
  written: string[] = [];
  private unsent: Array<{ bytes: number; done: () => void }> = [];

  get writableLength(): number {
    return this.unsent.reduce((sum, write) => sum + write.bytes, 0);
  }
  write(bytes: Buffer, done: () => void): boolean {
    this.written.push(bytes.toString());
    this.unsent.push({ bytes: bytes.length, done });
    return true; // always below the high-water mark: no 'drain' will come
  }
  // The kernel takes everything written so far.
  send(): void {
    const unsent = this.unsent.splice(0);
    for (const write of unsent) write.done();
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  end(): void {
    this.writableEnded = true;
  }
  destroySoon(): void {}
  destroy(): void {}
}

test("replies over writeBufferBytesMax hold queued work until they are sent", { timeout: 10_000 }, async () => {
  const socket = new ScriptedSocket();
  const service = new FakeService();
  const limits = resolveLimits({ writeBufferBytesMax: 10 });
  const connection = new TextConnection(socket as unknown as Socket, 1, { service, limits, log: () => {}, stats: emptyStats() });
  connection.feed(Buffer.from("STATUS\n".repeat(5)));
  await waitUntil(() => socket.written.length === 1);
  assert.equal(await waitUntilStable(() => service.calls.length), 1);
  assert.equal(socket.paused, true);
  for (let sent = 1; sent < 5; sent++) {
    socket.send();
    await waitUntil(() => socket.written.length === sent + 1);
  }
  socket.send();
  assert.equal(service.calls.length, 5);
  await waitUntil(() => !socket.paused);
});
