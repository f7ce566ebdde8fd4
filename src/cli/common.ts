// What every client command shares: the connection options (--seeds, --timeout, --name), --json,
// opening a client for one command and closing it after, number parsing, and turning errors into
// `error: <CODE> <message>` on stderr with the exit code of the table in docs/cli.md.
import { readFileSync } from "node:fs";
import type { ConnectionOptions as TlsConnectionOptions } from "node:tls";
import { type Command, InvalidArgumentError } from "commander";
import { FerryClient } from "../client/index.js";
import { type ErrorCode, FerryError } from "../protocol/errors.js";

export const SEEDS_DEFAULT = "127.0.0.1:12345,127.0.0.1:12346,127.0.0.1:12347";
export const CLI_TIMEOUT_MS_DEFAULT = 10_000;
// How long a command waits for a first connection: long enough to ride out a node restart,
// short enough that a stopped cluster is reported promptly.
export const CLI_CONNECT_WAIT_MS_DEFAULT = 3_000;

export interface ClientFlags {
  seeds?: string;
  timeout?: number;
  name?: string;
  user?: string;
  password?: string;
  json?: boolean;
  tls?: boolean;
  tlsCa?: string;
  tlsServername?: string;
}

// Exit codes: what a script can branch on. Keep in sync with docs/cli.md.
export const EXIT_OK = 0;
export const EXIT_INTERNAL = 1;
export const EXIT_USAGE = 2;
const EXIT_BY_CODE: Record<ErrorCode, number> = {
  INTERNAL: EXIT_INTERNAL,
  INVALID: EXIT_USAGE,
  TOO_LARGE: EXIT_USAGE,
  NOT_FOUND: 3,
  UNAUTHORIZED: 4,
  FORBIDDEN: 4,
  UNAVAILABLE: 5,
  NO_QUORUM: 5,
  NOT_LEADER: 5,
  UNHEALTHY: 5,
  SHUTTING_DOWN: 5,
  TIMEOUT: 6,
  OVERLOADED: 7,
  LIMIT: 7,
  CONFLICT: 7,
};

export function exitCodeOf(code: ErrorCode): number {
  return EXIT_BY_CODE[code];
}

export function addClientOptions(command: Command): Command {
  return command
    .option("--seeds <addresses>", `comma-separated host:port of cluster nodes (env FERRY_SEEDS; default ${SEEDS_DEFAULT})`)
    .option("--timeout <ms>", `per-request deadline including retries (default ${CLI_TIMEOUT_MS_DEFAULT})`, parsePositiveInteger)
    .option("--name <name>", "identity to send as (env FERRY_NAME; default anonymous)")
    .option("--user <name>", "log in as this user, for nodes started with --users (env FERRY_USER)")
    .option("--password <text>", "the user's password (env FERRY_PASSWORD, which other users of the machine cannot see in ps)")
    .option("--tls", "connect with TLS, trusting the system's CAs (env FERRY_TLS=1)")
    .option("--tls-ca <file>", "connect with TLS, trusting this PEM certificate (env FERRY_TLS_CA)")
    .option("--tls-servername <name>", "the host name the node's certificate is for, when seeds are IP addresses")
    .option("--json", "print machine-readable JSON on stdout");
}

export function seedsOf(flags: ClientFlags): string[] {
  const list = flags.seeds ?? process.env.FERRY_SEEDS ?? SEEDS_DEFAULT;
  return list
    .split(",")
    .map((seed) => seed.trim())
    .filter((seed) => seed.length > 0);
}

// Opens a client, runs `work`, closes the client whatever happens. `only` pins the client to one
// node (no leader discovery), for questions addressed to that node.
export async function withClient<T>(flags: ClientFlags, work: (client: FerryClient) => Promise<T>, only?: string): Promise<T> {
  const name = flags.name ?? process.env.FERRY_NAME;
  const user = flags.user ?? process.env.FERRY_USER;
  const password = flags.password ?? process.env.FERRY_PASSWORD;
  if (user !== undefined && user !== "" && (password === undefined || password === "")) {
    throw new FerryError("INVALID", "--user needs a password: --password or FERRY_PASSWORD");
  }
  const timeoutMs = flags.timeout ?? CLI_TIMEOUT_MS_DEFAULT;
  const tls = tlsOf(flags);
  const client = new FerryClient({
    seeds: only === undefined ? seedsOf(flags) : [only],
    timeoutMs,
    ...(only === undefined ? {} : { discoverLeader: false }),
    ...(name === undefined || name === "" ? {} : { name }),
    ...(user === undefined || user === "" ? {} : { user, password }),
    ...(tls === undefined ? {} : { tls }),
  });
  try {
    await client.ready({ timeoutMs: Math.min(timeoutMs, CLI_CONNECT_WAIT_MS_DEFAULT) });
    return await work(client);
  } finally {
    await client.close();
  }
}

function tlsOf(flags: ClientFlags): TlsConnectionOptions | undefined {
  const caFile = flags.tlsCa ?? process.env.FERRY_TLS_CA;
  const wanted = flags.tls === true || process.env.FERRY_TLS === "1" || caFile !== undefined || flags.tlsServername !== undefined;
  if (!wanted) return undefined;
  const options: TlsConnectionOptions = {};
  if (caFile !== undefined) {
    try {
      options.ca = readFileSync(caFile);
    } catch (error) {
      throw new FerryError("INVALID", `cannot read --tls-ca ${caFile}: ${(error as Error).message}`);
    }
  }
  if (flags.tlsServername !== undefined) options.servername = flags.tlsServername;
  return options;
}

export function parsePositiveInteger(value: string): number {
  const number = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(number) || number <= 0) throw new InvalidArgumentError("expected a positive integer");
  return number;
}

export function parseNonNegativeInteger(value: string): number {
  const number = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(number)) throw new InvalidArgumentError("expected an integer >= 0");
  return number;
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, (_key, field) => (typeof field === "bigint" ? field.toString() : field))}\n`);
}

export function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

// Prints the error the CLI way and sets the exit code; never throws.
export function reportError(error: unknown): void {
  if (error instanceof FerryError) {
    process.stderr.write(`error: ${error.code} ${error.message}\n`);
    process.exitCode = exitCodeOf(error.code);
    return;
  }
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`error: INTERNAL ${message}\n`);
  process.exitCode = EXIT_INTERNAL;
}
