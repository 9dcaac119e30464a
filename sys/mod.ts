/**
 * Linux file-system calls that Deno has no API for, made through libc with `Deno.dlopen`:
 * `openat`/`openat2`, `mknodat`, `*xattr`, `utimensat` with nanoseconds, `fchownat` on symlinks,
 * `renameat2`, `statx`, `mount`/`umount2`, `syncfs`, `copy_file_range`, `flock` and friends.
 *
 * Every call is synchronous, takes and returns plain numbers and strings, and throws a
 * {@linkcode SysError} (with the errno name in `code`) when libc reports a failure. libc is
 * opened on the first call: importing this module needs no permission, while the first call
 * throws `NotImplemented` without `--allow-ffi` or on an OS other than Linux.
 *
 * Paths and names are strings and Linux names are bytes: they are decoded as UTF-8, and each byte
 * of a name that is not valid UTF-8 becomes the unpaired surrogate U+DC00 + byte (U+DC80-U+DCFF,
 * as Python's `surrogateescape`), which these calls turn back into that byte. So a name read with
 * {@linkcode readDirFd} or {@linkcode readlinkat} opens the same file when passed back, whatever
 * its bytes. (Deno's own file APIs replace such bytes with U+FFFD instead.)
 *
 * File descriptors are real OS descriptors: a descriptor from `node:fs.openSync` can be passed to
 * these calls. The reverse does not hold in Deno 2.9: `node:fs` only accepts descriptors it opened
 * itself (others give `EBADF`), so read and write descriptors from {@linkcode open} with
 * {@linkcode read}, {@linkcode pread}, {@linkcode write} and friends.
 *
 * @example Create a file with a nanosecond mtime and an xattr, then read both back
 * ```ts
 * import * as sys from "@strata/strata/sys";
 *
 * const dir = Deno.makeTempDirSync();
 * const fd = sys.open(`${dir}/hello`, sys.O_WRONLY | sys.O_CREAT | sys.O_CLOEXEC, 0o644);
 * sys.writeAll(fd, new TextEncoder().encode("hello"));
 * sys.fsetxattr(fd, "user.greeting", new TextEncoder().encode("hi"));
 * sys.close(fd);
 * sys.utimensat(sys.AT_FDCWD, `${dir}/hello`, [
 *   { sec: 1700000000, nsec: sys.UTIME_OMIT },
 *   { sec: 1700000000, nsec: 123456789 },
 * ], 0);
 * const st = sys.lstat(`${dir}/hello`);
 * console.log(st.size, st.mtime.nsec, sys.llistxattr(`${dir}/hello`));
 * ```
 *
 * @module
 */

import { InvalidArgument } from "../errors.ts";
import {
  cstr,
  cstrOnce,
  errnoCell,
  libc,
  SYS_GETDENTS64,
  SYS_MKNODAT,
  SYS_OPENAT2,
} from "./_libc.ts";
import { errnoNumber, SysError, type SysErrorOptions } from "./errno.ts";
import { decodeName } from "./_names.ts";
import {
  AT_EMPTY_PATH,
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  O_CLOEXEC,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_RDONLY,
  STATX_BASIC_STATS,
  STATX_BTIME,
} from "./constants.ts";

export * from "./constants.ts";
export { errnoName, errnoNumber, isErrno, SysError, type SysErrorOptions } from "./errno.ts";

/** A point in time as seconds and nanoseconds since the epoch. */
export interface Timespec {
  /** Whole seconds since 1970-01-01T00:00:00Z (negative before). */
  sec: number;
  /** Nanoseconds, 0 to 999,999,999, or `UTIME_NOW` / `UTIME_OMIT` for `utimensat`. */
  nsec: number;
}

/** What `statx` reports about a file. */
export interface Stat {
  /** File type and permission bits (`mode & S_IFMT` is the type). */
  mode: number;
  /** Owner user id. */
  uid: number;
  /** Owner group id. */
  gid: number;
  /** Size in bytes. */
  size: number;
  /** Number of hard links. */
  nlink: number;
  /** Inode number. */
  ino: bigint;
  /** Device of the file system holding the file, as `makedev(major, minor)`. */
  dev: number;
  /** Device number of a character or block device, as `makedev(major, minor)`; else 0. */
  rdev: number;
  /** Number of 512-byte blocks allocated. */
  blocks: number;
  /** Last access time. */
  atime: Timespec;
  /** Last modification time. */
  mtime: Timespec;
  /** Last status change time. */
  ctime: Timespec;
  /** Creation time, when the file system records it. */
  btime?: Timespec;
}

/** How `openat2` opens a path. */
export interface OpenHow {
  /** `O_*` flags. Unknown flags fail with `EINVAL` (unlike `openat`). */
  flags: number;
  /** Mode for `O_CREAT` / `O_TMPFILE`; must be 0 (the default) otherwise. */
  mode?: number;
  /** `RESOLVE_*` flags. */
  resolve?: number;
}

/**
 * The error of a failed call. `n` is the calling thread's errno, read by the caller as
 * `errnoCell[0]` right after the call returned -1 and before anything else: before the object
 * naming the path is made, and before any function is entered. Entering a function lets V8 handle
 * pending interrupts (a garbage collection step, finished compilation jobs), and native code run
 * there may overwrite errno.
 */
function fail(n: number, call: string, where: SysErrorOptions): SysError {
  return new SysError(n, call, where);
}

// --- open and close ----------------------------------------------------------------------------

/**
 * Opens a path relative to the current directory (`openat(AT_FDCWD, ...)`).
 *
 * @example
 * ```ts
 * import { close, O_RDONLY, O_CLOEXEC, open } from "@strata/strata/sys";
 * const fd = open("/etc/hostname", O_RDONLY | O_CLOEXEC);
 * close(fd);
 * ```
 *
 * @param path The path to open.
 * @param flags `O_*` flags.
 * @param mode The permission bits of a file `O_CREAT` creates (default 0o644).
 * @returns The new file descriptor.
 */
export function open(path: string, flags: number, mode: number = 0o644): number {
  const fd = libc().openat(AT_FDCWD, cstr(path, 0, "open"), flags, mode);
  if (fd === -1) throw fail(errnoCell[0]!, "open", { path });
  return fd;
}

/**
 * Opens a path relative to a directory descriptor.
 *
 * @example
 * ```ts
 * import { AT_FDCWD, close, O_DIRECTORY, O_RDONLY, openat } from "@strata/strata/sys";
 * const dirfd = openat(AT_FDCWD, "/etc", O_RDONLY | O_DIRECTORY);
 * close(dirfd);
 * ```
 *
 * @param dirfd The directory the path is relative to, or `AT_FDCWD`.
 * @param path The path to open.
 * @param flags `O_*` flags.
 * @param mode The permission bits of a file `O_CREAT` creates (default 0o644).
 * @returns The new file descriptor.
 */
