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
import type { Usage } from "./types.ts";

/**
 * Sums `st_blocks * 512` and counts inodes over the distinct `(dev, ino)` pairs under `dir`,
 * including `dir` itself. Symlinks are not followed; hardlinks count once; entries removed during
 * the walk are skipped.
 */
export function diskUsage(dir: string): Usage {
  // Only entries with several links can be met twice (directories cannot be hard-linked).
  const seen = new Set<string>();
  let inodes = 0;
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
    const isDir = (st.mode & S_IFMT) === S_IFDIR;
    if (!isDir && st.nlink > 1) {
      const key = `${st.dev}:${st.ino}`;
      if (seen.has(key)) continue;
      seen.add(key);
    }
    inodes++;
    size += st.blocks * 512;
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
  return { size, inodes };
}
