// Peer transport over real TCP on 127.0.0.1: delivery, batching, reconnect, authentication,
// hostile input and snapshot streaming.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import { test } from "node:test";
import { measureSample } from "../../src/clock/offset-estimator.js";
import { FrameDecoder } from "../../src/protocol/binary.js";
import type { Message } from "../../src/raft/types.js";
import { decodePeerFrame, encodePeerFrame, type PeerFrame } from "../../src/transport/frames.js";
import { computeProof } from "../../src/transport/handshake.js";
import { SNAPSHOT_CHUNK_BYTES_DEFAULT } from "../../src/transport/peer-transport.js";
import { addressOf, closeAll, message, messagesFrom, startNode, type TestNode, waitConnected, waitFor, wire } from "./helpers.js";

test("two transports exchange messages both ways and produce clock samples", async () => {
  const nodes = [await startNode(1), await startNode(2)];
  const [a, b] = nodes as [TestNode, TestNode];
  try {
    wire(nodes);
    await waitConnected(nodes);
    a.transport.send([message(1, 2, "append", 7)]);
    b.transport.send([message(2, 1, "append-response", 7)]);
    await waitFor("both delivered", () => messagesFrom(b, 1).length === 1 && messagesFrom(a, 2).length === 1);
    assert.equal(messagesFrom(b, 1)[0]!.index, 7);
    assert.equal(messagesFrom(a, 2)[0]!.type, "append-response");
    await waitFor("clock samples", () => a.samples.length > 0 && b.samples.length > 0);
    for (const { from, sample } of a.samples) {
      assert.equal(from, 2);
      assert.ok(sample.t1Ms <= sample.t4Ms, "t1 and t4 are on the same clock: t1 <= t4");
      assert.ok(sample.t2Ms <= sample.t3Ms, "t2 and t3 are on the same clock: t2 <= t3");
    }
  } finally {
    await closeAll(nodes);
  }
});

test("three transports: every node reaches every other one, entries and contexts intact", async () => {
  const nodes = [await startNode(1), await startNode(2), await startNode(3)];
  try {
    wire(nodes);
    await waitConnected(nodes);
    for (const node of nodes) {
      const out: Message[] = [];
      for (const other of nodes) {
        if (other === node) continue;
        const m = message(node.id, other.id, "append", node.id * 10 + other.id);
        m.entries = [{ term: 1, index: 1, type: "normal", data: Uint8Array.from([node.id, other.id]) }];
        m.context = Uint8Array.from([9]);
        out.push(m);
      }
      node.transport.send(out);
    }
    await waitFor("six deliveries", () => nodes.every((node) => node.received.flatMap((r) => r.messages).length === 2));
    for (const node of nodes) {
      for (const other of nodes) {
        if (other === node) continue;
        const [got] = messagesFrom(node, other.id);
        assert.equal(got!.index, other.id * 10 + node.id);
        assert.deepEqual([...got!.entries[0]!.data], [other.id, node.id]);
        assert.deepEqual([...got!.context!], [9]);
      }
    }
  } finally {
    await closeAll(nodes);
  }
});

test("everything sent during one event-loop turn goes out as one frame per peer", async () => {
  const nodes = [await startNode(1), await startNode(2), await startNode(3)];
  const [a, b, c] = nodes as [TestNode, TestNode, TestNode];
  try {
    wire(nodes);
    await waitConnected(nodes);
    // Let the connect-time clock probes pass so they do not mingle with the batch.
    await new Promise((resolve) => setTimeout(resolve, 50));
    b.received.length = 0;
    c.received.length = 0;
    for (let index = 0; index < 100; index++) a.transport.send([message(1, 2, "append", index), message(1, 3, "append", index)]);
    await waitFor("batches", () => messagesFrom(b, 1).length === 100 && messagesFrom(c, 1).length === 100);
    assert.equal(b.received.filter((r) => r.messages.length > 0).length, 1, "one frame to node 2");
    assert.equal(c.received.filter((r) => r.messages.length > 0).length, 1, "one frame to node 3");
    assert.deepEqual(messagesFrom(b, 1).map((m) => m.index), [...Array(100).keys()], "order kept");
    const [toB] = a.transport.stats().filter((s) => s.peer === 2);
    assert.ok(toB!.connected && toB!.messagesSent === 100 && toB!.messagesDropped === 0 && toB!.queuedMessages === 0);
    assert.equal(b.transport.stats().find((s) => s.peer === 1)!.messagesReceived, 100);
  } finally {
    await closeAll(nodes);
  }
});

