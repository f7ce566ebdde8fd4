// The file system the storage layer talks to. Every byte of the WAL and of snapshots goes through
// this interface, so the same code runs on the real disk (NodeFileSystem) and on a simulated one
// (MemoryFileSystem) that loses unsynced writes, tears the last write or flips a bit on crash().
//
// Contract: a write is durable only after datasync() of its file; a new, renamed or removed
// directory entry is durable only after fsyncDir() of its directory.

export type OpenMode =
  | "read" // existing file, read only
  | "read-write" // existing file
  | "create-exclusive" // new file; fails with EEXIST when it exists
  | "create-truncate"; // new or emptied file

export interface FileHandle {
  readonly path: string;
  // Writes all of data at position (never a short write: it loops or throws).
  write(data: Uint8Array, position: number): Promise<void>;
  // Reads up to buffer.length bytes at position; returns the count read (0 at end of file).
  read(buffer: Uint8Array, position: number): Promise<number>;
  // Synchronous read, for the cold path only (a lagging follower's entries not in the cache).
  readSync(buffer: Uint8Array, position: number): number;
  datasync(): Promise<void>;
  // write() then datasync() of those bytes as one operation: resolves once they are durable. On
  // the real disk one O_DSYNC write, one trip to the thread pool instead of two on the WAL's
  // critical path. Bytes written earlier with write() are not covered: datasync() them.
  writeDurable(data: Uint8Array, position: number): Promise<void>;
  truncate(sizeBytes: number): Promise<void>;
  size(): Promise<number>;
  close(): Promise<void>;
}

// Held while a data directory is open; release() lets another process open it.
export interface DirectoryLock {
  release(): Promise<void>;
}

export interface FileSystem {
  open(path: string, mode: OpenMode): Promise<FileHandle>;
  readdir(dir: string): Promise<string[]>;
  mkdir(dir: string): Promise<void>; // recursive; no error when it exists
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  fsyncDir(dir: string): Promise<void>;
  exists(path: string): Promise<boolean>;
  // Exclusive ownership of dir by this process (throws StorageLockedError when held elsewhere).
  lock(dir: string): Promise<DirectoryLock>;
}

// Reads a whole file, into `reuse` when it is large enough (recovery reads segment after segment
// into the same two buffers instead of allocating 64 MiB each time).
export async function readWholeFile(fs: FileSystem, path: string, reuse?: Uint8Array): Promise<Uint8Array> {
  const handle = await fs.open(path, "read");
  try {
    const sizeBytes = await handle.size();
    // Not zero-filled: every byte is overwritten by the read, and segments are large.
    const buffer = reuse && reuse.length >= sizeBytes ? reuse.subarray(0, sizeBytes) : new Uint8Array(Buffer.allocUnsafeSlow(sizeBytes).buffer, 0, sizeBytes);
    let done = 0;
    while (done < sizeBytes) {
      const count = await handle.read(buffer.subarray(done), done);
      if (count === 0) break;
      done += count;
    }
    return done === sizeBytes ? buffer : buffer.subarray(0, done);
  } finally {
    await handle.close();
  }
}

export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

export function fsError(code: string, message: string): Error {
  const error = new Error(`${code}: ${message}`) as Error & { code: string };
  error.code = code;
  return error;
}
