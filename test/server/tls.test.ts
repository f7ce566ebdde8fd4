// TLS on the client port: both protocols inside it, EOF handling, and a plain-TCP client refused.
// The certificate in fixtures/ is a self-signed one made for this test only.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { BinaryClient, LineClient, startServer } from "./helpers.js";

const cert = readFileSync(new URL("./fixtures/test-cert.pem", import.meta.url));
const key = readFileSync(new URL("./fixtures/test-key.pem", import.meta.url));

test("text and binary over TLS; a plain client gets nothing", async () => {
  const { server, port } = await startServer({ tls: { key, cert } });
  const trust = { ca: cert, servername: "localhost" };
  const text = await LineClient.connect(port, trust);
  assert.equal(await text.request("HELLO tina"), "OK");
  assert.match(await text.request("SEND bob over tls"), /^OK /);
  const binary = await BinaryClient.connect(port, true, trust);
  const reply = await binary.request({ op: "receive", mailbox: "bob", max: 1 });
  const [message] = reply.messages as Array<{ sender: string; body: Uint8Array }>;
  assert.deepEqual([message!.sender, Buffer.from(message!.body).toString()], ["tina", "over tls"]);
  text.socket.end("PING\n");
  assert.equal(await text.line(), "OK");
  await text.closed;
  const plain = await LineClient.connect(port);
  plain.write("PING\n");
  await plain.closed;
  assert.equal(plain.ended, true);
  binary.close();
  await server.close();
});

test("a client that stalls in the TLS handshake is disconnected after tlsHandshakeTimeoutMs", async () => {
  const { server, port } = await startServer({ tls: { key, cert }, limits: { tlsHandshakeTimeoutMs: 200 } });
  const stalled = await LineClient.connect(port); // plain TCP: never sends a ClientHello
  await stalled.closed;
  assert.equal(stalled.ended, true);
  await server.close();
});
