// The cluster commands: status (a table of nodes) and cluster add/remove/transfer (membership
// and leadership changes).
import { type Command, InvalidArgumentError } from "commander";
import type { ClusterAddresses } from "../client/index.js";
import type { NodeStatus, StatusReply } from "../protocol/api.js";
import { addClientOptions, type ClientFlags, parseNonNegativeInteger, print, printJson, withClient } from "./common.js";
import { table } from "./format.js";

interface AddFlags extends ClientFlags {
  peer?: string;
  client?: string;
}

export function registerAdminCommands(program: Command): void {
  addClientOptions(program.command("status").description("show every node: role, term, commit and applied index, lag, clock offset, health")).action(
    async (flags: ClientFlags) => {
      const status = await leaderStatus(flags);
      if (flags.json) printJson(status);
      else print(statusTable(status));
    },
  );

  const cluster = program.command("cluster").description("change membership or leadership");
  addClientOptions(
    cluster
      .command("add")
      .description("add a node: it joins as a learner, catches up, then becomes a voter")
      .argument("<id>", "new node id", parseNodeId)
      .requiredOption("--peer <address>", "the new node's peer (Raft) address, host:port")
      .requiredOption("--client <address>", "the new node's client address, host:port"),
  ).action(async (nodeId: number, flags: AddFlags) => {
    await runCluster("add", nodeId, { peerAddress: flags.peer!, clientAddress: flags.client! }, flags);
  });
  addClientOptions(cluster.command("remove").description("remove a node from the configuration").argument("<id>", "node id", parseNodeId)).action(
    async (nodeId: number, flags: ClientFlags) => {
      await runCluster("remove", nodeId, {}, flags);
    },
  );
  addClientOptions(
    cluster
      .command("transfer")
      .description("hand leadership to a node (0 or none: the most up-to-date voter)")
      .argument("[id]", "node id", parseNodeId, 0),
  ).action(async (nodeId: number, flags: ClientFlags) => {
    await runCluster("transfer", nodeId, {}, flags);
  });
}

// The leader's view is the complete one (replication progress of every node); a follower knows
// only itself. Ask whichever node answers first, then the leader it names; if the leader cannot
// be asked, show the first answer.
async function leaderStatus(flags: ClientFlags): Promise<StatusReply> {
  const first = await withClient(flags, (client) => client.status());
  const self = first.nodes.find((node) => node.id === first.self);
  const leader = first.nodes.find((node) => node.id === self?.leader && node.id !== first.self);
  if (leader === undefined || leader.address === "") return first;
  try {
    return await withClient(flags, (client) => client.status(), leader.address);
  } catch {
    return first;
  }
}

async function runCluster(action: "add" | "remove" | "transfer", nodeId: number, addresses: ClusterAddresses, flags: ClientFlags): Promise<void> {
  const reply = await withClient(flags, (client) => client.cluster(action, nodeId, addresses));
  if (flags.json) printJson({ message: reply.message });
  else print(reply.message);
}

function parseNodeId(value: string): number {
  try {
    return parseNonNegativeInteger(value);
  } catch {
    throw new InvalidArgumentError("expected a node id (an integer >= 0)");
  }
}

// Negative means unknown to the node that answered.
function count(value: number): string {
  return value < 0 ? "-" : String(value);
}

export function statusTable(status: StatusReply): string {
  const header = ["ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "CLOCK-OFFSET", "HEALTHY"];
  const rows = status.nodes.map((node: NodeStatus) => [
    `${node.id}${node.id === status.self ? "*" : ""}`,
    node.address,
    node.role,
    String(node.term),
    count(node.commit),
    count(node.applied),
    node.lag === undefined ? "-" : count(node.lag),
    node.clockOffsetMs === undefined ? "-" : `${node.clockOffsetMs.toFixed(1)} ms`,
    node.healthy ? "yes" : "NO",
  ]);
  return `${table(header, rows)}\n(* the node that answered)`;
}
