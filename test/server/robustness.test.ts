// Misbehaving clients: fuzzed bytes and mutated frames over real sockets, clients that stall or
// do not read, and an orderly close(). The server must not crash or hang, and a well-behaved
// client on another connection must not notice.
import assert from "node:assert/strict";
import { connect } from "node:net";
import { test } from "node:test";
import fc from "fast-check";
import { BINARY_PREAMBLE, encodeFrame } from "../../src/protocol/binary.js";
import { BinaryClient, holdRequests, LineClient, startServer, waitUntil } from "./helpers.js";

// Sends bytes, then EOF; resolves when the server has closed the connection.
async function sendAndHangUp(port: number, bytes: Uint8Array): Promise<void> {
  const socket = connect({ port, host: "127.0.0.1" });
  socket.on("error", () => {});
  socket.resume(); // read and drop whatever the server answers
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  socket.end(bytes);
  await closed;
}

// A hang (a connection the server never closes) fails the test instead of blocking the run.
const HANG_GUARD = { timeout: 30_000 };

async function roundTrip(client: LineClient, mailbox: string, body: string): Promise<void> {
  assert.match(await client.request(`SEND ${mailbox} ${body}`), /^OK \S+$/);
  client.write(`RECEIVE ${mailbox} 1\n`);
  const lines = await client.untilEnd();
  assert.equal(lines.length, 2);
  assert.ok(lines[0]!.endsWith(` ${body}`), lines[0]);
}

const textish = fc.oneof(
  fc.constantFrom(...["SEND bob x\n", "RECEIVE bob 3 10\n", "ACK bob m1\n", "LIST bob\n", "HELLO\n", "\r\n", "\n", "\\", " ", "QUIT\n", "STATUS\n"].map((s) => Buffer.from(s))),
  fc.uint8Array({ minLength: 1, maxLength: 40 }),
);

test("fuzz: random and mutated text over real sockets; the server answers and closes, others unaffected", HANG_GUARD, async () => {
  const { server, port } = await startServer({ limits: { lineBytesMax: 64, receiveWaitMsMax: 20 } });
  const good = await LineClient.connect(port);
  let round = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(textish, { maxLength: 20 }), async (pieces) => {
      await sendAndHangUp(port, Buffer.concat(pieces));
      await roundTrip(good, "steady", `round-${round++}`);
    }),
    { numRuns: 60 },
  );
  assert.ok(server.stats.inputBufferedBytesPeak <= 64 + 1, `held ${server.stats.inputBufferedBytesPeak} bytes of a line`);
  good.close();
  await server.close();
});

test("fuzz: random and mutated binary frames over real sockets; the server closes or answers, others unaffected", HANG_GUARD, async () => {
  const { server, port } = await startServer({ limits: { frameBytesMax: 512, receiveWaitMsMax: 20 } });
  const good = await LineClient.connect(port);
  const frame = fc
    .record({
      rid: fc.oneof(fc.nat(10), fc.constant(-1), fc.string({ maxLength: 3 })),
      op: fc.constantFrom("send", "receive", "ack", "nack", "list", "status", "hello", "cluster", "x"),
      mailbox: fc.constantFrom("bob", "", "b b"),
      recipients: fc.constantFrom(["bob"], [], "bob", [1]),
      body: fc.oneof(fc.uint8Array({ maxLength: 20 }), fc.constant(5)),
      max: fc.oneof(fc.nat(5), fc.constant(-3), fc.constant(1.5)),
      ids: fc.constantFrom(["m1"], [], null),
    })
    .map((value) => encodeFrame(value));
  let round = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(frame, { maxLength: 6 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
      async (frames, mutations) => {
        const stream = Buffer.concat([BINARY_PREAMBLE, ...frames]);
        for (const [position, value] of mutations) stream[position % stream.length] = value;
        await sendAndHangUp(port, stream);
        await roundTrip(good, "steady", `round-${round++}`);
      },
    ),
    { numRuns: 60 },
  );
  assert.ok(server.stats.inputBufferedBytesPeak < 512 + 4, `held ${server.stats.inputBufferedBytesPeak} bytes of a frame`);
  good.close();
  await server.close();
});

