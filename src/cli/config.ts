// `ferry config <mailbox>`: replaces a mailbox's settings (order mode, reorder window, lease,
// capacity, TTL, expiry) and prints the effective settings. Flags left out take the cluster
// defaults; no flag at all resets the mailbox to them.
import { type Command, InvalidArgumentError } from "commander";
import type { MailboxSettings } from "../protocol/api.js";
import { addClientOptions, type ClientFlags, parseNonNegativeInteger, parsePositiveInteger, print, printJson, withClient } from "./common.js";

interface ConfigFlags extends ClientFlags {
  order?: MailboxSettings["order"];
  reorderWindowMs?: number;
  visibilityMs?: number;
  maxDeliveries?: number;
  maxMessages?: number;
  maxBytes?: number;
  overflow?: MailboxSettings["overflow"];
  ttlMs?: number;
  expiry?: MailboxSettings["expiry"];
}

function choice<T extends string>(choices: readonly T[]): (value: string) => T {
  return (value) => {
    if (!(choices as readonly string[]).includes(value)) throw new InvalidArgumentError(`expected one of ${choices.join(", ")}`);
    return value as T;
  };
}

export function settingsOf(flags: ConfigFlags): Partial<MailboxSettings> {
  const settings: Partial<MailboxSettings> = {};
  if (flags.order !== undefined) settings.order = flags.order;
  if (flags.reorderWindowMs !== undefined) settings.reorderWindowMs = flags.reorderWindowMs;
  if (flags.visibilityMs !== undefined) settings.visibilityMs = flags.visibilityMs;
  if (flags.maxDeliveries !== undefined) settings.deliveriesMax = flags.maxDeliveries;
  if (flags.maxMessages !== undefined) settings.messagesMax = flags.maxMessages;
  if (flags.maxBytes !== undefined) settings.bytesMax = flags.maxBytes;
  if (flags.overflow !== undefined) settings.overflow = flags.overflow;
  if (flags.ttlMs !== undefined) settings.ttlMs = flags.ttlMs;
  if (flags.expiry !== undefined) settings.expiry = flags.expiry;
  return settings;
}

export function registerConfigCommand(program: Command): void {
  addClientOptions(
    program
      .command("config")
      .description("replace a mailbox's settings (unset ones take the cluster defaults); prints the effective settings")
      .argument("<mailbox>", "mailbox name")
      .option("--order <mode>", "log (default) or sender-time", choice(["log", "sender-time"] as const))
      .option("--reorder-window-ms <ms>", "sender-time: how long a message waits for earlier-stamped ones", parseNonNegativeInteger)
      .option("--visibility-ms <ms>", "default lease length of a receive", parsePositiveInteger)
      .option("--max-deliveries <n>", "deliveries before a message goes to <mailbox>:dlq", parsePositiveInteger)
      .option("--max-messages <n>", "capacity in messages", parsePositiveInteger)
      .option("--max-bytes <n>", "capacity in body bytes", parsePositiveInteger)
      .option("--overflow <policy>", "a send into a full mailbox: reject or drop-oldest", choice(["reject", "drop-oldest"] as const))
      .option("--ttl-ms <ms>", "default time to live (0: none)", parseNonNegativeInteger)
      .option("--expiry <policy>", "an expired message: drop or dead-letter", choice(["drop", "dead-letter"] as const)),
  ).action(async (mailbox: string, flags: ConfigFlags) => {
    const config = await withClient(flags, (client) => client.configure(mailbox, settingsOf(flags)));
    if (flags.json) printJson(config);
    else for (const [key, value] of Object.entries(config)) print(`${key}=${value}`);
  });
}
