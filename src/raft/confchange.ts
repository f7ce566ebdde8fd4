// Configuration transitions as pure functions of ConfState, and the encoding of a ConfChange in a
// log entry. Nothing here touches the log or the progress of followers.
//
// Invariants of every ConfState this returns (checkConf): voters non-empty; no id is both a voter
// (incoming or outgoing) and a learner; learnersNext only holds outgoing voters that are not
// incoming voters; learnersNext and autoLeave are only set while joint (votersOutgoing non-empty).
//
// A "simple" change moves at most one voter and is safe without joint consensus (any majority of
// the old and the new voters intersect). Anything else goes through a joint configuration.

import { RaftError } from "./types.js";
import type { ConfChange, ConfChangeSingle, ConfState, NodeId } from "./types.js";

export function emptyConf(): ConfState {
  return { voters: [], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
}

export function confFromVoters(voters: NodeId[], learners: NodeId[] = []): ConfState {
  return { ...emptyConf(), voters: sorted(voters), learners: sorted(learners) };
}

export function isJoint(conf: ConfState): boolean {
  return conf.votersOutgoing.length > 0;
}

// An empty auto change asks to leave a joint configuration.
export function isLeaveJoint(change: ConfChange): boolean {
  return change.transition === "auto" && change.changes.length === 0;
}

// Applies a proposed change: leave joint, one simple step, or enter joint.
export function applyConfChange(conf: ConfState, change: ConfChange): ConfState {
  if (isLeaveJoint(change)) return leaveJoint(conf);
  if (change.transition === "joint" || change.changes.length > 1) {
    return enterJoint(conf, change.transition === "auto", change.changes);
  }
  return simpleChange(conf, change.changes);
}

export function enterJoint(conf: ConfState, autoLeave: boolean, changes: ConfChangeSingle[]): ConfState {
  if (isJoint(conf)) invalid("configuration is already joint");
  if (conf.voters.length === 0) invalid("cannot make a zero-voter configuration joint");
  const next = mutable(conf);
  next.outgoing = new Set(next.incoming);
  applyChanges(next, changes);
  next.autoLeave = autoLeave;
  return freeze(next);
}

export function leaveJoint(conf: ConfState): ConfState {
  if (!isJoint(conf)) invalid("cannot leave a non-joint configuration");
  const next = mutable(conf);
  for (const id of next.learnersNext) next.learners.add(id);
  next.learnersNext.clear();
  next.outgoing.clear();
  next.autoLeave = false;
  return freeze(next);
}

export function simpleChange(conf: ConfState, changes: ConfChangeSingle[]): ConfState {
  if (isJoint(conf)) invalid("cannot apply a simple change to a joint configuration");
  const next = mutable(conf);
  applyChanges(next, changes);
  let changedVoters = 0;
  for (const id of next.incoming) if (!conf.voters.includes(id)) changedVoters++;
  for (const id of conf.voters) if (!next.incoming.has(id)) changedVoters++;
  if (changedVoters > 1) invalid("more than one voter changed without entering joint config");
  return freeze(next);
}

interface MutableConf {
  incoming: Set<NodeId>;
  outgoing: Set<NodeId>;
  learners: Set<NodeId>;
  learnersNext: Set<NodeId>;
  autoLeave: boolean;
}

function mutable(conf: ConfState): MutableConf {
  return {
    incoming: new Set(conf.voters),
    outgoing: new Set(conf.votersOutgoing),
    learners: new Set(conf.learners),
    learnersNext: new Set(conf.learnersNext),
    autoLeave: conf.autoLeave,
  };
}

function applyChanges(conf: MutableConf, changes: ConfChangeSingle[]): void {
  for (const change of changes) {
    if (!Number.isInteger(change.nodeId) || change.nodeId <= 0) invalid(`invalid node id ${change.nodeId}`);
    switch (change.type) {
      case "add-voter":
        makeVoter(conf, change.nodeId);
        break;
      case "add-learner":
        makeLearner(conf, change.nodeId);
        break;
      case "remove-node":
        removeNode(conf, change.nodeId);
        break;
      default:
        invalid(`unknown conf change type ${String((change as ConfChangeSingle).type)}`);
    }
  }
  if (conf.incoming.size === 0) invalid("removed all voters");
}

function makeVoter(conf: MutableConf, id: NodeId): void {
  conf.learners.delete(id);
  conf.learnersNext.delete(id);
  conf.incoming.add(id);
}

function makeLearner(conf: MutableConf, id: NodeId): void {
  if (conf.learners.has(id)) return;
  conf.incoming.delete(id);
  conf.learnersNext.delete(id);
  // A voter of the outgoing config keeps voting there until the joint config is left, so it can
  // only become a learner then (learnersNext).
  if (conf.outgoing.has(id)) conf.learnersNext.add(id);
  else conf.learners.add(id);
}

function removeNode(conf: MutableConf, id: NodeId): void {
  conf.incoming.delete(id);
  conf.learners.delete(id);
  conf.learnersNext.delete(id);
}

function freeze(conf: MutableConf): ConfState {
  const result: ConfState = {
    voters: sorted([...conf.incoming]),
    learners: sorted([...conf.learners]),
    votersOutgoing: sorted([...conf.outgoing]),
    learnersNext: sorted([...conf.learnersNext]),
    autoLeave: conf.outgoing.size > 0 && conf.autoLeave,
  };
  checkConf(result);
  return result;
}

// Throws INVALID_CONF_CHANGE when a configuration breaks an invariant (see the module comment).
export function checkConf(conf: ConfState): void {
  const voters = new Set([...conf.voters, ...conf.votersOutgoing]);
  if (conf.voters.length === 0) invalid("configuration has no voters");
  for (const id of conf.learners) if (voters.has(id)) invalid(`node ${id} is both voter and learner`);
  for (const id of conf.learnersNext) {
    if (!conf.votersOutgoing.includes(id)) invalid(`learner-next ${id} is not an outgoing voter`);
    if (conf.voters.includes(id)) invalid(`learner-next ${id} is an incoming voter`);
  }
  if (!isJoint(conf) && (conf.learnersNext.length > 0 || conf.autoLeave)) {
    invalid("learnersNext/autoLeave set outside a joint configuration");
  }
}

// Every node the configuration knows (voters of both halves, learners, future learners).
export function confMembers(conf: ConfState): NodeId[] {
  return sorted([...new Set([...conf.voters, ...conf.votersOutgoing, ...conf.learners, ...conf.learnersNext])]);
}

export function confEqual(a: ConfState, b: ConfState): boolean {
  return JSON.stringify(normalize(a)) === JSON.stringify(normalize(b));
}

function normalize(conf: ConfState): ConfState {
  return {
    voters: sorted(conf.voters),
    learners: sorted(conf.learners),
    votersOutgoing: sorted(conf.votersOutgoing),
    learnersNext: sorted(conf.learnersNext),
    autoLeave: conf.autoLeave,
  };
}

function sorted(ids: NodeId[]): NodeId[] {
  return [...ids].sort((a, b) => a - b);
}

function invalid(message: string): never {
  throw new RaftError("INVALID_CONF_CHANGE", message);
}

// The entry encoding is JSON so a log dump stays readable; the context travels as a byte array.
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

export function encodeConfChange(change: ConfChange): Uint8Array {
  const plain = {
    transition: change.transition,
    changes: change.changes.map((c) => ({ type: c.type, nodeId: c.nodeId })),
    context: change.context === undefined ? undefined : [...change.context],
  };
  return textEncoder.encode(JSON.stringify(plain));
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  const plain = JSON.parse(textDecoder.decode(data)) as {
    transition: "auto" | "joint";
    changes: ConfChangeSingle[];
    context?: number[];
  };
  const change: ConfChange = { transition: plain.transition, changes: plain.changes };
  if (plain.context !== undefined) change.context = Uint8Array.from(plain.context);
  return change;
}

export function describeConfChange(change: ConfChange): string {
  if (isLeaveJoint(change)) return "leave-joint";
  const parts = change.changes.map((c) => `${c.type} ${c.nodeId}`);
  return (change.transition === "joint" ? "joint " : "") + parts.join(", ");
}
