// An in-memory FileSystem for the simulator and tests, with the failure model of a real disk:
// writes live in a volatile "page cache" until datasync(); directory entries (create, rename,
// unlink) until fsyncDir(). crash() throws the volatile state away, and can tear the last
// unsynced write (keep a prefix of it) or flip one bit in it. A capacity limit makes writes that
// grow the total past it fail with ENOSPC, like a full disk.
//
// A MemoryFileSystem is what one boot of a machine sees of its disk (a MemoryDisk). crash() ends
// that boot: this object and every handle opened through it fail with EIO from then on — so
// whatever the dead storage still had in flight cannot touch the disk — and crash() returns the
// MemoryFileSystem of the next boot.
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

// The disk itself: files, directory entries, what is durable, and what a crash keeps. Reached
// through a MemoryFileSystem (one per boot); exported only for that constructor's signature.
export class MemoryDisk {
  names = new Map<string, Inode>();
  durableNames = new Map<string, Inode>();
  readonly directories = new Set<string>(["/"]);
  readonly locks = new Set<string>();
  epoch = 0; // the current boot
  lastWrite: { inode: Inode; operation: Operation & { kind: "write" } } | undefined;
  syncsHeld: Array<() => void> | undefined;
  writeCount = 0;
  syncCount = 0;

  constructor(readonly capacityBytes: number) {}

  usedBytes(): number {
    let total = 0;
    for (const inode of new Set(this.names.values())) total += inode.sizeBytes;
    return total;
  }

  syncGate(): Promise<void> {
    const held = this.syncsHeld;
    if (!held) return Promise.resolve();
    return new Promise((resolve) => held.push(resolve));
  }

  releaseSyncs(): void {
    const waiting = this.syncsHeld ?? [];
    this.syncsHeld = undefined;
    for (const resume of waiting) resume();
  }

  write(inode: Inode, data: Uint8Array, position: number): void {
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

  read(inode: Inode, buffer: Uint8Array, position: number): number {
    const count = Math.max(0, Math.min(buffer.length, inode.sizeBytes - position));
    buffer.set(inode.data.subarray(position, position + count));
    return count;
  }

  truncate(inode: Inode, sizeBytes: number): void {
    if (sizeBytes > inode.sizeBytes && this.usedBytes() + sizeBytes - inode.sizeBytes > this.capacityBytes) {
      throw fsError("ENOSPC", "no space left on device");
    }
    inode.data = ensureCapacity(inode.data, sizeBytes);
    inode.data.fill(0, Math.min(sizeBytes, inode.sizeBytes));
    inode.sizeBytes = sizeBytes;
    inode.unsynced.push({ kind: "truncate", sizeBytes });
  }

  sync(inode: Inode): void {
    this.syncCount++;
    inode.applyDurably(inode.unsynced);
    inode.unsynced = [];
    if (this.lastWrite?.inode === inode) this.lastWrite = undefined;
  }

  syncDirectory(dir: string): void {
    const prefix = dir === "/" ? "/" : `${dir}/`;
    const inDir = (path: string) => path.startsWith(prefix) && !path.slice(prefix.length).includes("/");
    for (const path of [...this.durableNames.keys()]) if (inDir(path)) this.durableNames.delete(path);
    for (const [path, inode] of this.names) if (inDir(path)) this.durableNames.set(path, inode);
  }

  // Power loss: everything not synced is gone, locks are released, a new boot begins.
  crash(options: CrashOptions): void {
    const random = options.random ?? Math.random;
    const last = this.lastWrite;
    this.lastWrite = undefined;
    this.epoch++;
    this.locks.clear();
    // Held syncs resume into the new boot and fail with EIO: the dead storage errors out instead
    // of hanging (so a test or simulator may still close() it).
    this.releaseSyncs();
    this.names = new Map(this.durableNames);
    for (const inode of new Set(this.names.values())) inode.revertToDurable();
    if (!last || ![...this.names.values()].includes(last.inode)) return;
    const mode = options.lastWrite ?? "drop";
    if (mode === "drop") return;
    const { position, data } = last.operation;
    let bytes = data.slice();
    if (mode === "tear") bytes = bytes.subarray(0, Math.floor(random() * data.length));
    else if (bytes.length > 0) {
      const bit = Math.floor(random() * bytes.length * 8);
      bytes[bit >> 3]! ^= 1 << (bit & 7);
    }
    last.inode.applyDurably([{ kind: "write", position, data: bytes }]);
    last.inode.revertToDurable();
  }
}

export class MemoryFileSystem implements FileSystem {
  private readonly disk: MemoryDisk;
  private readonly boot: number;

  constructor(options: MemoryFileSystemOptions = {}, disk?: MemoryDisk) {
    this.disk = disk ?? new MemoryDisk(options.capacityBytes ?? Number.POSITIVE_INFINITY);
    this.boot = this.disk.epoch;
  }

  get capacityBytes(): number {
    return this.disk.capacityBytes;
  }

  // Counters for tests (group commit: how many syncs served how many writes).
  get writeCount(): number {
    return this.disk.writeCount;
  }

  get syncCount(): number {
    return this.disk.syncCount;
  }

