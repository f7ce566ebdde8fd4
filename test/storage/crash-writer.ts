// A child process for the real-process crash test: appends to the WAL in a data directory, as
// fast as it can with several persists in flight, and prints `synced <lastIndex> <term>` each
// time a persist resolves (that is, once it is durable). The test kills it with SIGKILL at a
// random instant and checks that everything reported synced is on disk and intact.
//
// Usage: node --import tsx test/storage/crash-writer.ts <dir> <term>
// Entry data is a pure function of (index, term) so the checker can verify every byte.
import type { Entry } from "../../src/raft/types.js";
import { DiskRaftStorage } from "../../src/storage/raft-storage.js";

export const CRASH_SEGMENT_SIZE_BYTES = 256 * 1024;
const IN_FLIGHT_MAX = 4;

export function crashEntryData(index: number, term: number): Uint8Array {
  const sizeBytes = 20 + ((index * 7919) % 400);
  const data = new Uint8Array(sizeBytes);
  const view = new DataView(data.buffer);
  view.setFloat64(0, index, true);
  view.setFloat64(8, term, true);
  for (let i = 16; i < sizeBytes; i++) data[i] = (index * 31 + term * 17 + i) & 0xff;
  return data;
}

async function main(): Promise<void> {
  const [dir, termText] = process.argv.slice(2);
  if (!dir || !termText) throw new Error("usage: crash-writer.ts <dir> <term>");
  const term = Number(termText);
  const storage = await DiskRaftStorage.open(dir, { segmentSizeBytes: CRASH_SEGMENT_SIZE_BYTES });
  let next = storage.lastIndex() + 1;
  let inFlight = 0;
  process.stdout.write(`ready ${storage.lastIndex()}\n`);
  const issue = (): void => {
    while (inFlight < IN_FLIGHT_MAX) {
      const count = 1 + ((next * 13) % 40);
      const made: Entry[] = [];
      for (let i = 0; i < count; i++) made.push({ index: next + i, term, type: "normal", data: crashEntryData(next + i, term) });
      next += count;
      const lastIndex = next - 1;
      inFlight++;
      storage.persist({ hardState: { term, vote: 1, commit: 0 }, entries: made }).then(
        () => {
          inFlight--;
          process.stdout.write(`synced ${lastIndex} ${term}\n`);
          issue();
        },
        (error: unknown) => {
          process.stderr.write(`persist failed: ${String(error)}\n`);
          process.exit(2);
        },
      );
    }
  };
  issue();
}

if (process.argv[1]?.endsWith("crash-writer.ts")) {
  main().catch((error: unknown) => {
    process.stderr.write(`crash-writer: ${String(error)}\n`);
    process.exit(1);
  });
}
