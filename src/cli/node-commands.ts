// The commands that run nodes: `ferry start` (one node), `ferry dev` (a local cluster), and
// `ferry hash-password` (a password's stored form for a node's users file).
import type { Command } from "commander";
import { registerDevCommand } from "./dev.js";
import { registerHashPasswordCommand } from "./hash-password.js";
import { registerStartCommand } from "./node-start.js";

export function registerNodeCommands(program: Command): void {
  registerStartCommand(program);
  registerDevCommand(program);
  registerHashPasswordCommand(program);
}