export function openat(dirfd: number, path: string, flags: number, mode: number = 0o644): number {
  const fd = libc().openat(dirfd, cstr(path, 0, "openat"), flags, mode);
  if (fd === -1) throw fail(errnoCell[0]!, "openat", { path });
  return fd;
}

const openHow = new BigUint64Array(3);

/**
 * Opens a path with `openat2` (Linux 5.6+), which can confine resolution to a directory with
 * `RESOLVE_IN_ROOT` or `RESOLVE_BENEATH`.
 *
 * @example Open a file inside a root, resolving symlinks as if the root were `/`
 * ```ts
 * import { close, O_RDONLY, openat, openat2, O_DIRECTORY, AT_FDCWD, RESOLVE_IN_ROOT } from "@strata/strata/sys";
 * const root = openat(AT_FDCWD, "/etc", O_RDONLY | O_DIRECTORY);
 * const fd = openat2(root, "../../hostname", { flags: O_RDONLY, resolve: RESOLVE_IN_ROOT });
 * close(fd);
 * close(root);
 * ```
 *
 * @param dirfd The directory the path is relative to (and the root for `RESOLVE_IN_ROOT`).
 * @param path The path to open.
 * @param how The flags, mode and resolve flags.
 * @returns The new file descriptor.
 */
export function openat2(dirfd: number, path: string, how: OpenHow): number {
  openHow[0] = BigInt(how.flags);
  openHow[1] = BigInt(how.mode ?? 0);
  openHow[2] = BigInt(how.resolve ?? 0);
  const fd = libc().syscall_openat2(
    SYS_OPENAT2,
    BigInt(dirfd),
    cstr(path, 0, "openat2"),
    openHow,
    24n,
  );
  if (fd === -1n) throw fail(errnoCell[0]!, "openat2", { path });
  return Number(fd);
}

/**
 * Closes a file descriptor.
 *
 * @example
 * ```ts
 * import { close, O_RDONLY, open } from "@strata/strata/sys";
 * close(open("/etc/hostname", O_RDONLY));
 * ```
 *
 * @param fd The descriptor to close.
 */
export function close(fd: number): void {
  if (libc().close(fd) === -1) throw fail(errnoCell[0]!, "close", { fd });
}

// --- creating, linking, removing ----------------------------------------------------------------

/**
 * Creates a directory.
 *
 * @example
 * ```ts
 * import { AT_FDCWD, mkdirat } from "@strata/strata/sys";
 * mkdirat(AT_FDCWD, `${Deno.makeTempDirSync()}/sub`, 0o755);
 * ```
 *
 * @param dirfd The directory the path is relative to, or `AT_FDCWD`.
 * @param path The directory to create.
 * @param mode Its permission bits (before the umask).
 */
export function mkdirat(dirfd: number, path: string, mode: number): void {
  if (libc().mkdirat(dirfd, cstr(path, 0, "mkdirat"), mode) === -1) {
    throw fail(errnoCell[0]!, "mkdirat", { path });
  }
}

/**
 * Creates a device node, FIFO, socket or empty regular file.
 *
 * @example Create a FIFO and the `/dev/null` character device
 * ```ts
 * import { AT_FDCWD, makedev, mknodat, S_IFCHR, S_IFIFO } from "@strata/strata/sys";
 * const dir = Deno.makeTempDirSync();
 * mknodat(AT_FDCWD, `${dir}/fifo`, S_IFIFO | 0o644, 0);
 * mknodat(AT_FDCWD, `${dir}/null`, S_IFCHR | 0o666, makedev(1, 3)); // needs root
 * ```
 *
 * @param dirfd The directory the path is relative to, or `AT_FDCWD`.
 * @param path The node to create.
 * @param mode The file type (`S_IFCHR`, `S_IFBLK`, `S_IFIFO`, ...) and permission bits.
 * @param dev The device number from {@linkcode makedev} (0 for other types).
 */
export function mknodat(dirfd: number, path: string, mode: number, dev: number): void {
  const lib = libc();
  const p = cstr(path, 0, "mknodat");
  const rc = lib.mknodat !== null
    ? lib.mknodat(dirfd, p, mode, BigInt(dev))
    : Number(lib.syscall_mknodat(SYS_MKNODAT, BigInt(dirfd), p, BigInt(mode), BigInt(dev)));
  if (rc === -1) throw fail(errnoCell[0]!, "mknodat", { path });
}

/**
 * Creates a symbolic link.
 *
 * @example
 * ```ts
 * import { AT_FDCWD, symlinkat } from "@strata/strata/sys";
 * symlinkat("/etc/hostname", AT_FDCWD, `${Deno.makeTempDirSync()}/link`);
 * ```
 *
 * @param target What the link points to (stored as is, not resolved).
 * @param dirfd The directory `path` is relative to, or `AT_FDCWD`.
 * @param path The link to create.
 */
export function symlinkat(target: string, dirfd: number, path: string): void {
  const lib = libc();
  if (lib.symlinkat(cstr(target, 0, "symlinkat"), dirfd, cstr(path, 1, "symlinkat")) === -1) {
    throw fail(errnoCell[0]!, "symlinkat", { path, dest: target });
  }
}

/**
 * Creates a hard link.
 *
 * @example
 * ```ts
 * import { AT_FDCWD, linkat } from "@strata/strata/sys";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/a`, "x");
 * linkat(AT_FDCWD, `${dir}/a`, AT_FDCWD, `${dir}/b`, 0);
 * ```
 *
 * @param olddirfd The directory `oldpath` is relative to, or `AT_FDCWD`.
 * @param oldpath The existing file.
 * @param newdirfd The directory `newpath` is relative to, or `AT_FDCWD`.
 * @param newpath The new name.
 * @param flags `AT_SYMLINK_FOLLOW` or `AT_EMPTY_PATH`, else 0.
 */
export function linkat(
  olddirfd: number,
  oldpath: string,
  newdirfd: number,
  newpath: string,
  flags: number,
): void {
  const lib = libc();
  const rc = lib.linkat(
    olddirfd,
    cstr(oldpath, 0, "linkat"),
    newdirfd,
    cstr(newpath, 1, "linkat"),
    flags,
  );
  if (rc === -1) throw fail(errnoCell[0]!, "linkat", { path: oldpath, dest: newpath });
}

