// The node's snapshot thread (docs/node.md "Snapshots and catching up"): a worker thread
// (snapshot-worker.ts) that reads the state store and encodes the node snapshot, so that a
// snapshot costs the node's event loop only the file writes. Started with the node and kept; one
// snapshot at a time, one request at a time.
//
// The thread must read exactly the state after the snapshot's index. The node commits the store's
// open group, holds further commits (LmdbKv.holdCommits) and asks the thread to open its read
// transaction, which checks the applied index it finds; the hold ends with the answer. A commit
// that slips in anyway (a full group, a flush) makes the thread find another index: open() is
// false and the node tries again at its next apply.
import { Worker } from "node:worker_threads";
import type { LmdbKvOptions } from "../storage/kv-lmdb.js";
import type { MemberAddress } from "./config.js";

export interface SnapshotThreadData {
  store: LmdbKvOptions;
  nice: number; // the thread's CPU priority (setpriority), 0-19
  batchBytes: number; // snapshot bytes per answer to "next"
}

export type ToSnapshotThread =
  | { type: "open"; index: number; members: MemberAddress[]; lastTimestamp: bigint }
  | { type: "next" }
  | { type: "cancel" }
  | { type: "close" };

export type FromSnapshotThread =
  | { type: "ready"; niceApplied: boolean }
  | { type: "opened"; ok: boolean }
  | { type: "bytes"; bytes: Uint8Array; done: boolean }
  | { type: "failed"; message: string };

export class SnapshotThreadError extends Error {
  override name = "SnapshotThreadError";
}

type Answer = Exclude<FromSnapshotThread, { type: "ready" }>;

const CLOSE_GRACE_MS = 5_000; // for a starting thread to start, then for a closing one to exit

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms).unref());

export class SnapshotThread {
  private readonly worker: Worker;
  private readonly ready: Promise<boolean>;
  private waiting: { resolve: (answer: Answer) => void; reject: (error: Error) => void } | undefined;
  private failure: Error | undefined;
  private exited = false;
  private closing: Promise<void> | undefined;

  constructor(data: SnapshotThreadData) {
    this.worker = new Worker(workerEntry(), { workerData: data });
    this.worker.unref(); // an idle snapshot thread does not keep the process alive
    this.ready = new Promise<boolean>((resolve, reject) => {
      this.worker.on("message", (message: FromSnapshotThread) => {
        if (message.type === "ready") {
          resolve(message.niceApplied);
          return;
        }
        const waiting = this.waiting;
        this.waiting = undefined;
        if (message.type === "failed") waiting?.reject(new SnapshotThreadError(`snapshot thread: ${message.message}`));
        else waiting?.resolve(message);
      });
      const fail = (error: Error): void => {
        this.failure ??= error;
        reject(this.failure);
        this.waiting?.reject(this.failure);
        this.waiting = undefined;
      };
      this.worker.on("error", (error) => fail(new SnapshotThreadError(`snapshot thread failed: ${error.message}`)));
      this.worker.on("exit", (code) => {
        this.exited = true;
        fail(new SnapshotThreadError(`snapshot thread exited (code ${code})`));
      });
    });
    this.ready.catch(() => undefined); // observed through started() and the requests
  }

  // Resolves once the thread has opened the store: whether it runs at the requested priority.
  started(): Promise<boolean> {
    return this.ready;
  }

  // Whether the thread's read transaction holds exactly the state after `index`; it then encodes
  // the node snapshot of it (members, the broker's chunks, the HLC floor) as next() asks.
  async open(index: number, members: MemberAddress[], lastTimestamp: bigint): Promise<boolean> {
    const answer = await this.request({ type: "open", index, members, lastTimestamp });
    if (answer.type !== "opened") throw new SnapshotThreadError(`snapshot thread: '${answer.type}' for open`);
    return answer.ok;
  }

  // The next batch of the open snapshot's bytes; done with the last.
  async next(): Promise<{ bytes: Uint8Array; done: boolean }> {
    const answer = await this.request({ type: "next" });
    if (answer.type !== "bytes") throw new SnapshotThreadError(`snapshot thread: '${answer.type}' for next`);
    return { bytes: answer.bytes, done: answer.done };
  }

  // Drops the open snapshot (its read transaction), if any.
  cancel(): void {
    if (this.failure === undefined && this.closing === undefined) this.worker.postMessage({ type: "cancel" } satisfies ToSnapshotThread);
  }

  // Stops the thread: it closes its handle on the store and exits. A thread still starting is
  // let finish first: terminated while loading lmdb-js's native code, it aborted the whole process
  // ("FATAL ERROR: Error::ThrowAsJavaScriptException napi_throw") or never exited.
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.race([this.ready.catch(() => undefined), sleep(CLOSE_GRACE_MS)]);
      this.failure ??= new SnapshotThreadError("snapshot thread closed");
      this.waiting?.reject(this.failure);
      this.waiting = undefined;
      if (this.exited) return;
      const exited = new Promise<void>((resolve) => this.worker.once("exit", () => resolve()));
      this.worker.postMessage({ type: "close" } satisfies ToSnapshotThread);
      const late = setTimeout(() => void this.worker.terminate(), CLOSE_GRACE_MS);
      await exited;
      clearTimeout(late);
    })();
    return this.closing;
  }

  private request(message: ToSnapshotThread): Promise<Answer> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.waiting !== undefined) return Promise.reject(new SnapshotThreadError("snapshot thread: one request at a time"));
    return new Promise<Answer>((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.worker.postMessage(message);
    });
  }
}

// The compiled module next to this one (dist/node/snapshot-worker.js). Run from the TypeScript
// sources (tests, under tsx), the worker registers tsx's loader itself first: Node 20 does not
// carry the main thread's module hooks into a worker.
function workerEntry(): URL {
  if (!import.meta.url.endsWith(".ts")) return new URL("./snapshot-worker.js", import.meta.url);
  const source = new URL("./snapshot-worker.ts", import.meta.url).href;
  const tsx = import.meta.resolve("tsx/esm/api");
  const code = `const { register } = await import(${JSON.stringify(tsx)}); register(); await import(${JSON.stringify(source)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(code)}`);
}
