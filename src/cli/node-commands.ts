// Registration point for the commands that run nodes: `ferry start` (one node) and `ferry dev`
// (a local 3-node cluster). The lead adds them here; main.ts already calls this function.
import type { Command } from "commander";

export function registerNodeCommands(_program: Command): void {
  // Intentionally empty until the node commands land.
}
