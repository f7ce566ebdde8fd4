// Helpers shared by the end-to-end and chaos suites: running the `ferry` CLI as a child process,
// reading STATUS over the text protocol, waiting for a condition, draining a mailbox.
import { execFile } from "node:child_process";
import type { FerryClient } from "../../src/client/index.js";
import { sleep, textRequest } from "./harness.js";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

// Runs `ferry <args>` from source, as a user would run ./ferry.
export function ferry(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

export interface NodeLine {
  id: number;
  role: string;
  leader: number;
  term: number;
  commit: number;
  applied: number;
  healthy: boolean;
  self: boolean;
}

// STATUS of one node over the text protocol; undefined when it does not answer.
export async function statusOf(address: string, timeoutMs = 2_000): Promise<NodeLine[] | undefined> {
  const lines = await textRequest(address, "STATUS", timeoutMs).catch(() => undefined);
  if (!lines?.includes("END")) return undefined;
  return lines
    .filter((line) => line.startsWith("NODE "))
    .map((line) => {
      const field = (key: string) => new RegExp(`\\b${key}=(\\S+)`).exec(line)?.[1] ?? "";
      return {
        id: Number(line.split(" ")[1]),
        role: field("role"),
        leader: Number(field("leader") || 0),
        term: Number(field("term") || 0),
        commit: Number(field("commit") || 0),
        applied: Number(field("applied") || 0),
        healthy: field("healthy") === "true",
        self: line.endsWith(" self"),
      };
    });
}

export async function selfStatus(address: string): Promise<NodeLine | undefined> {
  return (await statusOf(address))?.find((node) => node.self);
}

// Polls `check` until it returns a value other than undefined/false, or throws with `describe()`.
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, describe: () => string = () => ""): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${describe()}`);
    await sleep(100);
  }
}

// Receives and acks until a RECEIVE comes back empty; returns the bodies in delivery order.
export async function drain(client: FerryClient, mailbox: string): Promise<{ ids: string[]; bodies: string[] }> {
  const ids: string[] = [];
  const bodies: string[] = [];
  for (;;) {
    const batch = await client.receive(mailbox, { max: 500 });
    if (batch.length === 0) return { ids, bodies };
    for (const message of batch) {
      ids.push(message.id);
      bodies.push(Buffer.from(message.body).toString());
    }
    await client.ack(
      mailbox,
      batch.map((m) => m.id),
    );
  }
}