/**
 * Removes a file, or with `AT_REMOVEDIR` an empty directory.
 *
 * @example
 * ```ts
 * import { AT_FDCWD, AT_REMOVEDIR, unlinkat } from "@strata/strata/sys";
 * const dir = Deno.makeTempDirSync();
 * unlinkat(AT_FDCWD, dir, AT_REMOVEDIR);
 * ```
 *
 * @param dirfd The directory the path is relative to, or `AT_FDCWD`.
 * @param path The entry to remove.
 * @param flags `AT_REMOVEDIR` or 0.
 */
export function unlinkat(dirfd: number, path: string, flags: number): void {
  if (libc().unlinkat(dirfd, cstr(path, 0, "unlinkat"), flags) === -1) {
    throw fail(errnoCell[0]!, "unlinkat", { path });
  }
}

/**
 * Renames an entry, optionally without replacing (`RENAME_NOREPLACE`) or swapping two entries
 * (`RENAME_EXCHANGE`).
 *
 * @example
 * ```ts
 * import { AT_FDCWD, RENAME_NOREPLACE, renameat2 } from "@strata/strata/sys";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/a`, "x");
 * renameat2(AT_FDCWD, `${dir}/a`, AT_FDCWD, `${dir}/b`, RENAME_NOREPLACE);
 * ```
 *
 * @param olddirfd The directory `oldpath` is relative to, or `AT_FDCWD`.
 * @param oldpath The entry to rename.
 * @param newdirfd The directory `newpath` is relative to, or `AT_FDCWD`.
 * @param newpath The new name.
 * @param flags `RENAME_*` flags, or 0.
 */
export function renameat2(
  olddirfd: number,
  oldpath: string,
  newdirfd: number,
  newpath: string,
  flags: number,
): void {
  const lib = libc();
  const rc = lib.renameat2(
    olddirfd,
    cstr(oldpath, 0, "renameat2"),
    newdirfd,
    cstr(newpath, 1, "renameat2"),
    flags,
  );
  if (rc === -1) throw fail(errnoCell[0]!, "renameat2", { path: oldpath, dest: newpath });
}

let linkBuf = new Uint8Array(4096);

/**
 * Reads the target of a symbolic link.
 *
 * @example
 * ```ts
 * import { AT_FDCWD, readlinkat, symlinkat } from "@strata/strata/sys";
 * const link = `${Deno.makeTempDirSync()}/link`;
 * symlinkat("../x", AT_FDCWD, link);
 * console.log(readlinkat(AT_FDCWD, link)); // "../x"
 * ```
 *
 * @param dirfd The directory the path is relative to, or `AT_FDCWD`.
 * @param path The link.
 * @returns The target (decoded as names are: see the module documentation).
 */
export function readlinkat(dirfd: number, path: string): string {
  const lib = libc();
  const p = cstr(path, 0, "readlinkat");
  for (;;) {
    const n = lib.readlinkat(dirfd, p, linkBuf, BigInt(linkBuf.length));
    if (n === -1n) throw fail(errnoCell[0]!, "readlinkat", { path });
    // A full buffer may mean truncation: grow and retry.
    if (n < BigInt(linkBuf.length)) return decodeName(linkBuf.subarray(0, Number(n)));
    linkBuf = new Uint8Array(linkBuf.length * 2);
  }
}

// --- ownership, permissions, times --------------------------------------------------------------

/**
 * Changes the owner of a path; with `AT_SYMLINK_NOFOLLOW` a symlink itself.
 *
 * @example
 * ```ts
 * import { AT_FDCWD, AT_SYMLINK_NOFOLLOW, fchownat, symlinkat } from "@strata/strata/sys";
 * const link = `${Deno.makeTempDirSync()}/link`;
 * symlinkat("/etc/passwd", AT_FDCWD, link);
 * fchownat(AT_FDCWD, link, Deno.uid() ?? 0, Deno.gid() ?? 0, AT_SYMLINK_NOFOLLOW);
 * ```
 *
 * @param dirfd The directory the path is relative to, or `AT_FDCWD`.
 * @param path The path.
 * @param uid The new owner, or -1 to keep it.
 * @param gid The new group, or -1 to keep it.
 * @param flags `AT_SYMLINK_NOFOLLOW`, `AT_EMPTY_PATH` or 0.
 */
export function fchownat(
  dirfd: number,
  path: string,
  uid: number,
  gid: number,
  flags: number,
): void {
  if (libc().fchownat(dirfd, cstr(path, 0, "fchownat"), uid >>> 0, gid >>> 0, flags) === -1) {
    throw fail(errnoCell[0]!, "fchownat", { path });
  }
}

/**
 * Changes the owner of an open file.
 *
 * @example
 * ```ts
 * import { close, fchown, O_RDONLY, open } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_RDONLY);
 * fchown(fd, -1, -1);
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param uid The new owner, or -1 to keep it.
 * @param gid The new group, or -1 to keep it.
 */
export function fchown(fd: number, uid: number, gid: number): void {
  if (libc().fchown(fd, uid >>> 0, gid >>> 0) === -1) throw fail(errnoCell[0]!, "fchown", { fd });
}

/**
 * Changes the permission bits of a path. Linux cannot change a symlink's mode, so
 * `AT_SYMLINK_NOFOLLOW` on a symlink fails with `EOPNOTSUPP`.
 *
 * @example
 * ```ts
 * import { AT_FDCWD, fchmodat } from "@strata/strata/sys";
 * fchmodat(AT_FDCWD, Deno.makeTempFileSync(), 0o600, 0);
 * ```
 *
 * @param dirfd The directory the path is relative to, or `AT_FDCWD`.
 * @param path The path.
 * @param mode The new permission bits (including setuid, setgid and sticky).
 * @param flags `AT_SYMLINK_NOFOLLOW` or 0.
 */
export function fchmodat(dirfd: number, path: string, mode: number, flags: number): void {
  if (libc().fchmodat(dirfd, cstr(path, 0, "fchmodat"), mode, flags) === -1) {
    throw fail(errnoCell[0]!, "fchmodat", { path });
  }
}

/**
 * Changes the permission bits of an open file.
 *
 * @example
 * ```ts
 * import { close, fchmod, O_RDONLY, open } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_RDONLY);
 * fchmod(fd, 0o640);
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param mode The new permission bits.
 */
export function fchmod(fd: number, mode: number): void {
  if (libc().fchmod(fd, mode) === -1) throw fail(errnoCell[0]!, "fchmod", { fd });
}

const timesBuf = new Uint8Array(32);
const timesView = new DataView(timesBuf.buffer);

