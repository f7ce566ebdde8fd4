// `ferry dev`: a local cluster of separate node processes on this machine (client ports
// 12345.., peer ports 22345.., data under ./data/node<N>). Prints how to connect; Ctrl-C (or
// SIGTERM) stops every node gracefully and waits for them.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { NODE_FLAGS_DEFAULT } from "./node-flags.js";

interface DevFlags {
  nodes: string;
  clientPort: string;
  peerPort: string;
  data: string;
  host: string;
  fsync?: string;
  users?: string;
  nodeArgs?: string;
}

export function registerDevCommand(program: Command): void {
  program
    .command("dev")
    .description("run a local cluster (3 nodes by default) as separate processes")
    .option("--nodes <n>", "number of nodes (1-7)", "3")
    .option("--client-port <port>", "first client port", "12345")
    .option("--peer-port <port>", "first peer port", "22345")
    .option("--data <dir>", "data directory (one folder per node inside)", "./data")
    .option("--host <host>", "listen host", "127.0.0.1")
    .option("--fsync <policy>", "always | never | interval:<ms>")
    .option("--users <file>", "every node requires a login from this users file (see `ferry start --users`)")
    .option("--node-args <flags>", "extra Node.js flags for every node process, space-separated (e.g. \"--cpu-prof --cpu-prof-dir=/tmp/prof\")")
    .action((flags: DevFlags) => runDev(flags));
}

function runDev(flags: DevFlags): void {
  const count = Number(flags.nodes);
  if (!Number.isInteger(count) || count < 1 || count > 7) {
    console.error("ferry dev: --nodes must be 1-7");
    process.exit(2);
  }
  const clientPort = Number(flags.clientPort);
  const peerPort = Number(flags.peerPort);
  const ids = Array.from({ length: count }, (_, i) => i + 1);
  const members = ids.map((id) => `${id}=${flags.host}:${peerPort + id - 1}/${flags.host}:${clientPort + id - 1}`).join(",");
  const cli = fileURLToPath(new URL("../../bin/ferry.js", import.meta.url));
  const children = new Map<number, ChildProcess>();
  // A secured dev cluster gets a secret of its own (a users file needs one): random per run.
  const secret = randomBytes(24).toString("hex");
  for (const id of ids) {
    const dataDir = `${flags.data}/node${id}`;
    mkdirSync(dataDir, { recursive: true });
    const args = [cli, "start", "--id", String(id), "--data", dataDir, "--client", `${flags.host}:${clientPort + id - 1}`, "--peer", `${flags.host}:${peerPort + id - 1}`, "--members", members];
    if (flags.fsync) args.push("--fsync", flags.fsync);
    if (flags.users) args.push("--users", flags.users, "--secret", secret);
    args.push("--http", `${flags.host}:${clientPort + 1000 + id - 1}`);
    const nodeArgs = flags.nodeArgs === undefined ? [] : flags.nodeArgs.split(" ").filter((arg) => arg !== "");
    const child = spawn(process.execPath, [...NODE_FLAGS_DEFAULT, ...nodeArgs, ...args], { stdio: ["ignore", "inherit", "inherit"] });
    children.set(id, child);
    child.on("exit", (code, signal) => {
      children.delete(id);
      if (!stopping) console.error(`ferry dev: node ${id} exited (${signal ?? `code ${code}`})`);
      if (children.size === 0) process.exit(stopping ? 0 : 1);
    });
  }
  const seeds = ids.map((id) => `${flags.host}:${clientPort + id - 1}`).join(",");
  console.log(`Ferry: ${count} nodes starting; data under ${flags.data}/`);
  console.log(`  clients:  ${seeds}`);
  console.log(`  try:      ./ferry send bob "hi"   then   ./ferry receive bob`);
  console.log(`  or:       nc ${flags.host} ${clientPort}   and type   SEND bob hello`);
  console.log(`  status:   ./ferry status   or   http://${flags.host}:${clientPort + 1000}/  (metrics at /metrics, health at /health)`);
  if (flags.users) console.log(`  login:    users from ${flags.users}: ./ferry <command> --user <name> with FERRY_PASSWORD, or AUTH <user> <password> in nc`);
  console.log("  Ctrl-C stops all nodes.");
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    console.log("ferry dev: stopping all nodes...");
    for (const child of children.values()) child.kill("SIGTERM");
    setTimeout(() => {
      for (const child of children.values()) child.kill("SIGKILL");
    }, 10_000).unref();
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
