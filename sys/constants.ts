/**
 * Linux constants for the calls in `sys/`: `*at` flags, open flags, `openat2` resolve flags, file
 * types, rename flags, mount flags, xattr flags, seek whences and `flock` operations.
 *
 * The values are the Linux ones for x86_64 and aarch64; the few open flags whose values differ
 * between the two (`O_DIRECTORY`, `O_NOFOLLOW`, `O_DIRECT`) are picked from `Deno.build.arch`.
 *
 * @module
 */

const ARM64: boolean = Deno.build.arch === "aarch64";

/** `dirfd` value meaning "relative to the current working directory". */
export const AT_FDCWD: number = -100;
/** Do not follow a symlink in the last path component. */
export const AT_SYMLINK_NOFOLLOW = 0x100;
/** `unlinkat`: remove a directory instead of a file. */
export const AT_REMOVEDIR = 0x200;
/** `linkat`: follow a symlink in the old path. */
export const AT_SYMLINK_FOLLOW = 0x400;
/** Do not trigger an automount on the last path component. */
export const AT_NO_AUTOMOUNT = 0x800;
/** Operate on `dirfd` itself when the path is empty. */
export const AT_EMPTY_PATH = 0x1000;

/** Open for reading only. */
export const O_RDONLY = 0;
/** Open for writing only. */
export const O_WRONLY = 1;
/** Open for reading and writing. */
export const O_RDWR = 2;
/** Mask of the access mode bits. */
export const O_ACCMODE = 3;
/** Create the file when it does not exist. */
export const O_CREAT = 0o100;
/** With `O_CREAT`: fail with `EEXIST` when the file exists. */
export const O_EXCL = 0o200;
/** Do not make a terminal the controlling terminal. */
export const O_NOCTTY = 0o400;
/** Truncate a regular file to length 0. */
export const O_TRUNC = 0o1000;
/** Append every write to the end of the file. */
export const O_APPEND = 0o2000;
/** Nonblocking mode. */
export const O_NONBLOCK = 0o4000;
/** Synchronous data writes. */
export const O_DSYNC = 0o10000;
/** Bypass the page cache. */
export const O_DIRECT: number = ARM64 ? 0o200000 : 0o40000;
/** Fail unless the path is a directory. */
export const O_DIRECTORY: number = ARM64 ? 0o40000 : 0o200000;
/** Fail with `ELOOP` when the last path component is a symlink. */
export const O_NOFOLLOW: number = ARM64 ? 0o100000 : 0o400000;
/** Do not update the access time. */
export const O_NOATIME = 0o1000000;
/** Close the descriptor on `execve`. */
export const O_CLOEXEC = 0o2000000;
/** Synchronous data and metadata writes. */
export const O_SYNC = 0o4010000;
/** Obtain a descriptor usable only for path operations (no reads or writes). */
export const O_PATH = 0o10000000;
/** Create an unnamed temporary file in the given directory. */
export const O_TMPFILE: number = 0o20000000 | O_DIRECTORY;

/** `openat2`: do not cross mount points. */
export const RESOLVE_NO_XDEV = 0x01;
/** `openat2`: do not follow `/proc/<pid>/fd`-style magic links. */
export const RESOLVE_NO_MAGICLINKS = 0x02;
/** `openat2`: do not follow any symlink. */
export const RESOLVE_NO_SYMLINKS = 0x04;
/** `openat2`: fail with `EXDEV` when resolution would leave `dirfd`. */
export const RESOLVE_BENEATH = 0x08;
/** `openat2`: treat `dirfd` as the root directory (like `chroot`) while resolving. */
export const RESOLVE_IN_ROOT = 0x10;
/** `openat2`: resolve only from the dentry cache, else fail with `EAGAIN`. */
export const RESOLVE_CACHED = 0x20;

/** Mask of the file type bits of a mode. */
export const S_IFMT = 0o170000;
/** Socket. */
export const S_IFSOCK = 0o140000;
/** Symbolic link. */
export const S_IFLNK = 0o120000;
/** Regular file. */
export const S_IFREG = 0o100000;
/** Block device. */
export const S_IFBLK = 0o060000;
/** Directory. */
export const S_IFDIR = 0o040000;
/** Character device. */
export const S_IFCHR = 0o020000;
/** FIFO (named pipe). */
export const S_IFIFO = 0o010000;
/** Set-user-ID bit. */
export const S_ISUID = 0o4000;
/** Set-group-ID bit. */
export const S_ISGID = 0o2000;
/** Sticky bit. */
export const S_ISVTX = 0o1000;

