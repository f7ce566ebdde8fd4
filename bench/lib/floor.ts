// The physical floor on this machine, measured in the same run as the systems: a 4 KiB append
// plus fdatasync (what a durable acknowledgement costs at least, on the disk the clusters use)
// and a 256-byte TCP round trip on loopback (what any request costs at least).
import { mkdtempSync, rmSync } from "node:fs";
import { open } from "node:fs/promises";
import { createServer, type Socket, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type LatencySummary, Samples } from "./samples.js";

const FSYNC_ROUNDS = 300;
const FSYNC_APPEND_BYTES = 4096;
const ROUND_TRIP_ROUNDS = 2000;
const ROUND_TRIP_BYTES = 256;

export interface Floor {
  fdatasyncAppend4KiB: LatencySummary;
  loopbackRoundTrip256Bytes: LatencySummary;
}

export async function measureFloor(): Promise<Floor> {
  return { fdatasyncAppend4KiB: await measureFsync(), loopbackRoundTrip256Bytes: await measureRoundTrip() };
}

async function measureFsync(): Promise<LatencySummary> {
  const dir = mkdtempSync(join(tmpdir(), "ferry-bench-floor-"));
  const file = await open(join(dir, "append"), "a");
  const block = new Uint8Array(FSYNC_APPEND_BYTES).fill(120);
  const samples = new Samples();
  try {
    for (let round = 0; round < FSYNC_ROUNDS; round++) {
      const startMs = performance.now();
      await file.write(block);
      await file.datasync();
      samples.add(performance.now() - startMs);
    }
  } finally {
    await file.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return samples.summary();
}

async function measureRoundTrip(): Promise<LatencySummary> {
  const server = createServer((socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const socket: Socket = tcpConnect(port, "127.0.0.1");
  socket.setNoDelay(true);
  await new Promise<void>((resolve) => socket.once("connect", resolve));
  const payload = new Uint8Array(ROUND_TRIP_BYTES).fill(121);
  const samples = new Samples();
  try {
    for (let round = 0; round < ROUND_TRIP_ROUNDS; round++) {
      const startMs = performance.now();
      await new Promise<void>((resolve) => {
        let received = 0;
        const onData = (chunk: Buffer) => {
          received += chunk.length;
          if (received < ROUND_TRIP_BYTES) return;
          socket.off("data", onData);
          resolve();
        };
        socket.on("data", onData);
        socket.write(payload);
      });
      samples.add(performance.now() - startMs);
    }
  } finally {
    socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  return samples.summary();
}
