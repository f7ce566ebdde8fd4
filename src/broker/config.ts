// A BrokerConfig as an operator sets it (a node's config file, `broker` key): checked once at
// start, and compared between nodes. Every replica must apply entries with the same limits, or
// one would refuse a SEND another stores and their states would part: the node puts the
// replicated part of its config in its peer handshake, and a peer with other values is refused
// (src/transport). Pure: no I/O.
import { RECEIVE_MAX } from "../protocol/api.js";
import { mergeConfig } from "./broker.js";
import { BROKER_DEFAULTS, type BrokerConfig, type MailboxConfig } from "./commands.js";
import { mailboxConfigProblem } from "./validate.js";

// Not part of the state: a cache a replica sizes for itself (fresh-heads.ts), so nodes may differ.
const LOCAL_KEYS: ReadonlySet<string> = new Set<keyof BrokerConfig>(["freshHeadsInMemoryMax"]);

// Upper bounds the protocol imposes on a limit (a larger value could never be reached).
const CAPS: Partial<Record<keyof BrokerConfig, number>> = { receiveMax: RECEIVE_MAX };

export class BrokerConfigError extends Error {}

// What an operator gives: any of the limits, and any of the mailbox defaults.
export type BrokerSettings = Omit<Partial<BrokerConfig>, "mailbox"> & { mailbox?: Partial<MailboxConfig> };

// The effective config: defaults, then `partial`'s keys (its `mailbox` merged into the mailbox
// defaults). Throws BrokerConfigError naming the key for an unknown key or a value out of range.
export function resolveBrokerConfig(partial: unknown): BrokerConfig {
  const config = mergeConfig(undefined); // a copy of the defaults, its mailbox too
  if (partial === undefined) return config;
  if (typeof partial !== "object" || partial === null || Array.isArray(partial)) throw new BrokerConfigError("broker settings must be an object");
  const numbers = config as unknown as Record<string, number>;
  for (const [key, value] of Object.entries(partial)) {
    if (key === "mailbox") continue;
    if (!(key in BROKER_DEFAULTS)) throw new BrokerConfigError(`unknown broker setting '${key}' (known: ${Object.keys(BROKER_DEFAULTS).join(", ")})`);
    const cap = CAPS[key as keyof BrokerConfig] ?? Number.MAX_SAFE_INTEGER;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1 || value > cap) {
      throw new BrokerConfigError(`broker setting ${key} must be an integer from 1 to ${cap}, not ${JSON.stringify(value)}`);
    }
    numbers[key] = value;
  }
  const mailbox = (partial as { mailbox?: unknown }).mailbox;
  if (mailbox !== undefined) {
    if (typeof mailbox !== "object" || mailbox === null || Array.isArray(mailbox)) throw new BrokerConfigError("broker setting mailbox must be an object");
    for (const key of Object.keys(mailbox)) {
      if (!(key in BROKER_DEFAULTS.mailbox)) throw new BrokerConfigError(`unknown mailbox setting '${key}' (known: ${Object.keys(BROKER_DEFAULTS.mailbox).join(", ")})`);
    }
    // Checked against the limits just resolved, as a mailbox's own settings are.
    const problem = mailboxConfigProblem(mailbox as Partial<MailboxConfig>, config);
    if (problem !== undefined) throw new BrokerConfigError(`broker setting mailbox: ${problem.message}`);
    config.mailbox = { ...config.mailbox, ...(mailbox as Partial<MailboxConfig>) };
  }
  return config;
}

// The settings every replica must share, as a string that is equal exactly when they are (keys
// sorted, the node-local ones left out).
export function replicatedSettings(config: BrokerConfig): string {
  const shared: Record<string, unknown> = {};
  for (const key of Object.keys(config).sort()) {
    if (key === "mailbox" || LOCAL_KEYS.has(key)) continue;
    shared[key] = config[key as keyof BrokerConfig];
  }
  const mailbox: Record<string, unknown> = {};
  for (const key of Object.keys(config.mailbox).sort()) mailbox[key] = config.mailbox[key as keyof MailboxConfig];
  shared.mailbox = mailbox;
  return JSON.stringify(shared);
}

// Why a peer whose handshake carried `theirs` may not join this node's cluster, or undefined when
// the settings agree. A peer that sends none (a version before the settings were exchanged)
// runs with the defaults.
export function replicatedSettingsProblem(ours: string, theirs: string | undefined): string | undefined {
  const peer = theirs ?? replicatedSettings(BROKER_DEFAULTS);
  if (peer === ours) return undefined;
  let differences: string[];
  try {
    differences = settingsDifferences(JSON.parse(ours) as Record<string, unknown>, JSON.parse(peer) as Record<string, unknown>, "");
  } catch {
    differences = ["unreadable settings"];
  }
  return `broker settings differ (every node must use the same): ${differences.join(", ")}`;
}

function settingsDifferences(ours: Record<string, unknown>, theirs: Record<string, unknown>, prefix: string): string[] {
  const differences: string[] = [];
  for (const key of [...new Set([...Object.keys(ours), ...Object.keys(theirs)])].sort()) {
    const a = ours[key];
    const b = theirs[key];
    if (typeof a === "object" && a !== null && typeof b === "object" && b !== null) {
      differences.push(...settingsDifferences(a as Record<string, unknown>, b as Record<string, unknown>, `${prefix}${key}.`));
    } else if (JSON.stringify(a) !== JSON.stringify(b)) {
      differences.push(`${prefix}${key} ${JSON.stringify(a) ?? "unset"} here, ${JSON.stringify(b) ?? "unset"} there`);
    }
  }
  return differences;
}
