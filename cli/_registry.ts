import { Buffer } from "node:buffer";
import { InvalidArgument } from "../errors.ts";
import { type Credentials, credentialsFromDockerConfig } from "../remotes/credentials.ts";
import type { ResolverOptions } from "../remotes/types.ts";
import { type CommandContext, intOption, type OptionSpec, type Values } from "./_command.ts";
import type { ProgressMode } from "./_progress.ts";

/** The registry options shared by `pull` and `push`. */
export const REGISTRY_OPTIONS: Record<string, OptionSpec> = {
  user: {
    type: "string",
    short: "u",
    arg: "USER[:PASSWORD]",
    help: "Credentials for the registry (the password is read from standard input when absent)",
  },
  "hosts-dir": {
    type: "string",
    arg: "DIR",
    help: "containerd hosts.toml tree (<DIR>/<host>/hosts.toml; default [registry] config_path)",
  },
  "plain-http": { type: "boolean", help: "Use http instead of https for the registry" },
  quiet: { type: "boolean", short: "q", help: "Print only the result" },
  progress: {
    type: "string",
    arg: "MODE",
    help: "tty, plain or json (default: tty on a terminal, plain otherwise; --json: json)",
  },
};

function registrySection(ctx: CommandContext): Record<string, unknown> {
  const section = ctx.config.registry;
  if (section === undefined) return {};
  if (typeof section !== "object" || section === null || Array.isArray(section)) {
    throw new InvalidArgument('Cannot read config: "[registry]" must be a table');
  }
  return section as Record<string, unknown>;
}

/**
 * Credentials from `[registry.auths."<host>"]` in Strata's config: `username` and `password`,
 * `auth` (base64 `user:password`) or `identitytoken`.
 */
function configCredentials(ctx: CommandContext, host: string): Credentials | undefined {
  const auths = registrySection(ctx).auths as Record<string, unknown> | undefined;
  const entry = auths?.[host];
  if (entry === undefined) return undefined;
  const where = `[registry.auths."${host}"]`;
  if (typeof entry !== "object" || entry === null) {
    throw new InvalidArgument(`Cannot read config: "${where}" must be a table`);
  }
  const e = entry as Record<string, unknown>;
  for (const key of ["username", "password", "auth", "identitytoken"]) {
    if (e[key] !== undefined && typeof e[key] !== "string") {
      throw new InvalidArgument(`Cannot read config: "${where} ${key}" must be a string`);
    }
  }
  if (typeof e.identitytoken === "string" && e.identitytoken !== "") {
    return { identityToken: e.identitytoken };
  }
  if (typeof e.auth === "string" && e.auth !== "") {
    const decoded = Buffer.from(e.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon <= 0) {
      throw new InvalidArgument(
        `Cannot read config: "${where} auth" is not base64 of user:password`,
      );
    }
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (typeof e.username === "string" && typeof e.password === "string") {
    return { username: e.username, password: e.password };
  }
  return undefined;
}

/** Reads a password from standard input (first line). */
async function readPassword(user: string): Promise<string> {
  if (Deno.stdin.isTerminal()) {
    Deno.stderr.writeSync(new TextEncoder().encode(`Password for ${user}: `));
    Deno.stdin.setRaw(true);
    const bytes: number[] = [];
    const buf = new Uint8Array(1);
    try {
      for (;;) {
        const n = await Deno.stdin.read(buf);
        if (n === null || buf[0] === 13 || buf[0] === 10) break;
        if (buf[0] === 3) throw new InvalidArgument("Cannot read the password: interrupted");
        bytes.push(buf[0]!);
      }
    } finally {
      Deno.stdin.setRaw(false);
      Deno.stderr.writeSync(new TextEncoder().encode("\n"));
    }
    return new TextDecoder().decode(new Uint8Array(bytes));
  }
  const text = await new Response(Deno.stdin.readable).text();
  return text.split(/\r?\n/)[0] ?? "";
}

/**
 * Builds the resolver options of a command: `--user` (every host, as ctr's), then
 * `[registry.auths."<host>"]` in Strata's config, then Docker's `config.json`; `--hosts-dir` or
 * `[registry] config_path`; `--plain-http`; `--max-concurrent-downloads`.
 */
export async function registryOptions(
  ctx: CommandContext,
  values: Values,
): Promise<ResolverOptions> {
  const section = registrySection(ctx);
  const options: ResolverOptions = {};
  const hostsDir = typeof values["hosts-dir"] === "string"
    ? values["hosts-dir"]
    : section.config_path;
  if (hostsDir !== undefined) {
    if (typeof hostsDir !== "string") {
      throw new InvalidArgument('Cannot read config: "[registry] config_path" must be a string');
    }
    options.hostsDir = hostsDir;
  }
  if (values["plain-http"]) options.plainHttp = true;
  const downloads = intOption(values, "max-concurrent-downloads", 1, 64);
  if (downloads !== undefined) options.maxConcurrentDownloads = downloads;
  let user: Credentials | undefined;
  if (typeof values.user === "string") {
    const colon = values.user.indexOf(":");
    const username = colon < 0 ? values.user : values.user.slice(0, colon);
    if (username === "") throw new InvalidArgument("Cannot use --user: the user name is empty");
    const password = colon < 0 ? await readPassword(username) : values.user.slice(colon + 1);
    user = { username, password };
  }
  options.credentials = async (host) =>
    user ?? configCredentials(ctx, host) ?? await credentialsFromDockerConfig(host);
  return options;
}

/** The progress mode: `--progress`, else json with `--json`, quiet with `-q`, tty on a terminal. */
export function progressMode(ctx: CommandContext, values: Values): ProgressMode {
  const chosen = values.progress;
  if (typeof chosen === "string") {
    if (!["tty", "plain", "json"].includes(chosen)) {
      throw new InvalidArgument(`Cannot use --progress "${chosen}": expected tty, plain or json`);
    }
    return chosen as ProgressMode;
  }
  if (ctx.json) return "json";
  if (values.quiet) return "quiet";
  return Deno.stdout.isTerminal() ? "tty" : "plain";
}
