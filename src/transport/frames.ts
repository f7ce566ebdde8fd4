// The peer wire format: every frame is a 4-byte big-endian payload length followed by a msgpack
// map with a kind field `k`. A connection opens with the handshake (hello → welcome → proof →
// ready, or refuse), then carries data frames only. Data frames hold a batch of Raft messages or
// one chunk of a streamed snapshot, and always the clock stamps (sender's send time and an echo
// of the last data frame received from the destination) that make the NTP-like exchange.
// Decoding validates shape, so a peer that sends nonsense loses its connection instead of
// crashing the node.
import { Packr } from "msgpackr";
import { FRAME_HEADER_BYTES } from "../protocol/binary.js";
import { type Message, type MessageType, type NodeId, snapshotDataBytes } from "../raft/types.js";

export const PEER_PROTOCOL_VERSION = 1;

// Numbers stay numbers (times in ms exceed 2^32 and travel as float64, exactly).
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

export interface HelloFrame {
  k: "hello";
  version: number;
  clusterId: string;
  nodeId: NodeId;
  nonce: Uint8Array;
  // What the dialer's TransportOptions.settings hold (absent when it has none, or before
  // settings were exchanged): the acceptor refuses a peer whose settings its check rejects.
  settings?: string;
  // The newest set of log commands the dialer applies (a node's COMMAND_SET): a leader proposes a
  // command only once every member said it applies it. Absent in a node before the field: 1.
  commands?: number;
}
export interface WelcomeFrame {
  k: "welcome";
  clusterId: string;
  nodeId: NodeId;
  nonce: Uint8Array;
  proof: Uint8Array;
}
export interface ProofFrame {
  k: "proof";
  proof: Uint8Array;
}
export interface ReadyFrame {
  k: "ready";
}
export interface RefuseFrame {
  k: "refuse";
  reason: string;
}
// A slice of one snapshot's data. The first chunk (offset 0) carries the message with an empty
// snapshot.data and the CRC32C of the whole data; the receiver writes the chunks to its snapshot
// sink and, once all `totalBytes` arrived and the checksum matches, delivers the message with
// the snapshot the sink made of them.
export interface SnapshotChunk {
  streamId: number;
  offset: number;
  totalBytes: number;
  bytes: Uint8Array;
  message?: Message;
  checksum?: number; // first chunk only
}
export interface DataFrame {
  k: "data";
  sentAtMs: number; // t3 for the receiver's sample (or t1 of the next echo it sends back)
  echo?: [number, number]; // [t1 = our sentAtMs of the frame echoed, t2 = its receive time at the sender]
  messages?: Message[];
  chunk?: SnapshotChunk;
}
export type PeerFrame = HelloFrame | WelcomeFrame | ProofFrame | ReadyFrame | RefuseFrame | DataFrame;

export class InvalidFrameError extends Error {
  override name = "InvalidFrameError";
}

export function encodePeerFrame(frame: PeerFrame): Buffer {
  const payload = packr.pack(frame);
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  out.writeUInt32BE(payload.length, 0);
  payload.copy(out, FRAME_HEADER_BYTES);
  return out;
}

