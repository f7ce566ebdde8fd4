// Errors of the storage layer. All are operating conditions (never bugs): a locked directory, a
// corrupt file, a failed disk. They carry the UNHEALTHY code so that the node, which cannot
// continue without its disk, reports itself unhealthy with a message an operator can act on.
import { FerryError } from "../protocol/errors.js";

export class StorageError extends FerryError {
  override name = "StorageError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("UNHEALTHY", message);
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

// Another process (or another open in this process) holds the data directory.
export class StorageLockedError extends StorageError {
  override name = "StorageLockedError";
}

// A record that fails its checksum (or a hole in the log) before the tail: the node refuses to
// start rather than serve a log it cannot trust. `file` and `offsetBytes` locate the damage.
export class StorageCorruptError extends StorageError {
  override name = "StorageCorruptError";
  constructor(
    readonly file: string,
    readonly offsetBytes: number,
    problem: string,
  ) {
    super(
      `corrupt write-ahead log: ${file} at byte offset ${offsetBytes}: ${problem}. ` +
        "The node will not start on a damaged log. Recover this node by wiping its data directory " +
        "and letting it rejoin (it catches up from the leader by snapshot), or restore the directory from a backup.",
    );
  }
}

// A write or fsync failed (for example ENOSPC). After a failed fsync the page cache state is
// unknown, so the log refuses all further writes: the node must restart and recover from disk.
export class StorageFailedError extends StorageError {
  override name = "StorageFailedError";
  readonly errno: string | undefined;
  constructor(message: string, cause: unknown) {
    const errno = (cause as { code?: unknown } | undefined)?.code;
    const code = typeof errno === "string" ? errno : undefined;
    super(`${message}${code ? ` (${code}${code === "ENOSPC" ? ": disk full" : ""})` : ""}: ${String((cause as Error)?.message ?? cause)}`, { cause });
    this.errno = code;
  }
}

export class SnapshotChecksumError extends StorageError {
  override name = "SnapshotChecksumError";
}
