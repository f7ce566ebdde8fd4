// The text codec on its own: the resumable line parser (every split point, the limit, fuzzing),
// body escaping, command parsing and reply formatting.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { FerryError } from "../../src/protocol/errors.js";
import {
  bodyFromText,
  bodyToText,
  escapeBody,
  formatError,
  formatReply,
  type LineEvent,
  LineParser,
  parseCommand,
  unescapeBody,
} from "../../src/protocol/text.js";

function feedAll(parser: LineParser, chunks: Uint8Array[]): LineEvent[] {
  return chunks.flatMap((chunk) => parser.feed(chunk));
}

test("lines end at LF or CRLF; a lone CR stays in the line", () => {
  const parser = new LineParser(100);
  assert.deepEqual(parser.feed(Buffer.from("PING\nSEND a b\r\nX\rY\n\n")), [
    { kind: "line", text: "PING" },
    { kind: "line", text: "SEND a b" },
    { kind: "line", text: "X\rY" },
    { kind: "line", text: "" },
  ]);
  assert.equal(parser.bufferedBytes, 0);
});

test("every split point of a stream gives the same lines", () => {
  const stream = Buffer.from("HELLO bob\r\nSEND alice h\u00e9llo w\u00f6rld \\n!\nRECEIVE alice 5 100\r\nQUIT\n");
  const whole = new LineParser(64).feed(stream);
  for (let first = 0; first <= stream.length; first++) {
    for (let second = first; second <= stream.length; second++) {
      const parser = new LineParser(64);
      const events = feedAll(parser, [stream.subarray(0, first), stream.subarray(first, second), stream.subarray(second)]);
      assert.deepEqual(events, whole, `split at ${first}, ${second}`);
    }
  }
});

test("a line over the limit is reported once, discarded, and the next line parses", () => {
  const parser = new LineParser(8);
  assert.deepEqual(parser.feed(Buffer.from("12345678\n123456789\nPING\n")), [
    { kind: "line", text: "12345678" },
    { kind: "tooLarge", bytes: 9 },
    { kind: "line", text: "PING" },
  ]);
  // Limit plus CRLF is still within the limit: the CR is not part of the line.
  assert.deepEqual(parser.feed(Buffer.from("12345678\r\n")), [{ kind: "line", text: "12345678" }]);
  // Fed byte by byte, an endless line never makes the parser hold more than the limit + 1.
  const endless = new LineParser(8);
  const events: LineEvent[] = [];
  for (let index = 0; index < 1000; index++) {
    events.push(...endless.feed(Buffer.from("x")));
    assert.ok(endless.bufferedBytes <= 9);
  }
  assert.equal(events.length, 1);
  assert.equal(events[0]!.kind, "tooLarge");
  assert.deepEqual(endless.feed(Buffer.from("xxx\nPING\n")), [{ kind: "line", text: "PING" }]);
});

test("fuzz: any bytes in any chunks give the same events, bounded buffering", () => {
  const limit = 32;
  const alphabet = fc.constantFrom(0x0a, 0x0d, 0x20, 0x41, 0x5c, 0x6e, 0x00, 0xc3, 0xa9, 0xff);
  fc.assert(
    fc.property(fc.array(fc.oneof(alphabet, fc.integer({ min: 0, max: 255 })), { maxLength: 400 }), fc.array(fc.nat(400), { maxLength: 10 }), (bytes, cuts) => {
      const stream = Buffer.from(bytes);
      const reference = new LineParser(limit).feed(stream);
      const parser = new LineParser(limit);
      const points = [...new Set(cuts.map((cut) => cut % (stream.length + 1)))].sort((a, b) => a - b);
      const events: LineEvent[] = [];
      let start = 0;
      for (const point of [...points, stream.length]) {
        events.push(...parser.feed(stream.subarray(start, point)));
        assert.ok(parser.bufferedBytes <= limit + 1, `buffered ${parser.bufferedBytes}`);
        start = point;
      }
      assert.deepEqual(events, reference);
      for (const event of events) {
        if (event.kind === "line") assert.ok(Buffer.byteLength(event.text) <= limit * 3); // U+FFFD may widen bytes
        else assert.ok(event.bytes > limit);
      }
    }),
    { numRuns: 500 },
  );
});

test("bodies: \\n, \\\\ and \\r round-trip; other backslashes stay", () => {
  assert.equal(unescapeBody("a\\nb\\\\n\\r\\t"), "a\nb\\n\r\\t");
  assert.equal(escapeBody("a\nb\\n\r"), "a\\nb\\\\n\\r");
  assert.equal(bodyToText(Buffer.from("line one\nline two")), "line one\\nline two");
  fc.assert(
    fc.property(fc.string({ unit: "binary" }), (text) => {
      const escaped = escapeBody(text);
      assert.ok(!escaped.includes("\n") && !escaped.includes("\r"));
      assert.equal(unescapeBody(escaped), text);
    }),
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      // Any bytes print as one line, and valid UTF-8 comes back exactly.
      const text = bodyToText(bytes);
      assert.ok(!text.includes("\n"));
      const valid = Buffer.from(Buffer.from(bytes).toString("utf8")).equals(Buffer.from(bytes));
      if (valid) assert.deepEqual(Buffer.from(bodyFromText(text)), Buffer.from(bytes));
    }),
  );
});

