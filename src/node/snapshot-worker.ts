// The snapshot thread itself (a worker thread; the node's side is snapshot-thread.ts). It reads
// the state store through lmdb-js's handle on the same LMDB environment and encodes the node
// snapshot, a batch of bytes per request, at the CPU priority it is given: the reading and
// encoding (about a second of CPU for 70 MB of state here) no longer run between the node's
// requests on its event loop, and at nice 19 the kernel gives this thread only the CPU the node's
// main thread and the other processes leave.
import { readlinkSync } from "node:fs";
import { setPriority } from "node:os";
import { parentPort, workerData } from "node:worker_threads";
import { snapshotOfView } from "../broker/broker.js";
import type { KvReadView } from "../broker/kv.js";
import { LmdbReader } from "../storage/kv-lmdb.js";
import { nodeSnapshotParts } from "./snapshot-codec.js";
import type { FromSnapshotThread, SnapshotThreadData, ToSnapshotThread } from "./snapshot-thread.js";

const port = parentPort;
if (port === null) throw new Error("snapshot-worker.ts runs as a worker thread");
const data = workerData as SnapshotThreadData;
const post = (message: FromSnapshotThread, transfer?: ArrayBuffer[]): void => port.postMessage(message, transfer);

let niceApplied = false;
try {
  // setpriority(2) takes a thread id for a pid on Linux: this thread's id, as /proc names it.
  const threadId = Number(readlinkSync("/proc/thread-self").split("/").pop());
  if (Number.isSafeInteger(threadId) && threadId > 0) {
    setPriority(threadId, data.nice);
    niceApplied = true;
  }
} catch {
  // Not Linux, or not allowed: the thread runs at the node's own priority.
}

const reader = new LmdbReader(data.store);
let parts: Iterator<Uint8Array> | undefined;
let view: KvReadView | undefined; // the open snapshot's read transaction

// Releases the view itself: closing the generators would not, before the first next() has
// started them (an open, then a cancel when the node could not create the snapshot's file), and
// a read transaction left open keeps LMDB from reusing any page freed after it.
const cancel = (): void => {
  parts = undefined;
  view?.release();
  view = undefined;
};

port.on("message", (message: ToSnapshotThread) => {
  try {
    if (message.type === "open") {
      cancel();
      const opened = reader.readView();
      const chunks = snapshotOfView(opened, message.index); // releases the view when it says no
      if (chunks !== undefined) {
        view = opened;
        parts = nodeSnapshotParts(message.members, chunks, message.lastTimestamp)[Symbol.iterator]();
      }
      post({ type: "opened", ok: chunks !== undefined });
    } else if (message.type === "next") {
      if (parts === undefined) throw new Error("no snapshot is open");
      const batch: Uint8Array[] = [];
      let bytes = 0;
      let done = false;
      while (bytes < data.batchBytes) {
        const next = parts.next();
        if (next.done === true) {
          done = true;
          cancel(); // read through: the generator released the view already
          break;
        }
        batch.push(next.value);
        bytes += next.value.length;
      }
      // A buffer of its own (never a slice of Node's pool): it is transferred, not copied.
      const out = new Uint8Array(bytes);
      let at = 0;
      for (const piece of batch) {
        out.set(piece, at);
        at += piece.length;
      }
      post({ type: "bytes", bytes: out, done }, [out.buffer as ArrayBuffer]);
    } else if (message.type === "cancel") {
      cancel();
    } else {
      // With its handle closed and its port too, nothing keeps the thread: it exits.
      cancel();
      void reader.close().finally(() => port.close());
    }
  } catch (error) {
    cancel();
    post({ type: "failed", message: error instanceof Error ? error.message : String(error) });
  }
});

post({ type: "ready", niceApplied });