test("reconnects after the peer restarts on the same address", async () => {
  const unreachable: number[] = [];
  const a = await startNode(1, { onUnreachable: (peer) => unreachable.push(peer) });
  let b = await startNode(2);
  try {
    wire([a, b]);
    await waitConnected([a, b]);
    const port = b.transport.address().port;
    await b.transport.close();
    await waitFor("a notices", () => a.transport.connectedPeers().length === 0);
    b = await startNode(2, { listen: { host: "127.0.0.1", port } });
    b.transport.setPeers(new Map([[1, addressOf(a)]]));
    await waitConnected([a, b]);
    a.transport.send([message(1, 2, "append", 42)]);
    await waitFor("delivery after restart", () => messagesFrom(b, 1).some((m) => m.index === 42));
    assert.ok(a.logs.some((l) => l.event === "peer-disconnected"));
    assert.deepEqual(unreachable, [2]);
  } finally {
    await closeAll([a, b]);
  }
});

test("a peer with the wrong secret is refused, with the reason logged on both sides", async () => {
  const a = await startNode(1);
  const b = await startNode(2, { secret: "another-secret" });
  try {
    wire([a, b]);
    const refused = (node: TestNode) => node.logs.some((l) => l.event === "handshake-refused" && String(l.fields.reason).includes("authentication failed"));
    await waitFor("both refuse", () => refused(a) && refused(b));
    assert.deepEqual(a.transport.connectedPeers(), []);
    assert.deepEqual(b.transport.connectedPeers(), []);
    a.transport.send([message(1, 2)]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(b.received.length, 0);
  } finally {
    await closeAll([a, b]);
  }
});

test("a peer of another cluster id is refused, with the reason logged", async () => {
  const a = await startNode(1);
  const b = await startNode(2, { clusterId: "other-cluster" });
  try {
    wire([a, b]);
    const refused = (node: TestNode) => node.logs.some((l) => l.event === "handshake-refused" && String(l.fields.reason).includes("cluster id mismatch"));
    await waitFor("both refuse", () => refused(a) && refused(b));
    assert.deepEqual(a.transport.connectedPeers(), []);
    assert.deepEqual(b.transport.connectedPeers(), []);
  } finally {
    await closeAll([a, b]);
  }
});

test("each node learns from its dialers' hellos which command set they apply; a hello without one means set 1", async () => {
  const a = await startNode(1, { commands: 2 });
  const b = await startNode(2, { commands: 5 });
  const c = await startNode(3); // sends none, as a node before the field
  try {
    assert.equal(a.transport.peerCommands(2), undefined, "nothing known before a connection");
    wire([a, b, c]);
    await waitConnected([a, b, c]);
    await waitFor("every hello arrived", () => [a, b, c].every((node) => [1, 2, 3].every((peer) => peer === node.id || node.transport.peerCommands(peer) !== undefined)));
    assert.deepEqual([a.transport.peerCommands(2), a.transport.peerCommands(3)], [5, 1]);
    assert.deepEqual([b.transport.peerCommands(1), b.transport.peerCommands(3)], [2, 1]);
    assert.deepEqual([c.transport.peerCommands(1), c.transport.peerCommands(2)], [2, 5]);
  } finally {
    await closeAll([a, b, c]);
  }
});

test("a peer whose settings the check rejects is refused with the check's reason; one without settings is checked as such", async () => {
  // Node-level meaning (broker limits) is src/broker/config.ts's; here the settings are opaque.
  const check = (ours: string) => (theirs: string | undefined) => ((theirs ?? "defaults") === ours ? undefined : `settings differ: ${ours} here, ${theirs ?? "none"} there`);
  const a = await startNode(1, { settings: "x=1", settingsProblem: check("x=1") });
  const b = await startNode(2, { settings: "x=2", settingsProblem: check("x=2") });
  const c = await startNode(3, { settings: "x=1", settingsProblem: check("x=1") });
  const d = await startNode(4, { settingsProblem: check("defaults") }); // sends no settings
  try {
    wire([a, b]);
    const refused = (node: TestNode, reason: string) => node.logs.some((l) => l.event === "peer-settings-refused" && String(l.fields.reason) === reason);
    await waitFor("each refuses the other's dial", () => refused(a, "settings differ: x=1 here, x=2 there") && refused(b, "settings differ: x=2 here, x=1 there"));
    assert.ok(a.logs.some((l) => l.event === "handshake-refused" && l.fields.side === "dialer" && String(l.fields.reason).includes("x=2 here, x=1 there")), "the dialer logs the acceptor's reason");
    assert.deepEqual(a.transport.connectedPeers(), []);
    assert.deepEqual(b.transport.connectedPeers(), []);
    wire([c, d]);
    // d dials c without settings: c's check sees none and refuses; c's dial of d carries x=1.
    await waitFor("a peer without settings is checked as none", () => refused(c, "settings differ: x=1 here, none there") && refused(d, "settings differ: defaults here, x=1 there"));
    assert.deepEqual(c.transport.connectedPeers(), []);
  } finally {
    await closeAll([a, b, c, d]);
  }
  const e = await startNode(5, { settings: "x=1", settingsProblem: check("x=1") });
  const f = await startNode(6, { settings: "x=1", settingsProblem: check("x=1") });
  try {
    wire([e, f]);
    await waitConnected([e, f]);
    assert.ok(!e.logs.some((l) => l.event === "peer-settings-refused") && !f.logs.some((l) => l.event === "peer-settings-refused"));
  } finally {
    await closeAll([e, f]);
  }
});

test("a garbage frame closes only that connection", async () => {
  const nodes = [await startNode(1), await startNode(2)];
  const [a, b] = nodes as [TestNode, TestNode];
  try {
    wire(nodes);
    await waitConnected(nodes);
    const garbage = [
      Buffer.from([0xff, 0xff, 0xff, 0xff]), // announces a 4 GiB frame
      Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from([0xc1, 0xc1, 0xc1])]), // not msgpack
      Buffer.concat([Buffer.from([0, 0, 0, 1]), Buffer.from([0x2a])]), // msgpack, not a frame
    ];
    for (const bytes of garbage) {
      const socket = connect({ host: "127.0.0.1", port: b.transport.address().port });
      socket.on("error", () => {});
      socket.on("connect", () => socket.write(bytes));
      await new Promise((resolve) => socket.on("close", resolve));
    }
    a.transport.send([message(1, 2, "append", 5)]);
    await waitFor("the peer connection still works", () => messagesFrom(b, 1).some((m) => m.index === 5));
    assert.deepEqual(a.transport.connectedPeers(), [2]);
  } finally {
    await closeAll(nodes);
  }
});

