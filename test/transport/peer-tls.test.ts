// Mutual TLS on the peer port (TransportOptions.tls, `ferry start --peer-tls`): nodes that present
// a certificate the shared CA signed exchange messages; a node with another certificate, or one
// dialling plain TCP, never gets a connection. The cluster certificate is the self-signed test one
// of test/server/fixtures; fixtures/foreign-*.pem is a second self-signed one made for this test.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { test } from "node:test";
import { closeAll, message, messagesFrom, startNode, waitConnected, waitFor, wire } from "./helpers.js";

const read = (path: string) => readFileSync(new URL(path, import.meta.url));
const cluster = { key: read("../server/fixtures/test-key.pem"), cert: read("../server/fixtures/test-cert.pem"), ca: read("../server/fixtures/test-cert.pem") };
const foreign = { key: read("./fixtures/foreign-key.pem"), cert: read("./fixtures/foreign-cert.pem"), ca: read("./fixtures/foreign-cert.pem") };

test("peers with the cluster's certificate talk over TLS; a foreign certificate and plain TCP are refused", async () => {
  const a = await startNode(1, { tls: cluster });
  const b = await startNode(2, { tls: cluster });
  const intruder = await startNode(3, { tls: foreign });
  const plain = await startNode(4);
  try {
    wire([a, b]);
    await waitConnected([a, b]);
    a.transport.send([message(1, 2, "heartbeat", 7)]);
    await waitFor("b hears a", () => messagesFrom(b, 1).length === 1);
    assert.equal(messagesFrom(b, 1)[0]!.index, 7);
    // Both strangers dial a; a refuses them in the TLS handshake, before the HMAC handshake.
    const aAddress = `127.0.0.1:${a.transport.address().port}`;
    intruder.transport.setPeers(new Map([[1, aAddress]]));
    plain.transport.setPeers(new Map([[1, aAddress]]));
    intruder.transport.send([message(3, 1)]);
    plain.transport.send([message(4, 1)]);
    await waitFor("a refuses both in TLS", () => a.logs.filter((line) => line.event === "peer-tls-refused").length >= 2);
    assert.deepEqual(intruder.transport.connectedPeers(), []);
    assert.deepEqual(plain.transport.connectedPeers(), []);
    assert.equal(messagesFrom(a, 3).length + messagesFrom(a, 4).length, 0);
  } finally {
    await closeAll([a, b, intruder, plain]);
  }
});

test("a dialler that stalls in the TLS handshake is cut off after handshakeTimeoutMs", async () => {
  const a = await startNode(1, { tls: cluster, handshakeTimeoutMs: 300 });
  try {
    const socket = connect({ host: "127.0.0.1", port: a.transport.address().port });
    const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
    socket.on("error", () => {});
    await closed; // without the bound, Node's own TLS timeout (120 s) reports and leaves it open
    assert.ok(a.logs.some((line) => line.event === "peer-tls-refused"));
  } finally {
    await closeAll([a]);
  }
});
