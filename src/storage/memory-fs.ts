// An in-memory FileSystem for the simulator and tests, with the failure model of a real disk:
// writes live in a volatile "page cache" until datasync(); directory entries (create, rename,
// unlink) until fsyncDir(). crash() throws the volatile state away, and can tear the last
// unsynced write (keep a prefix of it) or flip one bit in it. A capacity limit makes writes that
// grow the total past it fail with ENOSPC, like a full disk.
import { StorageLockedError } from "./errors.js";
import { fsError, type DirectoryLock, type FileHandle, type FileSystem, type OpenMode } from "./fs.js";

type Operation = { kind: "write"; position: number; data: Uint8Array } | { kind: "truncate"; sizeBytes: number };

class Inode {
  data: Uint8Array = new Uint8Array(0);
  sizeBytes = 0;
  durable: Uint8Array = new Uint8Array(0); // content as of the last datasync (a buffer with spare room)
  durableSizeBytes = 0;
  unsynced: Operation[] = [];

  applyDurably(operations: Operation[]): void {
    for (const operation of operations) {
      if (operation.kind === "truncate") {
        this.durable = ensureCapacity(this.durable, operation.sizeBytes);
        this.durable.fill(0, Math.min(operation.sizeBytes, this.durableSizeBytes));
        this.durableSizeBytes = operation.sizeBytes;
      } else {
        const end = operation.position + operation.data.length;
        this.durable = ensureCapacity(this.durable, end);
        this.durable.set(operation.data, operation.position);
        this.durableSizeBytes = Math.max(this.durableSizeBytes, end);
      }
    }
  }

  revertToDurable(): void {
    this.unsynced = [];
    this.data = this.durable.slice(0, this.durableSizeBytes);
    this.sizeBytes = this.durableSizeBytes;
  }
}

function ensureCapacity(buffer: Uint8Array, sizeBytes: number): Uint8Array {
  if (buffer.length >= sizeBytes) return buffer;
  const grown = new Uint8Array(Math.max(sizeBytes, buffer.length * 2, 4096));
  grown.set(buffer);
  return grown;
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash <= 0 ? "/" : path.slice(0, slash);
}

