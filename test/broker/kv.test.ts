// The OrderedKv contract on both implementations, the LMDB store's group commit and restart,
// and a broker apply that throws (a bug) leaving the state consistent with its applied index.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { Broker, type BrokerCommand, msTimestamp } from "../../src/broker/broker.js";
import { KEY_END, type OrderedKv, prefixEnd, StoreCommitError } from "../../src/broker/kv.js";
import { MemoryKv } from "../../src/broker/kv-memory.js";
import { decodeMessage, encodeMessage } from "../../src/broker/records.js";
import { LmdbKv } from "../../src/storage/kv-lmdb.js";
import { dump, text } from "./harness.js";

const directory = mkdtempSync(join(tmpdir(), "ferry-broker-kv-"));
const opened: LmdbKv[] = [];
after(async () => {
  for (const kv of opened) await kv.close().catch(() => {});
  rmSync(directory, { recursive: true, force: true });
});
let counter = 0;
function lmdb(options: { noSync?: boolean; path?: string; commitFault?: () => Error | undefined } = {}): LmdbKv {
  const kv = new LmdbKv({
    path: options.path ?? join(directory, `kv${counter++}`),
    noSync: options.noSync ?? true,
    ...(options.commitFault ? { commitFault: options.commitFault } : {}),
  });
  opened.push(kv);
  return kv;
}

const KINDS: Array<[string, () => OrderedKv]> = [
  ["memory", () => new MemoryKv()],
  ["lmdb", () => lmdb()],
];
const byte = (n: number): string => String.fromCharCode(n);

