// `ferry consume`: follow a mailbox, printing messages as they arrive (and acking them) until
// Ctrl-C or --count messages. The library's consume() loop on the command line.
import type { Command } from "commander";
import { addClientOptions, type ClientFlags, parsePositiveInteger, print, printJson, withClient } from "./common.js";
import { escapeBody, messageJson } from "./format.js";

interface ConsumeFlags extends ClientFlags {
  max?: number;
  count?: number;
  ack?: boolean; // --no-ack sets false
}

export function registerConsumeCommand(program: Command): void {
  addClientOptions(
    program
      .command("consume")
      .description("follow a mailbox: print messages as they arrive and ack each after printing (Ctrl-C to stop)")
      .argument("<mailbox>", "mailbox name")
      .option("--max <n>", "messages per receive", parsePositiveInteger, 16)
      .option("--count <n>", "stop after this many messages", parsePositiveInteger)
      .option("--no-ack", "do not ack: messages come back when their lease ends"),
  ).action(async (mailbox: string, flags: ConsumeFlags) => {
    const stop = new AbortController();
    const onInterrupt = () => stop.abort();
    process.once("SIGINT", onInterrupt);
    process.once("SIGTERM", onInterrupt);
    try {
      await withClient(flags, async (client) => {
        let printed = 0;
        for await (const message of client.consume(mailbox, { max: flags.max ?? 16, autoAck: flags.ack !== false, signal: stop.signal })) {
          if (flags.json) printJson(messageJson(message));
          else print(`${message.id} ${message.sender} ${message.timestamp} ${message.deliveries} ${escapeBody(message.body)}`);
          printed++;
          if (flags.count !== undefined && printed >= flags.count) stop.abort();
        }
      });
    } finally {
      process.off("SIGINT", onInterrupt);
      process.off("SIGTERM", onInterrupt);
    }
  });
}