function fillTimes(times: readonly [Timespec, Timespec], call: string): Uint8Array {
  for (let i = 0; i < 2; i++) {
    const { sec, nsec } = times[i]!;
    if (!Number.isSafeInteger(sec) || !Number.isInteger(nsec) || nsec < 0 || nsec >= 2 ** 30) {
      throw new InvalidArgument(
        `Cannot call ${call}: invalid time ${JSON.stringify({ sec, nsec })}`,
      );
    }
    // struct timespec { int64 tv_sec; int64 tv_nsec; }, little-endian, without BigInt.
    timesView.setUint32(i * 16, sec >>> 0, true);
    timesView.setInt32(i * 16 + 4, Math.floor(sec / 4294967296), true);
    timesView.setUint32(i * 16 + 8, nsec, true);
    timesView.setUint32(i * 16 + 12, 0, true);
  }
  return timesBuf;
}

/**
 * Sets the access and modification times of a path with nanosecond precision; with
 * `AT_SYMLINK_NOFOLLOW` those of a symlink itself.
 *
 * @example
 * ```ts
 * import { AT_FDCWD, utimensat, UTIME_OMIT } from "@strata/strata/sys";
 * const file = Deno.makeTempFileSync();
 * utimensat(AT_FDCWD, file, [{ sec: 0, nsec: UTIME_OMIT }, { sec: 1700000000, nsec: 123456789 }], 0);
 * ```
 *
 * @param dirfd The directory the path is relative to, or `AT_FDCWD`.
 * @param path The path.
 * @param times `[atime, mtime]`; an nsec of `UTIME_NOW` or `UTIME_OMIT` sets now or keeps the
 *   time; `null` sets both to now.
 * @param flags `AT_SYMLINK_NOFOLLOW` or 0.
 */
export function utimensat(
  dirfd: number,
  path: string,
  times: readonly [Timespec, Timespec] | null,
  flags: number,
): void {
  const buf = times === null ? null : fillTimes(times, "utimensat");
  if (libc().utimensat(dirfd, cstr(path, 0, "utimensat"), buf, flags) === -1) {
    throw fail(errnoCell[0]!, "utimensat", { path });
  }
}

/**
 * Sets the access and modification times of an open file with nanosecond precision.
 *
 * @example
 * ```ts
 * import { close, futimens, O_RDONLY, open } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_RDONLY);
 * futimens(fd, [{ sec: 1, nsec: 0 }, { sec: 2, nsec: 500 }]);
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param times `[atime, mtime]`, or `null` for now.
 */
export function futimens(fd: number, times: readonly [Timespec, Timespec] | null): void {
  const buf = times === null ? null : fillTimes(times, "futimens");
  if (libc().futimens(fd, buf) === -1) throw fail(errnoCell[0]!, "futimens", { fd });
}

// --- extended attributes ------------------------------------------------------------------------

// Most values and name lists are short: read into this first, ask for the size only when it is
// too small (the kernel allocates and zeroes as many bytes as the buffer we pass).
const XATTR_SCRATCH = 1024;
let xattrBuf = new Uint8Array(XATTR_SCRATCH);
const ERANGE = 34;

function sized(
  get: (buf: Uint8Array | null, size: bigint) => bigint,
  call: string,
  where: SysErrorOptions,
): Uint8Array {
  let buf = xattrBuf;
  for (;;) {
    const n = get(buf, BigInt(buf.length));
    if (n !== -1n) return buf.slice(0, Number(n));
    const err = fail(errnoCell[0]!, call, where);
    if (err.errno !== ERANGE) throw err;
    const size = get(null, 0n);
    if (size === -1n) throw fail(errnoCell[0]!, call, where);
    // The value may grow between the two calls: leave some room.
    buf = new Uint8Array(Number(size) + 64);
    if (buf.length <= 65536 + 64 && buf.length > xattrBuf.length) xattrBuf = buf;
  }
}

function names(list: Uint8Array): string[] {
  if (list.length === 0) return [];
  const text = decodeName(list);
  return text.slice(0, text.endsWith("\0") ? -1 : undefined).split("\0");
}

/**
 * Sets an extended attribute of a path without following a symlink.
 *
 * @example
 * ```ts
 * import { lsetxattr } from "@strata/strata/sys";
 * lsetxattr(Deno.makeTempFileSync(), "user.note", new TextEncoder().encode("hi"));
 * ```
 *
 * @param path The path.
 * @param name The attribute, e.g. `"user.note"` or `"trusted.overlay.opaque"`.
 * @param value The value.
 * @param flags `XATTR_CREATE`, `XATTR_REPLACE` or 0 (the default).
 */
export function lsetxattr(path: string, name: string, value: Uint8Array, flags = 0): void {
  const lib = libc();
  const rc = lib.lsetxattr(
    cstr(path, 0, "lsetxattr"),
    cstr(name, 2, "lsetxattr"),
    value,
    BigInt(value.byteLength),
    flags,
  );
  if (rc === -1) throw fail(errnoCell[0]!, "lsetxattr", { path, dest: name });
}

/**
 * Sets an extended attribute of an open file.
 *
 * @example
 * ```ts
 * import { close, fsetxattr, O_RDONLY, open } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_RDONLY);
 * fsetxattr(fd, "user.note", new TextEncoder().encode("hi"));
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param name The attribute.
 * @param value The value.
 * @param flags `XATTR_CREATE`, `XATTR_REPLACE` or 0 (the default).
 */
export function fsetxattr(fd: number, name: string, value: Uint8Array, flags = 0): void {
  const lib = libc();
  const rc = lib.fsetxattr(fd, cstr(name, 2, "fsetxattr"), value, BigInt(value.byteLength), flags);
  if (rc === -1) throw fail(errnoCell[0]!, "fsetxattr", { fd, dest: name });
}

/**
 * Reads an extended attribute of a path without following a symlink. A missing attribute
 * throws a `SysError` with code `ENODATA`.
 *
 * @example
 * ```ts
 * import { lgetxattr, lsetxattr } from "@strata/strata/sys";
 * const file = Deno.makeTempFileSync();
 * lsetxattr(file, "user.note", new TextEncoder().encode("hi"));
 * console.log(new TextDecoder().decode(lgetxattr(file, "user.note")));
 * ```
 *
 * @param path The path.
 * @param name The attribute.
 * @returns A copy of the value.
 */
export function lgetxattr(path: string, name: string): Uint8Array {
  const lib = libc();
  const p = cstr(path, 0, "lgetxattr");
  const n = cstr(name, 2, "lgetxattr");
  return sized((buf, size) => lib.lgetxattr(p, n, buf, size), "lgetxattr", { path, dest: name });
}

