// The operator endpoint: metrics, health (200 or 503 with the reason), status JSON, status page.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { HttpEndpoint, type HttpSource } from "../../src/server/http.js";

let healthy = true;
const source: HttpSource = {
  metricsText: async () => "ferry_raft_term 7\n",
  health: () => (healthy ? { healthy: true, reason: "leader" } : { healthy: false, reason: "clock: offset 5000 ms" }),
  status: () => ({ ok: true, self: 1, nodes: [{ id: 1, address: "127.0.0.1:1", role: "leader", term: 7, leader: 1, commit: 3, applied: 3, healthy: true }] }),
};
let endpoint: HttpEndpoint;
let base: string;

before(async () => {
  endpoint = await HttpEndpoint.start("127.0.0.1", 0, source);
  base = `http://127.0.0.1:${endpoint.address().port}`;
});
after(() => endpoint.close());

test("/metrics serves the Prometheus text", async () => {
  const response = await fetch(`${base}/metrics`);
  assert.equal(response.status, 200);
  assert.equal(await response.text(), "ferry_raft_term 7\n");
});

test("/health is 200 when healthy and 503 with the reason when not", async () => {
  healthy = true;
  assert.equal((await fetch(`${base}/health`)).status, 200);
  healthy = false;
  const response = await fetch(`${base}/health`);
  assert.equal(response.status, 503);
  assert.match(await response.text(), /offset 5000 ms/);
});

test("/status is the STATUS reply as JSON; / is a page; unknown paths are 404", async () => {
  const status = (await (await fetch(`${base}/status`)).json()) as { nodes: Array<{ role: string }> };
  assert.equal(status.nodes[0]!.role, "leader");
  const page = await fetch(`${base}/`);
  assert.match(await page.text(), /<title>Ferry status<\/title>/);
  assert.equal((await fetch(`${base}/nope`)).status, 404);
});

test("with a users file every path but /health needs HTTP Basic of an admin; a header that passed is remembered", async () => {
  const checks: string[] = [];
  const authorize = async (user: string, password: string) => {
    checks.push(user);
    if (user === "ops" && password === "ops pw") return "admin" as const;
    if (user === "app" && password === "app pw") return "not-admin" as const;
    return "unknown" as const;
  };
  const secured = await HttpEndpoint.start("127.0.0.1", 0, source, { authorize });
  const url = `http://127.0.0.1:${secured.address().port}`;
  const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` });
  try {
    healthy = true;
    assert.equal((await fetch(`${url}/health`)).status, 200, "health stays open");
    const anonymous = await fetch(`${url}/metrics`);
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get("www-authenticate") ?? "", /^Basic realm="ferry"/);
    assert.equal((await fetch(`${url}/status`, { headers: basic("ops", "wrong") })).status, 401);
    assert.equal((await fetch(`${url}/status`, { headers: basic("app", "app pw") })).status, 403);
    const ok = await fetch(`${url}/metrics`, { headers: basic("ops", "ops pw") });
    assert.equal(ok.status, 200);
    assert.equal(await ok.text(), "ferry_raft_term 7\n");
    const before = checks.length;
    assert.equal((await fetch(`${url}/`, { headers: basic("ops", "ops pw") })).status, 200);
    assert.equal(checks.length, before, "the same header is not checked again within a minute");
    secured.forgetCredentials(); // a reloaded users file
    const lower = { authorization: basic("ops", "ops pw").authorization.replace("Basic", "basic") };
    assert.equal((await fetch(`${url}/metrics`, { headers: lower })).status, 200, "the scheme is case-insensitive");
    assert.equal(checks.length, before + 1, "checked again after forgetCredentials");
  } finally {
    await secured.close();
  }
});

test("one HTTP login is checked at a time; another meanwhile gets 503 with Retry-After", async () => {
  let release: () => void = () => {};
  const authorize = () => new Promise<"admin">((resolve) => (release = () => resolve("admin")));
  const secured = await HttpEndpoint.start("127.0.0.1", 0, source, { authorize });
  const url = `http://127.0.0.1:${secured.address().port}`;
  const header = (password: string) => ({ authorization: `Basic ${Buffer.from(`ops:${password}`).toString("base64")}` });
  try {
    const first = fetch(`${url}/status`, { headers: header("a") });
    await new Promise((resolve) => setTimeout(resolve, 50));
    const second = await fetch(`${url}/status`, { headers: header("b") });
    assert.equal(second.status, 503);
    assert.equal(second.headers.get("retry-after"), "1");
    release();
    assert.equal((await first).status, 200);
  } finally {
    await secured.close();
  }
});
