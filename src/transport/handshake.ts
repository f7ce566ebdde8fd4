// Mutual authentication of two nodes of one cluster: HMAC-SHA256 challenge-response over fresh
// nonces from both sides. Each proof binds the role (dialer or acceptor), the cluster id, both
// node ids and both nonces, so a proof can be neither replayed on another connection nor
// reflected back as the other side's proof. The secret itself never crosses the wire.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { NodeId } from "../raft/types.js";

export const NONCE_BYTES = 32;

export type HandshakeRole = "dialer" | "acceptor";

export interface HandshakeTranscript {
  clusterId: string;
  dialerId: NodeId;
  acceptorId: NodeId;
  dialerNonce: Uint8Array;
  acceptorNonce: Uint8Array;
}

export function createNonce(): Uint8Array {
  return randomBytes(NONCE_BYTES);
}

export function computeProof(secret: string, role: HandshakeRole, transcript: HandshakeTranscript): Uint8Array {
  const hmac = createHmac("sha256", secret);
  hmac.update(`ferry-peer-v1\0${role}\0${transcript.clusterId}\0${transcript.dialerId}\0${transcript.acceptorId}\0`);
  hmac.update(transcript.dialerNonce);
  hmac.update(transcript.acceptorNonce);
  return hmac.digest();
}

export function verifyProof(
  secret: string,
  role: HandshakeRole,
  transcript: HandshakeTranscript,
  proof: Uint8Array,
): boolean {
  const expected = computeProof(secret, role, transcript);
  return proof.length === expected.length && timingSafeEqual(proof, expected);
}
