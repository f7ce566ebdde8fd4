// Authentication and authorization on the client port (src/server/auth.ts): a server with a
// users file serves only logged-in clients, on both protocols, and each user only what its
// permissions name; bad logins are refused without a hint of which part was wrong, and a
// connection that keeps failing is closed. Passwords use a cheap scrypt cost here (N = 1024)
// so the tests stay fast; the default is 16384.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { requireSecretForUsers } from "../../src/cli/node-start.js";
import { NODE_DEFAULTS, type NodeConfig } from "../../src/node/config.js";
import {
  Authenticator,
  authorizationProblem,
  hashPassword,
  LOGINS_CONCURRENT_MAX,
  LOGINS_WAITING_MAX,
  LoginThrottle,
  LoginsOverloadedError,
  UsersFileError,
} from "../../src/server/auth.js";
import { ForwardProofVerifier, forwardProof } from "../../src/server/forwarder.js";
import { BinaryClient, LineClient, startServer } from "./helpers.js";

const COST = 1024;
const users = async () =>
  Authenticator.fromJson({
    users: [
      { name: "alice", password: await hashPassword("alice secret", COST), send: ["*"], receive: ["alice", "alice:*"] },
      { name: "bob", password: await hashPassword("hunter2", COST), send: ["alice"], receive: ["bob"] },
      { name: "root", password: await hashPassword("r00t", COST), send: ["*"], receive: ["*"], admin: true },
    ],
  });

