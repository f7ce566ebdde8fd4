import assert from "node:assert/strict";
import { test } from "node:test";
import {
  applyConfChange,
  confFromVoters,
  decodeConfChange,
  encodeConfChange,
  enterJoint,
  leaveJoint,
  simpleChange,
} from "../../src/raft/confchange.js";
import type { ConfChange, ConfState } from "../../src/raft/types.js";
import { RaftError } from "../../src/raft/types.js";

const invalid = (e: unknown) => e instanceof RaftError && e.code === "INVALID_CONF_CHANGE";

test("simple changes: one voter at a time", () => {
  const conf = confFromVoters([1, 2, 3]);
  assert.deepEqual(simpleChange(conf, [{ type: "add-voter", nodeId: 4 }]).voters, [1, 2, 3, 4]);
  assert.deepEqual(simpleChange(conf, [{ type: "remove-node", nodeId: 2 }]).voters, [1, 3]);
  const learner = simpleChange(conf, [{ type: "add-learner", nodeId: 4 }]);
  assert.deepEqual([learner.voters, learner.learners], [[1, 2, 3], [4]]);
  // Promoting a learner is one voter change.
  const promoted = simpleChange(learner, [{ type: "add-voter", nodeId: 4 }]);
  assert.deepEqual([promoted.voters, promoted.learners], [[1, 2, 3, 4], []]);
  // Any number of learner changes plus one voter change is still simple.
  const mixed = simpleChange(conf, [
    { type: "add-learner", nodeId: 5 },
    { type: "add-learner", nodeId: 6 },
    { type: "add-voter", nodeId: 4 },
  ]);
  assert.deepEqual([mixed.voters, mixed.learners], [[1, 2, 3, 4], [5, 6]]);
  // Two voters at once is not.
  assert.throws(() => simpleChange(conf, [{ type: "add-voter", nodeId: 4 }, { type: "add-voter", nodeId: 5 }]), invalid);
  assert.throws(() => simpleChange(confFromVoters([1]), [{ type: "remove-node", nodeId: 1 }]), invalid);
  // Demoting a voter to a learner is one voter change.
  const demoted = simpleChange(conf, [{ type: "add-learner", nodeId: 3 }]);
  assert.deepEqual([demoted.voters, demoted.learners], [[1, 2], [3]]);
});

test("enter and leave joint: the outgoing half keeps the old voters until left", () => {
  const conf = confFromVoters([1, 2, 3]);
  const joint = enterJoint(conf, true, [
    { type: "remove-node", nodeId: 3 },
    { type: "add-voter", nodeId: 4 },
  ]);
  assert.deepEqual(joint, { voters: [1, 2, 4], votersOutgoing: [1, 2, 3], learners: [], learnersNext: [], autoLeave: true });
  assert.throws(() => enterJoint(joint, false, []), invalid); // already joint
  assert.throws(() => simpleChange(joint, [{ type: "add-voter", nodeId: 5 }]), invalid);
  const left = leaveJoint(joint);
  assert.deepEqual(left, { voters: [1, 2, 4], votersOutgoing: [], learners: [], learnersNext: [], autoLeave: false });
  assert.throws(() => leaveJoint(left), invalid);
});

test("a voter demoted in a joint change becomes a learner only when the joint config is left", () => {
  const joint = enterJoint(confFromVoters([1, 2, 3]), false, [{ type: "add-learner", nodeId: 3 }]);
  assert.deepEqual([joint.voters, joint.votersOutgoing, joint.learners, joint.learnersNext], [[1, 2], [1, 2, 3], [], [3]]);
  const left = leaveJoint(joint);
  assert.deepEqual([left.voters, left.learners, left.learnersNext], [[1, 2], [3], []]);
  // Within one joint change, demoting and then re-adding cancels the demotion.
  const readded = enterJoint(confFromVoters([1, 2, 3]), false, [
    { type: "add-learner", nodeId: 3 },
    { type: "add-voter", nodeId: 3 },
  ]);
  assert.deepEqual([readded.voters, readded.learnersNext], [[1, 2, 3], []]);
});

test("applyConfChange picks the transition", () => {
  const conf = confFromVoters([1, 2, 3]);
  const one: ConfChange = { transition: "auto", changes: [{ type: "add-voter", nodeId: 4 }] };
  assert.deepEqual(applyConfChange(conf, one).votersOutgoing, []);
  const two: ConfChange = { transition: "auto", changes: [{ type: "add-voter", nodeId: 4 }, { type: "add-voter", nodeId: 5 }] };
  const autoJoint = applyConfChange(conf, two);
  assert.deepEqual([autoJoint.votersOutgoing, autoJoint.autoLeave], [[1, 2, 3], true]);
  const explicit: ConfChange = { transition: "joint", changes: [{ type: "add-voter", nodeId: 4 }] };
  const explicitJoint = applyConfChange(conf, explicit);
  assert.deepEqual([explicitJoint.votersOutgoing, explicitJoint.autoLeave], [[1, 2, 3], false]);
  const leave: ConfChange = { transition: "auto", changes: [] };
  assert.deepEqual(applyConfChange(explicitJoint, leave).votersOutgoing, []);
  assert.throws(() => applyConfChange(conf, leave), invalid);
  assert.throws(() => applyConfChange(conf, { transition: "auto", changes: [{ type: "add-voter", nodeId: 0 }] }), invalid);
});

test("no node is both voter and learner after any change", () => {
  let conf: ConfState = confFromVoters([1, 2, 3], [4]);
  conf = simpleChange(conf, [{ type: "add-voter", nodeId: 4 }]);
  conf = simpleChange(conf, [{ type: "add-learner", nodeId: 1 }]);
  for (const id of conf.learners) assert.equal(conf.voters.includes(id), false);
  assert.deepEqual([conf.voters, conf.learners], [[2, 3, 4], [1]]);
});

test("encode/decode round trip", () => {
  const change: ConfChange = {
    transition: "joint",
    changes: [{ type: "remove-node", nodeId: 3 }, { type: "add-learner", nodeId: 7 }],
    context: new Uint8Array([1, 2, 255]),
  };
  assert.deepEqual(decodeConfChange(encodeConfChange(change)), change);
  const plain: ConfChange = { transition: "auto", changes: [] };
  assert.deepEqual(decodeConfChange(encodeConfChange(plain)), plain);
});
