// `ferry hash-password`: the stored form of a password for a users file (src/server/auth.ts).
// The password comes from standard input (its first line), so it stays out of the shell history
// and of `ps`: `echo -n 'secret' | ferry hash-password` or type it and press Enter.
import type { Command } from "commander";
import { hashPassword, SCRYPT_COST_DEFAULT } from "../server/auth.js";
import { EXIT_USAGE, parsePositiveInteger } from "./common.js";

async function readFirstLine(): Promise<string> {
  let text = "";
  for await (const chunk of process.stdin) {
    text += String(chunk);
    if (text.includes("\n")) break;
  }
  return text.split(/\r?\n/)[0] ?? "";
}

export function registerHashPasswordCommand(program: Command): void {
  program
    .command("hash-password")
    .description("print the scrypt hash of a password read from stdin, for the users file of `ferry start --users`")
    .option("--cost <n>", `scrypt cost N, a power of two (default ${SCRYPT_COST_DEFAULT})`, parsePositiveInteger)
    .action(async (flags: { cost?: number }) => {
      const password = await readFirstLine();
      if (password === "") {
        console.error("error: INVALID no password on stdin (try: echo -n 'secret' | ferry hash-password)");
        process.exit(EXIT_USAGE);
      }
      try {
        console.log(await hashPassword(password, flags.cost ?? SCRYPT_COST_DEFAULT));
      } catch (error) {
        console.error(`error: INVALID ${(error as Error).message}`);
        process.exit(EXIT_USAGE);
      }
    });
}
