/**
 * The `strata` command: parses arguments, calls the library, prints. Nothing else.
 *
 * @example Run a command in-process
 * ```ts ignore
 * import { main } from "@strata/strata/cli";
 * const code = await main(["--root", "/tmp/strata", "images", "ls"]);
 * Deno.exit(code);
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Client } from "./client.ts";
import { StrataError } from "./errors.ts";
import {
  type Command,
  type CommandContext,
  type CommandGroup,
  groupHelp,
  parseCommandArgs,
} from "./cli/_command.ts";
import { loadConfig } from "./cli/_config.ts";
import { contentGroup } from "./cli/content.ts";
import { imagesGroup } from "./cli/images.ts";
import { importCommand } from "./cli/import.ts";
import { mountCommand, snapshotsGroup, unmountCommand } from "./cli/snapshots.ts";
import { applyCommand, rootfsCommand, unpackCommand } from "./cli/unpack.ts";
import { checkCommand } from "./cli/check.ts";
import { pruneCommand } from "./cli/prune.ts";
import { pullCommand, pushCommand } from "./cli/pull.ts";

const VERSION = "0.1.0";

const GROUPS: CommandGroup[] = [imagesGroup, contentGroup, snapshotsGroup];
const COMMANDS: Command[] = [
  pullCommand,
  pushCommand,
  importCommand,
  unpackCommand,
  rootfsCommand,
  applyCommand,
  checkCommand,
  pruneCommand,
  mountCommand,
  unmountCommand,
];

function mainHelp(): string {
  const lines = [
    "Usage: strata [GLOBAL OPTIONS] COMMAND [ARGS]",
    "",
    "Strata: a daemonless image toolkit with containerd's semantics.",
    "",
    "Commands:",
  ];
  for (const c of COMMANDS) lines.push(`  ${c.name.padEnd(12)} ${c.summary}`);
  for (const g of GROUPS) lines.push(`  ${g.name.padEnd(12)} ${g.summary}`);
  lines.push(
    "",
    "Global options:",
    "  --root DIR       Where Strata keeps its data (default /var/lib/strata as root,",
    "                   $XDG_DATA_HOME/strata otherwise; env STRATA_ROOT)",
    "  --config FILE    TOML configuration (default /etc/strata/config.toml as root,",
    "                   $XDG_CONFIG_HOME/strata/config.toml otherwise)",
    "  --json           Print machine-readable JSON",
    "  --help           Show help; 'strata COMMAND --help' for a command",
    "  --version        Print the version",
    "",
    "Exit codes: 0 ok, 1 unexpected error, 2 invalid argument, 3 not found, 4 already exists,",
    "5 failed precondition, 6 unavailable, 7 not implemented, 8 permission denied.",
  );
  return lines.join("\n");
}

/** Options for {@linkcode main}. */
export interface MainOptions {
  /** Where lines of standard output go (default: `console.log`). */
  stdout?: (line: string) => void;
  /** Where lines of standard error go (default: `console.error`). */
  stderr?: (line: string) => void;
}

/**
 * Runs the `strata` command with `args` and returns its exit code. Typed errors become one-line
 * messages on standard error and distinct exit codes.
 *
 * @param args The arguments, without the program name.
 * @param options Where output goes.
 * @returns The exit code.
 */
export async function main(args: string[], options: MainOptions = {}): Promise<number> {
  const out = options.stdout ?? ((l: string) => console.log(l));
  const err = options.stderr ?? ((l: string) => console.error(l));
  let client: Client | undefined;
  try {
    // Global options come before the command.
    let i = 0;
    while (i < args.length && args[i]!.startsWith("-")) {
      const a = args[i]!;
      i += ["--root", "--config"].includes(a) ? 2 : 1;
    }
    const { values } = parseArgs({
      args: args.slice(0, i),
      options: {
        root: { type: "string" },
        config: { type: "string" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean" },
      },
      strict: true,
    });
    const rest = args.slice(i);
    if (values.version) {
      out(`strata ${VERSION}`);
      return 0;
    }
    if (values.help || rest.length === 0 || rest[0] === "help") {
      out(mainHelp());
      return values.help || rest[0] === "help" ? 0 : 2;
    }
    const config = await loadConfig(values.config);
    const root = values.root ?? Deno.env.get("STRATA_ROOT") ??
      (config.root as string | undefined);
    const ctx: CommandContext = {
      client() {
        client ??= Client.open(root !== undefined ? { root } : {});
        return Promise.resolve(client);
      },
      json: values.json ?? false,
      out: (line) => void out(line),
      err: (line) => void err(line),
      async write(bytes) {
        let off = 0;
        while (off < bytes.length) off += await Deno.stdout.write(bytes.subarray(off));
      },
      config,
    };
    const name = rest[0]!;
    const command = COMMANDS.find((c) => c.name === name || c.aliases?.includes(name));
    if (command) return await runCommand(ctx, `strata`, command, rest.slice(1));
    const group = GROUPS.find((g) => g.name === name || g.aliases?.includes(name));
    if (!group) {
      err(`strata: unknown command "${name}"; run 'strata --help' for the list`);
      return 2;
    }
    // Shared options given before the command move after it: `snapshots --snapshotter x ls`.
    const shared: string[] = [];
    let j = 1;
    for (;;) {
      const a = rest[j];
      const opt = group.sharedOptions?.find((o) => a === `--${o}` || a?.startsWith(`--${o}=`));
      if (a === undefined || opt === undefined) break;
      if (a.includes("=")) {
        shared.push(a);
        j += 1;
      } else {
        if (rest[j + 1] === undefined) {
          err(`strata ${group.name}: option "${a}" needs a value`);
          return 2;
        }
        shared.push(a, rest[j + 1]!);
        j += 2;
      }
    }
    rest.splice(1, j - 1);
    const sub = rest[1];
    if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
      out(groupHelp("strata", group));
      return sub === undefined ? 2 : 0;
    }
    const leaf = group.commands.find((c) => c.name === sub || c.aliases?.includes(sub));
    if (!leaf) {
      err(`strata ${group.name}: unknown command "${sub}"; run 'strata ${group.name} --help'`);
      return 2;
    }
    return await runCommand(ctx, `strata ${group.name}`, leaf, [...rest.slice(2), ...shared]);
  } catch (e) {
    if (e instanceof StrataError) {
      err(`strata: ${e.message}`);
      return e.exitCode;
    }
    if (e instanceof TypeError && String(e.message).startsWith("Unknown option")) {
      err(`strata: ${e.message}`);
      return 2;
    }
    err(`strata: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 1;
  } finally {
    client?.close();
  }
}

async function runCommand(
  ctx: CommandContext,
  prefix: string,
  cmd: Command,
  args: string[],
): Promise<number> {
  const parsed = parseCommandArgs(prefix, cmd, args, ctx.out);
  if (!parsed) return 0;
  return (await cmd.run(ctx, parsed.values, parsed.positionals)) ?? 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
