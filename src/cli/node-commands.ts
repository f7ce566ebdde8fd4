// The commands that run nodes: `ferry start` (one node) and `ferry dev` (a local cluster).
import type { Command } from "commander";
import { registerDevCommand } from "./dev.js";
import { registerStartCommand } from "./node-start.js";

export function registerNodeCommands(program: Command): void {
  registerStartCommand(program);
  registerDevCommand(program);
}