for (const [kind, make] of KINDS) {
  describe(`OrderedKv on ${kind}`, () => {
    test("scans [start, end) in byte order both ways, with limits, like a sorted map", () => {
      const keyArbitrary = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 4 }).map((bytes) => String.fromCharCode(...bytes));
      fc.assert(
        fc.property(fc.uniqueArray(keyArbitrary, { maxLength: 60 }), keyArbitrary, keyArbitrary, fc.integer({ min: 0, max: 70 }), (keys, a, b, limit) => {
          const kv = make();
          kv.transaction(() => {
            kv.clear();
            for (const key of keys) kv.put(key, text(key));
          });
          const [start, end] = a < b ? [a, b] : [b, a];
          const sorted = [...keys].sort();
          const inRange = sorted.filter((key) => key >= start && key < end);
          assert.deepEqual(kv.scan(start, end, limit).map((e) => e.key), inRange.slice(0, limit));
          assert.deepEqual(kv.scan(start, end, limit, true).map((e) => e.key), [...inRange].reverse().slice(0, limit));
          assert.deepEqual(kv.scan("", KEY_END, Number.POSITIVE_INFINITY).map((e) => e.key), sorted);
          assert.deepEqual(kv.scan("", KEY_END, 3, true).map((e) => e.key), [...sorted].reverse().slice(0, 3));
        }),
        { numRuns: kind === "memory" ? 200 : 60 },
      );
    });

    test("many keys across chunk splits and removals stay ordered", () => {
      const kv = make();
      const keys: string[] = [];
      for (let i = 0; i < 5000; i++) keys.push(byte(i % 251) + byte((i * 7) % 256) + byte(i % 13));
      kv.transaction(() => {
        for (const key of keys) kv.put(key, text("v"));
        for (const key of keys.filter((_, i) => i % 3 === 0)) kv.delete(key);
      });
      const expected = [...new Set(keys.filter((_, i) => i % 3 !== 0))].filter((key) => !keys.some((k, i) => i % 3 === 0 && k === key)).sort();
      assert.deepEqual(kv.scan("", KEY_END, Number.POSITIVE_INFINITY).map((e) => e.key), expected);
      const prefix = byte(5);
      assert.deepEqual(kv.scan(prefix, prefixEnd(prefix), 1000).map((e) => e.key), expected.filter((key) => key.startsWith(prefix)));
    });

    test("a read view keeps the state of its moment", () => {
      const kv = make();
      kv.transaction(() => kv.put("a", text("1")));
      const view = kv.readView();
      kv.transaction(() => {
        kv.put("a", text("2"));
        kv.put("b", text("3"));
      });
      assert.deepEqual([...(view.get("a") ?? [])], [...text("1")]);
      assert.equal(view.get("b"), undefined);
      assert.deepEqual(view.scan("", KEY_END, 10).map((e) => e.key), ["a"]);
      view.release();
      assert.deepEqual(kv.scan("", KEY_END, 10).map((e) => e.key), ["a", "b"]);
    });

    test("put copies the value: the caller may reuse its buffer at once (scratch encoders do)", () => {
      const kv = make();
      const buffer = new Uint8Array(300).fill(7);
      kv.transaction(() => {
        kv.put("a", buffer.subarray(0, 200));
        buffer.fill(9);
        kv.put("b", buffer.subarray(100, 300));
        buffer.fill(0);
      });
      assert.deepEqual([...(kv.get("a") ?? [])], new Array(200).fill(7));
      assert.deepEqual([...(kv.get("b") ?? [])], new Array(200).fill(9));
    });


    test("values read are copies of their own: later reads, scans and writes leave them as they were", () => {
      const kv = make();
      const sizes = [0, 1, 47, 300, 5000, 70_000];
      kv.transaction(() => {
        for (const [i, size] of sizes.entries()) kv.put(`k${i}`, new Uint8Array(size).fill(i + 1));
      });
      const expected = (i: number) => new Array(sizes[i]).fill(i + 1);
      const got = sizes.map((_, i) => kv.get(`k${i}`)!);
      const scanned = kv.scan("", KEY_END, 100).map((entry) => entry.value);
      kv.transaction(() => {
        for (let i = 0; i < sizes.length; i++) kv.put(`k${i}`, new Uint8Array(sizes[i]!).fill(99));
      });
      for (let i = 0; i < sizes.length; i++) kv.get(`k${i}`);
      kv.scan("", KEY_END, 100);
      for (let i = 0; i < sizes.length; i++) {
        assert.deepEqual([...got[i]!], expected(i), `get of a ${sizes[i]}-byte value`);
        assert.deepEqual([...scanned[i]!], expected(i), `scan of a ${sizes[i]}-byte value`);
      }
      got[2]!.fill(0);
      assert.deepEqual([...(kv.get("k2") ?? [])], new Array(47).fill(99), "changing a value read changes nothing stored");
    });
    test("readInPlace hands the stored value to its reader, committed or not, and returns what it returns", () => {
      const kv = make();
      const sizes = [1, 47, 5000, 70_000];
      kv.transaction(() => {
        for (const [i, size] of sizes.entries()) kv.put(`k${i}`, new Uint8Array(size).fill(i + 1));
      });
      kv.transaction(() => kv.put("late", text("written after the others")));
      for (const [i, size] of sizes.entries()) {
        assert.deepEqual(
          kv.readInPlace(`k${i}`, (value) => [value.length, value[0], value[value.length - 1]]),
          [size, i + 1, i + 1],
        );
      }
      assert.equal(
        kv.readInPlace("late", (value) => Buffer.from(value).toString()),
        "written after the others",
      );
      assert.equal(
        kv.readInPlace("absent", () => assert.fail("not called for an absent key")),
        undefined,
      );
    });

    test("putIfAbsent stores only when the key is absent; a transaction that throws undoes it", () => {
      const kv = make();
      kv.transaction(() => {
        assert.equal(kv.putIfAbsent("a", text("1")), true);
        assert.equal(kv.putIfAbsent("a", text("2")), false);
        kv.delete("a");
        assert.equal(kv.putIfAbsent("a", text("3")), true);
      });
      assert.deepEqual([...(kv.get("a") ?? [])], [...text("3")]);
      if (kv instanceof LmdbKv) kv.commit();
      assert.throws(() =>
        kv.transaction(() => {
          assert.equal(kv.putIfAbsent("b", text("4")), true);
          throw new Error("bug");
        }),
      );
      assert.equal(kv.get("b"), undefined);
      assert.deepEqual([...(kv.get("a") ?? [])], [...text("3")]);
    });

    test("a transaction that throws leaves no trace of itself", () => {
      const kv = make();
      kv.transaction(() => kv.put("keep", text("1")));
      if (kv instanceof LmdbKv) kv.commit();
      const before = dump(kv);
      assert.throws(() =>
        kv.transaction(() => {
          kv.put("keep", text("2"));
          kv.put("new", text("3"));
          kv.delete("keep");
          throw new Error("bug");
        }),
      );
      assert.deepEqual(dump(kv), before);
    });
  });
}

