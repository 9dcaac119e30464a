// Disk usage of a directory tree, as containerd's `fs.DiskUsage` counts it.
import {
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  close,
  type DirEntry,
  isErrno,
  O_CLOEXEC,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_RDONLY,
  open,
  readDirFd,
  S_IFDIR,
  S_IFMT,
  type Stat,
  statx,
} from "../sys/mod.ts";
import { InvalidArgument } from "../errors.ts";
import type { Usage } from "./types.ts";

/** Entries {@linkcode diskUsageAsync} looks at between two turns of the event loop. */
const SLICE = 2048;

/**
 * Sums `st_blocks * 512` and counts inodes over the distinct `(dev, ino)` pairs under `dir`,
 * including `dir` itself. Symlinks are not followed; hardlinks count once; entries removed during
 * the walk are skipped.
 */
export function diskUsage(dir: string): Usage {
  const walk = new UsageWalk(dir);
  try {
    while (!walk.step(Infinity));
  } finally {
    walk.close();
  }
  return walk.usage();
}

/**
 * {@linkcode diskUsage} in slices of {@linkcode SLICE} entries with a turn of the event loop
 * between them, so that timers and calls finished on other threads (a `syncfs` running while the
 * usage is measured) are handled while it walks.
 */
export async function diskUsageAsync(dir: string): Promise<Usage> {
  const walk = new UsageWalk(dir);
  if (walk.step(SLICE)) return walk.usage();
  // A message to oneself is a turn of the event loop without the timers' minimum delay.
  const { port1, port2 } = new MessageChannel();
  try {
    let resolveTurn = () => {};
    port1.onmessage = () => resolveTurn();
    do {
      await new Promise<void>((resolve) => {
        resolveTurn = resolve;
        port2.postMessage(null);
      });
    } while (!walk.step(SLICE));
  } finally {
    port1.close();
    walk.close();
  }
  return walk.usage();
}

/** A directory being walked: its descriptor, its entries and how many were looked at. */
interface Listing {
  path: string;
  fd: number;
  entries: DirEntry[];
  index: number;
}

/**
 * The state of one walk: a stack of directories still to list and the sums so far. Each entry
 * is looked at relative to its directory's descriptor (`statx(dirfd, name)`), not by its whole
 * path, which the kernel would resolve component by component each time.
 */
class UsageWalk {
  #dir: string;
  // Only entries with several links can be met twice (directories cannot be hard-linked).
  #seen = new Set<string>();
  #inodes = 0;
  #size = 0;
  /** Directories counted already whose entries are still to look at. */
  #stack: string[] = [];
  /** The directory whose entries are being looked at. */
  #current: Listing | null = null;
  #started = false;

  constructor(dir: string) {
    this.#dir = dir;
  }

  usage(): Usage {
    return { size: this.#size, inodes: this.#inodes };
  }

  /**
   * Looks at up to `count` entries; returns whether the walk is complete. A directory listed but
   * not finished stays open for the next step: call {@linkcode close} when giving up early.
   */
  step(count: number): boolean {
    if (!this.#started) {
      this.#started = true;
      // The root itself: a missing root is an error, not an empty tree.
      if (this.#add(statx(AT_FDCWD, this.#dir, AT_SYMLINK_NOFOLLOW))) this.#stack.push(this.#dir);
    }
    for (let n = 0; n < count;) {
      const cur = this.#current ?? this.#next();
      if (cur === null) return true;
      if (cur.index === cur.entries.length) {
        this.close();
        continue;
      }
      const name = cur.entries[cur.index++]!.name;
      n++;
      let st: Stat;
      try {
        st = statx(cur.fd, name, AT_SYMLINK_NOFOLLOW);
      } catch (err) {
        // An entry removed while we walk no longer uses anything.
        if (isErrno(err, "ENOENT")) continue;
        throw err; // The callers close the directory.
      }
      // Plain concatenation: `join` normalises every path and was most of this walk's garbage.
      if (this.#add(st)) this.#stack.push(`${cur.path}/${name}`);
    }
    return this.#current === null && this.#stack.length === 0;
  }

  /** Closes the directory being listed, if any. */
  close(): void {
    if (this.#current !== null) close(this.#current.fd);
    this.#current = null;
  }

  /** Opens and lists the next directory on the stack; `null` when there is none. */
  #next(): Listing | null {
    for (;;) {
      const path = this.#stack.pop();
      if (path === undefined) return null;
      let fd: number;
      try {
        fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      } catch (err) {
        // A directory removed (or replaced) while we walk no longer uses anything.
        if (path !== this.#dir && isErrno(err, "ENOENT", "ENOTDIR", "ELOOP")) continue;
        throw err;
      }
      let entries: DirEntry[];
      try {
        entries = readDirFd(fd);
      } catch (err) {
        close(fd);
        throw err;
      }
      this.#current = { path, fd, entries, index: 0 };
      return this.#current;
    }
  }

  /** Counts one entry unless it is a hardlink met before; returns whether it is a directory. */
  #add(st: Stat): boolean {
    const isDir = (st.mode & S_IFMT) === S_IFDIR;
    if (!isDir && st.nlink > 1) {
      const key = `${st.dev}:${st.ino}`;
      if (this.#seen.has(key)) return false;
      this.#seen.add(key);
    }
    this.#inodes++;
    this.#size += st.blocks * 512;
    return isDir;
  }
}

/** Throws `InvalidArgument` unless `usage` holds two non-negative integers. */
export function checkUsage(usage: Usage, action: string): void {
  const { size, inodes } = usage;
  if (!Number.isSafeInteger(size) || size < 0 || !Number.isSafeInteger(inodes) || inodes < 0) {
    throw new InvalidArgument(
      `Cannot ${action}: usage ${
        JSON.stringify({ size, inodes })
      } is not two non-negative integers`,
    );
  }
}
