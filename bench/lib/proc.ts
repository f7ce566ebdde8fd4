// What the benchmark reads from Linux about the server processes: CPU time, peak memory, and
// which process listens on a port (how we find a node's pid whatever started it).
import { execFile } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);
const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ: 100 on every Linux this runs on

// User + system CPU seconds the process has used so far (NaN once it is gone).
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return Number.NaN;
  }
}

// Peak resident set size (VmHWM) in bytes (NaN once the process is gone).
export function peakRssBytes(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const match = /^VmHWM:\s+(\d+) kB/m.exec(status);
    return match ? Number(match[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// The pid of the process listening on 127.0.0.1:<port> (TCP), or undefined.
export function pidListeningOn(port: number): number | undefined {
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const columns = line.trim().split(/\s+/);
      const local = columns[1];
      const LISTEN = "0A";
      if (local === undefined || columns[3] !== LISTEN) continue;
      if (Number.parseInt(local.split(":")[1]!, 16) === port) inodes.add(columns[9]!);
    }
  }
  if (inodes.size === 0) return undefined;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let descriptors: string[];
    try {
      descriptors = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue;
    }
    for (const descriptor of descriptors) {
      try {
        const target = readlinkSync(`/proc/${entry}/fd/${descriptor}`);
        const match = /^socket:\[(\d+)\]$/.exec(target);
        if (match && inodes.has(match[1]!)) return Number(entry);
      } catch {
        // the descriptor closed while we looked
      }
    }
  }
  return undefined;
}

// Runs a command to completion and returns its stdout; rejects with its stderr on failure.
export async function run(command: string, args: string[], options: { cwd?: string; timeoutMs?: number } = {}): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, {
      cwd: options.cwd,
      timeout: options.timeoutMs ?? 120_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout;
  } catch (error) {
    // Some tools (tsc) report on stdout; keep the end of whichever says something.
    const failure = error as { stderr?: string; stdout?: string; message: string };
    const said = (failure.stderr?.trim() || failure.stdout?.trim() || failure.message).slice(-2000);
    throw new Error(`${command} ${args.join(" ")} failed: ${said}`);
  }
}

export function sleep(durationMs: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, durationMs));
}

// Rejects with a timeout error when `promise` takes longer than `timeoutMs`.
export function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const PORTS_FREE_GRACE_MS = 10_000;

// Fails with a clear message when something still listens on one of the ports a cluster needs
// after graceMs (typically a cluster left over from an interrupted run). It waits first: a
// cluster stopped a moment ago (SIGTERM, then a graceful shutdown) holds its ports for a second
// or two, and refusing at once cost a whole benchmark round.
export async function assertPortsFree(ports: number[], graceMs = PORTS_FREE_GRACE_MS): Promise<void> {
  const deadline = Date.now() + graceMs;
  for (const port of ports) {
    for (;;) {
      const pid = pidListeningOn(port);
      if (pid === undefined) break;
      if (Date.now() >= deadline) throw new Error(`port 127.0.0.1:${port} is still in use by pid ${pid} after ${graceMs} ms; stop that process first`);
      await sleep(200);
    }
  }
}
