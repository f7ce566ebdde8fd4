// Loads the peers' npm clients (nats, amqplib) from bench/.peer-clients, where
// bench/peers/install.sh puts them, so they never become dependencies of Ferry. The import is
// dynamic, so type checking and Ferry's own install work without them.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const BENCH_DIR = dirname(dirname(fileURLToPath(import.meta.url)));
export const PEER_CLIENTS_DIR = join(BENCH_DIR, ".peer-clients");
export const PEERS_SCRIPTS_DIR = join(BENCH_DIR, "peers");

export function peerClientInstalled(name: string): boolean {
  return existsSync(join(PEER_CLIENTS_DIR, "node_modules", name, "package.json"));
}

export function peerClientVersion(name: string): string {
  const require = createRequire(join(PEER_CLIENTS_DIR, "package.json"));
  return (require(`${name}/package.json`) as { version: string }).version;
}

export async function importPeerClient<T>(name: string): Promise<T> {
  if (!peerClientInstalled(name)) {
    throw new Error(`the ${name} client is not installed: run bench/peers/install.sh`);
  }
  const require = createRequire(join(PEER_CLIENTS_DIR, "package.json"));
  const loaded = (await import(pathToFileURL(require.resolve(name)).href)) as { default?: T } & T;
  return (loaded.default ?? loaded) as T;
}
