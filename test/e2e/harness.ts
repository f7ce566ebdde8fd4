// Real-process clusters for end-to-end tests: each node is a `ferry start` child process (run
// from source through tsx), on free loopback ports, with its data in a temporary directory.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, unlinkSync } from "node:fs";
import { createServer, connect as netConnect } from "node:net";
import { type ConnectionOptions as TlsConnectionOptions, connect as tlsConnect } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface NodeProcess {
  id: number;
  client: string;
  peer: string;
  http: string;
  dataDir: string;
  child?: ChildProcess;
  output: string[];
}

export interface ClusterOptions {
  nodes?: number;
  extraArgs?: string[];
  env?: Record<string, string>;
  // The peer address node `from` is given for node `to` (default: `to`'s own listener). The chaos
  // suite points it at a proxy per directed link so it can cut links.
  peerAddressFor?: (from: number, to: number) => string;
  // Extra environment for one node (e.g. FERRY_CLOCK_FILE).
  nodeEnv?: (id: number) => Record<string, string>;
  // The line that logs in before the harness's own STATUS requests (nodes started with --users),
  // e.g. "AUTH root r00t".
  login?: string;
  // The nodes serve TLS (--tls-cert): the harness's STATUS requests connect with these options.
  tls?: TlsConnectionOptions;
}

// A port no one listens on now, for a node to bind a moment later. Chosen at random below the
// kernel's ephemeral range (32768-60999 by default), not with listen(0): a port from that range can
// be taken meanwhile as the local end of some test's outgoing connection, which then failed a
// node's start with EADDRINUSE (chaos seed 896948362). Tested by binding it.
const PORT_MIN = 10_240;
const PORT_MAX = 32_767;
// Test files run in parallel processes, and two of them could pick the same free port before
// either bound it (a node of one then failed to start with EADDRINUSE: seen in session 20's run).
// So each pick is also claimed, across processes, by creating a file named after it (O_EXCL);
// claims older than PORT_CLAIM_TTL_MS are from earlier runs and are taken over.
const PORT_CLAIMS_DIR = join(tmpdir(), "ferry-test-port-claims");
const PORT_CLAIM_TTL_MS = 15 * 60 * 1000;

export async function freePort(): Promise<number> {
  for (;;) {
    const port = PORT_MIN + Math.floor(Math.random() * (PORT_MAX - PORT_MIN + 1));
    if (claimPort(port) && (await canListen(port))) return port;
  }
}

