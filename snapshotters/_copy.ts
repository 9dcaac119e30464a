// CopyDir: a full-fidelity copy of a directory tree (containerd's continuity `fs.CopyDir`, with its
// directory-times quirk fixed).
//
// What is copied, per entry: content (sparse-aware), owner, mode including setuid/setgid/sticky,
// nanosecond atime and mtime (of files, directories and symlinks), xattrs, hardlink groups
// (keyed by dev and inode), devices, FIFOs and sockets.
//
// Order per entry: create -> lchown -> chmod (not symlinks; after chown, which clears setuid and
// setgid) -> xattrs (after chown, which drops `security.capability`) -> utimensat(NOFOLLOW). A
// directory gets its metadata after all its children exist, so its mtime is the source's
// (containerd sets directory times first and children creation then bumps them).
//
// Tolerated, recorded as warnings, copy goes on:
// - xattr errors (listing, reading or setting; ENOTSUP on listing is skipped silently, and
//   `trusted.*` is not even tried unless running as root), as containerd's native snapshotter
//   ignores them;
// - lchown EPERM when not root: the entry keeps the caller's ownership. When the owner already
//   matches the EPERM is no warning at all (containerd's rule); as root EPERM is an error, as in
//   containerd.
// - mknod EPERM of a device when not root: the device is skipped.
// Sockets are recreated with mknod (as containerd does); they are just inodes with no listener.
//
// No fsync per file by default: Strata makes a snapshot durable with one syncfs(2) before commit,
// which writes the same data with far fewer flushes; `fsync: true` restores containerd's per-file
// fsync.
//
// Limits: paths are handled as absolute strings (PATH_MAX applies). Names are listed with
// getdents64 (sys.readDirAt), so names that are not UTF-8 are copied byte for byte.
import { join } from "node:path";
import { InvalidArgument } from "../errors.ts";
import {
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  close,
  copyFileRange,
  fchmodat,
  fchownat,
  fsync,
  ftruncate,
  isErrno,
  lgetxattr,
  linkat,
  llistxattr,
  lseek,
  lsetxattr,
  mkdirat,
  mknodat,
  O_CLOEXEC,
  O_CREAT,
  O_EXCL,
  O_NOFOLLOW,
  O_RDONLY,
  O_WRONLY,
  open,
  pread,
  pwrite,
  readDirAt,
  readlinkat,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  SEEK_DATA,
  SEEK_HOLE,
  type Stat,
  statx,
  symlinkat,
  utimensat,
} from "../sys/mod.ts";

/** Options of {@linkcode copyDir}. */
export interface CopyDirOptions {
  /** fsync every copied file, as containerd does (default `false`: Strata syncs once with syncfs). */
  fsync?: boolean;
}

/** What {@linkcode copyDir} tolerated. */
export interface CopyDirResult {
  /** One line per tolerated failure (xattrs, ownership or devices that could not be copied). */
  warnings: string[];
}

interface Context {
  root: boolean;
  fsync: boolean;
  inodes: Map<string, string>;
  warnings: string[];
  copyFileRange: boolean;
}

/** Largest chunk handed to copy_file_range(2) at once. */
const RANGE_CHUNK = 1 << 30;
/** Buffer size of the read/write fallback. */
const BUFFER_SIZE = 1 << 20;

/**
 * Copies the directory `src` (followed if it is a symlink) to `dst`, which must not exist or be a
 * directory. Entries are never followed.
 */
export function copyDir(src: string, dst: string, options: CopyDirOptions = {}): CopyDirResult {
  const st = statx(AT_FDCWD, src, 0);
  if ((st.mode & S_IFMT) !== S_IFDIR) {
    throw new InvalidArgument(`Cannot copy directory "${src}": it is not a directory`);
  }
  const ctx: Context = {
    root: Deno.uid() === 0,
    fsync: options.fsync ?? false,
    inodes: new Map(),
    warnings: [],
    copyFileRange: true,
  };
  let existing: Stat | undefined;
  try {
    existing = statx(AT_FDCWD, dst, AT_SYMLINK_NOFOLLOW);
  } catch (err) {
    if (!isErrno(err, "ENOENT")) throw err;
  }
  if (existing === undefined) {
    mkdirat(AT_FDCWD, dst, 0o700);
  } else if ((existing.mode & S_IFMT) !== S_IFDIR) {
    throw new InvalidArgument(
      `Cannot copy directory "${src}" to "${dst}": "${dst}" is not a directory`,
    );
  } else {
    // The owner must be able to create the children; the source mode is applied at the end.
    fchmodat(AT_FDCWD, dst, 0o700, 0);
  }
  copyChildren(src, dst, ctx);
  copyMetadata(src, dst, st, ctx);
  return { warnings: ctx.warnings };
}

