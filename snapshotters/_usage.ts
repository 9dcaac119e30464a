// Disk usage of a directory tree, as containerd's `fs.DiskUsage` counts it.
import {
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  isErrno,
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
  while (!walk.step(Infinity));
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
  }
  return walk.usage();
}

/** The state of one walk: a stack of paths still to look at and the sums so far. */
class UsageWalk {
  #dir: string;
  // Only entries with several links can be met twice (directories cannot be hard-linked).
  #seen = new Set<string>();
  #inodes = 0;
  #size = 0;
  #stack: string[];

  constructor(dir: string) {
    this.#dir = dir;
    this.#stack = [dir];
  }

  usage(): Usage {
    return { size: this.#size, inodes: this.#inodes };
  }

  /** Looks at up to `count` entries; returns whether the walk is complete. */
  step(count: number): boolean {
    const stack = this.#stack;
    const dir = this.#dir;
    for (let n = 0; n < count && stack.length > 0; n++) {
      const path = stack.pop()!;
      let st: Stat;
      try {
        st = statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW);
      } catch (err) {
        // An entry removed while we walk no longer uses anything.
        if (path !== dir && isErrno(err, "ENOENT")) continue;
        throw err;
      }
      const isDir = (st.mode & S_IFMT) === S_IFDIR;
      if (!isDir && st.nlink > 1) {
        const key = `${st.dev}:${st.ino}`;
        if (this.#seen.has(key)) continue;
        this.#seen.add(key);
      }
      this.#inodes++;
      this.#size += st.blocks * 512;
      if (isDir) {
        try {
          // Plain concatenation: `join` normalises every path and was most of this walk's garbage.
          for (const entry of Deno.readDirSync(path)) stack.push(`${path}/${entry.name}`);
        } catch (err) {
          if (path !== dir && err instanceof Deno.errors.NotFound) continue;
          throw err;
        }
      }
    }
    return stack.length === 0;
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
