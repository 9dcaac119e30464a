// File-system helpers of the layer applier: descriptor-relative lookups, removal of trees, and
// the mapping of errno failures to Strata's error kinds. Everything works relative to directory
// descriptors and never follows the final component.

import { printableName } from "../sys/_names.ts";
import { posix } from "node:path";
import { FailedPrecondition, InvalidArgument, StrataError } from "../errors.ts";
import * as sys from "../sys/mod.ts";

/** Flags of a directory handle used only as a base for `*at` calls. */
export const DIR_PATH = sys.O_PATH | sys.O_DIRECTORY | sys.O_CLOEXEC;
/** Flags of a directory handle that can be listed. */
export const DIR_READ = sys.O_RDONLY | sys.O_DIRECTORY | sys.O_CLOEXEC;
/** Resolution of entry parents: symlinks are followed but never leave the root. */
export const IN_ROOT = sys.RESOLVE_IN_ROOT | sys.RESOLVE_NO_MAGICLINKS;
/** Longest path the applier accepts, in UTF-8 bytes (PATH_MAX less the terminator). */
export const MAX_PATH = 4095;

/** Errno codes that mean "this layer's content cannot be applied as it is". */
const CONTENT_ERRNOS = new Set([
  "ENOTDIR",
  "EISDIR",
  "ELOOP",
  "ENOENT",
  "EEXIST",
  "EPERM",
  "EINVAL",
  "ENAMETOOLONG",
  "E2BIG",
  "ERANGE",
  "EMLINK",
  "ENOTEMPTY",
  "EFBIG",
  "EOVERFLOW",
]);

/** A kind of object, as far as metadata rules care. */
export type Kind = "file" | "dir" | "symlink" | "other";

/**
 * Cleans a tar name like Go's `filepath.Clean` against a virtual `/`; `""` is the root. Most
 * names need at most a leading `./` or trailing slashes removed: those are sliced, the rest are
 * normalized.
 */
export function cleanName(name: string): string {
  const plain = plainName(name);
  if (plain !== undefined) return plain;
  const n = posix.normalize(`/${name}`);
  let end = n.length;
  while (end > 1 && n.charCodeAt(end - 1) === 0x2f) end--;
  return end <= 1 ? "" : n.slice(1, end);
}

/**
 * `name` without one leading `./` and its trailing slashes, when what is left has no empty, `.`
 * or `..` component (so normalizing would not change it); otherwise `undefined`.
 */
function plainName(name: string): string | undefined {
  const start = name.charCodeAt(0) === 0x2e && name.charCodeAt(1) === 0x2f ? 2 : 0;
  let end = name.length;
  while (end > start && name.charCodeAt(end - 1) === 0x2f) end--;
  if (end === start) return undefined;
  let seg = start;
  for (let i = start; i <= end; i++) {
    if (i < end && name.charCodeAt(i) !== 0x2f) continue;
    const len = i - seg;
    if (len === 0) return undefined;
    if (
      len <= 2 && name.charCodeAt(seg) === 0x2e && (len === 1 || name.charCodeAt(seg + 1) === 0x2e)
    ) return undefined;
    seg = i + 1;
  }
  return name.slice(start, end);
}

/** Reads `name` in `dirfd` without following it; `null` when it does not exist. */
export function statAt(dirfd: number, name: string): sys.Stat | null {
  return sys.statxIfExists(dirfd, name, sys.AT_SYMLINK_NOFOLLOW);
}

/** Whether `st` is a directory. */
export function isDir(st: sys.Stat): boolean {
  return (st.mode & sys.S_IFMT) === sys.S_IFDIR;
}

/** Whether `st` is a symlink. */
export function isSymlink(st: sys.Stat): boolean {
  return (st.mode & sys.S_IFMT) === sys.S_IFLNK;
}

/** Whether `st` is an overlayfs whiteout device (character device 0:0). */
export function isWhiteoutDevice(st: sys.Stat): boolean {
  return (st.mode & sys.S_IFMT) === sys.S_IFCHR && st.rdev === 0;
}