  usedBytes(): number {
    return this.disk.usedBytes();
  }

  private alive(what: string): void {
    if (this.boot !== this.disk.epoch) throw fsError("EIO", `${what}: this file system view is from before a crash`);
  }

  async open(path: string, mode: OpenMode): Promise<FileHandle> {
    this.alive("open");
    path = normalize(path);
    const disk = this.disk;
    let inode = disk.names.get(path);
    if (mode === "read" || mode === "read-write") {
      if (!inode) throw fsError("ENOENT", `no such file ${path}`);
    } else {
      if (!disk.directories.has(parentOf(path))) throw fsError("ENOENT", `no such directory ${parentOf(path)}`);
      if (inode && mode === "create-exclusive") throw fsError("EEXIST", `file exists ${path}`);
      if (!inode) {
        inode = new Inode();
        disk.names.set(path, inode);
      } else disk.truncate(inode, 0);
    }
    return this.handleFor(path, inode);
  }

  private handleFor(path: string, inode: Inode): FileHandle {
    const disk = this.disk;
    const check = (): void => this.alive(`file ${path}`);
    return {
      path,
      write: async (data, position) => {
        check();
        disk.write(inode, data, position);
      },
      read: async (buffer, position) => {
        check();
        return disk.read(inode, buffer, position);
      },
      readSync: (buffer, position) => {
        check();
        return disk.read(inode, buffer, position);
      },
      datasync: async () => {
        check();
        await disk.syncGate();
        check();
        disk.sync(inode);
      },
      // As on the real disk: a crash before it resolves may keep none, some or all of the bytes.
      writeDurable: async (data, position) => {
        check();
        disk.write(inode, data, position);
        await disk.syncGate();
        check();
        disk.sync(inode);
      },
      truncate: async (sizeBytes) => {
        check();
        disk.truncate(inode, sizeBytes);
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
    this.disk.syncsHeld ??= [];
  }

  releaseSyncs(): void {
    this.disk.releaseSyncs();
  }

  async readdir(dir: string): Promise<string[]> {
    this.alive("readdir");
    dir = normalize(dir);
    if (!this.disk.directories.has(dir)) throw fsError("ENOENT", `no such directory ${dir}`);
    const prefix = dir === "/" ? "/" : `${dir}/`;
    const found: string[] = [];
    for (const path of this.disk.names.keys()) {
      if (path.startsWith(prefix) && !path.slice(prefix.length).includes("/")) found.push(path.slice(prefix.length));
    }
    return found.sort();
  }

  async mkdir(dir: string): Promise<void> {
    this.alive("mkdir");
    // Directories are durable at once: the storage layer creates its directory before any data.
    let path = normalize(dir);
    while (path !== "/" && path !== "" && !this.disk.directories.has(path)) {
      this.disk.directories.add(path);
      path = parentOf(path);
    }
  }

  async rename(from: string, to: string): Promise<void> {
    this.alive("rename");
    from = normalize(from);
    to = normalize(to);
    const inode = this.disk.names.get(from);
    if (!inode) throw fsError("ENOENT", `no such file ${from}`);
    this.disk.names.delete(from);
    this.disk.names.set(to, inode);
  }

  async unlink(path: string): Promise<void> {
    this.alive("unlink");
    path = normalize(path);
    if (!this.disk.names.delete(path)) throw fsError("ENOENT", `no such file ${path}`);
  }

  async fsyncDir(dir: string): Promise<void> {
    this.alive("fsyncDir");
    await this.disk.syncGate();
    this.alive("fsyncDir");
    this.disk.syncDirectory(normalize(dir));
  }

  async exists(path: string): Promise<boolean> {
    this.alive("exists");
    return this.disk.names.has(normalize(path));
  }

  async lock(dir: string): Promise<DirectoryLock> {
    this.alive("lock");
    dir = normalize(dir);
    const disk = this.disk;
    if (disk.locks.has(dir)) throw new StorageLockedError(`data directory ${dir} is locked by another open storage`);
    disk.locks.add(dir);
    const boot = this.boot;
    return {
      release: async () => {
        if (boot === disk.epoch) disk.locks.delete(dir);
      },
    };
  }

  // Simulates power loss and reboot: returns the file system of the next boot. This one, and
  // every handle opened through it, fails with EIO from now on.
  crash(options: CrashOptions = {}): MemoryFileSystem {
    this.alive("crash");
    this.disk.crash(options);
    return new MemoryFileSystem({}, this.disk);
  }

  // Test helpers: inspect and damage files directly (as a bad disk would).
  fileBytes(path: string): Uint8Array {
    const inode = this.disk.names.get(normalize(path));
    if (!inode) throw fsError("ENOENT", `no such file ${path}`);
    return inode.data.subarray(0, inode.sizeBytes);
  }

  corrupt(path: string, offsetBytes: number, xorMask = 0x01): void {
    const inode = this.disk.names.get(normalize(path));
    if (!inode) throw fsError("ENOENT", `no such file ${path}`);
    inode.data[offsetBytes]! ^= xorMask;
    inode.durable[offsetBytes]! ^= xorMask;
  }
}
