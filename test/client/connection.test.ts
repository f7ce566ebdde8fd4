// One connection against a hostile or broken server: replies it cannot use never crash the
// client, and lost framing ends in UNAVAILABLE, not a hang.
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import { Connection } from "../../src/client/connection.js";
import { Cancel } from "../../src/client/scope.js";
import { decodePayload, encodeFrame, FrameDecoder } from "../../src/protocol/binary.js";
import { FerryError } from "../../src/protocol/errors.js";

type Answer = (request: { rid: number; op: string }, socket: net.Socket) => void;

async function rawServer(answer: Answer): Promise<{ address: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    const decoder = new FrameDecoder();
    let preamble = 5;
    socket.on("data", (chunk: Buffer) => {
      const skip = Math.min(preamble, chunk.length);
      preamble -= skip;
      for (const payload of decoder.push(chunk.subarray(skip))) answer(decodePayload(payload) as { rid: number; op: string }, socket);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const options = { connectTimeoutMs: 1000, frameBytesMax: 1024, idleTimeoutMs: 60_000 };

test("unusable replies are ignored; error replies become FerryError (unknown codes: INTERNAL)", async () => {
  const server = await rawServer((request, socket) => {
    socket.write(encodeFrame("not a map"));
    socket.write(encodeFrame({ rid: "seven", ok: true }));
    socket.write(encodeFrame({ rid: 999_999, ok: true })); // nobody asked
    if (request.op === "a") socket.write(encodeFrame({ rid: request.rid, ok: false, code: "NOPE", message: "strange" }));
    if (request.op === "b") socket.write(encodeFrame({ rid: request.rid, ok: false, code: "NOT_LEADER", message: "ask 2", leaderHint: "127.0.0.1:2" }));
    if (request.op === "c") socket.write(encodeFrame({ rid: request.rid, ok: true, value: 3 }));
  });
  const connection = await Connection.open(server.address, options);
  const cancel = new Cancel();
  const strange = await connection.request({ op: "a" }, cancel).catch((error: unknown) => error);
  assert.ok(strange instanceof FerryError);
  assert.equal(strange.code, "INTERNAL");
  const redirect = await connection.request({ op: "b" }, cancel).catch((error: unknown) => error);
  assert.equal((redirect as FerryError).leaderHint, "127.0.0.1:2");
  assert.deepEqual(await connection.request({ op: "c" }, cancel), { rid: 3, ok: true, value: 3 });
  connection.close();
  await server.close();
});

test("a reply frame over frameBytesMax or a payload that is not valid msgpack closes the connection: UNAVAILABLE", async () => {
  for (const poison of [encodeFrame({ rid: 1, ok: true, blob: new Uint8Array(4096) }), Buffer.from([0, 0, 0, 2, 0x92, 0x01])]) {
    const server = await rawServer((_request, socket) => socket.write(poison));
    const connection = await Connection.open(server.address, options);
    const error = await connection.request({ op: "x" }, new Cancel()).catch((failure: unknown) => failure);
    assert.ok(error instanceof FerryError);
    assert.equal(error.code, "UNAVAILABLE");
    assert.equal(connection.isOpen, false);
    await server.close();
  }
});

test("the server's rid-0 notice explains a closed connection", async () => {
  const server = await rawServer((_request, socket) => {
    socket.end(encodeFrame({ rid: 0, ok: false, code: "SHUTTING_DOWN", message: "the node is stopping" }));
  });
  const connection = await Connection.open(server.address, options);
  const error = await connection.request({ op: "x" }, new Cancel()).catch((failure: unknown) => failure);
  assert.match((error as Error).message, /server said: the node is stopping/);
  await server.close();
});

test("a cancelled request frees its rid and ignores the late answer", async () => {
  const held: Array<() => void> = [];
  const server = await rawServer((request, socket) => held.push(() => socket.write(encodeFrame({ rid: request.rid, ok: true, op: request.op }))));
  const connection = await Connection.open(server.address, options);
  const cancel = new Cancel();
  const first = connection.request({ op: "first" }, cancel).catch((error: unknown) => error);
  cancel.abort(new Error("stop"));
  assert.equal(((await first) as Error).message, "stop");
  assert.equal(connection.inFlight, 0);
  const second = connection.request({ op: "second" }, new Cancel());
  while (held.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
  for (const release of held) release();
  assert.deepEqual(await second, { rid: 2, ok: true, op: "second" }); // replies keep their rid
  connection.close();
  await server.close();
});