/** The metadata kind of `st`. */
export function kindOf(st: sys.Stat): Kind {
  switch (st.mode & sys.S_IFMT) {
    case sys.S_IFREG:
      return "file";
    case sys.S_IFDIR:
      return "dir";
    case sys.S_IFLNK:
      return "symlink";
    default:
      return "other";
  }
}

/** A key identifying an inode within the root's file system. */
export function inodeKey(st: sys.Stat): number | string {
  const ino = Number(st.ino);
  return Number.isSafeInteger(ino) ? ino : `${st.dev}:${st.ino}`;
}

/**
 * A path that reaches `name` inside the directory `dirfd` through procfs, for the calls that
 * have no descriptor-relative form (`lsetxattr` and friends). The directory is reached through
 * its descriptor; `name` is a single component that the `l*` calls do not follow.
 */
export function procPath(dirfd: number, name: string): string {
  return `/proc/self/fd/${dirfd}/${name === "" ? "." : name}`;
}

/** Closes a descriptor, ignoring errors (used in clean-up paths). */
export function closeQuietly(fd: number): void {
  try {
    sys.close(fd);
  } catch {
    // Nothing useful to do.
  }
}

/**
 * Removes `name` in `dirfd` whatever it is; a directory with everything below it. Nothing is
 * followed: symlinks are removed, not their targets. When `fixPermissions` is set (rootless), a
 * directory that cannot be listed or emptied is made `u+rwx` first.
 */
export function removeAt(
  dirfd: number,
  name: string,
  st: sys.Stat | null,
  fixPermissions: boolean,
): void {
  const info = st ?? statAt(dirfd, name);
  if (info === null) return;
  if (!isDir(info)) {
    unlinkQuiet(dirfd, name, 0);
    return;
  }
  removeChildren(dirfd, name, fixPermissions);
  unlinkQuiet(dirfd, name, sys.AT_REMOVEDIR);
}

function unlinkQuiet(dirfd: number, name: string, flags: number): void {
  try {
    sys.unlinkat(dirfd, name, flags);
  } catch (err) {
    if (!sys.isErrno(err, "ENOENT")) throw err;
  }
}

function removeChildren(dirfd: number, name: string, fixPermissions: boolean): void {
  let fd: number;
  try {
    fd = sys.openat(dirfd, name, DIR_READ | sys.O_NOFOLLOW);
  } catch (err) {
    if (!(fixPermissions && sys.isErrno(err, "EACCES"))) throw err;
    sys.fchmodat(dirfd, name, 0o700, sys.AT_SYMLINK_NOFOLLOW);
    fd = sys.openat(dirfd, name, DIR_READ | sys.O_NOFOLLOW);
  }
  try {
    if (fixPermissions) {
      const st = sys.fstat(fd);
      if ((st.mode & 0o300) !== 0o300) sys.fchmod(fd, (st.mode & 0o7777) | 0o700);
    }
    for (const entry of sys.readDirFd(fd)) {
      if (entry.type === "dir" || entry.type === "unknown") {
        removeAt(fd, entry.name, null, fixPermissions);
      } else {
        unlinkQuiet(fd, entry.name, 0);
      }
    }
  } finally {
    sys.close(fd);
  }
}

/**
 * Turns a failure while applying `entry` into a typed error: problems of the layer's content
 * (`ENOTDIR`, `ELOOP`, `EPERM` on a link to a directory, ...) become `InvalidArgument`, problems
 * of the machine (`ENOSPC`, `EIO`, `EACCES`, ...) `FailedPrecondition`. Typed errors pass through.
 */
export function entryError(entry: string, action: string, err: unknown): Error {
  if (err instanceof StrataError) return err;
  if (err instanceof sys.SysError) {
    const Kind = CONTENT_ERRNOS.has(err.code) ? InvalidArgument : FailedPrecondition;
    return new Kind(`Cannot apply layer entry ${quote(entry)}: ${action}: ${err.message}`, {
      cause: err,
    });
  }
  return err instanceof Error ? err : new Error(String(err));
}

/** Quotes an entry name for a message, shortening very long names. */
export function quote(name: string): string {
  const text = name.length > 200 ? `${name.slice(0, 100)}...${name.slice(-60)}` : name;
  return `"${printableName(text).replaceAll('"', '\\"')}"`;
}
