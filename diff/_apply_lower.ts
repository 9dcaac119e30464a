// The lower layers of an overlay upperdir, looked up as overlayfs would merge them, for the
// overlay whiteout policy: implied parent directories copy the attributes of the lower directory,
// symlinked parents planted by a lower layer are followed (inside the root), and hardlink targets
// that exist only below are copied up.

import * as sys from "../sys/mod.ts";
import {
  closeQuietly,
  DIR_PATH,
  isDir,
  isSymlink,
  isWhiteoutDevice,
  procPath,
  statAt,
} from "./_apply_fs.ts";

/** What the merged lower layers hold at a path. */
export interface LowerHit {
  /** `"dir"`, `"symlink"`, or `"other"` for any other non-directory. */
  kind: "dir" | "symlink" | "other";
  /** The directory holding the object in the lower layer it was found in (close it). */
  dirfd: number;
  /** The object's name in `dirfd`. */
  name: string;
  /** Its metadata. */
  st: sys.Stat;
}

/** The lower directories of an overlay, newest first, opened once. */
export class Lowers {
  #fds: number[] = [];
  #prefix: string;

  /**
   * Opens the lower directories.
   *
   * @param paths Lower directories, newest first (the order of the `lowerdir=` option).
   * @param prefix `"trusted.overlay."` or `"user.overlay."`: the xattrs overlayfs honours.
   */
  constructor(paths: readonly string[], prefix: string) {
    this.#prefix = prefix;
    try {
      for (const path of paths) this.#fds.push(sys.open(path, DIR_PATH));
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /** Whether there is any lower directory. */
  get empty(): boolean {
    return this.#fds.length === 0;
  }

  /** Closes the directories. */
  close(): void {
    for (const fd of this.#fds) closeQuietly(fd);
    this.#fds = [];
  }

  /** Whether the directory `fd` is marked opaque (`<prefix>opaque` = `y`). */
  isOpaque(fd: number): boolean {
    try {
      const value = sys.lgetxattr(procPath(fd, ""), `${this.#prefix}opaque`);
      return value.length === 1 && value[0] === 0x79;
    } catch (err) {
      if (sys.isErrno(err, "ENODATA", "EOPNOTSUPP")) return false;
      throw err;
    }
  }

  /** Whether `name` in `dirfd` (metadata `st`) is a whiteout: a 0:0 device or an xattr whiteout. */
  isWhiteout(dirfd: number, name: string, st: sys.Stat): boolean {
    if (isWhiteoutDevice(st)) return true;
    if ((st.mode & sys.S_IFMT) !== sys.S_IFREG || st.size !== 0) return false;
    try {
      sys.lgetxattr(procPath(dirfd, name), `${this.#prefix}whiteout`);
      return true;
    } catch (err) {
      if (sys.isErrno(err, "ENODATA", "EOPNOTSUPP")) return false;
      throw err;
    }
  }

  /**
   * Looks `name` up in the directory `dirPath` of the merged lower layers: the newest layer that
   * has it wins; a whiteout, an opaque directory or a non-directory on the way hides the layers
   * below. `dirPath` is a resolved path (real directories in the upper layer), `""` for the root.
   *
   * @returns The hit (the caller closes `dirfd`), or `null` when the lowers do not show `name`.
   */
  lookup(dirPath: string, name: string): LowerHit | null {
    const components = dirPath === "" ? [] : dirPath.split("/");
    for (const root of this.#fds) {
      const opened: number[] = [];
      try {
        let cur = root;
        let opaque = false;
        let missing = false;
        for (const c of components) {
          const st = statAt(cur, c);
          if (st === null) {
            missing = true;
            break;
          }
          // A non-directory (whiteout, file, symlink) here hides this and every deeper layer:
          // the upper directory on top of it is not merged with anything below.
          if (!isDir(st)) return null;
          cur = sys.openat(cur, c, DIR_PATH | sys.O_NOFOLLOW);
          opened.push(cur);
          if (this.isOpaque(cur)) opaque = true;
        }
        if (!missing) {
          const st = statAt(cur, name);
          if (st !== null) {
            if (this.isWhiteout(cur, name, st)) return null;
            const dirfd = sys.openat(cur, ".", DIR_PATH);
            const kind = isDir(st) ? "dir" : isSymlink(st) ? "symlink" : "other";
            return { kind, dirfd, name, st };
          }
        }
        if (opaque) return null;
      } finally {
        for (const fd of opened) closeQuietly(fd);
      }
    }
    return null;
  }
}