export function decodePeerFrame(payload: Uint8Array): PeerFrame {
  let value: unknown;
  try {
    value = packr.unpack(payload);
  } catch (error) {
    throw new InvalidFrameError(`undecodable payload: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null) throw new InvalidFrameError("payload is not a map");
  const frame = value as Record<string, unknown>;
  switch (frame.k) {
    case "hello":
      requireNumber(frame, "version");
      requireString(frame, "clusterId");
      requireNodeId(frame, "nodeId");
      requireBytes(frame, "nonce");
      if (frame.settings !== undefined) requireString(frame, "settings");
      if (frame.commands !== undefined) requireNumber(frame, "commands");
      break;
    case "welcome":
      requireString(frame, "clusterId");
      requireNodeId(frame, "nodeId");
      requireBytes(frame, "nonce");
      requireBytes(frame, "proof");
      break;
    case "proof":
      requireBytes(frame, "proof");
      break;
    case "ready":
      break;
    case "refuse":
      requireString(frame, "reason");
      break;
    case "data":
      validateData(frame);
      break;
    default:
      throw new InvalidFrameError(`unknown frame kind ${JSON.stringify(frame.k)}`);
  }
  return frame as unknown as PeerFrame;
}

function validateData(frame: Record<string, unknown>): void {
  requireNumber(frame, "sentAtMs");
  if (frame.echo !== undefined) {
    const echo = frame.echo;
    if (!Array.isArray(echo) || echo.length !== 2 || !echo.every(Number.isFinite)) {
      throw new InvalidFrameError("echo is not [t1, t2]");
    }
  }
  if (frame.messages !== undefined) {
    if (!Array.isArray(frame.messages)) throw new InvalidFrameError("messages is not an array");
    for (const message of frame.messages) validateMessage(message);
  }
  if (frame.chunk !== undefined) {
    const chunk = frame.chunk as Record<string, unknown>;
    if (typeof chunk !== "object" || chunk === null) throw new InvalidFrameError("chunk is not a map");
    requireNumber(chunk, "streamId");
    requireNumber(chunk, "offset");
    requireNumber(chunk, "totalBytes");
    requireBytes(chunk, "bytes");
    if (chunk.message !== undefined) validateMessage(chunk.message);
    if (chunk.checksum !== undefined && !(Number.isInteger(chunk.checksum) && (chunk.checksum as number) >= 0 && (chunk.checksum as number) <= 0xffffffff)) {
      throw new InvalidFrameError("checksum is not a u32");
    }
    const offset = chunk.offset as number;
    const end = offset + (chunk.bytes as Uint8Array).length;
    if (offset < 0 || end > (chunk.totalBytes as number)) throw new InvalidFrameError("chunk outside its snapshot");
  }
}

const MESSAGE_TYPES: ReadonlySet<string> = new Set<MessageType>([
  "append",
  "append-response",
  "vote",
  "vote-response",
  "prevote",
  "prevote-response",
  "heartbeat",
  "heartbeat-response",
  "snapshot",
  "timeout-now",
  "read-index",
  "read-index-response",
  "propose",
]);

// Enough structure for the Raft core not to trip over a field of the wrong type.
function validateMessage(value: unknown): void {
  if (typeof value !== "object" || value === null) throw new InvalidFrameError("message is not a map");
  const message = value as Record<string, unknown>;
  if (typeof message.type !== "string" || !MESSAGE_TYPES.has(message.type)) {
    throw new InvalidFrameError(`unknown message type ${JSON.stringify(message.type)}`);
  }
  if (message.rejectTerm !== undefined) requireNumber(message, "rejectTerm");
  if (message.context !== undefined) requireBytes(message, "context");
  if (message.snapshot !== undefined) validateSnapshot(message.snapshot);
  for (const field of ["from", "to", "term", "logTerm", "index", "commit", "rejectHint"]) {
    requireNumber(message, field);
  }
  if (typeof message.reject !== "boolean") throw new InvalidFrameError("message.reject is not a boolean");
  if (!Array.isArray(message.entries)) throw new InvalidFrameError("message.entries is not an array");
  for (const entry of message.entries as unknown[]) {
    const fields = entry as Record<string, unknown>;
    if (typeof entry !== "object" || entry === null) throw new InvalidFrameError("entry is not a map");
    requireNumber(fields, "term");
    requireNumber(fields, "index");
    requireString(fields, "type");
    requireBytes(fields, "data");
  }
}

function validateSnapshot(value: unknown): void {
  if (typeof value !== "object" || value === null) throw new InvalidFrameError("snapshot is not a map");
  const snapshot = value as Record<string, unknown>;
  requireBytes(snapshot, "data");
  const meta = snapshot.meta as Record<string, unknown>;
  if (typeof meta !== "object" || meta === null) throw new InvalidFrameError("snapshot.meta is not a map");
  requireNumber(meta, "index");
  requireNumber(meta, "term");
  const conf = meta.conf as Record<string, unknown>;
  if (typeof conf !== "object" || conf === null) throw new InvalidFrameError("snapshot conf is not a map");
  for (const field of ["voters", "learners", "votersOutgoing", "learnersNext"]) {
    const ids = conf[field];
    if (!Array.isArray(ids) || !ids.every((id) => Number.isSafeInteger(id))) throw new InvalidFrameError(`conf.${field} is not a list of node ids`);
  }
  if (typeof conf.autoLeave !== "boolean") throw new InvalidFrameError("conf.autoLeave is not a boolean");
}

function requireNumber(object: Record<string, unknown>, field: string): void {
  if (typeof object[field] !== "number" || !Number.isFinite(object[field])) {
    throw new InvalidFrameError(`${field} is not a number`);
  }
}

function requireNodeId(object: Record<string, unknown>, field: string): void {
  const value = object[field];
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    throw new InvalidFrameError(`${field} is not a node id`);
  }
}

function requireString(object: Record<string, unknown>, field: string): void {
  if (typeof object[field] !== "string") throw new InvalidFrameError(`${field} is not a string`);
}

function requireBytes(object: Record<string, unknown>, field: string): void {
  if (!(object[field] instanceof Uint8Array)) throw new InvalidFrameError(`${field} is not bytes`);
}

// A rough wire size of a message, for the send queue bound (not exact: msgpack overhead varies).
export const MESSAGE_OVERHEAD_BYTES = 96;
export const ENTRY_OVERHEAD_BYTES = 24;
export function estimateMessageBytes(message: Message): number {
  let bytes = MESSAGE_OVERHEAD_BYTES + (message.context?.length ?? 0);
  for (const entry of message.entries) bytes += ENTRY_OVERHEAD_BYTES + entry.data.length;
  if (message.snapshot !== undefined) bytes += snapshotDataBytes(message.snapshot);
  return bytes;
}
