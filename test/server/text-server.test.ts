// The text protocol over a real socket, as a person with nc would type it.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { FerryServer } from "../../src/server/server.js";
import type { FakeService } from "./fake-service.js";
import { holdRequests, LineClient, startServer, waitUntil, waitUntilStable } from "./helpers.js";

let server: FerryServer;
let service: FakeService;
let port: number;

before(async () => {
  ({ server, service, port } = await startServer());
});
after(async () => {
  await server.close();
});

test("SEND, LIST, RECEIVE, ACK: the core round trip", async () => {
  const client = await LineClient.connect(port);
  const sent = await client.request("SEND bob hello world");
  assert.match(sent, /^OK \S+$/);
  const id = sent.slice(3);
  client.write("LIST bob\n");
  const listed = await client.untilEnd();
  assert.equal(listed.length, 2);
  assert.match(listed[0]!, new RegExp(`^ITEM ${id} anonymous \\d+ ready 0 11$`));
  client.write("RECEIVE bob 10\n");
  const received = await client.untilEnd();
  assert.equal(received.length, 2);
  assert.match(received[0]!, new RegExp(`^MSG ${id} anonymous \\d+ 1 hello world$`));
  assert.equal(received[1], "END");
  assert.equal(await client.request(`ACK bob ${id}`), "OK 1");
  assert.equal(await client.request(`ACK bob ${id}`), "OK 0");
  client.write("RECEIVE bob\n");
  assert.deepEqual(await client.untilEnd(), ["END"]);
  client.close();
});

test("HELLO sets the sender; NACK makes a message visible again", async () => {
  const client = await LineClient.connect(port);
  assert.equal(await client.request("HELLO alice"), "OK");
  const id = (await client.request("SEND carol hi")).slice(3);
  client.write("RECEIVE carol 1 0 60000\n");
  const [message] = await client.untilEnd();
  assert.match(message!, new RegExp(`^MSG ${id} alice \\d+ 1 hi$`));
  assert.equal(await client.request(`NACK carol ${id}`), "OK 1");
  client.write("RECEIVE carol\n");
  const [again] = await client.untilEnd();
  assert.match(again!, new RegExp(`^MSG ${id} alice \\d+ 2 hi$`));
  assert.equal(service.calls.at(-1)!.session.identity, "alice");
  client.close();
});