describe("LMDB store", () => {
  test("a group commit takes every transaction of a turn; reads see them before the commit", async () => {
    const path = join(directory, "group");
    const kv = lmdb({ path, noSync: false });
    for (let i = 0; i < 5; i++) kv.transaction(() => kv.put(`k${i}`, text(String(i))));
    assert.equal(kv.scan("", KEY_END, 10).length, 5);
    await kv.flushed();
    await kv.close();
    const reopened = lmdb({ path, noSync: false });
    assert.deepEqual(reopened.scan("", KEY_END, 10).map((e) => e.key), ["k0", "k1", "k2", "k3", "k4"]);
  });

  test("a broker restarts at the applied index stored with its state", async () => {
    const path = join(directory, "restart");
    const kv = lmdb({ path, noSync: false });
    const broker = new Broker(kv);
    broker.apply(1, msTimestamp(1000), [{ op: "send", sender: "a", recipients: ["bob"], body: text("hi") }]);
    broker.apply(2, msTimestamp(1001), [{ op: "receive", mailbox: "bob", max: 1 }]);
    assert.equal(await broker.flush(), 2);
    const before = dump(kv);
    await kv.close();
    const again = new Broker(lmdb({ path, noSync: false }));
    assert.equal(again.appliedIndex(), 2);
    assert.equal(again.list({ op: "list", mailbox: "bob" }, msTimestamp(1002)).ok, true);
    assert.deepEqual(dump((again as unknown as { kv: OrderedKv }).kv), before);
  });

  test("counters written once per commit match the state, also across a restore", () => {
    const source = new Broker(lmdb());
    source.apply(1, msTimestamp(1000), [{ op: "send", sender: "a", recipients: ["bob", "carol"], body: text("1") }]);
    const chunks = [...source.snapshot().chunks];
    // groupTransactionsMax 2: the restore's own transaction closes the group and runs the hook.
    for (const groupTransactionsMax of [2, 1000]) {
      const kv = new LmdbKv({ path: join(directory, `restore-${groupTransactionsMax}`), noSync: true, groupTransactionsMax });
      opened.push(kv);
      const target = new Broker(kv);
      target.apply(1, msTimestamp(1000), [{ op: "send", sender: "a", recipients: ["junk"], body: text("x") }]);
      target.restore(chunks);
      assert.deepEqual(dump(kv), dump((source as unknown as { kv: OrderedKv }).kv));
      assert.equal(new Broker(kv).mailboxCount(), 2);
    }
  });

  test("state records reach the store at the commit: a lease acked within one group never writes one", async () => {
    const path = join(directory, "states");
    const kv = lmdb({ path, noSync: false });
    const grouped = new Broker(kv);
    const perApply = new Broker(new MemoryKv()); // writes every state record in its apply
    const stateOps: string[] = [];
    const put = kv.put.bind(kv);
    const remove = kv.delete.bind(kv);
    kv.put = (key, value) => {
      if (key.startsWith("\x05")) stateOps.push(`put ${key.slice(key.indexOf("\x00") + 1)}`);
      put(key, value);
    };
    kv.delete = (key) => {
      if (key.startsWith("\x05")) stateOps.push(`delete ${key.slice(key.indexOf("\x00") + 1)}`);
      remove(key);
    };
    const entries: BrokerCommand[][] = [
      ["m1", "m2", "m3", "m4"].map((id) => ({ op: "send", sender: "a", recipients: ["bob"], body: text(id), id })),
      [{ op: "receive", mailbox: "bob", max: 3, visibilityMs: 60_000 }],
      [{ op: "ack", mailbox: "bob", ids: ["m1"] }],
      [{ op: "nack", mailbox: "bob", ids: ["m2"] }],
    ];
    // lmdb-js hands out Buffers, the memory store Uint8Arrays: compare the bytes.
    const plain = (value: unknown): string =>
      JSON.stringify(value, (_, v) => (typeof v === "bigint" ? v.toString() : v?.type === "Buffer" ? v.data : v instanceof Uint8Array ? [...v] : v));
    entries.forEach((commands, i) => {
      assert.equal(plain(grouped.apply(i + 1, msTimestamp(1000 + i), commands)), plain(perApply.apply(i + 1, msTimestamp(1000 + i), commands)));
    });
    assert.deepEqual(stateOps, [], "nothing is written before the commit");
    const listed = (broker: Broker) => broker.list({ op: "list", mailbox: "bob" }, msTimestamp(2000));
    assert.deepEqual(listed(grouped), listed(perApply), "reads see the states not yet stored");
    await grouped.flush();
    assert.deepEqual(stateOps.sort(), ["put m2", "put m3"], "m1 was leased and acked within the group");
    assert.deepEqual(dump(kv), dump((perApply as unknown as { kv: OrderedKv }).kv));
    // A state record already stored is updated or deleted at the next commit, also when it was
    // updated within the group first.
    stateOps.length = 0;
    const later: BrokerCommand[][] = [
      [{ op: "extend", mailbox: "bob", ids: ["m3"], visibilityMs: 90_000 }],
      [{ op: "ack", mailbox: "bob", ids: ["m3"] }],
    ];
    later.forEach((commands, i) => {
      assert.equal(plain(grouped.apply(5 + i, msTimestamp(1005), commands)), plain(perApply.apply(5 + i, msTimestamp(1005), commands)));
    });
    await grouped.flush();
    assert.deepEqual(stateOps, ["delete m3"]);
    assert.deepEqual(dump(kv), dump((perApply as unknown as { kv: OrderedKv }).kv));
    await kv.close();
    const again = new Broker(lmdb({ path, noSync: false }));
    assert.deepEqual(listed(again), listed(perApply));
  });

  test("an apply that throws drops the state records of the uncommitted group", () => {
    const kv = lmdb();
    const broker = new Broker(kv);
    broker.apply(1, msTimestamp(1000), [{ op: "send", sender: "a", recipients: ["bob"], body: text("1"), id: "m1" }]);
    kv.commit();
    broker.apply(2, msTimestamp(1000), [{ op: "receive", mailbox: "bob", max: 1 }]);
    const put = kv.put.bind(kv);
    kv.put = () => {
      throw new Error("injected bug");
    };
    assert.throws(() => broker.apply(3, msTimestamp(1000), [{ op: "send", sender: "a", recipients: ["bob"], body: text("2") }]), /injected/);
    kv.put = put;
    const listed = broker.list({ op: "list", mailbox: "bob" }, msTimestamp(1000));
    assert.deepEqual(listed.ok && listed.items.map((item) => [item.id, item.state, item.deliveries]), [["m1", "ready", 0]]);
    // Entry 2 again, differently this time: the lost lease must not reach the store.
    broker.apply(2, msTimestamp(1000), [{ op: "send", sender: "a", recipients: ["bob"], body: text("2"), id: "m2" }]);
    kv.commit();
    assert.deepEqual(
      dump(kv).filter(([key]) => key.startsWith("\x05")),
      [],
    );
  });

  test("an apply that throws forgets the client ids of the uncommitted group", () => {
    const kv = lmdb();
    const broker = new Broker(kv);
    const send = (id: string) => ({ op: "send" as const, sender: "a", recipients: ["bob"], body: text(id), id });
    broker.apply(1, msTimestamp(1000), [send("m1")]);
    kv.commit();
    broker.apply(2, msTimestamp(1000), [send("m2")]);
    assert.equal(broker.dedupeIdsInMemory(), 2);
    const put = kv.put.bind(kv);
    kv.put = () => {
      throw new Error("injected bug");
    };
    assert.throws(() => broker.apply(3, msTimestamp(1000), [send("m3")]), /injected/);
    kv.put = put;
    // Entries 2 and 3 are gone with the group: m2 is new again, m1 still a duplicate.
    assert.equal(broker.dedupeIdsInMemory(), 1);
    const [again, duplicate] = broker.apply(2, msTimestamp(1000), [send("m2"), send("m1")]);
    assert.deepEqual([again!.ok && "duplicate" in again && again.duplicate, duplicate!.ok && "duplicate" in duplicate && duplicate.duplicate], [false, true]);
  });

  test("an apply that throws falls back to the last commit, consistent with the applied index", () => {
    const kv = lmdb();
    const broker = new Broker(kv);
    broker.apply(1, msTimestamp(1000), [{ op: "send", sender: "a", recipients: ["bob"], body: text("1") }]);
    kv.commit();
    broker.apply(2, msTimestamp(1000), [{ op: "send", sender: "a", recipients: ["bob"], body: text("2") }]);
    const put = kv.put.bind(kv);
    let puts = 0;
    kv.put = (key, value) => {
      if (++puts === 2) throw new Error("injected bug");
      put(key, value);
    };
    assert.throws(() => broker.apply(3, msTimestamp(1000), [{ op: "send", sender: "a", recipients: ["bob"], body: text("3") }]), /injected/);
    kv.put = put;
    // The whole uncommitted group (entries 2 and 3) is gone, and the broker knows it.
    assert.equal(broker.appliedIndex(), 1);
    const listed = broker.list({ op: "list", mailbox: "bob" }, msTimestamp(1000));
    assert.equal(listed.ok && listed.items.length, 1);
    broker.apply(2, msTimestamp(1000), [{ op: "send", sender: "a", recipients: ["bob"], body: text("2") }]);
    assert.equal(broker.appliedIndex(), 2);
  });
});