/**
 * Reads an extended attribute of an open file.
 *
 * @example
 * ```ts
 * import { close, fgetxattr, fsetxattr, O_RDONLY, open } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_RDONLY);
 * fsetxattr(fd, "user.note", new Uint8Array([1]));
 * console.log(fgetxattr(fd, "user.note"));
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param name The attribute.
 * @returns A copy of the value.
 */
export function fgetxattr(fd: number, name: string): Uint8Array {
  const lib = libc();
  const n = cstr(name, 2, "fgetxattr");
  return sized((buf, size) => lib.fgetxattr(fd, n, buf, size), "fgetxattr", { fd, dest: name });
}

/**
 * Lists the extended attribute names of a path without following a symlink.
 *
 * @example
 * ```ts
 * import { llistxattr } from "@strata/strata/sys";
 * console.log(llistxattr(Deno.makeTempFileSync()));
 * ```
 *
 * @param path The path.
 * @returns The names, in the order the file system returns them.
 */
export function llistxattr(path: string): string[] {
  const lib = libc();
  const p = cstr(path, 0, "llistxattr");
  return names(sized((buf, size) => lib.llistxattr(p, buf, size), "llistxattr", { path }));
}

/**
 * Lists the extended attribute names of an open file.
 *
 * @example
 * ```ts
 * import { close, flistxattr, O_RDONLY, open } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_RDONLY);
 * console.log(flistxattr(fd));
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @returns The names.
 */
export function flistxattr(fd: number): string[] {
  const lib = libc();
  return names(sized((buf, size) => lib.flistxattr(fd, buf, size), "flistxattr", { fd }));
}

/**
 * Removes an extended attribute of a path without following a symlink.
 *
 * @example
 * ```ts
 * import { lremovexattr, lsetxattr } from "@strata/strata/sys";
 * const file = Deno.makeTempFileSync();
 * lsetxattr(file, "user.note", new Uint8Array([1]));
 * lremovexattr(file, "user.note");
 * ```
 *
 * @param path The path.
 * @param name The attribute.
 */
export function lremovexattr(path: string, name: string): void {
  const lib = libc();
  if (lib.lremovexattr(cstr(path, 0, "lremovexattr"), cstr(name, 2, "lremovexattr")) === -1) {
    throw fail(errnoCell[0]!, "lremovexattr", { path, dest: name });
  }
}

/**
 * Removes an extended attribute of an open file.
 *
 * @example
 * ```ts
 * import { close, fremovexattr, fsetxattr, O_RDONLY, open } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_RDONLY);
 * fsetxattr(fd, "user.note", new Uint8Array([1]));
 * fremovexattr(fd, "user.note");
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param name The attribute.
 */
export function fremovexattr(fd: number, name: string): void {
  if (libc().fremovexattr(fd, cstr(name, 2, "fremovexattr")) === -1) {
    throw fail(errnoCell[0]!, "fremovexattr", { fd, dest: name });
  }
}

// --- syncing and mounting -----------------------------------------------------------------------

/**
 * Flushes the whole file system that holds an open file.
 *
 * @example
 * ```ts
 * import { close, O_RDONLY, open, syncfs } from "@strata/strata/sys";
 * const fd = open("/tmp", O_RDONLY);
 * syncfs(fd);
 * close(fd);
 * ```
 *
 * @param fd Any descriptor on the file system.
 */
export function syncfs(fd: number): void {
  if (libc().syncfs(fd) === -1) throw fail(errnoCell[0]!, "syncfs", { fd });
}

/**
 * Flushes every file system's dirty data like {@linkcode syncfs}, on a thread of Deno's blocking
 * pool: the calling thread (and its event loop) goes on while the kernel writes. Keep `fd` open
 * until the promise settles.
 *
 * errno lives on the thread that made the call, where JavaScript cannot read it: when the call
 * fails it is made once more, synchronously, to learn why; when that one succeeds (the kernel
 * reports a writeback error once per descriptor) the error is `EIO`.
 *
 * @example
 * ```ts
 * import { close, O_RDONLY, open, syncfsAsync } from "@strata/strata/sys";
 * const fd = open("/tmp", O_RDONLY);
 * await syncfsAsync(fd);
 * close(fd);
 * ```
 *
 * @param fd Any descriptor on the file system.
 * @returns A promise that resolves once the file system is synced.
 */
export async function syncfsAsync(fd: number): Promise<void> {
  const lib = libc();
  if (await lib.syncfs_nonblocking(fd) !== -1) return;
  if (lib.syncfs(fd) === -1) throw fail(errnoCell[0]!, "syncfs", { fd });
  throw new SysError(errnoNumber("EIO") ?? 5, "syncfs", { fd });
}

/**
 * Flushes an open file's data and metadata to storage.
 *
 * @example
 * ```ts
 * import { close, fsync, O_RDONLY, open } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_RDONLY);
 * fsync(fd);
 * close(fd);
 * ```
 *
 * @param fd The file.
 */
export function fsync(fd: number): void {
  if (libc().fsync(fd) === -1) throw fail(errnoCell[0]!, "fsync", { fd });
}

/**
 * Flushes an open file's data (and only the metadata needed to read it back) to storage.
 *
 * @example
 * ```ts
 * import { close, fdatasync, O_RDONLY, open } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_RDONLY);
 * fdatasync(fd);
 * close(fd);
 * ```
 *
 * @param fd The file.
 */
export function fdatasync(fd: number): void {
  if (libc().fdatasync(fd) === -1) throw fail(errnoCell[0]!, "fdatasync", { fd });
}

/**
 * Mounts a file system, makes a bind mount, or changes a mount (needs `CAP_SYS_ADMIN`).
 *
 * @example Bind-mount a directory read-only
 * ```ts ignore
 * import { MS_BIND, MS_RDONLY, MS_REMOUNT, mount } from "@strata/strata/sys";
 * mount("/srv/data", "/mnt/data", null, MS_BIND, null);
 * mount(null, "/mnt/data", null, MS_REMOUNT | MS_BIND | MS_RDONLY, null);
 * ```
 *
 * @param source The device or directory, or `null` (e.g. for a remount).
 * @param target The mount point.
 * @param fstype The file system type (e.g. `"overlay"`), or `null` for a bind mount or remount.
 * @param flags `MS_*` flags.
 * @param data File-system specific options (e.g. `"lowerdir=...,upperdir=...,workdir=..."`).
 */
export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null = null,
): void {
  const rc = libc().mount(
    cstrOnce(source, "mount"),
    cstrOnce(target, "mount"),
    cstrOnce(fstype, "mount"),
    BigInt(flags),
    cstrOnce(data, "mount"),
  );
  if (rc === -1) {
    throw fail(
      errnoCell[0]!,
      "mount",
      source === null ? { path: target } : { path: source, dest: target },
    );
  }
}