// Whether this process may use `port`: no other test process claimed it in the last
// PORT_CLAIM_TTL_MS.
export function claimPort(port: number, nowMs: number = Date.now()): boolean {
  mkdirSync(PORT_CLAIMS_DIR, { recursive: true });
  const path = join(PORT_CLAIMS_DIR, String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      closeSync(openSync(path, "wx"));
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    try {
      if (nowMs - statSync(path).mtimeMs < PORT_CLAIM_TTL_MS) return false;
      unlinkSync(path); // a stale claim; another process may race us to it: then one wx wins
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
  }
  return false;
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

export class TestCluster {
  readonly nodes = new Map<number, NodeProcess>();
  readonly root = mkdtempSync(join(tmpdir(), "ferry-e2e-"));
  private members = "";
  private initialIds: number[] = [];

  constructor(private readonly options: ClusterOptions = {}) {}

  async start(): Promise<this> {
    const count = this.options.nodes ?? 3;
    for (let id = 1; id <= count; id++) await this.define(id);
    this.members = this.memberList();
    this.initialIds = [...this.nodes.keys()];
    for (const id of this.nodes.keys()) this.spawn(id);
    await this.waitForLeader();
    await this.waitAllKnowLeader();
    return this;
  }

  async define(id: number): Promise<NodeProcess> {
    const node: NodeProcess = {
      id,
      client: `127.0.0.1:${await freePort()}`,
      peer: `127.0.0.1:${await freePort()}`,
      http: `127.0.0.1:${await freePort()}`,
      dataDir: join(this.root, `node${id}`),
      output: [],
    };
    this.nodes.set(id, node);
    return node;
  }

  memberList(ids: number[] = [...this.nodes.keys()], from?: number): string {
    const peerOf = (id: number) => (from !== undefined && id !== from && this.options.peerAddressFor ? this.options.peerAddressFor(from, id) : this.nodes.get(id)!.peer);
    return ids.map((id) => `${id}=${peerOf(id)}/${this.nodes.get(id)!.client}`).join(",");
  }

  spawn(id: number, extra: string[] = []): NodeProcess {
    const node = this.nodes.get(id)!;
    const members = this.options.peerAddressFor && this.initialIds.length > 0 ? this.memberList(this.initialIds, id) : this.members || this.memberList();
    const args = ["--import", "tsx", "src/cli/main.ts", "start", "--id", String(id), "--data", node.dataDir, "--client", node.client, "--peer", node.peer, "--http", node.http, "--members", members, ...(this.options.extraArgs ?? []), ...extra];
    const env = { ...process.env, ...this.options.env, ...this.options.nodeEnv?.(id) };
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env });
    node.child = child;
    const keep = (chunk: Buffer) => {
      node.output.push(chunk.toString());
      if (node.output.length > 400) node.output.splice(0, 200);
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    child.on("exit", () => {
      if (node.child === child) node.child = undefined;
    });
    return node;
  }

  seeds(): string[] {
    return [...this.nodes.values()].map((n) => n.client);
  }

  kill(id: number, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const child = this.nodes.get(id)?.child;
    if (!child) return Promise.resolve();
    return new Promise((resolve) => {
      child.once("exit", () => resolve());
      child.kill(signal);
    });
  }

  wipe(id: number): void {
    rmSync(this.nodes.get(id)!.dataDir, { recursive: true, force: true });
  }

  // The id of the node every live node agrees leads, once there is one.
  async waitForLeader(timeoutMs = 20_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      for (const node of this.nodes.values()) {
        if (!node.child) continue;
        const lines = await textRequest(node.client, "STATUS", 5_000, this.options.login, this.options.tls).catch(() => [] as string[]);
        const leader = lines.map((l) => /^NODE (\d+) .*\brole=leader\b/.exec(l)?.[1]).find(Boolean);
        if (leader) return Number(leader);
      }
      await sleep(100);
    }
    throw new Error(`no leader within ${timeoutMs} ms\n${this.dump()}`);
  }

  // Every running node answers STATUS and names the same leader.
  async waitAllKnowLeader(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const leaders = await Promise.all(
        [...this.nodes.values()].filter((n) => n.child).map(async (node) => {
          const lines = await textRequest(node.client, "STATUS", 5_000, this.options.login, this.options.tls).catch(() => [] as string[]);
          const self = lines.find((l) => / self$/.test(l));
          return self ? /\bleader=(\d+)/.exec(self)?.[1] : undefined;
        }),
      );
      if (leaders.every((l) => l !== undefined && l !== "0" && l === leaders[0])) return;
      await sleep(100);
    }
    throw new Error(`the nodes did not agree on a leader within ${timeoutMs} ms\n${this.dump()}`);
  }

  dump(): string {
    return [...this.nodes.values()].map((n) => `--- node ${n.id}\n${n.output.join("").slice(-3000)}`).join("\n");
  }

  async stop(): Promise<void> {
    await Promise.all([...this.nodes.keys()].map((id) => this.kill(id, "SIGKILL")));
    rmSync(this.root, { recursive: true, force: true });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Sends one text-protocol line and collects the reply: one line, or lines up to END. With
// `login`, that line goes first and its own reply ("OK") is dropped.
export function textRequest(address: string, line: string, timeoutMs = 5_000, login?: string, tls?: TlsConnectionOptions): Promise<string[]> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  return new Promise((resolve, reject) => {
    const socket = tls === undefined ? netConnect({ host, port }) : tlsConnect({ ...tls, host, port });
    let buffered = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no reply to '${line}' from ${address}`));
    }, timeoutMs);
    socket.on(tls === undefined ? "connect" : "secureConnect", () => socket.write(login === undefined ? `${line}\n` : `${login}\n${line}\n`));
    socket.on("data", (chunk) => {
      buffered += chunk.toString();
      const lines = buffered
        .split("\n")
        .slice(0, -1)
        .map((l) => l.replace(/\r$/, ""))
        .slice(login === undefined ? 0 : 1);
      const first = lines[0];
      if (first === undefined) return;
      const multi = /^(MSG|ITEM|END|NODE|STATUS|\S+=)/.test(first) || lines.some((l) => l === "END");
      if (!multi || lines.includes("END") || lines.some((l) => l.startsWith("END"))) {
        clearTimeout(timer);
        socket.end();
        resolve(lines);
      }
    });
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}
