// FileSystem on the real disk through node:fs/promises: every call runs on libuv's thread pool,
// so a slow disk never blocks the event loop. readSync is the one exception, used only for the
// cold path (entries evicted from the cache, read for a lagging follower).
import { constants, readSync } from "node:fs";
import { open, mkdir, readdir, rename, unlink, readFile } from "node:fs/promises";
import type { FileHandle as NodeFileHandle } from "node:fs/promises";
import { join } from "node:path";
import { StorageLockedError } from "./errors.js";
import { errorCode, type DirectoryLock, type FileHandle, type FileSystem, type OpenMode } from "./fs.js";

export const LOCK_FILE_NAME = "LOCK";

const OPEN_FLAGS: Record<OpenMode, number> = {
  read: constants.O_RDONLY,
  "read-write": constants.O_RDWR,
  "create-exclusive": constants.O_RDWR | constants.O_CREAT | constants.O_EXCL,
  "create-truncate": constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC,
};

class NodeFile implements FileHandle {
  constructor(
    readonly path: string,
    private readonly handle: NodeFileHandle,
    // A second descriptor of the same file, opened with O_DSYNC together with the first (never
    // later by path: WAL segments are renamed after they are opened), for writeDurable. Absent
    // for read-only files.
    private durable: NodeFileHandle | undefined,
  ) {}

  write(data: Uint8Array, position: number): Promise<void> {
    return writeAll(this.handle, data, position);
  }

  writeDurable(data: Uint8Array, position: number): Promise<void> {
    if (this.durable === undefined) return Promise.reject(new Error(`${this.path} was opened read-only`));
    return writeAll(this.durable, data, position);
  }

  async read(buffer: Uint8Array, position: number): Promise<number> {
    const { bytesRead } = await this.handle.read(buffer, 0, buffer.length, position);
    return bytesRead;
  }

  readSync(buffer: Uint8Array, position: number): number {
    let done = 0;
    while (done < buffer.length) {
      const count = readSync(this.handle.fd, buffer, done, buffer.length - done, position + done);
      if (count === 0) break;
      done += count;
    }
    return done;
  }

  datasync(): Promise<void> {
    return this.handle.datasync();
  }

  truncate(sizeBytes: number): Promise<void> {
    return this.handle.truncate(sizeBytes);
  }

  async size(): Promise<number> {
    return (await this.handle.stat()).size;
  }

  async close(): Promise<void> {
    const durable = this.durable;
    this.durable = undefined;
    try {
      if (durable !== undefined) await durable.close();
    } finally {
      await this.handle.close();
    }
  }
}

// Never a short write: loops until every byte is written (or throws).
async function writeAll(handle: NodeFileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

// Directories locked by this process: the LOCK file's pid cannot tell two opens in one process apart.
const lockedHere = new Set<string>();

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return errorCode(error) === "EPERM"; // exists, owned by someone else
  }
}

export class NodeFileSystem implements FileSystem {
  async open(path: string, mode: OpenMode): Promise<FileHandle> {
    const handle = await open(path, OPEN_FLAGS[mode], 0o644);
    if (mode === "read") return new NodeFile(path, handle, undefined);
    try {
      return new NodeFile(path, handle, await open(path, constants.O_WRONLY | constants.O_DSYNC));
    } catch (error) {
      await handle.close().catch(() => undefined);
      throw error;
    }
  }

  readdir(dir: string): Promise<string[]> {
    return readdir(dir);
  }

  async mkdir(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true });
  }

  rename(from: string, to: string): Promise<void> {
    return rename(from, to);
  }

  unlink(path: string): Promise<void> {
    return unlink(path);
  }

  async fsyncDir(dir: string): Promise<void> {
    const handle = await open(dir, constants.O_RDONLY);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  async exists(path: string): Promise<boolean> {
    try {
      await (await open(path, constants.O_RDONLY)).close();
      return true;
    } catch (error) {
      if (errorCode(error) === "ENOENT") return false;
      throw error;
    }
  }

  // LOCK is created with O_EXCL and holds our pid. A LOCK left by a dead process (kill -9, power
  // loss) is stale: it is removed and taken. A live pid that is not ours means another node runs here.
  async lock(dir: string): Promise<DirectoryLock> {
    const path = join(dir, LOCK_FILE_NAME);
    if (lockedHere.has(path)) {
      throw new StorageLockedError(`data directory ${dir} is already open in this process (pid ${process.pid})`);
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const handle = await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o644);
        try {
          await handle.write(`${process.pid}\n`);
          await handle.sync();
        } finally {
          await handle.close();
        }
        await this.fsyncDir(dir);
        lockedHere.add(path);
        return {
          release: async () => {
            lockedHere.delete(path);
            await unlink(path).catch(() => undefined);
          },
        };
      } catch (error) {
        if (errorCode(error) !== "EEXIST") throw error;
        const owner = Number.parseInt((await readFile(path, "utf8").catch(() => "")).trim(), 10);
        if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && processAlive(owner)) {
          throw new StorageLockedError(
            `data directory ${dir} is locked by running process ${owner} (${path}); ` +
              "two nodes must never share a data directory. Stop that process, or if you are sure it is not a Ferry node, delete the LOCK file.",
          );
        }
        // Stale: the owner is dead (or the file is empty from a crash while locking).
        await unlink(path).catch(() => undefined);
      }
    }
    throw new StorageLockedError(`could not take the lock ${path}: another process keeps recreating it`);
  }
}