/**
 * Unmounts a file system.
 *
 * @example
 * ```ts ignore
 * import { MNT_DETACH, umount2 } from "@strata/strata/sys";
 * umount2("/mnt/data", MNT_DETACH);
 * ```
 *
 * @param target The mount point.
 * @param flags `MNT_FORCE`, `MNT_DETACH`, `UMOUNT_NOFOLLOW` or 0.
 */
export function umount2(target: string, flags: number): void {
  if (libc().umount2(cstrOnce(target, "umount2"), flags) === -1) {
    throw fail(errnoCell[0]!, "umount2", { path: target });
  }
}

// --- reading and writing ------------------------------------------------------------------------

/**
 * Reads up to `buf.length` bytes at the current offset.
 *
 * @example
 * ```ts
 * import { close, O_RDONLY, open, read } from "@strata/strata/sys";
 * const fd = open("/etc/hostname", O_RDONLY);
 * const buf = new Uint8Array(64);
 * console.log(read(fd, buf));
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param buf Where the bytes go (read in place, no copy).
 * @returns The number of bytes read, 0 at end of file.
 */
export function read(fd: number, buf: Uint8Array): number {
  const n = libc().read(fd, buf, BigInt(buf.byteLength));
  if (n === -1n) throw fail(errnoCell[0]!, "read", { fd });
  return Number(n);
}

/**
 * Writes up to `buf.length` bytes at the current offset.
 *
 * @example
 * ```ts
 * import { close, O_WRONLY, open, write } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_WRONLY);
 * console.log(write(fd, new Uint8Array([1, 2, 3])));
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param buf The bytes.
 * @returns The number of bytes written, which may be fewer than `buf.length`.
 */
export function write(fd: number, buf: Uint8Array): number {
  const n = libc().write(fd, buf, BigInt(buf.byteLength));
  if (n === -1n) throw fail(errnoCell[0]!, "write", { fd });
  return Number(n);
}

/**
 * Writes all of `buf`, retrying short writes and `EINTR`.
 *
 * @example
 * ```ts
 * import { close, O_WRONLY, open, writeAll } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_WRONLY);
 * writeAll(fd, new TextEncoder().encode("hello"));
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param buf The bytes.
 */
export function writeAll(fd: number, buf: Uint8Array): void {
  const lib = libc();
  let off = 0;
  while (off < buf.byteLength) {
    const rest = off === 0 ? buf : buf.subarray(off);
    const n = lib.write(fd, rest, BigInt(rest.byteLength));
    if (n === -1n) {
      const err = fail(errnoCell[0]!, "write", { fd });
      if (err.code === "EINTR") continue;
      throw err;
    }
    off += Number(n);
  }
}

/**
 * Reads up to `buf.length` bytes at an offset, leaving the file offset alone.
 *
 * @example
 * ```ts
 * import { close, O_RDONLY, open, pread } from "@strata/strata/sys";
 * const fd = open("/etc/hostname", O_RDONLY);
 * console.log(pread(fd, new Uint8Array(4), 1));
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param buf Where the bytes go.
 * @param offset The file offset to read at.
 * @returns The number of bytes read, 0 at or past end of file.
 */
export function pread(fd: number, buf: Uint8Array, offset: number): number {
  const n = libc().pread64(fd, buf, BigInt(buf.byteLength), BigInt(offset));
  if (n === -1n) throw fail(errnoCell[0]!, "pread", { fd });
  return Number(n);
}

/**
 * Writes up to `buf.length` bytes at an offset, leaving the file offset alone.
 *
 * @example
 * ```ts
 * import { close, O_WRONLY, open, pwrite } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_WRONLY);
 * pwrite(fd, new Uint8Array([1]), 4096);
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param buf The bytes.
 * @param offset The file offset to write at.
 * @returns The number of bytes written.
 */
export function pwrite(fd: number, buf: Uint8Array, offset: number): number {
  const n = libc().pwrite64(fd, buf, BigInt(buf.byteLength), BigInt(offset));
  if (n === -1n) throw fail(errnoCell[0]!, "pwrite", { fd });
  return Number(n);
}

/**
 * Moves the file offset; `SEEK_DATA` and `SEEK_HOLE` find data and holes in sparse files
 * (past the last data they throw a `SysError` with code `ENXIO`).
 *
 * @example
 * ```ts
 * import { close, lseek, O_RDONLY, open, SEEK_END } from "@strata/strata/sys";
 * const fd = open("/etc/hostname", O_RDONLY);
 * console.log(lseek(fd, 0, SEEK_END)); // the size
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param offset The offset, relative to `whence`.
 * @param whence `SEEK_SET`, `SEEK_CUR`, `SEEK_END`, `SEEK_DATA` or `SEEK_HOLE`.
 * @returns The resulting offset from the start of the file.
 */
export function lseek(fd: number, offset: number, whence: number): number {
  const n = libc().lseek64(fd, BigInt(offset), whence);
  if (n === -1n) throw fail(errnoCell[0]!, "lseek", { fd });
  return Number(n);
}

/**
 * Sets the length of an open file, cutting it or extending it with a hole.
 *
 * @example
 * ```ts
 * import { close, ftruncate, O_WRONLY, open } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_WRONLY);
 * ftruncate(fd, 1 << 20);
 * close(fd);
 * ```
 *
 * @param fd The file, open for writing.
 * @param length The new length in bytes.
 */
export function ftruncate(fd: number, length: number): void {
  if (libc().ftruncate64(fd, BigInt(length)) === -1) throw fail(errnoCell[0]!, "ftruncate", { fd });
}

const offInBuf = new BigInt64Array(1);
const offOutBuf = new BigInt64Array(1);

/**
 * Copies bytes between two open files inside the kernel (reflinks on file systems that can).
 *
 * @example
 * ```ts
 * import { close, copyFileRange, O_RDONLY, O_WRONLY, open } from "@strata/strata/sys";
 * const src = Deno.makeTempFileSync();
 * Deno.writeTextFileSync(src, "hello");
 * const fdIn = open(src, O_RDONLY);
 * const fdOut = open(Deno.makeTempFileSync(), O_WRONLY);
 * console.log(copyFileRange(fdIn, 0, fdOut, 0, 5));
 * close(fdIn);
 * close(fdOut);
 * ```
 *
 * @param fdIn The source, open for reading.
 * @param offIn Where to read, or `null` to read at (and advance) the file offset.
 * @param fdOut The destination, open for writing.
 * @param offOut Where to write, or `null` to write at (and advance) the file offset.
 * @param len The number of bytes to copy at most.
 * @returns The number of bytes copied, 0 at end of the source.
 */
