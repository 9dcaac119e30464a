// What every benchmark report starts with: the machine, the tools' versions, Strata's revision.
import { dirname } from "node:path";
import { run } from "./_proc.ts";

/** The first line a command prints (stdout, else stderr), or `not installed`. */
export async function firstLine(argv: string[]): Promise<string> {
  try {
    const r = await run(argv);
    return (r.stdout || r.stderr).trim().split("\n")[0] ?? "?";
  } catch {
    return "not installed";
  }
}

/** What each peer's `--version` prints before its version number. */
const VERSION_PREFIX: Record<string, RegExp> = {
  skopeo: /^skopeo version /,
  umoci: /^umoci version /,
  ctr: /^ctr \S+ /,
  containerd: /^containerd \S+ /,
  "docker-registry": /^$/,
};

/** Rows naming each peer's version, as {@linkcode MachineOptions.peers} takes them. */
export async function peerVersions(names: string[]): Promise<[string, string][]> {
  const rows: [string, string][] = [];
  for (const name of names) {
    const line = await firstLine([name, "--version"]);
    rows.push([name, line.replace(VERSION_PREFIX[name] ?? /^$/, "")]);
  }
  return rows;
}

/** Quotes an argument for a shell command line shown in a report. */
export function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

/**
 * The head of a report: the command that made it (with, after `=`, the same command spelled
 * otherwise, such as the script behind a `deno task`), where it ran, and the machine table.
 *
 * @param command The command, as argv.
 * @param options The other spelling, the repository it ran from and the rows of {@linkcode machine}.
 * @returns Markdown lines.
 */
export function reportHead(
  command: string[],
  options: { alias?: string[]; repo: string; machine: [string, string][] },
): string[] {
  const line = (argv: string[]) => argv.map(quote).join(" ");
  const alias = options.alias === undefined ? "" : ` (= \`${line(options.alias)}\`)`;
  return [
    `Command: \`${line(command)}\`${alias}, run from \`${options.repo}\`.`,
    "",
    "| machine | |",
    "|---|---|",
    ...options.machine.map(([k, v]) => `| ${k} | ${v.replaceAll("|", "\\|")} |`),
  ];
}

/** Options of {@linkcode machine}. */
export interface MachineOptions {
  /** The Strata checkout (for its revision). */
  repo: string;
  /** What lives on the scratch file system, e.g. `scratch and fixtures`. */
  what: string;
  /** Rows for the peers' versions, in order, after Deno's. */
  peers: [string, string][];
}

/**
 * The machine table's rows: CPUs, memory, kernel, the scratch file system, Deno, the peers,
 * Strata's revision, the date and the load average.
 */
export async function machine(
  scratch: string,
  options: MachineOptions,
): Promise<[string, string][]> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const cpu = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? "?";
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const memKb = Number(/MemTotal:\s*(\d+)/.exec(meminfo)?.[1] ?? NaN);
  const [fsType = "?", source = "?"] = (await firstLine([
    "findmnt",
    "-no",
    "FSTYPE,SOURCE",
    "-T",
    scratch,
  ])).split(/\s+/);
  const fs = `${fsType} on ${source}${await ext4Journal(fsType, source)}`;
  const rev = await firstLine(["git", "-C", options.repo, "rev-parse", "--short", "HEAD"]);
  const status = await run(["git", "-C", options.repo, "status", "--porcelain"]);
  const dirty = status.stdout.trim() !== "";
  const [l1, l5, l15] = Deno.loadavg();
  return [
    ["nproc", `${await firstLine(["nproc"])} (${cpu})`],
    ["memory", `${(memKb / 1024 / 1024).toFixed(1)} GiB`],
    ["kernel", Deno.osRelease()],
    ["disk fs", `${fs} (${options.what} in ${dirname(scratch)})`],
    ["deno", (await firstLine([Deno.execPath(), "--version"])).replace(/^deno /, "")],
    ...options.peers,
    ["strata", `git ${rev}${dirty ? " + uncommitted changes" : ""}`],
    ["date", new Date().toISOString().replace(/\.\d+Z$/, "Z")],
    ["load average at start", `${l1?.toFixed(2)} ${l5?.toFixed(2)} ${l15?.toFixed(2)}`],
  ];
}

/**
 * For ext4, whether the file system keeps a journal (`, with a journal` or `, no journal`, from
 * `/sys/fs/ext4/DEV/journal_task`), else an empty string. Without a journal a `syncfs` writes every
 * changed metadata block in place, and writers wait for those blocks: it changes what
 * `--sync-fs` costs.
 */
async function ext4Journal(fsType: string, source: string): Promise<string> {
  if (fsType !== "ext4") return "";
  const dev = source.split("/").pop() ?? "";
  try {
    const task = (await Deno.readTextFile(`/sys/fs/ext4/${dev}/journal_task`)).trim();
    return task === "<none>" || task === "" ? ", no journal" : ", with a journal";
  } catch {
    return "";
  }
}