// Two connected transports; node 1 reports the status of every snapshot it sends to `statuses`.
async function snapshotPair() {
  const statuses: boolean[] = [];
  const nodes = [await startNode(1, { onSnapshotStatus: (_to, delivered) => statuses.push(delivered) }), await startNode(2)];
  wire(nodes);
  await waitConnected(nodes);
  const [a, b] = nodes as [TestNode, TestNode];
  return { nodes, a, b, statuses };
}

test("a 5 MiB snapshot arrives intact while heartbeats keep flowing", async () => {
  const { nodes, a, b, statuses } = await snapshotPair();
  try {
    const data = randomBytes(5 * 1024 * 1024);
    const snapshot = message(1, 2, "snapshot", 100);
    snapshot.snapshot = { meta: { index: 100, term: 1, conf: { voters: [1, 2], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false } }, data };
    a.transport.send([snapshot]);
    // A heartbeat every event-loop turn until the snapshot is in.
    let beats = 0;
    const delivered = () => messagesFrom(b, 1).some((m) => m.type === "snapshot");
    const beat = () => {
      if (delivered()) return;
      a.transport.send([message(1, 2, "heartbeat", ++beats)]);
      setImmediate(beat);
    };
    beat();
    await waitFor("snapshot delivered", delivered, 20_000);
    const received = messagesFrom(b, 1);
    const position = received.findIndex((m) => m.type === "snapshot");
    const got = received[position]!;
    assert.equal(got.snapshot!.meta.index, 100);
    assert.deepEqual(got.snapshot!.meta.conf.voters, [1, 2]);
    assert.ok(Buffer.from(got.snapshot!.data).equals(data), "snapshot bytes intact");
    assert.ok(position >= 5, `heartbeats overtook the snapshot (${position} before it)`);
    if (process.env.FERRY_TEST_VERBOSE) console.log(`${position} heartbeats overtook the snapshot`);
    await waitFor("snapshot status", () => statuses.length > 0);
    assert.deepEqual(statuses, [true]);
  } finally {
    await closeAll(nodes);
  }
});