/** `renameat2`: fail with `EEXIST` instead of replacing the destination. */
export const RENAME_NOREPLACE = 1;
/** `renameat2`: atomically swap the two paths. */
export const RENAME_EXCHANGE = 2;
/** `renameat2`: leave an overlay whiteout (a 0:0 character device) at the old path. */
export const RENAME_WHITEOUT = 4;

/** Mount read-only. */
export const MS_RDONLY = 1;
/** Ignore set-user-ID and set-group-ID bits. */
export const MS_NOSUID = 2;
/** Disallow access to device nodes. */
export const MS_NODEV = 4;
/** Disallow program execution. */
export const MS_NOEXEC = 8;
/** Synchronous writes. */
export const MS_SYNCHRONOUS = 16;
/** Change the flags of an existing mount. */
export const MS_REMOUNT = 32;
/** Allow mandatory locks. */
export const MS_MANDLOCK = 64;
/** Synchronous directory changes. */
export const MS_DIRSYNC = 128;
/** Do not update access times. */
export const MS_NOATIME = 1024;
/** Do not update directory access times. */
export const MS_NODIRATIME = 2048;
/** Make a bind mount. */
export const MS_BIND = 4096;
/** Move a mount. */
export const MS_MOVE = 8192;
/** Apply recursively (with `MS_BIND` or a propagation flag). */
export const MS_REC = 16384;
/** Suppress some kernel warnings. */
export const MS_SILENT = 32768;
/** Propagation: make the mount unbindable. */
export const MS_UNBINDABLE = 1 << 17;
/** Propagation: make the mount private. */
export const MS_PRIVATE = 1 << 18;
/** Propagation: make the mount a slave. */
export const MS_SLAVE = 1 << 19;
/** Propagation: make the mount shared. */
export const MS_SHARED = 1 << 20;
/** Update access times relative to modification times. */
export const MS_RELATIME = 1 << 21;
/** Always update access times. */
export const MS_STRICTATIME = 1 << 24;
/** Keep timestamp updates in memory only. */
export const MS_LAZYTIME = 1 << 25;

/** `umount2`: force the unmount. */
export const MNT_FORCE = 1;
/** `umount2`: lazy unmount, detach now and clean up when no longer busy. */
export const MNT_DETACH = 2;
/** `umount2`: mark the mount as expired. */
export const MNT_EXPIRE = 4;
/** `umount2`: do not follow a symlink at the target. */
export const UMOUNT_NOFOLLOW = 8;

/** `setxattr`: fail with `EEXIST` when the attribute exists. */
export const XATTR_CREATE = 1;
/** `setxattr`: fail with `ENODATA` when the attribute does not exist. */
export const XATTR_REPLACE = 2;

/** `lseek`: from the start of the file. */
export const SEEK_SET = 0;
/** `lseek`: from the current offset. */
export const SEEK_CUR = 1;
/** `lseek`: from the end of the file. */
export const SEEK_END = 2;
/** `lseek`: to the next data at or after the offset (`ENXIO` past the last data). */
export const SEEK_DATA = 3;
/** `lseek`: to the next hole at or after the offset. */
export const SEEK_HOLE = 4;

/** `flock`: shared lock. */
export const LOCK_SH = 1;
/** `flock`: exclusive lock. */
export const LOCK_EX = 2;
/** `flock`: fail with `EWOULDBLOCK` instead of waiting. */
export const LOCK_NB = 4;
/** `flock`: unlock. */
export const LOCK_UN = 8;

/** `utimensat` nsec value: set this time to the current time. */
export const UTIME_NOW: number = (1 << 30) - 1;
/** `utimensat` nsec value: leave this time unchanged. */
export const UTIME_OMIT: number = (1 << 30) - 2;

/** `statx` mask: the basic `stat` fields. */
export const STATX_BASIC_STATS = 0x7ff;
/** `statx` mask: the birth time. */
export const STATX_BTIME = 0x800;
