// Three FerryNodes in this process on loopback ports, with short ticks, for tests that reach into
// a node (its broker, storage or transport) while a real cluster runs around it.
import { join } from "node:path";
import { type MemberAddress, NODE_DEFAULTS, type NodeConfig } from "../../src/node/config.js";
import { FerryNode, type NodeDependencies } from "../../src/node/node.js";
import { freePort } from "../e2e/harness.js";

// Starts the nodes one by one into `nodes`, so each is there to stop even if a later one fails.
// Returns the members (ids and addresses). `overrides` may differ per node (a function of its id),
// and so may its `dependencies` (a logger, say).
export async function startInProcessCluster(
  root: string,
  nodes: FerryNode[],
  overrides: Partial<NodeConfig> | ((id: number) => Partial<NodeConfig>) = {},
  dependencies: (id: number) => NodeDependencies = () => ({}),
): Promise<MemberAddress[]> {
  const members: MemberAddress[] = [];
  for (let id = 1; id <= 3; id++) members.push({ id, peer: `127.0.0.1:${await freePort()}`, client: `127.0.0.1:${await freePort()}` });
  for (const member of members) {
    const config: NodeConfig = {
      ...NODE_DEFAULTS,
      id: member.id,
      dataDir: join(root, `node${member.id}`),
      clientListen: member.client,
      peerListen: member.peer,
      members,
      tickMs: 20,
      electionTicks: 10,
      heartbeatTicks: 2,
      ...(typeof overrides === "function" ? overrides(member.id) : overrides),
    };
    nodes.push(await FerryNode.start(config, dependencies(member.id)));
  }
  return members;
}