function copyChildren(srcDir: string, dstDir: string, ctx: Context): void {
  for (const { name } of readDirAt(AT_FDCWD, srcDir)) {
    const src = join(srcDir, name);
    const dst = join(dstDir, name);
    const st = statx(AT_FDCWD, src, AT_SYMLINK_NOFOLLOW);
    const type = st.mode & S_IFMT;
    let inodeKey: string | undefined;
    if (type !== S_IFDIR && st.nlink > 1) {
      inodeKey = `${st.dev}:${st.ino}`;
      const first = ctx.inodes.get(inodeKey);
      if (first !== undefined) {
        linkat(AT_FDCWD, first, AT_FDCWD, dst, 0);
        continue;
      }
    }
    switch (type) {
      case S_IFDIR:
        mkdirat(AT_FDCWD, dst, 0o700);
        copyChildren(src, dst, ctx);
        break;
      case S_IFREG:
        copyFile(src, dst, st, ctx);
        break;
      case S_IFLNK:
        symlinkat(readlinkat(AT_FDCWD, src), AT_FDCWD, dst);
        break;
      case S_IFCHR:
      case S_IFBLK:
        try {
          mknodat(AT_FDCWD, dst, type | 0o600, st.rdev);
        } catch (err) {
          if (ctx.root || !isErrno(err, "EPERM")) throw err;
          ctx.warnings.push(`Cannot copy device "${src}": creating devices needs root, skipped`);
          continue;
        }
        break;
      case S_IFIFO:
      case S_IFSOCK:
        mknodat(AT_FDCWD, dst, type | 0o600, 0);
        break;
      default:
        ctx.warnings.push(`Cannot copy "${src}": unknown file type ${type.toString(8)}, skipped`);
        continue;
    }
    copyMetadata(src, dst, st, ctx);
    if (inodeKey !== undefined) ctx.inodes.set(inodeKey, dst);
  }
}

/** Owner, mode, xattrs, then times of `dst`, from the source's `st`. */
function copyMetadata(src: string, dst: string, st: Stat, ctx: Context): void {
  const symlink = (st.mode & S_IFMT) === S_IFLNK;
  try {
    fchownat(AT_FDCWD, dst, st.uid, st.gid, AT_SYMLINK_NOFOLLOW);
  } catch (err) {
    if (!isErrno(err, "EPERM")) throw err;
    const now = statx(AT_FDCWD, dst, AT_SYMLINK_NOFOLLOW);
    if (now.uid !== st.uid || now.gid !== st.gid) {
      if (ctx.root) throw err;
      ctx.warnings.push(
        `Cannot copy owner ${st.uid}:${st.gid} of "${src}": not permitted, kept ${now.uid}:${now.gid}`,
      );
    }
  }
  if (!symlink) fchmodat(AT_FDCWD, dst, st.mode & 0o7777, 0);
  copyXattrs(src, dst, ctx);
  utimensat(AT_FDCWD, dst, [st.atime, st.mtime], AT_SYMLINK_NOFOLLOW);
}

function copyXattrs(src: string, dst: string, ctx: Context): void {
  let names: string[];
  try {
    names = llistxattr(src);
  } catch (err) {
    if (isErrno(err, "ENOTSUP", "EOPNOTSUPP")) return;
    ctx.warnings.push(`Cannot list xattrs of "${src}": ${(err as Error).message}`);
    return;
  }
  for (const name of names) {
    if (!ctx.root && name.startsWith("trusted.")) continue;
    try {
      lsetxattr(dst, name, lgetxattr(src, name), 0);
    } catch (err) {
      ctx.warnings.push(`Cannot copy xattr "${name}" of "${src}": ${(err as Error).message}`);
    }
  }
}

function copyFile(src: string, dst: string, st: Stat, ctx: Context): void {
  const sfd = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  try {
    const dfd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600);
    try {
      copyContent(sfd, dfd, st.size, ctx);
      if (ctx.fsync) fsync(dfd);
    } finally {
      close(dfd);
    }
  } finally {
    close(sfd);
  }
}

/** Copies the data extents of `sfd` to the same offsets of `dfd`, leaving holes as holes. */
function copyContent(sfd: number, dfd: number, size: number, ctx: Context): void {
  if (size === 0) return;
  ftruncate(dfd, size);
  let offset = 0;
  while (offset < size) {
    let data: number;
    try {
      data = lseek(sfd, offset, SEEK_DATA);
    } catch (err) {
      if (isErrno(err, "ENXIO")) return; // Only a hole is left.
      if (isErrno(err, "EINVAL", "EOPNOTSUPP", "ENOTSUP")) {
        copyRange(sfd, dfd, offset, size - offset, ctx);
        return;
      }
      throw err;
    }
    if (data >= size) return;
    let hole: number;
    try {
      hole = lseek(sfd, data, SEEK_HOLE);
    } catch (err) {
      if (!isErrno(err, "ENXIO")) throw err;
      hole = size;
    }
    const end = Math.min(hole, size);
    copyRange(sfd, dfd, data, end - data, ctx);
    offset = end;
  }
}

function copyRange(sfd: number, dfd: number, start: number, length: number, ctx: Context): void {
  let done = 0;
  if (ctx.copyFileRange) {
    try {
      while (done < length) {
        const n = copyFileRange(
          sfd,
          start + done,
          dfd,
          start + done,
          Math.min(length - done, RANGE_CHUNK),
        );
        if (n === 0) return; // The source got shorter.
        done += n;
      }
      return;
    } catch (err) {
      if (!isErrno(err, "EXDEV", "ENOSYS", "EOPNOTSUPP", "ENOTSUP", "EINVAL")) throw err;
      ctx.copyFileRange = false;
    }
  }
  const buffer = new Uint8Array(Math.min(BUFFER_SIZE, Math.max(length - done, 1)));
  while (done < length) {
    const want = Math.min(length - done, buffer.length);
    const n = pread(sfd, buffer.subarray(0, want), start + done);
    if (n === 0) return;
    let written = 0;
    while (written < n) {
      written += pwrite(dfd, buffer.subarray(written, n), start + done + written);
    }
    done += n;
  }
}
