// A broker config as an operator writes it (a node's config file): checked at start, and the part
// every replica must share compared between nodes.
import assert from "node:assert/strict";
import { test } from "node:test";
import { BROKER_DEFAULTS } from "../../src/broker/broker.js";
import { BrokerConfigError, replicatedSettings, replicatedSettingsProblem, resolveBrokerConfig } from "../../src/broker/config.js";

test("the broker config is the defaults with the given keys, the mailbox defaults merged key by key", () => {
  assert.deepEqual(resolveBrokerConfig(undefined), BROKER_DEFAULTS);
  assert.deepEqual(resolveBrokerConfig({}), BROKER_DEFAULTS);
  const config = resolveBrokerConfig({ bodyBytesMax: 65_536, mailboxesMax: 10, mailbox: { visibilityMs: 5_000, overflow: "drop-oldest" } });
  assert.equal(config.bodyBytesMax, 65_536);
  assert.equal(config.mailboxesMax, 10);
  assert.equal(config.receiveMax, BROKER_DEFAULTS.receiveMax);
  assert.deepEqual(config.mailbox, { ...BROKER_DEFAULTS.mailbox, visibilityMs: 5_000, overflow: "drop-oldest" });
  assert.equal(BROKER_DEFAULTS.mailbox.visibilityMs, 30_000, "the defaults are not changed");
});

test("a broker config with an unknown key or a value out of range is refused, naming the key", () => {
  const refused = (partial: unknown, message: RegExp) => assert.throws(() => resolveBrokerConfig(partial), (error: unknown) => error instanceof BrokerConfigError && message.test(error.message));
  refused([], /must be an object/);
  refused("big", /must be an object/);
  refused({ bodyBytes: 10 }, /unknown broker setting 'bodyBytes' \(known: .*bodyBytesMax/);
  refused({ bodyBytesMax: 0 }, /bodyBytesMax must be an integer from 1 to/);
  refused({ bodyBytesMax: 1.5 }, /bodyBytesMax must be an integer/);
  refused({ bodyBytesMax: "1MiB" }, /bodyBytesMax must be an integer .*, not "1MiB"/);
  refused({ receiveMax: 1001 }, /receiveMax must be an integer from 1 to 1000/);
  refused({ mailbox: 5 }, /mailbox must be an object/);
  refused({ mailbox: { visibility: 5 } }, /unknown mailbox setting 'visibility'/);
  refused({ mailbox: { overflow: "block" } }, /broker setting mailbox: overflow must be reject or drop-oldest/);
  // The mailbox defaults are checked against the limits being set, not the default ones.
  refused({ visibilityMsMax: 10_000, mailbox: { visibilityMs: 20_000 } }, /visibilityMs 20000 is outside 1..10000/);
  assert.equal(resolveBrokerConfig({ visibilityMsMax: 10_000, mailbox: { visibilityMs: 10_000 } }).mailbox.visibilityMs, 10_000);
});

test("replicated settings are equal exactly when the shared limits are, whatever the key order; a node-local cache size is left out", () => {
  const a = replicatedSettings(resolveBrokerConfig({ bodyBytesMax: 1000, mailbox: { ttlMs: 60_000, deliveriesMax: 3 } }));
  const b = replicatedSettings(resolveBrokerConfig({ mailbox: { deliveriesMax: 3, ttlMs: 60_000 }, bodyBytesMax: 1000 }));
  assert.equal(a, b);
  assert.equal(replicatedSettings(resolveBrokerConfig({ freshHeadsInMemoryMax: 7 })), replicatedSettings(BROKER_DEFAULTS));
  assert.notEqual(replicatedSettings(resolveBrokerConfig({ dedupeIdsInMemoryMax: 7 })), replicatedSettings(BROKER_DEFAULTS));
  assert.notEqual(replicatedSettings(resolveBrokerConfig({ mailbox: { deliveriesMax: 4 } })), replicatedSettings(BROKER_DEFAULTS));
  for (const key of Object.keys(BROKER_DEFAULTS)) {
    if (key === "mailbox" || key === "freshHeadsInMemoryMax") continue;
    assert.ok(JSON.parse(a)[key] !== undefined, `${key} is compared`);
  }
});

test("the settings problem names each differing limit with both values; a peer that sends none runs the defaults", () => {
  const ours = replicatedSettings(resolveBrokerConfig({ bodyBytesMax: 1000, mailbox: { deliveriesMax: 3 } }));
  assert.equal(replicatedSettingsProblem(ours, ours), undefined);
  assert.equal(
    replicatedSettingsProblem(ours, replicatedSettings(BROKER_DEFAULTS)),
    "broker settings differ (every node must use the same): bodyBytesMax 1000 here, 1048576 there, mailbox.deliveriesMax 3 here, 5 there",
  );
  assert.equal(replicatedSettingsProblem(ours, undefined), replicatedSettingsProblem(ours, replicatedSettings(BROKER_DEFAULTS)));
  assert.equal(replicatedSettingsProblem(replicatedSettings(BROKER_DEFAULTS), undefined), undefined, "an older node with defaults is let in");
  assert.match(replicatedSettingsProblem(ours, "{not json") ?? "", /unreadable settings/);
});
