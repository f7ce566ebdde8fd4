// The `ferry` command line. Builds the commander program from one module per command group and
// runs it; it holds no logic of its own. Errors print `error: <CODE> <message>` on stderr and
// set the exit code from the table in docs/cli.md (usage errors: 2).
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { registerAdminCommands } from "./admin.js";
import { EXIT_USAGE, reportError } from "./common.js";
import { registerConsumeCommand } from "./consume.js";
import { registerMessageCommands } from "./messages.js";
import { registerNodeCommands } from "./node-commands.js";

export function buildProgram(): Command {
  const program = new Command("ferry")
    .description("Ferry: a fault-tolerant message broker (durable mailboxes replicated with Raft)")
    .version(packageVersion())
    .showHelpAfterError("(add --help for usage)")
    .exitOverride()
    .configureOutput({
      // Commander's own usage errors in the common shape: `error: INVALID <message>`.
      outputError: (text, write) => write(text.replace(/^error: /, "error: INVALID ")),
    });
  registerMessageCommands(program);
  registerConsumeCommand(program);
  registerAdminCommands(program);
  registerNodeCommands(program);
  return program;
}

// The version of the package this file ships in (src/cli and dist/cli both sit two levels down).
function packageVersion(): string {
  try {
    const manifest = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string };
    return manifest.version ?? "unknown";
  } catch {
    return "unknown";
  }
}

async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  if (argv.length <= 2) {
    program.outputHelp();
    return;
  }
  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version end here with exit code 0; usage errors were already printed.
      process.exitCode = error.exitCode === 0 ? 0 : EXIT_USAGE;
      return;
    }
    reportError(error);
  }
}

await main(process.argv);