// A snapshot kept on disk (as DiskRaftStorage's): its size and a reader of its chunks; reading
// `data` whole is what the transport must not do. `failAt`: the reader throws at that chunk.
function streamedSnapshot(data: Uint8Array, failAt?: number): NonNullable<Message["snapshot"]> & { chunksRead: number } {
  const snapshot = {
    meta: { index: 200, term: 2, conf: { voters: [1, 2], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false } },
    dataBytes: data.length,
    chunksRead: 0,
    get data(): Uint8Array {
      throw new Error("a streamed snapshot's data is read whole");
    },
    async *readChunks(chunkBytes: number): AsyncGenerator<Uint8Array> {
      for (let offset = 0; offset < data.length; offset += chunkBytes) {
        await new Promise((resolve) => setImmediate(resolve));
        if (snapshot.chunksRead === failAt) throw new Error("the snapshot file was closed");
        snapshot.chunksRead++;
        yield data.slice(offset, offset + chunkBytes);
      }
    },
  };
  return snapshot;
}

test("a snapshot kept on disk is streamed from its reader, never read whole; a failed read fails the send only", async () => {
  const { nodes, a, b, statuses } = await snapshotPair();
  try {
    const broken = message(1, 2, "snapshot", 200);
    broken.snapshot = streamedSnapshot(randomBytes(3 * 1024 * 1024 + 5), 2);
    a.transport.send([broken]);
    await waitFor("the failed send reported", () => statuses.length === 1);
    assert.deepEqual(statuses, [false]);
    assert.ok(a.logs.some((l) => l.event === "snapshot-send-end" && String(l.fields.reason).includes("the snapshot file was closed")));

    const data = randomBytes(3 * 1024 * 1024 + 5);
    const snapshot = message(1, 2, "snapshot", 201);
    const source = streamedSnapshot(data);
    snapshot.snapshot = source;
    a.transport.send([snapshot, message(1, 2, "heartbeat", 1)]);
    await waitFor("snapshot delivered", () => messagesFrom(b, 1).some((m) => m.type === "snapshot"), 20_000);
    const got = messagesFrom(b, 1).find((m) => m.type === "snapshot")!;
    assert.equal(got.snapshot!.meta.index, 200);
    assert.ok(Buffer.from(got.snapshot!.data).equals(data), "snapshot bytes intact");
    assert.equal(source.chunksRead, Math.ceil(data.length / SNAPSHOT_CHUNK_BYTES_DEFAULT), "read in chunks of snapshotChunkBytes");
    await waitFor("snapshot status", () => statuses.length === 2);
    assert.deepEqual(statuses, [false, true]);
    assert.equal(messagesFrom(b, 1).filter((m) => m.type === "snapshot").length, 1, "the broken stream was never delivered");
  } finally {
    await closeAll(nodes);
  }
});