describe("LMDB store: a commit that fails", () => {
  // lmdb-js 3.5 refuses a commit now and then (its freelist check); the planted fault fails the
  // commit at the same point, through the same abort.
  const send = (id: string) => ({ op: "send" as const, sender: "a", recipients: ["bob"], body: text(id), id });

  test("rolls back the whole group; every operation fails until recover(), then the store works from its last commit", () => {
    let fail = false;
    const kv = lmdb({ commitFault: () => (fail ? new Error("planted: freelist entry 14 had bad/duplicate entries") : undefined) });
    const heard: StoreCommitError[] = [];
    kv.setFailureListener((error) => heard.push(error));
    kv.transaction(() => kv.put("a", text("1")));
    kv.commit();
    kv.transaction(() => kv.put("b", text("2")));
    kv.transaction(() => kv.delete("a"));
    fail = true;
    assert.throws(() => kv.commit(), (error: unknown) => error instanceof StoreCommitError && /planted: freelist/.test(error.message));
    fail = false;
    assert.equal(heard.length, 1, "the listener heard of the failure when it happened");
    assert.equal(kv.failed, true);
    assert.throws(() => kv.get("a"), StoreCommitError);
    assert.throws(() => kv.transaction(() => kv.put("c", text("3"))), StoreCommitError);
    assert.equal(kv.recover(), true);
    assert.equal(kv.failed, false);
    assert.equal(kv.recover(), false, "nothing to recover from any more");
    assert.deepEqual(dump(kv), [["a", Buffer.from("1").toString("hex")]]);
    kv.transaction(() => kv.put("c", text("3")));
    kv.commit();
    assert.deepEqual(dump(kv).map(([key]) => key), ["a", "c"]);
  });

  test("a commit the group timer makes fails the same way, and the listener hears of it at once", async () => {
    let fail = true;
    const kv = new LmdbKv({ path: join(directory, `kv${counter++}`), noSync: true, commitIntervalMs: 0, commitFault: () => (fail ? new Error("planted") : undefined) });
    opened.push(kv);
    const heard = new Promise<StoreCommitError>((resolve) => kv.setFailureListener(resolve));
    kv.transaction(() => kv.put("a", text("1")));
    const error = await heard;
    assert.match(error.message, /could not commit: planted/);
    fail = false;
    assert.equal(kv.recover(), true);
    assert.equal(kv.get("a"), undefined);
  });

  test("a broker reloaded after recover() and given the lost entries again has the state it would have had", () => {
    let fail = false;
    const kv = lmdb({ commitFault: () => (fail ? new Error("planted") : undefined) });
    const twin = lmdb();
    const broker = new Broker(kv);
    const reference = new Broker(twin);
    const entries: BrokerCommand[][] = [
      [send("m1"), send("m2"), send("m3")],
      [{ op: "receive", mailbox: "bob", max: 2 }],
      [{ op: "ack", mailbox: "bob", ids: ["m1"] }, send("m4")],
      [{ op: "receive", mailbox: "bob", max: 5 }],
    ];
    const at = (index: number) => msTimestamp(1000 + index);
    broker.apply(1, at(1), entries[0]!);
    kv.commit();
    for (let index = 2; index <= 3; index++) broker.apply(index, at(index), entries[index - 1]!);
    fail = true;
    // The group timer's commit fails (the apply of entry 4 then meets the failure).
    assert.throws(() => kv.commit(), StoreCommitError);
    fail = false;
    assert.throws(() => broker.apply(4, at(4), entries[3]!), StoreCommitError, "the store refuses until recovered");
    assert.equal(kv.recover(), true);
    broker.reload();
    assert.equal(broker.appliedIndex(), 1, "back to the last commit");
    for (let index = 2; index <= 4; index++) broker.apply(index, at(index), entries[index - 1]!);
    for (let index = 1; index <= 4; index++) reference.apply(index, at(index), entries[index - 1]!);
    kv.commit();
    twin.commit();
    assert.deepEqual(dump(kv), dump(twin));
  });
});

