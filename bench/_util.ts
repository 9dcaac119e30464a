// Small helpers every benchmark script uses: logging, clean-up, result checks and the daemons
// to stop when a run ends or is interrupted.
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { FailedPrecondition, InvalidArgument, StrataError } from "../errors.ts";
import type { Containerd, Registry } from "./_proc.ts";

/** The Strata checkout the scripts belong to. */
export const REPO: string = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** `shared/tools/make-fixtures.sh` beside the checkout. */
export const MAKE_FIXTURES: string = resolve(REPO, "..", "shared", "tools", "make-fixtures.sh");

/**
 * The strata command of a `--strata CMD` option (split on whitespace), or by default this
 * checkout's CLI run by the Deno running the script.
 */
export function strataCommand(option: string | undefined): string[] {
  return option
    ? option.split(/\s+/).filter((p) => p !== "")
    : [Deno.execPath(), "run", "--allow-all", "--no-lock", join(REPO, "cli.ts")];
}

/** Progress goes to stderr, so that stdout stays the report. */
export function log(line: string): void {
  console.error(line);
}

/** Writes a report to `out` and stdout. */
export async function writeReport(out: string, body: string): Promise<void> {
  await Deno.writeTextFile(out, body);
  console.log(body);
  log(`wrote the report to ${out}`);
}

/**
 * Runs a script's `main` and exits with its status; an error is printed after `name` and exits
 * with its Strata exit code (1 for others).
 */
export async function runMain(
  name: string,
  main: (args: string[]) => Promise<number>,
): Promise<never> {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`${name}: ${e instanceof Error ? e.message : String(e)}`);
    Deno.exit(e instanceof StrataError ? e.exitCode : 1);
  }
}

/** Whether a path exists (without following a final symlink). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Reads an integer option of at least `min`; a clear error otherwise. */
export function intOption(name: string, text: string, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) {
    throw new InvalidArgument(
      `Cannot parse --${name} "${text}": expected ${
        min === 1 ? "a positive" : min === 0 ? "a non-negative" : `an at least ${min}`
      } integer`,
    );
  }
  return n;
}

/** The machine table's "load average at end" row (1, 5 and 15 minutes). */
export function loadAverageRow(): [string, string] {
  const [e1, e5, e15] = Deno.loadavg();
  return ["load average at end", `${e1?.toFixed(2)} ${e5?.toFixed(2)} ${e15?.toFixed(2)}`];
}

/**
 * The report's notes about the page cache: runs whose drop failed, or no drops asked for
 * (`drop` false: `--no-drop-caches`).
 */
export function cacheNotes(
  drop: boolean,
  state: { dropped: boolean; dropFailed: boolean },
): string[] {
  if (!drop) return ["`--no-drop-caches`: runs read warm caches."];
  if (!state.dropFailed) return [];
  return [
    state.dropped
      ? "Dropping the page cache failed for some runs."
      : "The page cache could not be dropped (not root?): runs read warm caches.",
  ];
}

/** Removes a path and everything under it; a missing path is not an error. */
export function rmrf(path: string): Promise<void> {
  return Deno.remove(path, { recursive: true }).catch(() => {});
}

/** Fails unless `dir` exists and has at least one entry. */
export async function checkNotEmpty(dir: string): Promise<void> {
  try {
    for await (const _ of Deno.readDir(dir)) return;
  } catch {
    // Missing: fall through.
  }
  throw new FailedPrecondition(`Cannot verify "${dir}": it is missing or empty`);
}

/** Fails unless `output` (of `snapshots ls`) lists exactly `n` committed snapshots. */
export function checkCommitted(output: string, n: number, what: string): void {
  const committed = output.split("\n").filter((l) => /\bcommitted\b/i.test(l)).length;
  if (committed !== n) {
    throw new FailedPrecondition(
      `Cannot verify ${what}: ${committed} committed snapshots, expected ${n}`,
    );
  }
}

/** Bytes as decimal megabytes with one decimal, e.g. `410.2 MB`. */
export function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/** The daemons a benchmark started: stopped at the end, or all at once on an interrupt. */
export class Daemons {
  #running = new Set<Containerd | Registry>();

  /** Remembers a started daemon and returns it. */
  add<T extends Containerd | Registry>(daemon: T): T {
    this.#running.add(daemon);
    return daemon;
  }

  /** Stops one daemon. */
  async stop(daemon: Containerd | Registry): Promise<void> {
    this.#running.delete(daemon);
    await daemon.stop();
  }

  /** Stops every daemon still running, one after the other. */
  async stopAll(): Promise<void> {
    for (const d of [...this.#running]) await this.stop(d);
  }

  /** Stops every daemon still running, all at once (for an interrupt). */
  stopAllNow(): Promise<unknown> {
    return Promise.all([...this.#running].map((d) => d.stop()));
  }
}
