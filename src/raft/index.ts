// The Raft core's public surface, for the driver (src/node) and the simulator (test/sim).
// Everything here is pure: no I/O, no clock, no randomness of its own (see docs/raft.md).

export {
  applyConfChange,
  confFromVoters,
  confMembers,
  decodeConfChange,
  describeConfChange,
  encodeConfChange,
  isJoint,
  isLeaveJoint,
} from "./confchange.js";
export { MemoryLogStorage } from "./memory-storage.js";
export {
  DEFAULT_ELECTION_TICKS,
  DEFAULT_HEARTBEAT_TICKS,
  DEFAULT_MAX_COMMITTED_BYTES_PER_READY,
  DEFAULT_MAX_INFLIGHT_BYTES,
  DEFAULT_MAX_INFLIGHT_MESSAGES,
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_MAX_UNCOMMITTED_BYTES,
  RaftNode,
  defaultRaftConfig,
  entrySizeBytes,
} from "./raft-node.js";
export * from "./types.js";