test("parseCommand: the core forms", () => {
  const send = parseCommand("SEND bob  two  spaces ");
  assert.equal(send.kind, "request");
  assert.deepEqual(send.kind === "request" && { ...send.request, body: Buffer.from((send.request as { body: Uint8Array }).body).toString() }, {
    op: "send",
    recipients: ["bob"],
    body: " two  spaces ",
  });
  assert.deepEqual(parseCommand("receive bob"), { kind: "request", request: { op: "receive", mailbox: "bob", max: 1 } });
  assert.deepEqual(parseCommand("RECEIVE bob 5 1000 30000"), {
    kind: "request",
    request: { op: "receive", mailbox: "bob", max: 5, waitMs: 1000, visibilityMs: 30000 },
  });
  assert.deepEqual(parseCommand("ACK bob a b  c"), { kind: "request", request: { op: "ack", mailbox: "bob", ids: ["a", "b", "c"] } });
  assert.deepEqual(parseCommand("NACK bob a"), { kind: "request", request: { op: "nack", mailbox: "bob", ids: ["a"] } });
  assert.deepEqual(parseCommand("LIST bob"), { kind: "request", request: { op: "list", mailbox: "bob" } });
  assert.deepEqual(parseCommand("LIST bob 10 c1"), { kind: "request", request: { op: "list", mailbox: "bob", limit: 10, cursor: "c1" } });
  assert.deepEqual(parseCommand("STATUS"), { kind: "request", request: { op: "status" } });
  assert.deepEqual(parseCommand("HELLO alice"), { kind: "request", request: { op: "hello", name: "alice" } });
  assert.deepEqual(parseCommand("help"), { kind: "help" });
  assert.deepEqual(parseCommand("Quit"), { kind: "quit" });
  assert.deepEqual(parseCommand("SEND bob "), { kind: "request", request: { op: "send", recipients: ["bob"], body: new Uint8Array() } });
});

test("parseCommand: fuzzed lines either parse or throw FerryError INVALID", () => {
  const verbs = ["SEND", "SENDID", "RECEIVE", "ACK", "NACK", "EXTEND", "LIST", "PURGE", "DELETE", "STATUS", "CLUSTER", "HELLO", "HELP", "QUIT", "PING"];
  const word = fc.oneof(fc.constantFrom(...verbs, "ADD", "REMOVE", "TRANSFER", "bob", "0", "99999999999999999999", "-1", "", " "), fc.string({ maxLength: 8 }));
  fc.assert(
    fc.property(fc.array(word, { minLength: 1, maxLength: 6 }), (words) => {
      try {
        parseCommand(words.join(" "));
      } catch (error) {
        assert.ok(error instanceof FerryError, String(error));
        assert.equal(error.code, "INVALID");
      }
    }),
    { numRuns: 2000 },
  );
});

test("formatReply and formatError make single lines", () => {
  const timestamp = (1n << 60n) + 5n;
  assert.deepEqual(
    formatReply(
      { op: "receive", mailbox: "bob", max: 2 },
      {
        ok: true,
        messages: [{ id: "m1", sender: "alice", recipient: "bob", timestamp, deliveries: 2, body: Buffer.from("a\nb") }],
      },
    ),
    [`MSG m1 alice ${timestamp} 2 a\\nb`, "END"],
  );
  assert.deepEqual(
    formatReply(
      { op: "list", mailbox: "bob" },
      { ok: true, items: [{ id: "m1", sender: "alice", timestamp: 7n, state: "leased", deliveries: 1, bytes: 3 }], next: "c2" },
    ),
    ["ITEM m1 alice 7 leased 1 3", "NEXT c2", "END"],
  );
  assert.deepEqual(formatReply({ op: "ack", mailbox: "bob", ids: ["m1"] }, { ok: true, count: 1 }), ["OK 1"]);
  assert.deepEqual(formatReply({ op: "send", recipients: ["bob"], body: new Uint8Array() }, { ok: true, id: "m9", timestamp: 1n, duplicate: false }), ["OK m9"]);
  assert.equal(formatError("NO_QUORUM", "no leader\nnow"), "ERR NO_QUORUM no leader now");
});

test("fuzz: mutated valid lines (flips, cuts, insertions) in any chunking: no crash, bounded buffering", () => {
  const limit = 48;
  const valid = ["SEND bob hello\\nworld", "RECEIVE bob 10 100", "ACK bob m1 m2", "LIST bob 5 c", "HELLO alice", "CLUSTER ADD 4 h:1 h:2", "QUIT"];
  const mutation = fc.oneof(
    fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant("cut" as const), at: fc.nat(), byte: fc.constant(0) }),
    fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), byte: fc.constantFrom(0x0a, 0x0d, 0x20, 0x5c, 0x78) }),
  );
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom(...valid), { minLength: 1, maxLength: 8 }),
      fc.array(mutation, { maxLength: 8 }),
      fc.array(fc.nat(500), { maxLength: 8 }),
      (lines, mutations, cuts) => {
        let bytes = [...Buffer.from(lines.map((line) => `${line}\r\n`).join(""))];
        for (const { kind, at, byte } of mutations) {
          const index = at % (bytes.length + 1);
          if (kind === "flip" && index < bytes.length) bytes[index] = byte;
          if (kind === "cut") bytes = bytes.slice(0, index).concat(bytes.slice(index + 1));
          if (kind === "insert") bytes.splice(index, 0, ...Array(1 + (at % 60)).fill(byte));
        }
        const stream = Buffer.from(bytes);
        const parser = new LineParser(limit);
        const points = [...new Set(cuts.map((cut) => cut % (stream.length + 1)))].sort((a, b) => a - b);
        let start = 0;
        for (const point of [...points, stream.length]) {
          for (const event of parser.feed(stream.subarray(start, point))) {
            if (event.kind !== "line") continue;
            try {
              parseCommand(event.text);
            } catch (error) {
              assert.ok(error instanceof FerryError && error.code === "INVALID", String(error));
            }
          }
          assert.ok(parser.bufferedBytes <= limit + 1);
          start = point;
        }
      },
    ),
    { numRuns: 1000 },
  );
});
