// The storage layer's public surface: the WAL-backed Raft log, snapshots and the file systems.
export { DiskRaftStorage, type FsyncPolicy, type PersistUpdate, type StorageOptions } from "./raft-storage.js";
export { StorageCorruptError, StorageError, StorageFailedError, StorageLockedError, SnapshotChecksumError } from "./errors.js";
export type { DirectoryLock, FileHandle, FileSystem, OpenMode } from "./fs.js";
export { NodeFileSystem } from "./node-fs.js";
export { MemoryFileSystem, type CrashOptions } from "./memory-fs.js";
export { SnapshotReceiver, SnapshotStore, type SnapshotInfo } from "./snapshots.js";