describe("auth", () => {
  test("text: nothing but HELP, PING and QUIT before AUTH; the user is the sender; permissions hold", async () => {
    const { server, service, port } = await startServer({ auth: await users() });
    const client = await LineClient.connect(port);
    assert.match(await client.request("SEND alice hi"), /^ERR UNAUTHORIZED this node requires a login: AUTH <user> <password>/);
    assert.match(await client.request("STATUS"), /^ERR UNAUTHORIZED/);
    assert.match(await client.request("HELLO mallory"), /^ERR UNAUTHORIZED/);
    assert.equal(await client.request("PING"), "OK");
    assert.equal(service.calls.length, 0, "nothing reached the service");
    assert.equal(await client.request("AUTH bob wrong"), "ERR UNAUTHORIZED wrong user or password");
    assert.equal(await client.request("AUTH nobody hunter2"), "ERR UNAUTHORIZED wrong user or password");
    assert.equal(await client.request("AUTH bob hunter2"), "OK");
    assert.match(await client.request("SEND alice from bob"), /^OK /);
    assert.equal(service.calls.at(-1)!.session.identity, "bob");
    // HELLO cannot change a logged-in identity.
    assert.equal(await client.request("HELLO mallory"), "OK");
    assert.match(await client.request("SEND alice still bob"), /^OK /);
    assert.equal(service.calls.at(-1)!.session.identity, "bob");
    assert.equal(await client.request("SEND carol no"), "ERR FORBIDDEN user 'bob' may not send to 'carol'");
    assert.deepEqual(await client.request("RECEIVE alice"), "ERR FORBIDDEN user 'bob' may not receive mailbox 'alice'");
    assert.equal(await client.request("PURGE bob"), `ERR FORBIDDEN user 'bob' may not purge: that needs "admin": true`);
    client.write("RECEIVE bob\n");
    assert.deepEqual(await client.untilEnd(), ["END"]);
    client.close();
    await server.close();
  });

  test("text: a password may hold spaces; requests pipelined behind AUTH run as its user", async () => {
    const { server, service, port } = await startServer({ auth: await users() });
    const client = await LineClient.connect(port);
    client.write("AUTH alice alice secret\nSEND bob one\nRECEIVE alice\n");
    assert.equal(await client.line(), "OK");
    assert.match(await client.line(), /^OK /);
    assert.deepEqual(await client.untilEnd(), ["END"]);
    assert.deepEqual(
      service.calls.map((call) => [call.request.op, call.session.identity]),
      [
        ["send", "alice"],
        ["receive", "alice"],
      ],
    );
    client.close();
    await server.close();
  });

  test("binary: HELLO with user and password logs in; pipelined requests wait for it; a wrong one is refused", async () => {
    const { server, service, port } = await startServer({ auth: await users() });
    const client = await BinaryClient.connect(port);
    const before = await client.request({ op: "send", recipients: ["alice"], body: new Uint8Array([1]) });
    assert.deepEqual([before.ok, before.code], [false, "UNAUTHORIZED"]);
    const wrong = await client.request({ op: "hello", name: "x", user: "alice", password: "nope" });
    assert.deepEqual([wrong.ok, wrong.code, wrong.message], [false, "UNAUTHORIZED", "wrong user or password"]);
    const [hello, send] = await Promise.all([
      client.request({ op: "hello", name: "x", user: "alice", password: "alice secret" }),
      client.request({ op: "send", recipients: ["bob"], body: new Uint8Array([2]) }),
    ]);
    assert.deepEqual([hello.ok, hello.name], [true, "alice"]);
    assert.equal(send.ok, true);
    assert.equal(service.calls.length, 1);
    assert.equal(service.calls[0]!.session.identity, "alice");
    const denied = await client.request({ op: "receive", mailbox: "bob", max: 1 });
    assert.deepEqual([denied.ok, denied.code], [false, "FORBIDDEN"]);
    const own = await client.request({ op: "receive", mailbox: "alice:dlq", max: 1 });
    assert.equal(own.ok, true);
    client.close();
    await server.close();
  });

  test("after authFailuresMax failed logins the connection closes; other connections go on", async () => {
    const { server, port } = await startServer({ auth: await users(), limits: { authFailuresMax: 2 } });
    const other = await LineClient.connect(port);
    assert.equal(await other.request("AUTH root r00t"), "OK");
    const text = await LineClient.connect(port);
    assert.equal(await text.request("AUTH root guess1"), "ERR UNAUTHORIZED wrong user or password");
    assert.equal(await text.request("AUTH root guess2"), "ERR UNAUTHORIZED wrong user or password; 2 failed logins, closing the connection");
    await text.closed;
    const binary = await BinaryClient.connect(port);
    await binary.request({ op: "hello", name: "x", user: "root", password: "a" });
    const last = await binary.request({ op: "hello", name: "x", user: "root", password: "b" });
    assert.match(String(last.message), /closing the connection/);
    await binary.closed;
    assert.equal(server.stats.authFailures, 4);
    assert.match(await other.request("PURGE anything"), /^OK /);
    other.close();
    await server.close();
  });

  test("a node proving the cluster secret is trusted without a user; a wrong proof is refused", async () => {
    const { server, service, port } = await startServer({ auth: await users(), verifyForwarder: (proof) => proof === "right" });
    const client = await BinaryClient.connect(port);
    const refused = await client.request({ op: "hello", name: "node-2", forwardProof: "wrong" });
    assert.equal(refused.code, "UNAUTHORIZED");
    const hello = await client.request({ op: "hello", name: "node-2", forwardProof: "right" });
    assert.equal(hello.ok, true);
    const send = await client.request({ op: "send", recipients: ["anywhere"], body: new Uint8Array([3]), sender: "bob" });
    assert.equal(send.ok, true);
    assert.equal(service.calls[0]!.session.trustedForwarder, true);
    client.close();
    await server.close();
  });

  test("without a users file nothing is checked; credentials only name the sender", async () => {
    const { server, service, port } = await startServer();
    const client = await LineClient.connect(port);
    assert.match(await client.request("SEND bob before"), /^OK /);
    assert.equal(await client.request("AUTH tina anything"), "OK");
    assert.match(await client.request("PURGE bob"), /^OK /);
    assert.equal(service.calls.at(-1)!.session.identity, "tina");
    client.close();
    await server.close();
  });
});