test("a wrong preamble or undecodable msgpack closes the connection", async () => {
  const { server, port } = await startServer();
  const wrong = await BinaryClient.connect(port, false);
  wrong.writeRaw(Uint8Array.from([0x00, 0x46, 0x52, 0x59, 0x09]));
  await wrong.closed;
  const garbage = await BinaryClient.connect(port);
  garbage.writeRaw(Uint8Array.from([0, 0, 0, 2, 0x92, 0x01])); // an array of two with one element
  await garbage.closed;
  assert.equal(garbage.received.at(-1)!.code, "INVALID");
  assert.equal(server.stats.framingErrors, 2);
  await server.close();
});

test("stalled, flooding and non-reading clients do not disturb a well-behaved one", async () => {
  const { server, port } = await startServer({ limits: { lineBytesMax: 4096, writeBufferBytesMax: 4096 } });
  const stalled = await LineClient.connect(port);
  stalled.write("SEND bob half a line that never ends"); // no LF, ever
  const stalledBinary = await BinaryClient.connect(port);
  stalledBinary.writeRaw(Uint8Array.from([0, 0, 1, 0, 0x81])); // a frame cut short
  const flooding = await LineClient.connect(port);
  flooding.write(Buffer.alloc(100_000, 0x7a)); // one long line, discarded as it arrives
  const deaf = await LineClient.connect(port);
  deaf.socket.pause();
  deaf.write("HELP\n".repeat(2000));
  const good = await LineClient.connect(port);
  for (let index = 0; index < 20; index++) await roundTrip(good, "calm", `message-${index}`);
  assert.ok(server.stats.inputBufferedBytesPeak <= 4096 + 1, "the flood was not buffered");
  flooding.write("\nPING\n");
  assert.match(await flooding.line(), /^ERR TOO_LARGE/);
  assert.equal(await flooding.line(), "OK");
  for (const client of [stalled, flooding, deaf, good]) client.close();
  stalledBinary.close();
  await server.close();
});

test("replies ready in the same turn leave in one socket write", async () => {
  const { server, service, port } = await startServer();
  const binary = await BinaryClient.connect(port);
  const hold = holdRequests(service, () => true);
  const replies = Array.from({ length: 50 }, (_, index) => binary.request({ op: "send", recipients: ["bob"], body: `b${index}` }));
  await waitUntil(() => hold.count === 50);
  const writes = server.stats.socketWrites;
  hold.release();
  await Promise.all(replies);
  assert.equal(server.stats.socketWrites - writes, 1);
  const text = await LineClient.connect(port);
  text.write("SEND bob x\n".repeat(30));
  await waitUntil(() => hold.count === 30);
  const textWrites = server.stats.socketWrites;
  hold.stop();
  for (let index = 0; index < 30; index++) assert.match(await text.line(), /^OK /);
  assert.equal(server.stats.socketWrites - textWrites, 1);
  binary.close();
  text.close();
  await server.close();
});

test("close(): stops accepting, answers in-flight requests, refuses queued ones, then closes", async () => {
  const { server, service, port } = await startServer({ limits: { requestsInFlightMax: 2 } });
  const hold = holdRequests(service, () => true);
  const text = await LineClient.connect(port);
  text.write("SEND bob one\nSEND bob two\nSEND bob three\n");
  const binary = await BinaryClient.connect(port);
  const binaryReply = binary.request({ op: "status" });
  await waitUntil(() => hold.count === 3);
  const closing = server.close();
  hold.stop();
  assert.match(await text.line(), /^OK /);
  assert.match(await text.line(), /^OK /);
  assert.equal(await text.line(), "ERR SHUTTING_DOWN the node is stopping");
  assert.equal((await binaryReply).ok, true);
  await Promise.all([text.closed, binary.closed, closing]);
  await assert.rejects(LineClient.connect(port), /ECONNREFUSED/);
});

test("close(): after the grace period, running requests are aborted and connections dropped", async () => {
  const { server, service, port } = await startServer({ limits: { closeGraceMs: 50 } });
  let aborted = false;
  service.gate = (request) =>
    request.op === "status" ? new Promise<void>(() => {}) : undefined; // never answers
  const original = service.execute.bind(service);
  service.execute = (request, session, signal) => {
    signal.addEventListener("abort", () => (aborted = true));
    return original(request, session, signal);
  };
  const client = await LineClient.connect(port);
  client.write("STATUS\n");
  await waitUntil(() => service.calls.length === 1);
  await server.close();
  await client.closed;
  assert.equal(aborted, true);
});

test("start() rejects when the port is taken", async () => {
  const { server, port } = await startServer();
  await assert.rejects(startServer({ port }), /EADDRINUSE/);
  await server.close();
});
