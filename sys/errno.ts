/**
 * Linux errno names and {@linkcode SysError}, the error every call in `sys/` throws when libc
 * reports a failure.
 *
 * @module
 */

import { strerrorText } from "./_libc.ts";

// Linux errno names for x86_64 and aarch64 (asm-generic), indexed by number; "" marks a gap.
const NAMES: readonly string[] = (
  " EPERM ENOENT ESRCH EINTR EIO ENXIO E2BIG ENOEXEC EBADF ECHILD EAGAIN ENOMEM EACCES EFAULT " +
  "ENOTBLK EBUSY EEXIST EXDEV ENODEV ENOTDIR EISDIR EINVAL ENFILE EMFILE ENOTTY ETXTBSY EFBIG " +
  "ENOSPC ESPIPE EROFS EMLINK EPIPE EDOM ERANGE EDEADLK ENAMETOOLONG ENOLCK ENOSYS ENOTEMPTY " +
  "ELOOP  ENOMSG EIDRM ECHRNG EL2NSYNC EL3HLT EL3RST ELNRNG EUNATCH ENOCSI EL2HLT EBADE EBADR " +
  "EXFULL ENOANO EBADRQC EBADSLT  EBFONT ENOSTR ENODATA ETIME ENOSR ENONET ENOPKG EREMOTE " +
  "ENOLINK EADV ESRMNT ECOMM EPROTO EMULTIHOP EDOTDOT EBADMSG EOVERFLOW ENOTUNIQ EBADFD EREMCHG " +
  "ELIBACC ELIBBAD ELIBSCN ELIBMAX ELIBEXEC EILSEQ ERESTART ESTRPIPE EUSERS ENOTSOCK " +
  "EDESTADDRREQ EMSGSIZE EPROTOTYPE ENOPROTOOPT EPROTONOSUPPORT ESOCKTNOSUPPORT EOPNOTSUPP " +
  "EPFNOSUPPORT EAFNOSUPPORT EADDRINUSE EADDRNOTAVAIL ENETDOWN ENETUNREACH ENETRESET " +
  "ECONNABORTED ECONNRESET ENOBUFS EISCONN ENOTCONN ESHUTDOWN ETOOMANYREFS ETIMEDOUT " +
  "ECONNREFUSED EHOSTDOWN EHOSTUNREACH EALREADY EINPROGRESS ESTALE EUCLEAN ENOTNAM ENAVAIL " +
  "EISNAM EREMOTEIO EDQUOT ENOMEDIUM EMEDIUMTYPE ECANCELED ENOKEY EKEYEXPIRED EKEYREVOKED " +
  "EKEYREJECTED EOWNERDEAD ENOTRECOVERABLE ERFKILL EHWPOISON"
).split(" ");

// Names that are aliases of another errno on Linux.
const ALIASES: Readonly<Record<string, string>> = {
  EWOULDBLOCK: "EAGAIN",
  EDEADLOCK: "EDEADLK",
  ENOTSUP: "EOPNOTSUPP",
};

const NUMBERS: ReadonlyMap<string, number> = new Map([
  ...NAMES.flatMap((name, n): [string, number][] => name === "" ? [] : [[name, n]]),
  ...Object.entries(ALIASES).map(([alias, name]): [string, number] => [alias, NAMES.indexOf(name)]),
]);

/**
 * Returns the symbolic name of a Linux errno number.
 *
 * @example
 * ```ts
 * import { errnoName } from "@strata/strata/sys";
 * console.log(errnoName(2)); // "ENOENT"
 * ```
 *
 * @param errno The errno number.
 * @returns The name, e.g. `"ENOENT"`, or `"ERRNO_<n>"` for a number Linux does not define.
 */
export function errnoName(errno: number): string {
  const name = NAMES[errno];
  return name === undefined || name === "" ? `ERRNO_${errno}` : name;
}

/**
 * Returns the Linux errno number of a symbolic name (aliases such as `EWOULDBLOCK` included).
 *
 * @example
 * ```ts
 * import { errnoNumber } from "@strata/strata/sys";
 * console.log(errnoNumber("EEXIST")); // 17
 * ```
 *
 * @param name The name, e.g. `"EEXIST"`.
 * @returns The number, or `undefined` for an unknown name.
 */
export function errnoNumber(name: string): number | undefined {
  return NUMBERS.get(name);
}

/** Where a failed call pointed: the path(s) or descriptor it was given. */
export interface SysErrorOptions {
  /** The (first) path the call was given. */
  path?: string;
  /** The second path of a two-path call such as `renameat2` or `linkat`. */
  dest?: string;
  /** The file descriptor the call was given when it took no path. */
  fd?: number;
}

/**
 * A failed libc call: carries the errno, its name and the call.
 *
 * The message reads `EACCES: mkdirat "a/b": Permission denied`.
 *
 * @example Branch on the errno name
 * ```ts
 * import { SysError } from "@strata/strata/sys";
 *
 * const err = new SysError(2, "openat", { path: "missing" });
 * console.log(err.code, err.message);
 * ```
 */
export class SysError extends Error {
  /** Always `"SysError"`. */
  override readonly name: string = "SysError";
  /** The errno number. */
  readonly errno: number;
  /** The errno name, e.g. `"EACCES"`. */
  readonly code: string;
  /** The libc call that failed, e.g. `"mkdirat"`. */
  readonly call: string;
  /** The (first) path the call was given. */
  readonly path?: string;
  /** The second path of a two-path call. */
  readonly dest?: string;
  /** The file descriptor of a call that took no path. */
  readonly fd?: number;

  /**
   * Creates the error of a failed call.
   *
   * @param errno The errno number read right after the call.
   * @param call The libc call, e.g. `"mkdirat"`.
   * @param options The path(s) or descriptor the call was given.
   */
  constructor(errno: number, call: string, options: SysErrorOptions = {}) {
    const code = errnoName(errno);
    let where = call;
    if (options.path !== undefined) where += ` ${JSON.stringify(options.path)}`;
    if (options.dest !== undefined) where += ` ${JSON.stringify(options.dest)}`;
    if (options.path === undefined && options.fd !== undefined) where += ` fd ${options.fd}`;
    const text = strerrorText(errno);
    super(`${code}: ${where}${text === "" ? "" : `: ${text}`}`);
    this.errno = errno;
    this.code = code;
    this.call = call;
    if (options.path !== undefined) this.path = options.path;
    if (options.dest !== undefined) this.dest = options.dest;
    if (options.fd !== undefined) this.fd = options.fd;
  }
}

/**
 * Reports whether `err` is a {@linkcode SysError} with one of the given errno names.
 *
 * Linux aliases match each other: `EWOULDBLOCK` matches `EAGAIN`, `ENOTSUP` matches `EOPNOTSUPP`.
 *
 * @example
 * ```ts
 * import { isErrno, SysError } from "@strata/strata/sys";
 *
 * const err = new SysError(11, "flock", { fd: 3 });
 * console.log(isErrno(err, "EWOULDBLOCK")); // true
 * ```
 *
 * @param err The value to test.
 * @param codes The errno names to accept, e.g. `"ENOENT"`, `"ENOTDIR"`.
 * @returns `true` when `err` is a `SysError` whose errno is one of `codes`.
 */
export function isErrno(err: unknown, ...codes: string[]): err is SysError {
  if (!(err instanceof SysError)) return false;
  for (const code of codes) {
    if (code === err.code || NUMBERS.get(code) === err.errno) return true;
  }
  return false;
}