test("the send queue is bounded: messages to an unreachable peer beyond it are dropped and logged", async () => {
  const unreachable: number[] = [];
  const a = await startNode(1, { sendQueueBytesMax: 10_000, onUnreachable: (peer) => unreachable.push(peer) });
  try {
    a.transport.setPeers(new Map([[2, "127.0.0.1:1"]])); // nothing listens on port 1
    for (let index = 0; index < 1000; index++) a.transport.send([message(1, 2, "append", index)]);
    assert.ok(a.logs.some((l) => l.event === "send-queue-full"));
    assert.deepEqual(unreachable, [2], "reported once per overflow episode");
    const [stats] = a.transport.stats();
    assert.ok(stats!.messagesDropped > 0 && stats!.queuedBytes <= 10_000, JSON.stringify(stats));
  } finally {
    await a.transport.close();
  }
});

test("clock samples measure a skewed peer clock", async () => {
  const skewMs = 500;
  const probes = { clockProbeIntervalMs: 20 };
  const nodes = [await startNode(1, probes), await startNode(2, { ...probes, now: () => Date.now() + skewMs })];
  const [a] = nodes as [TestNode, TestNode];
  try {
    wire(nodes);
    await waitConnected(nodes);
    await waitFor("a few samples", () => a.samples.length >= 3);
    for (const { sample } of a.samples) {
      const { offsetMs, delayMs } = measureSample(sample);
      // The offset error of one sample is at most half its delay (+1 ms of Date.now rounding).
      assert.ok(Math.abs(offsetMs - skewMs) <= delayMs / 2 + 1, `offset ${offsetMs} delay ${delayMs}`);
    }
  } finally {
    await closeAll(nodes);
  }
});

test("a batch over the frame limit is split; a single message over it is dropped and logged", async () => {
  const limits = { frameBytesMax: 128 * 1024, snapshotChunkBytes: 16 * 1024 };
  const nodes = [await startNode(1, limits), await startNode(2, limits)];
  const [a, b] = nodes as [TestNode, TestNode];
  try {
    wire(nodes);
    await waitConnected(nodes);
    const withEntry = (index: number, bytes: number) => {
      const m = message(1, 2, "append", index);
      m.entries = [{ term: 1, index, type: "normal", data: new Uint8Array(bytes).fill(index) }];
      return m;
    };
    a.transport.send([withEntry(1, 40_000), withEntry(2, 40_000), withEntry(3, 200_000), withEntry(4, 40_000), withEntry(5, 40_000)]);
    await waitFor("the fitting messages", () => messagesFrom(b, 1).length === 4);
    assert.deepEqual(messagesFrom(b, 1).map((m) => m.index), [1, 2, 4, 5]);
    assert.ok(b.received.filter((r) => r.messages.length > 0).length >= 2, "split over several frames");
    assert.ok(messagesFrom(b, 1).every((m) => m.entries[0]!.data.every((byte) => byte === m.index)));
    assert.ok(a.logs.some((l) => l.event === "message-too-large"));
  } finally {
    await closeAll(nodes);
  }
});

test("a peer that goes silent is dropped and redialed", async () => {
  // Node 2 probes far less often than node 1 tolerates silence.
  const a = await startNode(1, { clockProbeIntervalMs: 50, peerIdleTimeoutMs: 300 });
  const b = await startNode(2, { clockProbeIntervalMs: 60_000, peerIdleTimeoutMs: 120_000 });
  try {
    wire([a, b]);
    await waitFor("a notices the silence", () => a.logs.some((l) => l.event === "peer-silent"));
    // Node 2 stays silent, so node 1 keeps dropping it: a message may be lost in a reset, and
    // is sent again, as Raft would.
    await waitFor("delivery after the redial", () => {
      const delivered = messagesFrom(b, 1).some((m) => m.index === 3);
      if (!delivered) a.transport.send([message(1, 2, "append", 3)]);
      return delivered;
    });
    assert.ok(a.logs.some((l) => l.event === "peer-disconnected" && String(l.fields.reason).includes("silent")));
  } finally {
    await closeAll([a, b]);
  }
});

