// A simulated node's disk, in one of two models (SimulationOptions.storage):
// - "memory": a MemoryLogStorage written when a persist completes. Faults are modelled at the
//   level of a Ready: a crash loses the persist in flight, or keeps a torn prefix of its entries.
// - "disk": the real DiskRaftStorage over a MemoryFileSystem of its own, which survives crashes
//   (MemoryFileSystem.crash() returns the next boot's file system). A persist goes through
//   DiskRaftStorage.persist() with the file system's syncs held until the simulated persist is
//   due, so a crash in between finds the write in the page cache and drops it, tears it or flips
//   a bit in it; the restart runs the real recovery (DiskRaftStorage.open on the next boot).
//   Only the write in flight (never synced) is damaged, so recovery must always succeed: a
//   StorageCorruptError, or any failure of the storage, is a violation.
//
// Determinism: MemoryFileSystem and DiskRaftStorage (fsync "always") run on promises alone, with
// no timers and no I/O, so the simulation drains the microtask queue at fixed points of a step
// (Simulation.settle) and a run stays a function of its seed. "persisted" means: the promise of
// DiskRaftStorage.persist() resolved.

import { MemoryLogStorage } from "../../src/raft/memory-storage.js";
import { type ConfState, type HardState, type LogStorage, type Ready, type Snapshot, type SnapshotMeta, SnapshotUnavailableError } from "../../src/raft/types.js";
import { DiskRaftStorage, type RecoveryReport, SEGMENT_SIZE_BYTES_MIN } from "../../src/storage/raft-storage.js";
import { MemoryFileSystem } from "../../src/storage/memory-fs.js";

export type StorageModel = "memory" | "disk";
export const STORAGE_MODELS: readonly StorageModel[] = ["memory", "disk"];
export type LastWriteFault = "drop" | "tear" | "flip";

// The smallest segments the WAL allows, so that segment cuts, carried headers and compaction that
// deletes whole segments happen every few dozen entries.
const WAL_SEGMENT_SIZE_BYTES = SEGMENT_SIZE_BYTES_MIN;
const WAL_DIRECTORY = "/data";

export interface SimDisk {
  readonly model: StorageModel;
  readonly log: LogStorage; // the persisted log, as the core and the checks read it
  ready(): boolean; // open (a "disk" reopens asynchronously after a crash)
  // The snapshot a restart restores the state machine from (index 0, no data, when none).
  restartSnapshot(): Snapshot;
  startPersist(ready: Ready): void;
  persistDone(): boolean;
  releasePersist(): void; // the simulated persist is due: let its fsync complete
  finishPersist(ready: Ready): void;
  snapshotBusy(): boolean;
  // Saves a state-machine snapshot and then drops the log up to and including compactThrough.
  saveSnapshot(meta: SnapshotMeta, data: Uint8Array, compactThrough: number): void;
}

export function snapshotIndexOf(log: LogStorage): number {
  try {
    return log.snapshot().meta.index;
  } catch (error) {
    if (error instanceof SnapshotUnavailableError) return 0;
    throw error;
  }
}

export class MemorySimDisk implements SimDisk {
  readonly model = "memory";
  readonly log: MemoryLogStorage;

  constructor(conf: ConfState) {
    this.log = new MemoryLogStorage(conf);
  }

  ready(): boolean {
    return true;
  }

  restartSnapshot(): Snapshot {
    return this.log.snapshot();
  }

  startPersist(): void {}

  persistDone(): boolean {
    return true;
  }

  releasePersist(): void {}

  finishPersist(ready: Ready): void {
    if (ready.snapshot !== undefined) this.log.applySnapshot(ready.snapshot);
    if (ready.entries.length > 0) this.log.append(ready.entries);
    if (ready.hardState !== undefined) this.log.setHardState(ready.hardState);
  }

  snapshotBusy(): boolean {
    return false;
  }

  saveSnapshot(meta: SnapshotMeta, data: Uint8Array, compactThrough: number): void {
    this.log.createSnapshot(meta.index, meta.conf, data);
    if (compactThrough >= this.log.firstIndex()) this.log.compact(compactThrough);
  }
}

// What a WalSimDisk tells its node.
export interface WalDiskEvents {
  recovered(storage: DiskRaftStorage, report: RecoveryReport): void;
  failed(problem: string): void; // the storage failed without a crash, or recovery refused: a violation
}