describe("auth, continued", () => {
  test("text: a HELLO pipelined behind AUTH waits for it (and changes nothing)", async () => {
    const { server, service, port } = await startServer({ auth: await users() });
    const client = await LineClient.connect(port);
    client.write("AUTH alice alice secret\nHELLO mallory\nSEND bob hi\n");
    assert.deepEqual([await client.line(), await client.line()], ["OK", "OK"]);
    assert.match(await client.line(), /^OK /);
    assert.equal(service.calls[0]!.session.identity, "alice");
    client.close();
    await server.close();
  });

  test("binary: ACK, NACK, EXTEND and LIST of another user's mailbox are FORBIDDEN; HELLO keeps the user", async () => {
    const { server, service, port } = await startServer({ auth: await users() });
    const client = await BinaryClient.connect(port);
    assert.equal((await client.request({ op: "hello", name: "x", user: "bob", password: "hunter2" })).ok, true);
    for (const request of [
      { op: "ack", mailbox: "alice", ids: ["m1"] },
      { op: "nack", mailbox: "alice", ids: ["m1"] },
      { op: "extend", mailbox: "alice", ids: ["m1"], visibilityMs: 1000 },
      { op: "list", mailbox: "alice" },
      { op: "config", mailbox: "bob", settings: {} },
      { op: "cluster", action: "transfer", nodeId: 0 },
    ]) {
      const reply = await client.request(request);
      assert.deepEqual([reply.ok, reply.code], [false, "FORBIDDEN"], JSON.stringify(request));
    }
    assert.equal(service.calls.length, 0);
    const renamed = await client.request({ op: "hello", name: "mallory" });
    assert.deepEqual([renamed.ok, renamed.name], [true, "bob"]);
    await client.request({ op: "send", recipients: ["alice"], body: new Uint8Array([1]) });
    assert.equal(service.calls[0]!.session.identity, "bob");
    client.close();
    await server.close();
  });

  test("a connection that does not log in within loginTimeoutMs is closed; a logged-in one stays", async () => {
    const { server, port } = await startServer({ auth: await users(), limits: { loginTimeoutMs: 200 } });
    const idle = await LineClient.connect(port);
    const silent = await LineClient.connect(port); // not even a first byte
    const binary = await BinaryClient.connect(port);
    const member = await LineClient.connect(port);
    assert.equal(await member.request("AUTH bob hunter2"), "OK");
    assert.equal(await idle.request("PING"), "OK");
    assert.equal(await idle.line(), "ERR UNAUTHORIZED no login within 200 ms; closing");
    await idle.closed;
    await silent.closed;
    await binary.closed;
    assert.match(String(binary.received[0]?.message), /no login within 200 ms/);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(await member.request("PING"), "OK");
    member.close();
    await server.close();
  });

  test("logins beyond LOGINS_WAITING_MAX are refused at once; a login whose client left runs no scrypt", async () => {
    const auth = await users();
    const gone = new AbortController();
    gone.abort();
    const attempts = Array.from({ length: LOGINS_CONCURRENT_MAX + LOGINS_WAITING_MAX + 3 }, (_, i) =>
      auth.verify("bob", "hunter2", i === LOGINS_CONCURRENT_MAX ? gone.signal : undefined).then(
        (user) => user?.name ?? "none",
        (error: unknown) => (error instanceof LoginsOverloadedError ? "overloaded" : "other"),
      ),
    );
    const results = await Promise.all(attempts);
    assert.equal(results.filter((r) => r === "overloaded").length, 3);
    assert.equal(results[LOGINS_CONCURRENT_MAX], "none", "the waiting login of a client that left is not checked");
    assert.equal(results.filter((r) => r === "bob").length, LOGINS_CONCURRENT_MAX + LOGINS_WAITING_MAX - 1);
  });
});