test("a peer removed by setPeers is disconnected and no longer routed to", async () => {
  const nodes = [await startNode(1), await startNode(2), await startNode(3)];
  const [a] = nodes as [TestNode, TestNode, TestNode];
  try {
    wire(nodes);
    await waitConnected(nodes);
    a.transport.setPeers(new Map([[2, addressOf(nodes[1]!)]]));
    assert.deepEqual(a.transport.connectedPeers(), [2]);
    a.transport.send([message(1, 3)]);
    assert.ok(a.logs.some((l) => l.event === "send-no-route" && l.fields.to === 3));
    assert.throws(() => a.transport.setPeers(new Map([[1, "127.0.0.1:1"]])), RangeError, "self is not a peer");
    assert.throws(() => a.transport.setPeers(new Map([[4, "nonsense"]])), RangeError);
  } finally {
    await closeAll(nodes);
  }
});

// Authenticates like a real peer, then misbehaves: returns the socket's close promise.
async function hostilePeer(target: TestNode, claimedId: number, frames: (nonce: Uint8Array) => PeerFrame[]): Promise<void> {
  const socket = connect({ host: "127.0.0.1", port: target.transport.address().port });
  socket.on("error", () => {});
  const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
  const decoder = new FrameDecoder();
  const dialerNonce = randomBytes(32);
  socket.on("data", (chunk: Buffer) => {
    for (const payload of decoder.push(chunk)) {
      const frame = decodePeerFrame(payload);
      if (frame.k === "welcome") {
        const transcript = { clusterId: "test-cluster", dialerId: claimedId, acceptorId: target.id, dialerNonce, acceptorNonce: frame.nonce };
        socket.write(encodePeerFrame({ k: "proof", proof: computeProof("test-secret", "dialer", transcript) }));
      } else if (frame.k === "ready") {
        for (const out of frames(dialerNonce)) socket.write(encodePeerFrame(out));
      }
    }
  });
  socket.on("connect", () => socket.write(encodePeerFrame({ k: "hello", version: 1, clusterId: "test-cluster", nodeId: claimedId, nonce: dialerNonce })));
  await closed;
}

test("an authenticated peer sending forged or malformed messages loses its connection, nobody else does", async () => {
  const nodes = [await startNode(1), await startNode(2)];
  const [a, b] = nodes as [TestNode, TestNode];
  try {
    wire(nodes);
    await waitConnected(nodes);
    const data = (messages: unknown[]) => [{ k: "data", sentAtMs: Date.now(), messages } as unknown as PeerFrame];
    await hostilePeer(b, 3, () => data([message(1, 2)])); // claims to be 3, forges 1
    await hostilePeer(b, 3, () => data([{ ...message(3, 2), type: "launch-missiles" }]));
    await hostilePeer(b, 3, () => data([{ ...message(3, 2), entries: [{ term: 1, index: 1, type: "normal", data: "not bytes" }] }]));
    const violations = b.logs.filter((l) => l.event === "peer-protocol-violation").map((l) => String(l.fields.reason));
    assert.equal(violations.length, 3, violations.join("; "));
    assert.match(violations[0]!, /message from 1 to 2 on the connection of node 3/);
    assert.equal(messagesFrom(b, 3).length, 0);
    assert.equal(messagesFrom(b, 1).length, 0);
    a.transport.send([message(1, 2, "append", 8)]);
    await waitFor("the real peer still gets through", () => messagesFrom(b, 1).some((m) => m.index === 8));
  } finally {
    await closeAll(nodes);
  }
});
