// The libc binding: the only file in Strata that deals with dlopen, pointers and errno.
//
// libc is opened lazily on the first call so that importing sys/ never needs --allow-ffi.
// Every symbol but `syncfs_nonblocking` is synchronous: errno is thread-local, and it is read
// right after a call fails.

import { InvalidArgument, NotImplemented } from "../errors.ts";
import { encodeName, encodeNameInto } from "./_names.ts";

// `syscall` is variadic in C; it is declared here with fixed signatures, which is sound on
// x86_64 and aarch64 (the variadic and fixed calling conventions agree for integer arguments).
const SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  syscall_openat2: {
    name: "syscall",
    parameters: ["i64", "i64", "buffer", "buffer", "usize"],
    result: "i64",
  },
  syscall_mknodat: {
    name: "syscall",
    parameters: ["i64", "i64", "buffer", "i64", "i64"],
    result: "i64",
  },
  syscall_getdents64: {
    name: "syscall",
    parameters: ["i64", "i64", "buffer", "usize"],
    result: "i64",
  },
  mkdirat: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  mknodat: { parameters: ["i32", "buffer", "u32", "u64"], result: "i32", optional: true },
  symlinkat: { parameters: ["buffer", "i32", "buffer"], result: "i32" },
  linkat: { parameters: ["i32", "buffer", "i32", "buffer", "i32"], result: "i32" },
  unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  renameat2: { parameters: ["i32", "buffer", "i32", "buffer", "u32"], result: "i32" },
  readlinkat: { parameters: ["i32", "buffer", "buffer", "usize"], result: "isize" },
  fchownat: { parameters: ["i32", "buffer", "u32", "u32", "i32"], result: "i32" },
  fchown: { parameters: ["i32", "u32", "u32"], result: "i32" },
  fchmodat: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  utimensat: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  futimens: { parameters: ["i32", "buffer"], result: "i32" },
  lsetxattr: { parameters: ["buffer", "buffer", "buffer", "usize", "i32"], result: "i32" },
  fsetxattr: { parameters: ["i32", "buffer", "buffer", "usize", "i32"], result: "i32" },
  lgetxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "isize" },
  fgetxattr: { parameters: ["i32", "buffer", "buffer", "usize"], result: "isize" },
  llistxattr: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  flistxattr: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  lremovexattr: { parameters: ["buffer", "buffer"], result: "i32" },
  fremovexattr: { parameters: ["i32", "buffer"], result: "i32" },
  syncfs: { parameters: ["i32"], result: "i32" },
  // The same call on a thread of Deno's blocking pool: the caller's thread goes on meanwhile.
  // errno is thread-local and cannot be read for it; see `syncfsAsync` in mod.ts.
  syncfs_nonblocking: { name: "syncfs", parameters: ["i32"], result: "i32", nonblocking: true },
  fsync: { parameters: ["i32"], result: "i32" },
  fdatasync: { parameters: ["i32"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "usize", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  pread64: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  pwrite64: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  lseek64: { parameters: ["i32", "i64", "i32"], result: "i64" },
  ftruncate64: { parameters: ["i32", "i64"], result: "i32" },
  copy_file_range: {
    parameters: ["i32", "buffer", "i32", "buffer", "usize", "u32"],
    result: "isize",
  },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The libc symbols Strata uses. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let symbols: Libc | undefined;
let loadError: NotImplemented | undefined;
/**
 * The calling thread's errno as a one-element view over libc's thread-local variable (zero until
 * libc is loaded). Read it as `errnoCell[0]` right after a call returned -1: an element read runs
 * no function and allocates nothing, so nothing can run in between and overwrite errno, which a
 * function call cannot promise.
 */
export let errnoCell: Int32Array = new Int32Array(1);

/** Syscall numbers that glibc has no wrapper for (the same on x86_64 and aarch64). */
export const SYS_OPENAT2 = 437n;
/** The `mknodat` syscall number, for a glibc older than 2.33 without a `mknodat` symbol. */
export const SYS_MKNODAT: bigint = Deno.build.arch === "aarch64" ? 33n : 259n;

/** The `getdents64` syscall number (glibc before 2.30 has no wrapper). */
export const SYS_GETDENTS64: bigint = Deno.build.arch === "aarch64" ? 61n : 217n;

/** Returns the libc symbols, opening libc on the first call. */
export function libc(): Libc {
  return symbols ?? load();
}

function load(): Libc {
  if (loadError !== undefined) throw loadError;
  if (Deno.build.os !== "linux") {
    loadError = new NotImplemented(
      `Cannot call libc: Strata's file-system calls need Linux, this is "${Deno.build.os}"`,
    );
    throw loadError;
  }
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen("libc.so.6", SYMBOLS);
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
      loadError = new NotImplemented(
        "Cannot call libc: Strata needs --allow-ffi (run with -A or --allow-ffi)",
      );
    } else {
      const why = err instanceof Error ? err.message : String(err);
      loadError = new NotImplemented(`Cannot call libc: cannot load "libc.so.6": ${why}`);
    }
    throw loadError;
  }
  // errno lives at a fixed address per thread; JS of this isolate always runs on one thread.
  const ptr = lib.symbols.__errno_location();
  if (ptr === null) throw new NotImplemented("Cannot call libc: __errno_location returned NULL");
  errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(ptr, 4));
  symbols = lib.symbols;
  return symbols;
}

/** Returns libc's description of an errno number, or "" when libc is not loaded. */
export function strerrorText(n: number): string {
  if (symbols === undefined) return "";
  const ptr = symbols.strerror(n);
  return ptr === null ? "" : Deno.UnsafePointerView.getCString(ptr);
}

// Scratch buffers for NUL-terminated strings, one per argument position, so that a call with
// two paths (renameat2, linkat, lsetxattr) never encodes both into the same buffer. Calls are
// synchronous, so a buffer is never shared by two calls in flight.
const scratch: Uint8Array[] = [new Uint8Array(4096), new Uint8Array(4096), new Uint8Array(256)];

/**
 * Encodes `s` as a NUL-terminated name (UTF-8, escaped bytes restored: see `_names.ts`) into
 * scratch buffer `slot` and returns it. The result is only valid until the next call with the
 * same slot.
 */
export function cstr(s: string, slot: 0 | 1 | 2, call: string): Uint8Array {
  if (s.includes("\0")) {
    throw new InvalidArgument(`Cannot call ${call} on ${JSON.stringify(s)}: it contains a NUL`);
  }
  let buf = scratch[slot]!;
  if (s.length * 3 >= buf.length) {
    // Worst case 3 bytes per UTF-16 unit; grow once, keep the larger buffer for later calls.
    buf = new Uint8Array(s.length * 3 + 1);
    scratch[slot] = buf;
  }
  const written = encodeNameInto(s, buf);
  buf[written] = 0;
  return buf;
}

/** Encodes `s` as a fresh NUL-terminated name (for rare calls), or null. */
export function cstrOnce(s: string | null | undefined, call: string): Uint8Array | null {
  if (s === null || s === undefined) return null;
  if (s.includes("\0")) {
    throw new InvalidArgument(`Cannot call ${call} on ${JSON.stringify(s)}: it contains a NUL`);
  }
  const bytes = encodeName(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}