function normalize(path: string): string {
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

export interface CrashOptions {
  // What happens to the last write if it was not synced: lost (default), a prefix kept, or
  // written whole with one bit flipped.
  lastWrite?: "drop" | "tear" | "flip";
  random?: () => number; // picks the prefix length / the bit; seeded in tests
}

export interface MemoryFileSystemOptions {
  capacityBytes?: number; // total file bytes allowed (default unlimited)
}

export class MemoryFileSystem implements FileSystem {
  private names = new Map<string, Inode>();
  private durableNames = new Map<string, Inode>();
  private directories = new Set<string>(["/"]);
  private locks = new Set<string>();
  private epoch = 0;
  private lastWrite: { inode: Inode; operation: Operation & { kind: "write" } } | undefined;
  private syncsHeld: Array<() => void> | undefined;
  readonly capacityBytes: number;
  // Counters for tests (group commit: how many syncs served how many writes).
  writeCount = 0;
  syncCount = 0;

  constructor(options: MemoryFileSystemOptions = {}) {
    this.capacityBytes = options.capacityBytes ?? Number.POSITIVE_INFINITY;
  }

  usedBytes(): number {
    let total = 0;
    for (const inode of new Set(this.names.values())) total += inode.sizeBytes;
    return total;
  }

  async open(path: string, mode: OpenMode): Promise<FileHandle> {
    path = normalize(path);
    let inode = this.names.get(path);
    if (mode === "read" || mode === "read-write") {
      if (!inode) throw fsError("ENOENT", `no such file ${path}`);
    } else {
      if (!this.directories.has(parentOf(path))) throw fsError("ENOENT", `no such directory ${parentOf(path)}`);
      if (inode && mode === "create-exclusive") throw fsError("EEXIST", `file exists ${path}`);
      if (!inode) {
        inode = new Inode();
        this.names.set(path, inode);
      } else this.truncateInode(inode, 0);
    }
    return this.handleFor(path, inode);
  }

  private handleFor(path: string, inode: Inode): FileHandle {
    const epoch = this.epoch;
    const check = (): void => {
      if (epoch !== this.epoch) throw fsError("EIO", `file handle ${path} is from before a crash`);
    };
    return {
      path,
      write: async (data, position) => {
        check();
        this.writeInode(inode, data, position);
      },
      read: async (buffer, position) => {
        check();
        return this.readInode(inode, buffer, position);
      },
      readSync: (buffer, position) => {
        check();
        return this.readInode(inode, buffer, position);
      },
      datasync: async () => {
        check();
        await this.syncGate();
        check();
        this.syncCount++;
        this.syncInode(inode);
      },
      truncate: async (sizeBytes) => {
        check();
        this.truncateInode(inode, sizeBytes);
      },
      size: async () => {
        check();
        return inode.sizeBytes;
      },
      close: async () => undefined,
    };
  }

  // While held, datasync and fsyncDir wait: a test can crash with a write issued and not synced.
  holdSyncs(): void {
    this.syncsHeld ??= [];
  }

  releaseSyncs(): void {
    const waiting = this.syncsHeld ?? [];
    this.syncsHeld = undefined;
    for (const resume of waiting) resume();
  }

  private syncGate(): Promise<void> {
    const held = this.syncsHeld;
    if (!held) return Promise.resolve();
    return new Promise((resolve) => held.push(resolve));
  }

  private writeInode(inode: Inode, data: Uint8Array, position: number): void {
    this.writeCount++;
    const end = position + data.length;
    const growthBytes = Math.max(0, end - inode.sizeBytes);
    if (growthBytes > 0 && this.usedBytes() + growthBytes > this.capacityBytes) {
      throw fsError("ENOSPC", "no space left on device");
    }
    inode.data = ensureCapacity(inode.data, end);
    inode.data.set(data, position);
    inode.sizeBytes = Math.max(inode.sizeBytes, end);
    const operation = { kind: "write" as const, position, data: data.slice() };
    inode.unsynced.push(operation);
    this.lastWrite = { inode, operation };
  }

  private readInode(inode: Inode, buffer: Uint8Array, position: number): number {
    const count = Math.max(0, Math.min(buffer.length, inode.sizeBytes - position));
    buffer.set(inode.data.subarray(position, position + count));
    return count;
  }

  private truncateInode(inode: Inode, sizeBytes: number): void {
    if (sizeBytes > inode.sizeBytes && this.usedBytes() + sizeBytes - inode.sizeBytes > this.capacityBytes) {
      throw fsError("ENOSPC", "no space left on device");
    }
    inode.data = ensureCapacity(inode.data, sizeBytes);
    inode.data.fill(0, Math.min(sizeBytes, inode.sizeBytes));
    inode.sizeBytes = sizeBytes;
    inode.unsynced.push({ kind: "truncate", sizeBytes });
  }

  private syncInode(inode: Inode): void {
    inode.applyDurably(inode.unsynced);
    inode.unsynced = [];
    if (this.lastWrite?.inode === inode) this.lastWrite = undefined;
  }

  async readdir(dir: string): Promise<string[]> {
    dir = normalize(dir);
    if (!this.directories.has(dir)) throw fsError("ENOENT", `no such directory ${dir}`);
    const prefix = dir === "/" ? "/" : `${dir}/`;
    const found: string[] = [];
    for (const path of this.names.keys()) {
      if (path.startsWith(prefix) && !path.slice(prefix.length).includes("/")) found.push(path.slice(prefix.length));
    }
    return found.sort();
  }

  async mkdir(dir: string): Promise<void> {
    // Directories are durable at once: the storage layer creates its directory before any data.
    let path = normalize(dir);
    while (path !== "/" && path !== "" && !this.directories.has(path)) {
      this.directories.add(path);
      path = parentOf(path);
    }
  }

  async rename(from: string, to: string): Promise<void> {
    from = normalize(from);
    to = normalize(to);
    const inode = this.names.get(from);
    if (!inode) throw fsError("ENOENT", `no such file ${from}`);
    this.names.delete(from);
    this.names.set(to, inode);
  }

  async unlink(path: string): Promise<void> {
    path = normalize(path);
    if (!this.names.delete(path)) throw fsError("ENOENT", `no such file ${path}`);
  }

  async fsyncDir(dir: string): Promise<void> {
    const epoch = this.epoch;
    await this.syncGate();
    if (epoch !== this.epoch) throw fsError("EIO", "fsyncDir from before a crash");
    dir = normalize(dir);
    const prefix = dir === "/" ? "/" : `${dir}/`;
    const inDir = (path: string) => path.startsWith(prefix) && !path.slice(prefix.length).includes("/");
    for (const path of [...this.durableNames.keys()]) if (inDir(path)) this.durableNames.delete(path);
    for (const [path, inode] of this.names) if (inDir(path)) this.durableNames.set(path, inode);
  }

  async exists(path: string): Promise<boolean> {
    return this.names.has(normalize(path));
  }

  async lock(dir: string): Promise<DirectoryLock> {
    dir = normalize(dir);
    if (this.locks.has(dir)) throw new StorageLockedError(`data directory ${dir} is locked by another open storage`);
    this.locks.add(dir);
    const epoch = this.epoch;
    return {
      release: async () => {
        if (epoch === this.epoch) this.locks.delete(dir);
      },
    };
  }

  // Simulates power loss: everything not synced is gone, open handles die, locks are released.
  crash(options: CrashOptions = {}): void {
    const random = options.random ?? Math.random;
    const last = this.lastWrite;
    this.lastWrite = undefined;
    this.epoch++;
    this.locks.clear();
    this.syncsHeld = undefined; // the waiters belong to the dead world and never resume
    this.names = new Map(this.durableNames);
    for (const inode of new Set(this.names.values())) inode.revertToDurable();
    if (!last || !this.names.size || ![...this.names.values()].includes(last.inode)) return;
    const mode = options.lastWrite ?? "drop";
    if (mode === "drop") return;
    const { position, data } = last.operation;
    let bytes = data.slice();
    if (mode === "tear") bytes = bytes.subarray(0, Math.floor(random() * data.length));
    else if (bytes.length > 0) {
      const bit = Math.floor(random() * bytes.length * 8);
      bytes[bit >> 3]! ^= 1 << (bit & 7);
    }
    const inode = last.inode;
    inode.applyDurably([{ kind: "write", position, data: bytes }]);
    inode.revertToDurable();
  }

  // Test helpers: inspect and damage files directly (as a bad disk would).
  fileBytes(path: string): Uint8Array {
    const inode = this.names.get(normalize(path));
    if (!inode) throw fsError("ENOENT", `no such file ${path}`);
    return inode.data.subarray(0, inode.sizeBytes);
  }

  corrupt(path: string, offsetBytes: number, xorMask = 0x01): void {
    const inode = this.names.get(normalize(path));
    if (!inode) throw fsError("ENOENT", `no such file ${path}`);
    inode.data[offsetBytes]! ^= xorMask;
    inode.durable[offsetBytes]! ^= xorMask;
  }
}
