// The node's HTTP listener for operators: /metrics (Prometheus text), /health (200 when this node
// can serve: not fenced, a leader known; 503 otherwise, with the reason), /status (the same JSON
// as the STATUS request) and / (a status page that renders /status and refreshes itself).
//
// On a node with a users file (HttpOptions.authorize) every path but /health needs HTTP Basic
// credentials of an admin user (401 with a Basic challenge otherwise; 403 for a user without
// admin): Prometheus's basic_auth and browsers both send them. /health stays open for load
// balancers: whether the node can serve, and why not. A header that passed is remembered for
// CREDENTIALS_MEMORY_MS (forgetCredentials() after a reload), so a status page refreshing every
// second costs one scrypt a minute.
import { createHash } from "node:crypto";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { StatusReply } from "../protocol/api.js";

export const CREDENTIALS_MEMORY_MS = 60_000;
const CREDENTIALS_REMEMBERED_MAX = 64;

export interface HttpOptions {
  // The admin check of a user and password (undefined: no login needed).
  authorize?: (user: string, password: string) => Promise<"admin" | "not-admin" | "unknown">;
}

export interface HttpSource {
  metricsText(): Promise<string>;
  health(): { healthy: boolean; reason: string };
  status(): StatusReply;
}

export class HttpEndpoint {
  private constructor(
    private readonly server: Server,
    private readonly gate: BasicGate | undefined,
  ) {}

  // After the users file changed: every login is checked again.
  forgetCredentials(): void {
    this.gate?.forget();
  }

  static start(host: string, port: number, source: HttpSource, options: HttpOptions = {}): Promise<HttpEndpoint> {
    const gate = options.authorize === undefined ? undefined : new BasicGate(options.authorize);
    const server = createServer((request, response) => void route(request, response, source, gate));
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve(new HttpEndpoint(server, gate));
      });
    });
  }

  address(): { host: string; port: number } {
    const address = this.server.address() as { address: string; port: number };
    return { host: address.address, port: address.port };
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

// HTTP Basic against the users file, remembering headers that passed (by their SHA-256).
// One HTTP login is checked at a time (others get 503 at once), so operators' tools never hold
// more than one of the node's login slots that clients need.
class BasicGate {
  private readonly passed = new Map<string, number>(); // sha256(header) -> until (ms)
  private checking = false;

  constructor(private readonly authorize: NonNullable<HttpOptions["authorize"]>) {}

  forget(): void {
    this.passed.clear();
  }

  // undefined when the request may go on; else the status and message to answer with.
  async check(header: string | undefined): Promise<{ code: 401 | 403 | 503; message: string } | undefined> {
    if (header === undefined || !/^basic /i.test(header)) return { code: 401, message: "this node requires a login: HTTP Basic with an admin user\n" };
    const key = createHash("sha256").update(header).digest("hex");
    const nowMs = Date.now();
    const until = this.passed.get(key);
    if (until !== undefined && until > nowMs) return undefined;
    const decoded = Buffer.from(header.slice("Basic ".length).trim(), "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 1) return { code: 401, message: "wrong user or password\n" };
    if (this.checking) return { code: 503, message: "another login is being checked; retry\n" };
    this.checking = true;
    let verdict: Awaited<ReturnType<NonNullable<HttpOptions["authorize"]>>>;
    try {
      verdict = await this.authorize(decoded.slice(0, colon), decoded.slice(colon + 1));
    } catch {
      return { code: 503, message: "too many logins are being checked; retry\n" };
    } finally {
      this.checking = false;
    }
    if (verdict === "unknown") return { code: 401, message: "wrong user or password\n" };
    if (verdict === "not-admin") return { code: 403, message: "this needs a user with \"admin\": true\n" };
    if (this.passed.size >= CREDENTIALS_REMEMBERED_MAX) this.passed.clear();
    this.passed.set(key, nowMs + CREDENTIALS_MEMORY_MS);
    return undefined;
  }
}

async function route(request: IncomingMessage, response: ServerResponse, source: HttpSource, gate: BasicGate | undefined): Promise<void> {
  const path = (request.url ?? "/").split("?")[0];
  try {
    if (request.method !== "GET") return send(response, 405, "text/plain", "only GET\n");
    if (gate !== undefined && path !== "/health") {
      const refused = await gate.check(request.headers.authorization);
      if (refused !== undefined) {
        response.writeHead(refused.code, {
          "content-type": "text/plain",
          "cache-control": "no-store",
          ...(refused.code === 401 ? { "www-authenticate": 'Basic realm="ferry", charset="UTF-8"' } : {}),
          ...(refused.code === 503 ? { "retry-after": "1" } : {}),
        });
        response.end(refused.message);
        return;
      }
    }
    switch (path) {
      case "/metrics":
        return send(response, 200, "text/plain; version=0.0.4", await source.metricsText());
      case "/health": {
        const health = source.health();
        return send(response, health.healthy ? 200 : 503, "application/json", JSON.stringify(health) + "\n");
      }
      case "/status":
        return send(response, 200, "application/json", JSON.stringify(source.status(), null, 2) + "\n");
      case "/":
        return send(response, 200, "text/html; charset=utf-8", STATUS_PAGE);
      default:
        return send(response, 404, "text/plain", "not found: try /metrics, /health, /status or /\n");
    }
  } catch (error) {
    send(response, 500, "text/plain", `${(error as Error).message}\n`);
  }
}

function send(response: ServerResponse, code: number, type: string, body: string): void {
  response.writeHead(code, { "content-type": type, "cache-control": "no-store" });
  response.end(body);
}

const STATUS_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ferry status</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
.leader{font-weight:bold}.bad{color:#b00}</style></head>
<body><h1>Ferry cluster</h1><p id="note">loading…</p><table id="nodes"><thead><tr>
<th>node</th><th>address</th><th>role</th><th>term</th><th>commit</th><th>applied</th><th>lag</th><th>clock offset ms</th><th>healthy</th></tr></thead><tbody></tbody></table>
<script>
async function refresh() {
  try {
    const status = await (await fetch("/status")).json();
    const rows = status.nodes.map((n) => "<tr class='" + (n.role === "leader" ? "leader" : "") + "'><td>" + n.id + (n.id === status.self ? " (this node)" : "") +
      "</td><td>" + n.address + "</td><td>" + n.role + "</td><td>" + n.term + "</td><td>" + n.commit + "</td><td>" + n.applied +
      "</td><td>" + (n.lag ?? "") + "</td><td>" + (n.clockOffsetMs === undefined ? "" : Number(n.clockOffsetMs).toFixed(1)) +
      "</td><td class='" + (n.healthy ? "" : "bad") + "'>" + n.healthy + "</td></tr>");
    document.querySelector("#nodes tbody").innerHTML = rows.join("");
    document.getElementById("note").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) { document.getElementById("note").textContent = "cannot reach the node: " + error; }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
`;
