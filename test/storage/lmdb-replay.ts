// Child process of lmdb-freelist.test.ts (a failure may be a segfault): replays an LMDB op log
// through LmdbKv, one transaction and one commit per recorded group, and exits 0, or 1 with the
// error on stderr.
//   node --import tsx test/storage/lmdb-replay.ts <dir> <oplog.gz> [freePagesRetained]
// The op log (recorded from Ferry's broker replaying a benchmark cluster's WAL, values zeroed):
// records of u8 op (1 put, 2 put if absent, 3 delete, 4 commit), u32le key length, u32le value
// length, key bytes, value bytes.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { LmdbKv } from "../../src/storage/kv-lmdb.js";

const OP_PUT = 1;
const OP_PUT_IF_ABSENT = 2;
const OP_DELETE = 3;
const OP_COMMIT = 4;

const [dir, file, retained] = process.argv.slice(2);
const log = gunzipSync(readFileSync(file!));
const kv = new LmdbKv({
  path: join(dir!, "state"),
  mapSizeBytes: 1024 * 1024 * 1024,
  groupTransactionsMax: Number.MAX_SAFE_INTEGER,
  commitIntervalMs: 3_600_000, // commits only where the log says
  ...(retained === undefined ? {} : { freePagesRetained: Number(retained) }),
});
type Op = [number, string, Uint8Array];
let group: Op[] = [];
let commits = 0;
const applyGroup = (ops: Op[]) => {
  kv.transaction(() => {
    for (const [op, key, value] of ops) {
      if (op === OP_PUT) kv.put(key, value);
      else if (op === OP_PUT_IF_ABSENT) kv.putIfAbsent(key, value);
      else if (op === OP_DELETE) kv.delete(key);
      else throw new Error(`op ${op} is not known`);
    }
  });
  kv.commit();
  commits++;
};
try {
  for (let at = 0; at < log.length; ) {
    const op = log[at]!;
    const keyLength = log.readUInt32LE(at + 1);
    const valueLength = log.readUInt32LE(at + 5);
    at += 9;
    const key = log.toString("latin1", at, at + keyLength);
    at += keyLength;
    const value = log.subarray(at, at + valueLength);
    at += valueLength;
    if (op === OP_COMMIT) {
      applyGroup(group);
      group = [];
    } else group.push([op, key, value]);
  }
  if (group.length > 0) applyGroup(group);
  await kv.close();
  process.stdout.write(`${commits} commits\n`);
} catch (error) {
  process.stderr.write(`commit ${commits + 1}: ${(error as Error).message}\n`);
  process.exitCode = 1; // not process.exit(): that may cut the write above short
}