export function copyFileRange(
  fdIn: number,
  offIn: number | null,
  fdOut: number,
  offOut: number | null,
  len: number,
): number {
  let inPtr: BigInt64Array | null = null;
  let outPtr: BigInt64Array | null = null;
  if (offIn !== null) {
    offInBuf[0] = BigInt(offIn);
    inPtr = offInBuf;
  }
  if (offOut !== null) {
    offOutBuf[0] = BigInt(offOut);
    outPtr = offOutBuf;
  }
  const n = libc().copy_file_range(fdIn, inPtr, fdOut, outPtr, BigInt(len), 0);
  if (n === -1n) throw fail(errnoCell[0]!, "copy_file_range", { fd: fdIn });
  return Number(n);
}

/**
 * Applies or removes an advisory lock on an open file (per open file description).
 *
 * @example
 * ```ts
 * import { close, flock, LOCK_EX, LOCK_NB, LOCK_UN, O_RDONLY, open } from "@strata/strata/sys";
 * const fd = open(Deno.makeTempFileSync(), O_RDONLY);
 * flock(fd, LOCK_EX | LOCK_NB);
 * flock(fd, LOCK_UN);
 * close(fd);
 * ```
 *
 * @param fd The file.
 * @param op `LOCK_SH`, `LOCK_EX` or `LOCK_UN`, optionally with `LOCK_NB` (then a held lock
 *   throws a `SysError` with code `EWOULDBLOCK`, i.e. `EAGAIN`).
 */
export function flock(fd: number, op: number): void {
  if (libc().flock(fd, op) === -1) throw fail(errnoCell[0]!, "flock", { fd });
}

// --- stat ---------------------------------------------------------------------------------------

const statxBuf = new Uint8Array(256);
const ENOENT = errnoNumber("ENOENT")!;
const statxView = new DataView(statxBuf.buffer);
const STATX_MASK = STATX_BASIC_STATS | STATX_BTIME;

function u64(off: number): number {
  return statxView.getUint32(off, true) + statxView.getUint32(off + 4, true) * 4294967296;
}

function timestamp(off: number): Timespec {
  return {
    sec: statxView.getUint32(off, true) + statxView.getInt32(off + 4, true) * 4294967296,
    nsec: statxView.getUint32(off + 8, true),
  };
}

/**
 * Reads a file's metadata with `statx`, including nanosecond times and (when the file system
 * records it) the birth time.
 *
 * @example
 * ```ts
 * import { AT_FDCWD, AT_SYMLINK_NOFOLLOW, S_IFMT, S_IFDIR, statx } from "@strata/strata/sys";
 * const st = statx(AT_FDCWD, "/tmp", AT_SYMLINK_NOFOLLOW);
 * console.log((st.mode & S_IFMT) === S_IFDIR, st.mtime.sec, st.mtime.nsec);
 * ```
 *
 * @param dirfd The directory the path is relative to, or `AT_FDCWD`.
 * @param path The path (`""` with `AT_EMPTY_PATH` for `dirfd` itself).
 * @param flags `AT_SYMLINK_NOFOLLOW`, `AT_EMPTY_PATH` or 0.
 * @returns The metadata.
 */
export function statx(dirfd: number, path: string, flags: number): Stat {
  if (libc().statx(dirfd, cstr(path, 0, "statx"), flags, STATX_MASK, statxBuf) === -1) {
    throw path === ""
      ? fail(errnoCell[0]!, "statx", { fd: dirfd })
      : fail(errnoCell[0]!, "statx", { path });
  }
  return readStatx();
}

/**
 * Like {@linkcode statx}, but returns `null` when the path does not exist (`ENOENT`) instead of
 * throwing: a cheap existence check for code that expects misses (no error object is made).
 *
 * @example
 * ```ts
 * import { AT_FDCWD, AT_SYMLINK_NOFOLLOW, statxIfExists } from "@strata/strata/sys";
 * console.log(statxIfExists(AT_FDCWD, "/no/such/file", AT_SYMLINK_NOFOLLOW)); // null
 * ```
 *
 * @param dirfd The directory the path is relative to, or `AT_FDCWD`.
 * @param path The path.
 * @param flags `AT_SYMLINK_NOFOLLOW`, `AT_EMPTY_PATH` or 0.
 * @returns The metadata, or `null` when the path does not exist.
 */
export function statxIfExists(dirfd: number, path: string, flags: number): Stat | null {
  if (libc().statx(dirfd, cstr(path, 0, "statx"), flags, STATX_MASK, statxBuf) === -1) {
    const errno = errnoCell[0]!;
    if (errno === ENOENT) return null;
    throw path === "" ? fail(errno, "statx", { fd: dirfd }) : fail(errno, "statx", { path });
  }
  return readStatx();
}

/** The `Stat` of the last successful `statx` call (in `statxBuf`). */
function readStatx(): Stat {
  const v = statxView;
  const st: Stat = {
    mode: v.getUint16(0x1c, true),
    uid: v.getUint32(0x14, true),
    gid: v.getUint32(0x18, true),
    size: u64(0x28),
    nlink: v.getUint32(0x10, true),
    ino: v.getBigUint64(0x20, true),
    dev: makedev(v.getUint32(0x88, true), v.getUint32(0x8c, true)),
    rdev: makedev(v.getUint32(0x80, true), v.getUint32(0x84, true)),
    blocks: u64(0x30),
    atime: timestamp(0x40),
    mtime: timestamp(0x70),
    ctime: timestamp(0x60),
  };
  if ((v.getUint32(0, true) & STATX_BTIME) !== 0) st.btime = timestamp(0x50);
  return st;
}

/**
 * Reads the metadata of a path without following a final symlink.
 *
 * @example
 * ```ts
 * import { lstat } from "@strata/strata/sys";
 * console.log(lstat("/tmp").mode.toString(8));
 * ```
 *
 * @param path The path.
 * @returns The metadata.
 */
export function lstat(path: string): Stat {
  return statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW);
}

/**
 * Reads the metadata of a path, following symlinks.
 *
 * @example
 * ```ts
 * import { stat } from "@strata/strata/sys";
 * console.log(stat("/etc/hostname").size);
 * ```
 *
 * @param path The path.
 * @returns The metadata.
 */
export function stat(path: string): Stat {
  return statx(AT_FDCWD, path, 0);
}

/**
 * Reads the metadata of an open file.
 *
 * @example
 * ```ts
 * import { close, fstat, O_RDONLY, open } from "@strata/strata/sys";
 * const fd = open("/etc/hostname", O_RDONLY);
 * console.log(fstat(fd).size);
 * close(fd);
 * ```
 *
 * @param fd The file (an `O_PATH` descriptor works too).
 * @returns The metadata.
 */