export class WalSimDisk implements SimDisk {
  readonly model = "disk";
  private fs = new MemoryFileSystem();
  private storage: DiskRaftStorage | undefined;
  // Read by the checks while the storage reopens: the last view (the dead boot's) or, before the
  // first open, an empty log.
  private view: LogStorage;
  private boot = 0; // callbacks of an earlier boot change nothing
  private persisting: { done: boolean } | undefined;
  private snapshotting = false;
  // As src/node does: a hard state that only moves the commit index is written with the next write.
  private writtenHardState: HardState | undefined;
  private unwrittenHardState: HardState | undefined;

  constructor(
    private readonly conf: ConfState,
    private readonly cacheSizeBytes: number,
    private readonly events: WalDiskEvents,
  ) {
    this.view = new MemoryLogStorage(conf);
    this.open();
  }

  get log(): LogStorage {
    return this.view;
  }

  ready(): boolean {
    return this.storage !== undefined;
  }

  restartSnapshot(): Snapshot {
    try {
      return this.storage!.snapshot();
    } catch (error) {
      if (!(error instanceof SnapshotUnavailableError)) throw error;
      return { meta: { index: 0, term: 0, conf: this.storage!.initialState().conf }, data: new Uint8Array(0) };
    }
  }

  startPersist(ready: Ready): void {
    const hardState = ready.hardState ?? this.unwrittenHardState;
    const before = this.writtenHardState;
    const termOrVoteChanged = hardState !== undefined && (before === undefined || hardState.term !== before.term || hardState.vote !== before.vote);
    if (ready.entries.length === 0 && ready.snapshot === undefined && !termOrVoteChanged) {
      this.unwrittenHardState = hardState;
      this.persisting = { done: true };
      return;
    }
    const job = { done: false };
    this.persisting = job;
    this.fs.holdSyncs();
    const boot = this.boot;
    const update = { entries: ready.entries, ...(hardState ? { hardState } : {}), ...(ready.snapshot ? { snapshot: ready.snapshot } : {}) };
    this.storage!.persist(update).then(
      () => {
        job.done = true;
        if (boot !== this.boot) return;
        if (hardState !== undefined) this.writtenHardState = hardState;
        this.unwrittenHardState = undefined;
      },
      (error: unknown) => {
        if (boot === this.boot) this.events.failed(`persist failed: ${describe(error)}`);
      },
    );
  }

  persistDone(): boolean {
    return this.persisting?.done ?? true;
  }

  releasePersist(): void {
    this.fs.releaseSyncs();
  }

  finishPersist(): void {
    this.persisting = undefined;
  }

  snapshotBusy(): boolean {
    return this.snapshotting;
  }

  saveSnapshot(meta: SnapshotMeta, data: Uint8Array, compactThrough: number): void {
    const storage = this.storage!;
    const boot = this.boot;
    this.snapshotting = true;
    storage
      .saveSnapshot(meta, data)
      .then(() => (compactThrough >= storage.firstIndex() ? storage.compact(compactThrough + 1) : undefined))
      .then(
        () => {
          if (boot === this.boot) this.snapshotting = false;
        },
        (error: unknown) => {
          if (boot === this.boot) this.events.failed(`snapshot at ${meta.index} failed: ${describe(error)}`);
        },
      );
  }

  // Power loss: unsynced writes are gone, except that the last one may be torn or written with a
  // bit flipped; then the next boot's recovery starts. Whatever the dead storage still had in
  // flight fails with EIO against the dead boot's file system and is ignored.
  crash(lastWrite: LastWriteFault, random: () => number): void {
    this.boot++;
    this.storage = undefined;
    this.persisting = undefined;
    this.snapshotting = false;
    this.writtenHardState = undefined;
    this.unwrittenHardState = undefined;
    this.fs = this.fs.crash({ lastWrite, random });
    this.open();
  }

  private open(): void {
    const boot = this.boot;
    DiskRaftStorage.open(WAL_DIRECTORY, {
      fs: this.fs,
      fsync: "always",
      segmentSizeBytes: WAL_SEGMENT_SIZE_BYTES,
      preallocate: "none",
      cacheSizeBytes: this.cacheSizeBytes,
      ...(this.conf.voters.length > 0 ? { initialConf: this.conf } : {}),
    }).then(
      (storage) => {
        if (boot !== this.boot) return;
        this.storage = storage;
        this.view = storage;
        this.writtenHardState = storage.initialState().hardState;
        this.events.recovered(storage, storage.recovery!);
      },
      (error: unknown) => {
        if (boot === this.boot) this.events.failed(`recovery refused to open the log: ${describe(error)}`);
      },
    );
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
