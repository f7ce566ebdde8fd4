// A follower relays what it cannot serve to the leader and tells the client where the leader is:
// the relayed answer carries the leader's client address as leaderHint; the client's own sender
// identity travels with a forwarded SEND.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Reply, Request } from "../../src/protocol/api.js";
import { FerryError } from "../../src/protocol/errors.js";
import { ForwardingService, forwardProof } from "../../src/server/forwarder.js";
import type { Service, Session } from "../../src/server/service.js";
import { FakeServer } from "../client/fake-server.js";

test("a forwarded answer names the leader; an answer served locally does not", async () => {
  const leader = await FakeServer.start();
  let leading = true;
  const local: Service = {
    async execute(request: Request): Promise<Reply> {
      if (!leading) throw new FerryError("NOT_LEADER", "not the leader", leader.address);
      return { ok: true, id: `local-${request.op}`, timestamp: 1n, duplicate: false };
    },
  };
  const service = new ForwardingService(local, { proof: () => forwardProof("ferry", "secret"), name: "node-2" });
  const session: Session = { id: 1, identity: "alice", remoteAddress: "127.0.0.1:50000", protocol: "binary" };
  const signal = new AbortController().signal;
  try {
    const served = (await service.execute({ op: "send", recipients: ["bob"], body: new Uint8Array([1]) }, session, signal)) as unknown as Record<string, unknown>;
    assert.equal(served.leaderHint, undefined);
    leading = false;
    const relayed = (await service.execute({ op: "send", recipients: ["bob"], body: new Uint8Array([2]) }, session, signal)) as unknown as Record<string, unknown>;
    assert.equal(relayed.ok, true);
    assert.equal(relayed.leaderHint, leader.address);
    assert.equal(leader.requestsOf("send").length, 1);
    assert.equal(leader.requestsOf("send")[0]!.sender, "alice");
  } finally {
    service.close();
    await leader.close();
  }
});