test("lines split at every byte, with CRLF, are understood", async () => {
  const client = await LineClient.connect(port);
  const text = "HELLO dave\r\nSEND erin split\\nacross\\\\chunks\r\nRECEIVE erin 5\r\n";
  for (const byte of Buffer.from(text)) {
    client.write(Uint8Array.of(byte));
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.equal(await client.line(), "OK");
  const id = (await client.line()).slice(3);
  const received = await client.untilEnd();
  assert.match(received[0]!, new RegExp(`^MSG ${id} dave \\d+ 1 split\\\\nacross\\\\\\\\chunks$`));
  const stored = service.calls.find((call) => call.request.op === "send" && call.request.recipients[0] === "erin")!.request;
  assert.equal(stored.op === "send" && Buffer.from(stored.body).toString(), "split\nacross\\chunks");
  client.close();
});

test("pipelined lines are answered in order", async () => {
  const client = await LineClient.connect(port);
  let script = "";
  for (let index = 0; index < 50; index++) script += `SEND frank message-${index}\nPING\n`;
  script += "RECEIVE frank 100\n";
  client.write(script);
  for (let index = 0; index < 50; index++) {
    assert.match(await client.line(), /^OK \S+$/);
    assert.equal(await client.line(), "OK");
  }
  const received = await client.untilEnd();
  assert.equal(received.length, 51);
  for (const [index, line] of received.slice(0, 50).entries()) assert.ok(line.endsWith(` message-${index}`), line);
  client.close();
});

test("errors keep the connection usable", async () => {
  const client = await LineClient.connect(port);
  const calls = service.calls.length;
  assert.match(await client.request("FROB bob"), /^ERR INVALID unknown command 'FROB'/);
  assert.match(await client.request("SEND"), /^ERR INVALID usage: SEND/);
  assert.match(await client.request("SEND bob"), /^ERR INVALID usage: SEND/);
  assert.match(await client.request("SEND b!b hi"), /^ERR INVALID recipient: name may contain only/);
  assert.match(await client.request(`SEND ${"x".repeat(201)} hi`), /^ERR INVALID recipient: name is 201 characters/);
  assert.match(await client.request("RECEIVE bob 0"), /^ERR INVALID max must be between 1 and 1000/);
  assert.match(await client.request("RECEIVE bob lots"), /^ERR INVALID max must be a non-negative integer/);
  assert.match(await client.request("ACK bob"), /^ERR INVALID usage: ACK/);
  assert.match(await client.request("HELLO"), /^ERR INVALID usage: HELLO/);
  assert.match(await client.request("STATUS now"), /^ERR INVALID STATUS takes no arguments/);
  assert.match(await client.request(""), /^ERR INVALID empty line/);
  assert.equal(service.calls.length, calls, "bad input must not reach the service");
  assert.equal(await client.request("PING"), "OK");
  client.close();
});

test("commands are case-insensitive; STATUS and HELP end with END", async () => {
  const client = await LineClient.connect(port);
  client.write("status\n");
  const status = await client.untilEnd();
  assert.match(status[0]!, /^NODE 1 address=\S+ role=leader term=1 leader=1 commit=\d+ applied=\d+ healthy=true self$/);
  assert.equal(status.at(-1), "END");
  client.write("Help\n");
  const help = await client.untilEnd();
  assert.ok(help.some((line) => line.startsWith("SEND ")));
  assert.ok(help.includes("(fake service for tests)"));
  assert.equal(help.at(-1), "END");
  client.close();
});

test("QUIT answers OK and closes; later lines are ignored", async () => {
  const client = await LineClient.connect(port);
  client.write("PING\nQUIT\nSEND ignored never\n");
  assert.equal(await client.line(), "OK");
  assert.equal(await client.line(), "OK");
  await client.closed;
  assert.ok(!service.calls.some((call) => call.request.op === "send" && call.request.recipients[0] === "ignored"));
});

test("EOF from the client: every request is still answered", async () => {
  const client = await LineClient.connect(port);
  client.socket.end("SEND gina a\nSEND gina b\nLIST gina\n");
  assert.match(await client.line(), /^OK /);
  assert.match(await client.line(), /^OK /);
  const listed = await client.untilEnd();
  assert.equal(listed.length, 3);
  await client.closed;
});

test("extensions: SENDID dedupes, fan-out, LIST paging with NEXT, EXTEND, PURGE, CLUSTER", async () => {
  const client = await LineClient.connect(port);
  assert.equal(await client.request("SENDID hank order-1 first"), "OK order-1");
  assert.equal(await client.request("SENDID hank order-1 retry"), "OK order-1");
  assert.match(await client.request("SEND hank,ivan both"), /^OK \S+$/);
  client.write("LIST hank 1\n");
  const page = await client.untilEnd();
  assert.equal(page.length, 3);
  assert.match(page[0]!, /^ITEM order-1 anonymous \d+ ready 0 5$/);
  assert.equal(page[1], "NEXT 1");
  client.write("LIST hank 1 1\n");
  const last = await client.untilEnd();
  assert.equal(last.length, 2);
  assert.match(last[0]!, / 4$/);
  client.write("RECEIVE hank 1\n");
  assert.match((await client.untilEnd())[0]!, /^MSG order-1 anonymous \d+ 1 first$/);
  assert.equal(await client.request("EXTEND hank 60000 order-1"), "OK 1");
  assert.equal(await client.request("PURGE hank"), "OK 2");
  client.write("RECEIVE ivan\n");
  assert.match((await client.untilEnd())[0]!, /^MSG \S+ anonymous \d+ 1 both$/);
  assert.equal(await client.request("CLUSTER ADD 4 127.0.0.1:9000 127.0.0.1:9001"), "OK add 4 accepted");
  assert.equal(await client.request("cluster transfer"), "OK transfer 0 accepted");
  assert.match(await client.request("CLUSTER FOO"), /^ERR INVALID usage: CLUSTER/);
  client.close();
});

test("a long poll is answered when a message arrives from another connection", async () => {
  const waiter = await LineClient.connect(port);
  const sender = await LineClient.connect(port);
  waiter.write("RECEIVE jack 1 30000\n");
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.match(await sender.request("SEND jack wake up"), /^OK /);
  assert.match((await waiter.untilEnd())[0]!, /^MSG \S+ anonymous \d+ 1 wake up$/);
  waiter.close();
  sender.close();
});

test("pipelined SENDs run together; a later command waits for them and sees them", async () => {
  const hold = holdRequests(service, (request) => request.op === "send");
  const client = await LineClient.connect(port);
  const before = service.calls.length;
  client.write("HELLO pat\nSEND kate one\nHELLO quinn\nSEND kate two\nLIST kate\n");
  await waitUntil(() => hold.count === 2);
  assert.equal(await waitUntilStable(() => service.calls.length), before + 2, "LIST must wait for the SENDs");
  hold.stop();
  assert.deepEqual([await client.line(), await client.line(), await client.line(), await client.line()].map((line) => line.split(" ")[0]), [
    "OK",
    "OK",
    "OK",
    "OK",
  ]);
  const listed = await client.untilEnd();
  assert.equal(listed.length, 3);
  assert.deepEqual(
    listed.slice(0, 2).map((line) => line.split(" ")[2]),
    ["pat", "quinn"],
    "each SEND keeps the identity in effect when it was read",
  );
  client.close();
});

test("EOF while lines still wait their turn: they run, are answered, then the connection closes", async () => {
  const hold = holdRequests(service, (request) => request.op === "send");
  const client = await LineClient.connect(port);
  client.socket.end("SEND lena x\nSEND lena y\nLIST lena\nPING\n");
  await waitUntil(() => hold.count === 2);
  await waitUntilStable(() => service.calls.length);
  hold.stop();
  assert.match(await client.line(), /^OK /);
  assert.match(await client.line(), /^OK /);
  const listed = await client.untilEnd();
  assert.equal(listed.length, 3);
  assert.equal(await client.line(), "OK");
  await client.closed;
});

test("a malformed reply from the service becomes ERR INTERNAL; the connection goes on", async () => {
  const original = service.execute;
  service.execute = async () => ({ ok: true }) as never;
  try {
    const client = await LineClient.connect(port);
    assert.equal(await client.request("RECEIVE bob"), "ERR INTERNAL internal error (logged on the node)");
    service.execute = original;
    assert.equal(await client.request("PING"), "OK");
    client.close();
  } finally {
    service.execute = original;
  }
});