describe("reloading the users file", () => {
  test("changed permissions apply to logged-in connections at once; a removed user or a changed password must log in again", async () => {
    const bobHash = await hashPassword("hunter2", COST); // the same stored hash across the reload: the same password
    const { server, service, port } = await startServer({ auth: Authenticator.fromJson({ users: [{ name: "bob", password: bobHash, send: ["*"], receive: ["bob"] }] }) });
    const bob = await LineClient.connect(port);
    assert.equal(await bob.request("AUTH bob hunter2"), "OK");
    assert.match(await bob.request("SEND alice before"), /^OK /);
    server.reloadUsers(
      Authenticator.fromJson({
        users: [
          { name: "bob", password: bobHash, send: ["bob"], receive: ["bob"] },
          { name: "carol", password: await hashPassword("new", COST), send: ["*"] },
        ],
      }),
    );
    assert.equal(await bob.request("SEND alice after"), "ERR FORBIDDEN user 'bob' may not send to 'alice'");
    const carol = await LineClient.connect(port);
    assert.equal(await carol.request("AUTH carol new"), "OK");
    assert.match(await carol.request("SEND bob hello"), /^OK /);
    const carolHash = await hashPassword("newer", COST);
    server.reloadUsers(Authenticator.fromJson({ users: [{ name: "carol", password: carolHash, send: ["*"] }] }));
    assert.equal(await bob.request("SEND bob gone"), "ERR UNAUTHORIZED user 'bob' is no longer in the users file; log in again");
    assert.equal(await carol.request("SEND bob stale"), "ERR UNAUTHORIZED the password of user 'carol' changed; log in again");
    assert.equal(await carol.request("AUTH carol new"), "ERR UNAUTHORIZED wrong user or password");
    assert.equal(await carol.request("AUTH carol newer"), "OK");
    assert.match(await carol.request("SEND bob fresh"), /^OK /);
    assert.equal(service.calls.length, 3);
    bob.close();
    carol.close();
    await server.close();
  });
});

describe("failed logins per client address", () => {
  test("beyond authFailuresPerAddressMax, an address is refused at once, even with the right password, until its window passes", async () => {
    const { server, port } = await startServer({ auth: await users(), limits: { authFailuresPerAddressMax: 2, authFailureWindowMs: 60_000 } });
    const first = await LineClient.connect(port);
    assert.equal(await first.request("AUTH bob guess1"), "ERR UNAUTHORIZED wrong user or password");
    assert.equal(await first.request("AUTH bob guess2"), "ERR UNAUTHORIZED wrong user or password");
    const second = await LineClient.connect(port); // a new connection from the same address
    assert.match(await second.request("AUTH bob hunter2"), /^ERR UNAUTHORIZED too many failed logins from 127\.0\.0\.1; try again in (59|60) s$/);
    first.close();
    second.close();
    await server.close();
  });

  test("the throttle counts per address within a window and forgets it after", () => {
    let nowMs = 0;
    const throttle = new LoginThrottle(2, 1000, () => nowMs);
    throttle.failed("a");
    assert.equal(throttle.waitMs("a"), 0);
    throttle.failed("a");
    assert.equal(throttle.waitMs("a"), 1000);
    assert.equal(throttle.waitMs("b"), 0, "another address is not affected");
    nowMs = 999;
    assert.equal(throttle.waitMs("a"), 1);
    nowMs = 1000;
    assert.equal(throttle.waitMs("a"), 0, "the window has passed");
    throttle.failed("a");
    assert.equal(throttle.waitMs("a"), 0, "a new window counts from one");
  });
});

describe("node proofs and secrets", () => {
  test("a forwarding proof passes once, within the window, with the cluster's secret only", () => {
    let nowMs = 1_000_000;
    const verifier = new ForwardProofVerifier("ferry", "a secret of 16+ chars", 60_000, () => nowMs);
    const proof = forwardProof("ferry", "a secret of 16+ chars", nowMs);
    assert.equal(verifier.verify(proof), true);
    assert.equal(verifier.verify(proof), false, "a replayed proof is refused");
    assert.equal(verifier.verify(forwardProof("ferry", "another secret....", nowMs)), false);
    assert.equal(verifier.verify(forwardProof("other-cluster", "a secret of 16+ chars", nowMs)), false);
    assert.equal(verifier.verify(forwardProof("ferry", "a secret of 16+ chars", nowMs - 61_000)), false, "too old");
    assert.equal(verifier.verify(forwardProof("ferry", "a secret of 16+ chars", nowMs + 61_000)), false, "too far ahead");
    nowMs += 30_000;
    assert.equal(verifier.verify(forwardProof("ferry", "a secret of 16+ chars", nowMs)), true);
    // Junk of every shape is refused without throwing (multi-byte characters once crashed the check).
    for (const junk of ["", "x", "é".repeat(64), "ü".repeat(111), `${nowMs}.${"0".repeat(32)}.${"é".repeat(64)}`, proof.toUpperCase()]) {
      assert.equal(verifier.verify(junk), false, JSON.stringify(junk));
    }
  });

  test("a users file needs a cluster secret of its own", async () => {
    const security = { auth: await users() };
    const config = (secret: string) => ({ ...NODE_DEFAULTS, secret }) as unknown as NodeConfig;
    assert.throws(() => requireSecretForUsers(config(NODE_DEFAULTS.secret), security), /--users needs a cluster secret of your own/);
    assert.throws(() => requireSecretForUsers(config("short"), security), /at least 16 characters/);
    assert.doesNotThrow(() => requireSecretForUsers(config("0123456789abcdef"), security));
    assert.doesNotThrow(() => requireSecretForUsers(config(NODE_DEFAULTS.secret), {}));
  });
});

