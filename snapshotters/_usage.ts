// Disk usage of a directory tree, as containerd's `fs.DiskUsage` counts it.
import { join } from "node:path";
import {
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  isErrno,
  S_IFDIR,
  S_IFMT,
  type Stat,
  statx,
} from "../sys/mod.ts";
import type { Usage } from "./types.ts";

/**
 * Sums `st_blocks * 512` and counts inodes over the distinct `(dev, ino)` pairs under `dir`,
 * including `dir` itself. Symlinks are not followed; hardlinks count once; entries removed during
 * the walk are skipped.
 */
export function diskUsage(dir: string): Usage {
  const seen = new Set<string>();
  let size = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const path = stack.pop()!;
    let st: Stat;
    try {
      st = statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW);
    } catch (err) {
      // An entry removed while we walk no longer uses anything.
      if (path !== dir && isErrno(err, "ENOENT")) continue;
      throw err;
    }
    const key = `${st.dev}:${st.ino}`;
    if (!seen.has(key)) {
      seen.add(key);
      size += st.blocks * 512;
    }
    if ((st.mode & S_IFMT) === S_IFDIR) {
      try {
        for (const entry of Deno.readDirSync(path)) stack.push(join(path, entry.name));
      } catch (err) {
        if (path !== dir && err instanceof Deno.errors.NotFound) continue;
        throw err;
      }
    }
  }
  return { size, inodes: seen.size };
}
