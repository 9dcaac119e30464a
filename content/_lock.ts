// One writer per ingest: an in-process set plus a `lock` file holding the owner's pid.
//
// The lock file only ever appears complete: it is written under a temporary name and hard-linked
// into place, and link(2) fails when the name exists, like O_EXCL. A lock whose process is gone is
// stale and is taken over; the take-over runs under a flock(2) on the ingest directory (released by
// the kernel when its holder dies), so two processes cannot both remove the same stale lock and one
// of them a fresh lock by mistake.
import { existsSync } from "node:fs";
import { kill } from "node:process";
import { join } from "node:path";
import { Unavailable } from "../errors.ts";

/** Ingest directories locked by this process. */
const HELD = new Set<string>();

interface Holder {
  pid: number;
  /** The process's start time in clock ticks (from `/proc/<pid>/stat`), when known. */
  start: string;
}

const HAS_PROC = existsSync("/proc/self/stat");

function processStart(pid: number): string | undefined {
  if (!HAS_PROC) return "";
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  // Field 22 (starttime); fields 3.. follow the command name, which is wrapped in parentheses.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields[19] ?? "";
}

function isAlive(holder: Holder): boolean {
  if (HAS_PROC) {
    const start = processStart(holder.pid);
    if (start === undefined) return false;
    // A recycled pid belongs to a process that started at another time.
    return holder.start === "" || start === "" || start === holder.start;
  }
  try {
    kill(holder.pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === "EPERM";
  }
}

function readHolder(path: string): Holder | undefined | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  const [pid, start] = text.split("\n");
  const n = Number(pid);
  // Unreadable content cannot belong to a live writer (locks appear complete): treat as stale.
  if (!Number.isSafeInteger(n) || n <= 0) return undefined;
  return { pid: n, start: start ?? "" };
}

function sameHolder(a: Holder | undefined, b: Holder | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.pid === b.pid && a.start === b.start;
}

function ownContent(): string {
  return `${Deno.pid}\n${processStart(Deno.pid) ?? ""}\n`;
}

function removeIfExists(path: string): void {
  try {
    Deno.removeSync(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/**
 * Reports who holds the lock of an ingest directory: a pid when a live process holds it,
 * `undefined` when it is free or stale.
 */
export function lockHolder(dir: string): number | undefined {
  if (HELD.has(dir)) return Deno.pid;
  const holder = readHolder(join(dir, "lock"));
  if (holder === null || holder === undefined) return undefined;
  return isAlive(holder) ? holder.pid : undefined;
}

/**
 * Takes the lock of an ingest directory (creating the directory), or throws `Unavailable` when a
 * live process holds it.
 */
export function acquireLock(dir: string, ref: string): void {
  const locked = (pid: number) =>
    new Unavailable(`Cannot open ingest "${ref}": it is locked by process ${pid}`);
  if (HELD.has(dir)) throw locked(Deno.pid);
  const lockPath = join(dir, "lock");
  const content = ownContent();
  for (let attempt = 0; attempt < 8; attempt++) {
    Deno.mkdirSync(dir, { recursive: true });
    const tmp = join(dir, `lock.${Deno.pid}.${crypto.randomUUID()}.tmp`);
    try {
      Deno.writeTextFileSync(tmp, content);
      Deno.linkSync(tmp, lockPath);
      HELD.add(dir);
      return;
    } catch (err) {
      // NotFound: the directory vanished (a commit or abort elsewhere); start again.
      if (err instanceof Deno.errors.NotFound) continue;
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    } finally {
      try {
        Deno.removeSync(tmp);
      } catch {
        // Already gone with its directory.
      }
    }
    const holder = readHolder(lockPath);
    if (holder === null) continue;
    if (holder !== undefined && isAlive(holder)) throw locked(holder.pid);
    // Stale: remove it under the directory's flock, if nobody replaced it meanwhile.
    let guard: Deno.FsFile;
    try {
      guard = Deno.openSync(dir);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) continue;
      throw err;
    }
    try {
      guard.lockSync(true);
      const again = readHolder(lockPath);
      if (again !== null) {
        if (sameHolder(again, holder)) removeIfExists(lockPath);
        else if (again !== undefined && isAlive(again)) throw locked(again.pid);
      }
    } finally {
      guard.close();
    }
  }
  throw new Unavailable(`Cannot open ingest "${ref}": its lock keeps changing hands`);
}

/** Releases a lock taken by {@linkcode acquireLock}; a no-op when this process does not hold it. */
export function releaseLock(dir: string): void {
  if (!HELD.delete(dir)) return;
  const lockPath = join(dir, "lock");
  const holder = readHolder(lockPath);
  if (holder !== null && holder !== undefined && holder.pid === Deno.pid) {
    removeIfExists(lockPath);
  }
}
