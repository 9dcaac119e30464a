import { parse } from "smol-toml";
import { join } from "node:path";
import { InvalidArgument, NotFound } from "../errors.ts";

/** The configuration file's path when `--config` is not given. */
export function defaultConfigPath(): string {
  if (Deno.uid() === 0) return "/etc/strata/config.toml";
  const xdg = Deno.env.get("XDG_CONFIG_HOME") ??
    join(Deno.env.get("HOME") ?? ".", ".config");
  return join(xdg, "strata", "config.toml");
}

/**
 * Loads the TOML configuration. A missing default file is an empty config; a missing file named
 * with `--config`, or one that does not parse, is an error.
 */
export async function loadConfig(path: string | undefined): Promise<Record<string, unknown>> {
  const file = path ?? defaultConfigPath();
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      if (path === undefined) return {};
      throw new NotFound(`Cannot read config file "${file}": it does not exist`);
    }
    throw err;
  }
  let config: Record<string, unknown>;
  try {
    config = parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new InvalidArgument(
      `Cannot parse config file "${file}": ${(err as Error).message.split("\n")[0]}`,
    );
  }
  if (config.root !== undefined && typeof config.root !== "string") {
    throw new InvalidArgument(`Cannot load config file "${file}": "root" must be a string`);
  }
  return config;
}