describe("memory store", () => {
  test("an apply that throws changes nothing", () => {
    const kv = new MemoryKv();
    const broker = new Broker(kv);
    broker.apply(1, msTimestamp(1000), [{ op: "send", sender: "a", recipients: ["bob"], body: text("1") }]);
    const before = dump(kv);
    const put = kv.put.bind(kv);
    kv.put = (key, value) => {
      if (key.startsWith("\x02")) throw new Error("injected bug");
      put(key, value);
    };
    assert.throws(() => broker.apply(2, msTimestamp(1000), [{ op: "send", sender: "a", recipients: ["carol"], body: text("2") }]), /injected/);
    kv.put = put;
    assert.deepEqual(dump(kv), before);
    assert.equal(broker.appliedIndex(), 1);
    assert.equal(broker.mailboxCount(), 1);
  });
});

describe("scratch encoders", () => {
  test("records larger than the scratch buffer grow it; each encoding reuses it", () => {
    const big = new Uint8Array(200 * 1024).map((_, i) => i % 251);
    const message = {
      id: "m1",
      sender: "s",
      timestamp: 5n,
      hiddenUntilMs: 0,
      expiresAtMs: 0,
      headers: { a: "b" },
      body: big,
      senderTime: undefined,
    };
    const encoded = encodeMessage(message);
    assert.deepEqual(decodeMessage(encoded.slice()), message);
    const small = encodeMessage({ ...message, id: "m2", body: new Uint8Array([1, 2, 3]) });
    assert.equal(small.buffer, encoded.buffer, "the second encoding reuses the (grown) scratch buffer");
    assert.deepEqual([...decodeMessage(small).body], [1, 2, 3]);
  });
});
