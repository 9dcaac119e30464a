export { printableName } from "../sys/_names.ts";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { InvalidArgument } from "../errors.ts";
import type { Client } from "../mod.ts";

/** One option of a command, as `node:util` parseArgs takes it, plus its help text. */
export interface OptionSpec {
  type: "string" | "boolean";
  short?: string;
  multiple?: boolean;
  help: string;
  /** Placeholder shown in help for string options. */
  arg?: string;
}

/** What every command receives. */
export interface CommandContext {
  /** Opens (once) the client on the selected root. */
  client(): Promise<Client>;
  /** Whether `--json` was given. */
  json: boolean;
  /** Writes a line to standard output. */
  out(line: string): void;
  /** Writes raw bytes to standard output. */
  write(bytes: Uint8Array): Promise<void>;
  /** Writes a line to standard error. */
  err(line: string): void;
  /** The loaded configuration file (TOML), or an empty object. */
  config: Record<string, unknown>;
}

/** Parsed options of a command. */
export type Values = Record<string, string | boolean | string[] | boolean[] | undefined>;

/** A leaf command. */
export interface Command {
  name: string;
  aliases?: string[];
  summary: string;
  usage: string;
  options?: Record<string, OptionSpec>;
  /** Minimum and maximum positional arguments. */
  args: [number, number];
  run(ctx: CommandContext, values: Values, positionals: string[]): Promise<number | void>;
}

/** A group of commands (`strata images ...`). */
export interface CommandGroup {
  name: string;
  aliases?: string[];
  summary: string;
  commands: Command[];
  /**
   * String options that may also stand before the command (`strata snapshots --snapshotter
   * native ls`); they are passed on to the command.
   */
  sharedOptions?: string[];
}

/** Formats the help text of a command. */
export function commandHelp(prefix: string, cmd: Command): string {
  const lines = [`Usage: ${prefix} ${cmd.usage}`, "", cmd.summary];
  const opts = Object.entries(cmd.options ?? {});
  if (opts.length > 0) {
    lines.push("", "Options:");
    for (const [name, o] of opts) {
      const flag = `${o.short ? `-${o.short}, ` : "    "}--${name}${o.arg ? ` ${o.arg}` : ""}`;
      lines.push(`  ${flag.padEnd(34)} ${o.help}${o.multiple ? " (repeatable)" : ""}`);
    }
  }
  lines.push(`  ${"    --help".padEnd(34)} Show this help`);
  return lines.join("\n");
}

/** Formats the help text of a group. */
export function groupHelp(prefix: string, group: CommandGroup): string {
  const lines = [
    `Usage: ${prefix} ${group.name} COMMAND [OPTIONS]`,
    "",
    group.summary,
    "",
    "Commands:",
  ];
  for (const c of group.commands) lines.push(`  ${c.name.padEnd(12)} ${c.summary}`);
  lines.push("", `Run '${prefix} ${group.name} COMMAND --help' for a command's options.`);
  return lines.join("\n");
}

/**
 * Parses a command's arguments; returns `undefined` when `--help` was asked for (the help is printed).
 */
export function parseCommandArgs(
  prefix: string,
  cmd: Command,
  args: string[],
  out: (line: string) => void,
): { values: Values; positionals: string[] } | undefined {
  const options: NonNullable<ParseArgsConfig["options"]> = { help: { type: "boolean" } };
  for (const [name, o] of Object.entries(cmd.options ?? {})) {
    options[name] = {
      type: o.type,
      ...(o.short ? { short: o.short } : {}),
      ...(o.multiple ? { multiple: true } : {}),
    };
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new InvalidArgument(
      `Cannot parse arguments of "${prefix} ${cmd.name}": ${(err as Error).message}`,
    );
  }
  if (parsed.values.help) {
    out(commandHelp(prefix, cmd));
    return undefined;
  }
  const [min, max] = cmd.args;
  const n = parsed.positionals.length;
  if (n < min || n > max) {
    const want = min === max ? `${min}` : max === Infinity ? `at least ${min}` : `${min} to ${max}`;
    throw new InvalidArgument(
      `Cannot run "${prefix} ${cmd.name}": it takes ${want} argument(s), got ${n}: usage: ${prefix} ${cmd.usage}`,
    );
  }
  return { values: parsed.values as Values, positionals: parsed.positionals };
}

/** Formats rows as a left-aligned table with a header. */
export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const fmt = (r: string[]) =>
    r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [fmt(header), ...rows.map(fmt)];
}

/** Formats a byte count the way `ctr` does (`1.2 MiB`). */
export function humanSize(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

/** Formats a date as an age (`3 minutes`). */
export function age(d: Date, now: Date = new Date()): string {
  const s = Math.max(0, Math.round((now.getTime() - d.getTime()) / 1000));
  if (s < 60) return `${s} seconds`;
  if (s < 3600) return `${Math.round(s / 60)} minutes`;
  if (s < 86400) return `${Math.round(s / 3600)} hours`;
  return `${Math.round(s / 86400)} days`;
}

/** Formats labels as `k=v,k2=v2`, or `-` when there are none. */
export function formatLabels(labels: Record<string, string>): string {
  const entries = Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return entries.length === 0 ? "-" : entries.map(([k, v]) => `${k}=${v}`).join(",");
}

/** Parses `k=v` arguments into labels (an empty value removes the label in updates). */
export function parseLabelArgs(args: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const a of args) {
    const i = a.indexOf("=");
    if (i <= 0) throw new InvalidArgument(`Cannot parse label "${a}": expected KEY=VALUE`);
    labels[a.slice(0, i)] = a.slice(i + 1);
  }
  return labels;
}

/** Reads a string list option (repeatable). */
export function list(v: Values[string]): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

/**
 * Reads an optional integer option within bounds: `undefined` when absent, else the number.
 *
 * @throws {InvalidArgument} When the value is not an integer from `min` to `max`.
 */
export function intOption(
  values: Values,
  name: string,
  min: number,
  max: number,
): number | undefined {
  const raw = values[name];
  if (typeof raw !== "string") return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new InvalidArgument(
      `Cannot use --${name} "${raw}": it must be an integer from ${min} to ${max}`,
    );
  }
  return n;
}
