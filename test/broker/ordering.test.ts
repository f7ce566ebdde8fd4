// Per-mailbox order modes: "log" (the default, unchanged) and "sender-time" with a reorder window.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { msTimestamp } from "../../src/broker/broker.js";
import { decodeCommands, encodeCommands } from "../../src/broker/commands.js";
import { Harness, read } from "./harness.js";

function senderTimeMailbox(reorderWindowMs = 1000): Harness {
  const h = new Harness();
  const result = h.one({ op: "set-mailbox-config", mailbox: "bob", config: { order: "sender-time", reorderWindowMs } });
  assert.ok(result.ok);
  return h;
}

describe("sender-time order", () => {
  test("a late message stamped earlier is delivered first within the window", () => {
    const h = senderTimeMailbox(1000);
    const t = h.nowMs;
    h.send("bob", "later", { senderTime: msTimestamp(t + 50) });
    h.advance(100);
    h.send("bob", "earlier", { senderTime: msTimestamp(t) });
    assert.deepEqual(
      h.list("bob").items.map((item) => item.state),
      ["delayed", "delayed"],
    );
    h.advance(1000); // t + 1100: both windows have passed
    assert.deepEqual(
      h.list("bob").items.map((item) => [item.state, item.senderTime]),
      [
        ["ready", msTimestamp(t)],
        ["ready", msTimestamp(t + 50)],
      ],
    );
    const messages = h.receive("bob").messages;
    assert.deepEqual(
      messages.map((m) => [read(m.body), m.senderTime]),
      [
        ["earlier", msTimestamp(t)],
        ["later", msTimestamp(t + 50)],
      ],
    );
  });

  test("a message is not visible before senderTime + window, and nextVisibleAt says when", () => {
    const h = senderTimeMailbox(500);
    const t = h.nowMs;
    h.send("bob", "x", { senderTime: msTimestamp(t + 10) });
    assert.equal(h.broker.nextVisibleAt("bob"), msTimestamp(t + 510));
    h.advance(509);
    assert.deepEqual(h.bodies("bob"), []);
    h.advance(1);
    assert.deepEqual(h.bodies("bob"), ["x"]);
  });

  test("without a senderTime the entry timestamp is the sender time", () => {
    const h = senderTimeMailbox(200);
    h.send("bob", "a");
    h.send("bob", "b");
    assert.deepEqual(h.bodies("bob"), []);
    h.advance(200);
    assert.deepEqual(h.bodies("bob"), ["a", "b"]);
  });

  test("a message later than the window is delivered as soon as possible", () => {
    const h = senderTimeMailbox(100);
    const t = h.nowMs;
    h.send("bob", "second", { senderTime: msTimestamp(t) });
    h.advance(150);
    assert.deepEqual(h.bodies("bob"), ["second"]);
    h.send("bob", "first", { senderTime: msTimestamp(t - 10) });
    assert.deepEqual(h.bodies("bob"), ["first"]); // no wait: its window is long over
  });

  test("ready messages go by sender time, also after a release, and LIST pages follow that order", () => {
    const h = senderTimeMailbox(0);
    const t = h.nowMs;
    for (const [body, offset] of [["c", 30], ["a", 10], ["b", 20]] as const) h.send("bob", body, { senderTime: msTimestamp(t - 100 + offset) });
    const first = h.receive("bob", 1, 1000);
    assert.deepEqual(first.messages.map((m) => read(m.body)), ["a"]);
    h.one({ op: "nack", mailbox: "bob", ids: [first.messages[0]!.id] });
    const page1 = h.list("bob", 2);
    assert.ok(page1.next !== undefined);
    const page2 = h.list("bob", 2, page1.next);
    assert.equal(page2.next, undefined);
    assert.equal(page1.items.length + page2.items.length, 3);
    assert.deepEqual(h.bodies("bob"), ["a", "b", "c"]);
  });

  test("senderTime too far ahead of the entry time is refused; the window is bounded", () => {
    const h = senderTimeMailbox();
    const tooFar = h.send("bob", "x", { senderTime: msTimestamp(h.nowMs + 60_001) });
    assert.equal(!tooFar.ok && tooFar.code, "INVALID");
    const wide = h.one({ op: "set-mailbox-config", mailbox: "bob", config: { reorderWindowMs: 60_001 } });
    assert.equal(!wide.ok && wide.code, "INVALID");
    const mode = h.one({ op: "set-mailbox-config", mailbox: "bob", config: { order: "random" as never } });
    assert.equal(!mode.ok && mode.code, "INVALID");
  });

  test("log-ordered messages stored before a switch come first", () => {
    const h = new Harness();
    h.send("bob", "old");
    h.one({ op: "set-mailbox-config", mailbox: "bob", config: { order: "sender-time", reorderWindowMs: 0 } });
    h.send("bob", "new", { senderTime: msTimestamp(h.nowMs - 1000) });
    assert.deepEqual(h.list("bob").items.length, 2);
    assert.deepEqual(h.bodies("bob"), ["old", "new"]);
  });
});

describe("log order", () => {
  test("ignores senderTime: delivery stays in log order and is immediate", () => {
    const h = new Harness();
    const t = h.nowMs;
    h.send("bob", "one", { senderTime: msTimestamp(t + 50) });
    h.send("bob", "two", { senderTime: msTimestamp(t) });
    assert.deepEqual(h.bodies("bob"), ["one", "two"]);
  });
});

test("a version-1 command batch (before senderTime) still decodes", () => {
  const commands = [
    { op: "receive" as const, mailbox: "bob", max: 3 },
    { op: "purge" as const, mailbox: "bob" },
  ];
  const bytes = encodeCommands(commands);
  assert.equal(bytes[0], 2);
  bytes[0] = 1; // these commands encode the same in both versions
  assert.deepEqual(decodeCommands(bytes), commands);
});

test("senderTime and the order settings survive the command encoding", () => {
  const commands = [
    { op: "send" as const, sender: "s", recipients: ["bob"], body: new Uint8Array([1]), senderTime: msTimestamp(5) + 3n },
    { op: "set-mailbox-config" as const, mailbox: "bob", config: { order: "sender-time" as const, reorderWindowMs: 250 } },
  ];
  assert.deepEqual(decodeCommands(encodeCommands(commands)), commands);
});
