// Three FerryNodes in this process on loopback ports, with short ticks, for tests that reach into
// a node (its broker, storage or transport) while a real cluster runs around it.
import { join } from "node:path";
import { type MemberAddress, NODE_DEFAULTS, type NodeConfig } from "../../src/node/config.js";
import { FerryNode } from "../../src/node/node.js";
import { freePort } from "../e2e/harness.js";

// Starts the nodes one by one into `nodes`, so each is there to stop even if a later one fails.
// Returns the members (ids and addresses).
export async function startInProcessCluster(root: string, nodes: FerryNode[], overrides: Partial<NodeConfig> = {}): Promise<MemberAddress[]> {
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
      ...overrides,
    };
    nodes.push(await FerryNode.start(config));
  }
  return members;
}