describe("users file and permissions", () => {
  test("patterns: exact names, prefixes ending in *, and * for all", () => {
    const user = { name: "u", send: ["orders.*", "audit"], receive: ["*"], admin: false };
    assert.equal(authorizationProblem(user, { op: "send", recipients: ["orders.eu", "audit"], body: new Uint8Array() }), undefined);
    assert.match(authorizationProblem(user, { op: "send", recipients: ["orders.eu", "audits"], body: new Uint8Array() }) ?? "", /may not send to 'audits'/);
    assert.equal(authorizationProblem(user, { op: "list", mailbox: "x" }), undefined);
    assert.equal(authorizationProblem(user, { op: "status" }), undefined);
    assert.match(authorizationProblem(user, { op: "cluster", action: "transfer", nodeId: 0 }) ?? "", /needs "admin"/);
  });

  test("a bad users file is refused with what is wrong", async () => {
    const hash = await hashPassword("x", COST);
    const cases: Array<[unknown, RegExp]> = [
      [{}, /at least one user/],
      [{ users: [{ name: "bad name", password: hash }] }, /name must follow/],
      [{ users: [{ name: "a", password: "plain" }] }, /scrypt:N:r:p:salt:hash/],
      [{ users: [{ name: "a", password: hash, send: "*" }] }, /send must be a list/],
      [{ users: [{ name: "a", password: hash, receive: ["bad name*"] }] }, /receive\[0\]/],
      [{ users: [{ name: "a", password: hash, admin: "yes" }] }, /admin must be true or false/],
      [{ users: [{ name: "a", password: hash, role: "x" }] }, /unknown field 'role'/],
      [{ users: [{ name: "a", password: hash }, { name: "a", password: hash }] }, /appears twice/],
      [{ users: [{ name: "a", password: "scrypt:1048576:8:1:c2FsdHNhbHQ=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }] }, /power of two/],
    ];
    for (const [file, expected] of cases) assert.throws(() => Authenticator.fromJson(file), (error: unknown) => error instanceof UsersFileError && expected.test(error.message));
  });

  test("at most LOGINS_CONCURRENT_MAX logins run scrypt at once; the rest wait their turn and all are answered", async () => {
    const auth = await users();
    let peak = 0;
    const logins = Array.from({ length: 7 }, (_, i) => {
      const login = auth.verify(i % 2 === 0 ? "bob" : "alice", i % 2 === 0 ? "hunter2" : "wrong");
      peak = Math.max(peak, auth.loginsRunning);
      return login;
    });
    const sampler = setInterval(() => {
      peak = Math.max(peak, auth.loginsRunning);
    }, 1);
    const results = await Promise.all(logins);
    clearInterval(sampler);
    assert.equal(peak, LOGINS_CONCURRENT_MAX);
    assert.deepEqual(
      results.map((user) => user?.name),
      ["bob", undefined, "bob", undefined, "bob", undefined, "bob"],
    );
    assert.equal(auth.loginsRunning, 0);
  });

  test("a stored hash verifies only its own password", async () => {
    const auth = await users();
    assert.equal((await auth.verify("bob", "hunter2"))?.name, "bob");
    assert.equal(await auth.verify("bob", "hunter3"), undefined);
    assert.equal(await auth.verify("carol", "hunter2"), undefined);
    assert.notEqual(await hashPassword("same", COST), await hashPassword("same", COST), "salted");
  });
});