export function fstat(fd: number): Stat {
  return statx(fd, "", AT_EMPTY_PATH);
}

// --- directories --------------------------------------------------------------------------------

/** The type of a directory entry, as the file system reports it in `d_type`. */
export type DirEntryType =
  | "file"
  | "dir"
  | "symlink"
  | "char"
  | "block"
  | "fifo"
  | "socket"
  | "unknown";

/** A directory entry read by {@linkcode readDirFd}. */
export interface DirEntry {
  /** The entry name (decoded as names are: see the module documentation). */
  name: string;
  /** The type from `d_type`; `"unknown"` when the file system does not report types. */
  type: DirEntryType;
  /** The inode number. */
  ino: bigint;
}

// d_type values (DT_*) indexed by number.
const DT_NAMES: readonly DirEntryType[] = [
  "unknown",
  "fifo",
  "char",
  "unknown",
  "dir",
  "unknown",
  "block",
  "unknown",
  "file",
  "unknown",
  "symlink",
  "unknown",
  "socket",
];
let direntBuf = new Uint8Array(32768);

/**
 * Lists a directory from an open descriptor with `getdents64`, with the entry types the file
 * system reports (no `lstat` per entry). `.` and `..` are left out. The listing starts at the
 * beginning of the directory (the descriptor is rewound) and leaves the position at the end.
 *
 * @example
 * ```ts
 * import { close, O_DIRECTORY, O_RDONLY, open, readDirFd } from "@strata/strata/sys";
 * const fd = open("/etc", O_RDONLY | O_DIRECTORY);
 * for (const entry of readDirFd(fd)) console.log(entry.name, entry.type);
 * close(fd);
 * ```
 *
 * @param fd A directory opened with `O_RDONLY | O_DIRECTORY` (not `O_PATH`).
 * @returns The entries, in directory order.
 */
export function readDirFd(fd: number): DirEntry[] {
  const lib = libc();
  if (lib.lseek64(fd, 0n, 0) === -1n) throw fail(errnoCell[0]!, "getdents64", { fd });
  const out: DirEntry[] = [];
  for (;;) {
    const r = lib.syscall_getdents64(
      SYS_GETDENTS64,
      BigInt(fd),
      direntBuf,
      BigInt(direntBuf.length),
    );
    if (r === -1n) {
      const err = fail(errnoCell[0]!, "getdents64", { fd });
      // EINVAL: an entry does not fit the buffer.
      if (err.code !== "EINVAL" || direntBuf.length >= 1 << 20) throw err;
      direntBuf = new Uint8Array(direntBuf.length * 4);
      continue;
    }
    const n = Number(r);
    if (n === 0) return out;
    const view = new DataView(direntBuf.buffer, direntBuf.byteOffset, n);
    // struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
    for (let off = 0; off < n;) {
      const reclen = view.getUint16(off + 16, true);
      let end = off + 19;
      while (end < off + reclen && direntBuf[end] !== 0) end++;
      const first = direntBuf[off + 19];
      const dot = first === 0x2e &&
        (end === off + 20 || (end === off + 21 && direntBuf[off + 20] === 0x2e));
      if (!dot) {
        out.push({
          name: decodeName(direntBuf.subarray(off + 19, end)),
          type: DT_NAMES[direntBuf[off + 18]!] ?? "unknown",
          ino: view.getBigUint64(off, true),
        });
      }
      off += reclen;
    }
  }
}

/**
 * Lists the directory `path` (relative to `dirfd`) with {@linkcode readDirFd}: opens it without
 * following a final symlink, lists it and closes it.
 *
 * @example
 * ```ts
 * import { AT_FDCWD, readDirAt } from "@strata/strata/sys";
 * for (const entry of readDirAt(AT_FDCWD, "/etc")) console.log(entry.name, entry.type);
 * ```
 *
 * @param dirfd The directory the path is relative to, or `AT_FDCWD`.
 * @param path The directory to list.
 * @returns The entries, in directory order.
 */
export function readDirAt(dirfd: number, path: string): DirEntry[] {
  const fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  try {
    return readDirFd(fd);
  } finally {
    close(fd);
  }
}

// --- device numbers -----------------------------------------------------------------------------

/**
 * Combines a major and minor device number the way glibc's `makedev` does.
 *
 * @example
 * ```ts
 * import { makedev } from "@strata/strata/sys";
 * console.log(makedev(1, 3)); // 259, /dev/null
 * ```
 *
 * @param major The major number (Linux uses 12 bits).
 * @param minor The minor number (Linux uses 20 bits).
 * @returns The device number, as `Deno.FileInfo.rdev` reports it.
 */
export function makedev(major: number, minor: number): number {
  if (!Number.isInteger(major) || !Number.isInteger(minor) || major < 0 || minor < 0) {
    throw new InvalidArgument(`Cannot make a device number of ${major}:${minor}`);
  }
  // ((major & 0xfff) << 8) | ((major & ~0xfff) << 32) | (minor & 0xff) | ((minor & ~0xff) << 12)
  const dev = (major & 0xfff) * 0x100 + Math.floor(major / 0x1000) * 2 ** 44 + (minor & 0xff) +
    Math.floor(minor / 0x100) * 0x100000;
  if (!Number.isSafeInteger(dev) || major > 0xffffffff || minor > 0xffffffff) {
    throw new InvalidArgument(`Cannot make a device number of ${major}:${minor}: too large`);
  }
  return dev;
}

/**
 * Extracts the major number of a device number (glibc's encoding).
 *
 * @example
 * ```ts
 * import { major } from "@strata/strata/sys";
 * console.log(major(259)); // 1
 * ```
 *
 * @param dev The device number.
 * @returns The major number.
 */
export function major(dev: number): number {
  const lo = dev >>> 0;
  const hi = Math.floor(dev / 4294967296) >>> 0;
  return (((lo >>> 8) & 0xfff) | (hi & 0xfffff000)) >>> 0;
}

/**
 * Extracts the minor number of a device number (glibc's encoding).
 *
 * @example
 * ```ts
 * import { minor } from "@strata/strata/sys";
 * console.log(minor(259)); // 3
 * ```
 *
 * @param dev The device number.
 * @returns The minor number.
 */
export function minor(dev: number): number {
  const lo = dev >>> 0;
  const hi = Math.floor(dev / 4294967296) >>> 0;
  return ((lo & 0xff) | ((lo >>> 12) & 0xfff00) | ((hi & 0xfff) << 20)) >>> 0;
}
