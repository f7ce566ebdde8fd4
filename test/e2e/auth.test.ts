// A real 3-node cluster started with a users file and a TLS certificate (`ferry start --users --peer-tls
// --tls-cert --tls-key`): clients log in over TLS, a follower authorizes and forwards to the
// leader over TLS, the sender of a message is the user who sent it, and the CLI logs in with
// --user and FERRY_PASSWORD. The certificate is the self-signed test one of test/server/fixtures.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { connect, FerryError } from "../../src/index.js";
import { hashPassword } from "../../src/server/auth.js";
import { TestCluster, textRequest } from "./harness.js";
import { ferry, waitFor } from "./tools.js";

const certPath = new URL("../server/fixtures/test-cert.pem", import.meta.url).pathname;
const keyPath = new URL("../server/fixtures/test-key.pem", import.meta.url).pathname;
const cert = readFileSync(certPath);
const tls = { ca: cert, servername: "localhost" };
const COST = 1024; // cheap hashes keep the test fast; the default is 16384

describe("a cluster with users and TLS", { timeout: 120_000 }, () => {
  let cluster: TestCluster;
  let usersFile: string;
  before(async () => {
    const probe = new TestCluster();
    usersFile = join(probe.root, "users.json");
    writeFileSync(
      usersFile,
      JSON.stringify({
        users: [
          { name: "alice", password: await hashPassword("alice pw", COST), send: ["*"], receive: ["alice", "alice:*"] },
          { name: "bob", password: await hashPassword("bob pw", COST), send: ["alice"], receive: ["bob"] },
          { name: "root", password: await hashPassword("root pw", COST), send: ["*"], receive: ["*"], admin: true },
        ],
      }),
    );
    cluster = await new TestCluster({
      extraArgs: ["--users", usersFile, "--tls-cert", certPath, "--tls-key", keyPath, "--peer-tls", "--secret", "e2e-auth-cluster-secret"],
      login: "AUTH root root pw",
      tls,
    }).start();
  });
  after(async () => {
    await cluster?.stop();
  });

  test("a follower authorizes, forwards over TLS, and the user is the sender", async () => {
    for (const node of cluster.nodes.values()) assert.match(node.output.join(""), /tls=on peerTls=on/, "every node serves TLS on both ports");
    const leader = await cluster.waitForLeader();
    const follower = [...cluster.nodes.values()].find((node) => node.id !== leader)!;
    assert.deepEqual(await textRequest(follower.client, "SEND alice anonymous", 5_000, undefined, tls), [
      "ERR UNAUTHORIZED this node requires a login: AUTH <user> <password> (binary: HELLO with user and password)",
    ]);
    const sent = await textRequest(follower.client, "SEND alice from bob via a follower", 10_000, "AUTH bob bob pw", tls);
    assert.match(sent[0]!, /^OK \S+/);
    assert.deepEqual(await textRequest(follower.client, "RECEIVE alice", 5_000, "AUTH bob bob pw", tls), ["ERR FORBIDDEN user 'bob' may not receive mailbox 'alice'"]);
    const alice = await connect({ seeds: cluster.seeds(), user: "alice", password: "alice pw", tls });
    try {
      const [message] = await alice.receive("alice", { max: 1 });
      assert.equal(message?.sender, "bob");
      assert.equal(Buffer.from(message!.body).toString(), "from bob via a follower");
      await alice.ack("alice", [message!.id]);
    } finally {
      await alice.close();
    }
  });

  test("the client library fails fast on a wrong password or none", async () => {
    for (const options of [{ user: "alice", password: "wrong" }, {}]) {
      const attempt = async () => {
        const client = await connect({ seeds: cluster.seeds(), ...options, tls, timeoutMs: 5_000 });
        try {
          await client.send("alice", "x");
        } finally {
          await client.close();
        }
      };
      await assert.rejects(attempt(), (error: unknown) => error instanceof FerryError && error.code === "UNAUTHORIZED");
    }
  });

  test("SIGHUP reads the users file again: a new user can log in on every node, which keep running", async () => {
    const current = JSON.parse(readFileSync(usersFile, "utf8")) as { users: unknown[] };
    current.users.push({ name: "dave", password: await hashPassword("dave pw", COST), send: ["dave"], receive: ["dave"] });
    writeFileSync(usersFile, JSON.stringify(current));
    for (const node of cluster.nodes.values()) node.child!.kill("SIGHUP");
    for (const node of cluster.nodes.values()) {
      await waitFor(`node ${node.id} reloads its users`, async () => (await textRequest(node.client, "SEND dave hi", 5_000, "AUTH dave dave pw", tls))[0]?.startsWith("OK"));
      assert.equal(node.child!.exitCode, null);
    }
  });

  test("the HTTP endpoint wants an admin's HTTP Basic login, except /health", async () => {
    const node = cluster.nodes.get(1)!;
    const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` });
    assert.equal((await fetch(`http://${node.http}/metrics`)).status, 401);
    assert.equal((await fetch(`http://${node.http}/status`, { headers: basic("alice", "alice pw") })).status, 403);
    const status = await fetch(`http://${node.http}/status`, { headers: basic("root", "root pw") });
    assert.equal(status.status, 200);
    assert.equal(((await status.json()) as { nodes: unknown[] }).nodes.length, 3);
    // Earlier tests failed logins and sent requests without one: the counters say so.
    const metrics = await (await fetch(`http://${node.http}/metrics`, { headers: basic("root", "root pw") })).text();
    assert.match(metrics, /^ferry_server_events_total\{event="unauthorized",node="1"\} [1-9]/m);
    assert.match(metrics, /^ferry_server_events_total\{event="connectionsAccepted",node="1"\} [1-9]/m);
    assert.equal((await fetch(`http://${node.http}/health`)).status, 200);
  });

  test("the CLI logs in with --user and FERRY_PASSWORD", async () => {
    const common = ["--seeds", cluster.seeds().join(","), "--tls-ca", certPath, "--tls-servername", "localhost"];
    const sent = await ferry(["send", "alice", "from the cli", "--user", "root", ...common], { FERRY_PASSWORD: "root pw" });
    assert.equal(sent.code, 0, sent.stderr);
    const denied = await ferry(["purge", "alice", "--user", "alice", ...common], { FERRY_PASSWORD: "alice pw" });
    assert.equal(denied.code, 4, denied.stdout + denied.stderr);
    assert.match(denied.stderr, /FORBIDDEN/);
    const anonymous = await ferry(["send", "alice", "no login", ...common]);
    assert.equal(anonymous.code, 4, anonymous.stderr);
    assert.match(anonymous.stderr, /UNAUTHORIZED/);
    const received = await ferry(["receive", "alice", "--json", "--user", "alice", ...common], { FERRY_PASSWORD: "alice pw" });
    assert.equal(received.code, 0, received.stderr);
    assert.match(received.stdout, /"sender":"root"/);
  });
});
