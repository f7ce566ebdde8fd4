// The message commands: send, receive, list, ack, nack. Each parses its flags, makes one or two
// client calls, prints the result (text for people, --json for scripts).
import { type Command, InvalidArgumentError } from "commander";
import type { SendOptions } from "../client/index.js";
import { FerryError } from "../protocol/errors.js";
import { registerConfigCommand } from "./config.js";
import { addClientOptions, type ClientFlags, collect, parseNonNegativeInteger, parsePositiveInteger, print, printJson, withClient } from "./common.js";
import { escapeBody, listItemJson, messageJson, table } from "./format.js";

interface SendFlags extends ClientFlags {
  id?: string;
  header?: string[];
  delay?: number;
  ttl?: number;
  senderTime?: bigint;
}
interface ReceiveFlags extends ClientFlags {
  max?: number;
  wait?: number;
  visibility?: number;
  ack?: boolean;
}
interface ListFlags extends ClientFlags {
  limit?: number;
  cursor?: string;
  stale?: boolean;
}
interface NackFlags extends ClientFlags {
  delay?: number;
}

export function registerMessageCommands(program: Command): void {
  addClientOptions(
    program
      .command("send")
      .description("send a message; prints its id once it is durable on a majority")
      .argument("<recipient>", "mailbox name; several, comma-separated, for an atomic fan-out")
      .argument("<body>", "message text, or - to read the body from stdin")
      .option("--id <id>", "message id (makes a resend a no-op); default: a random UUID")
      .option("--header <key=value>", "a header (repeatable)", collect)
      .option("--delay <ms>", "not delivered before this delay", parseNonNegativeInteger)
      .option("--ttl <ms>", "expires after this long", parsePositiveInteger)
      .option("--sender-time <hlc>", "the sender's HLC timestamp (orders the message in a sender-time mailbox)", parseTimestamp),
  ).action(async (recipient: string, body: string, flags: SendFlags) => {
    const options: SendOptions = {};
    if (flags.id !== undefined) options.id = flags.id;
    if (flags.header !== undefined) options.headers = parseHeaders(flags.header);
    if (flags.delay !== undefined) options.delayMs = flags.delay;
    if (flags.ttl !== undefined) options.ttlMs = flags.ttl;
    if (flags.senderTime !== undefined) options.senderTime = flags.senderTime;
    const bytes = body === "-" ? await readStdin() : body;
    const recipients = recipient.split(",").filter((name) => name.length > 0);
    const reply = await withClient(flags, (client) => client.send(recipients, bytes, options));
    if (flags.json) printJson({ id: reply.id, timestamp: reply.timestamp, duplicate: reply.duplicate });
    else print(reply.id);
  });

  addClientOptions(
    program
      .command("receive")
      .description("lease up to --max messages and print them: id sender timestamp deliveries body")
      .argument("<mailbox>", "mailbox name")
      .option("--max <n>", "most messages to take", parsePositiveInteger, 1)
      .option("--wait <ms>", "long poll: wait up to this long for a first message", parseNonNegativeInteger)
      .option("--visibility <ms>", "lease length (default: the mailbox's visibility timeout)", parsePositiveInteger)
      .option("--ack", "acknowledge the printed messages (otherwise they come back when the lease ends)"),
  ).action(async (mailbox: string, flags: ReceiveFlags) => {
    await withClient(flags, async (client) => {
      const messages = await client.receive(mailbox, {
        max: flags.max ?? 1,
        ...(flags.wait === undefined ? {} : { waitMs: flags.wait }),
        ...(flags.visibility === undefined ? {} : { visibilityMs: flags.visibility }),
      });
      if (flags.json) printJson(messages.map(messageJson));
      else for (const m of messages) print(`${m.id} ${m.sender} ${m.timestamp} ${m.deliveries} ${escapeBody(m.body)}`);
      if (flags.ack && messages.length > 0) {
        await client.ack(
          mailbox,
          messages.map((m) => m.id),
        );
      }
    });
  });

  addClientOptions(
    program
      .command("list")
      .description("list a mailbox's messages without leasing them")
      .argument("<mailbox>", "mailbox name")
      .option("--limit <n>", "page size", parsePositiveInteger)
      .option("--cursor <cursor>", "continue after a previous page")
      .option("--stale", "read the local replica without a leader round trip (faster, may lag)"),
  ).action(async (mailbox: string, flags: ListFlags) => {
    const page = await withClient(flags, (client) =>
      client.list(mailbox, {
        ...(flags.limit === undefined ? {} : { limit: flags.limit }),
        ...(flags.cursor === undefined ? {} : { cursor: flags.cursor }),
        ...(flags.stale ? { stale: true } : {}),
      }),
    );
    if (flags.json) {
      printJson({ items: page.items.map(listItemJson), ...(page.next === undefined ? {} : { next: page.next }) });
      return;
    }
    const rows = page.items.map((item) => [item.id, item.sender, item.timestamp.toString(), item.state, String(item.deliveries), String(item.bytes)]);
    print(table(["ID", "SENDER", "TIMESTAMP", "STATE", "DELIVERIES", "BYTES"], rows));
    if (page.next !== undefined) process.stderr.write(`more: ferry list ${mailbox} --cursor ${page.next}\n`);
  });

  addClientOptions(program.command("purge").description("remove every message of a mailbox; prints how many").argument("<mailbox>", "mailbox name")).action(
    async (mailbox: string, flags: ClientFlags) => {
      const count = await withClient(flags, (client) => client.purge(mailbox));
      if (flags.json) printJson({ count });
      else print(String(count));
    },
  );

  addClientOptions(
    program
      .command("ack")
      .description("acknowledge leased messages (removes them); prints how many were removed")
      .argument("<mailbox>", "mailbox name")
      .argument("<ids...>", "message ids"),
  ).action(async (mailbox: string, ids: string[], flags: ClientFlags) => {
    const count = await withClient(flags, (client) => client.ack(mailbox, ids));
    if (flags.json) printJson({ count });
    else print(String(count));
  });

  addClientOptions(
    program
      .command("nack")
      .description("give leased messages back (visible again); prints how many were released")
      .argument("<mailbox>", "mailbox name")
      .argument("<ids...>", "message ids")
      .option("--delay <ms>", "visible again only after this delay", parseNonNegativeInteger),
  ).action(async (mailbox: string, ids: string[], flags: NackFlags) => {
    const count = await withClient(flags, (client) => client.nack(mailbox, ids, flags.delay === undefined ? {} : { delayMs: flags.delay }));
    if (flags.json) printJson({ count });
    else print(String(count));
  });
  registerConfigCommand(program);
}

function parseTimestamp(value: string): bigint {
  if (!/^[0-9]{1,20}$/.test(value)) throw new InvalidArgumentError("expected an HLC timestamp (decimal integer)");
  return BigInt(value);
}

function parseHeaders(pairs: string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const pair of pairs) {
    const equals = pair.indexOf("=");
    if (equals <= 0) throw new FerryError("INVALID", `header '${pair}' is not key=value`);
    headers[pair.slice(0, equals)] = pair.slice(equals + 1);
  }
  return headers;
}

async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
