// Private helpers of mount/: the option-to-flag table, the page-size limit of mount(2) data and
// the compaction of long overlay `lowerdir=` options.

import { isAbsolute, join, normalize } from "node:path";
import * as sys from "../sys/mod.ts";
import { InvalidArgument } from "../errors.ts";

/** How one fstab-style option changes the `MS_*` flags: set or clear `flag`. */
export interface FlagChange {
  /** Whether the option clears the flag instead of setting it. */
  clear: boolean;
  /** The flag bits. */
  flag: number;
}

/** The options that map to mount flags (containerd's table for Linux). */
export const FLAG_OPTIONS: ReadonlyMap<string, FlagChange> = new Map([
  ["async", { clear: true, flag: sys.MS_SYNCHRONOUS }],
  ["atime", { clear: true, flag: sys.MS_NOATIME }],
  ["bind", { clear: false, flag: sys.MS_BIND }],
  ["defaults", { clear: false, flag: 0 }],
  ["dev", { clear: true, flag: sys.MS_NODEV }],
  ["diratime", { clear: true, flag: sys.MS_NODIRATIME }],
  ["dirsync", { clear: false, flag: sys.MS_DIRSYNC }],
  ["exec", { clear: true, flag: sys.MS_NOEXEC }],
  ["mand", { clear: false, flag: sys.MS_MANDLOCK }],
  ["noatime", { clear: false, flag: sys.MS_NOATIME }],
  ["nodev", { clear: false, flag: sys.MS_NODEV }],
  ["nodiratime", { clear: false, flag: sys.MS_NODIRATIME }],
  ["noexec", { clear: false, flag: sys.MS_NOEXEC }],
  ["nomand", { clear: true, flag: sys.MS_MANDLOCK }],
  ["norelatime", { clear: true, flag: sys.MS_RELATIME }],
  ["nostrictatime", { clear: true, flag: sys.MS_STRICTATIME }],
  ["nosuid", { clear: false, flag: sys.MS_NOSUID }],
  ["rbind", { clear: false, flag: sys.MS_BIND | sys.MS_REC }],
  ["relatime", { clear: false, flag: sys.MS_RELATIME }],
  ["remount", { clear: false, flag: sys.MS_REMOUNT }],
  ["ro", { clear: false, flag: sys.MS_RDONLY }],
  ["rw", { clear: true, flag: sys.MS_RDONLY }],
  ["strictatime", { clear: false, flag: sys.MS_STRICTATIME }],
  ["suid", { clear: true, flag: sys.MS_NOSUID }],
  ["sync", { clear: false, flag: sys.MS_SYNCHRONOUS }],
]);

/** The propagation options and their flags (applied with a separate mount(2) call). */
export const PROPAGATION_OPTIONS: ReadonlyMap<string, number> = new Map([
  ["private", sys.MS_PRIVATE],
  ["rprivate", sys.MS_PRIVATE | sys.MS_REC],
  ["shared", sys.MS_SHARED],
  ["rshared", sys.MS_SHARED | sys.MS_REC],
  ["slave", sys.MS_SLAVE],
  ["rslave", sys.MS_SLAVE | sys.MS_REC],
  ["unbindable", sys.MS_UNBINDABLE],
  ["runbindable", sys.MS_UNBINDABLE | sys.MS_REC],
]);

const AT_PAGESZ = 6n;
let cachedPageSize: number | undefined;

/**
 * The kernel page size, the limit of the mount(2) data argument. Read from the auxiliary vector
 * (`AT_PAGESZ` in `/proc/self/auxv`, 64-bit entries); 4096 when that cannot be read.
 */
export function pageSize(): number {
  if (cachedPageSize !== undefined) return cachedPageSize;
  cachedPageSize = 4096;
  try {
    const bytes = Deno.readFileSync("/proc/self/auxv");
    const words = new BigUint64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 3);
    for (let i = 0; i + 1 < words.length; i += 2) {
      if (words[i] === AT_PAGESZ) {
        cachedPageSize = Number(words[i + 1]);
        break;
      }
    }
  } catch {
    // Not Linux or no /proc: keep the common value.
  }
  return cachedPageSize;
}

/** Byte length of a string in UTF-8 (what mount(2) receives). */
export function byteLength(text: string): number {
  return new TextEncoder().encode(text).length;
}

/** The lowerdirs of overlay options split into their common parent directory and the rest. */
export interface CompactedOverlay {
  /** The options other than `lowerdir=`, in order. */
  rest: string[];
  /** The lowerdirs' longest common parent directory (without a trailing `/`). */
  dir: string;
  /** Each lowerdir relative to `dir`, in order. */
  relative: string[];
}

/**
 * Splits the `lowerdir=` option of overlay options into the lowerdirs' longest common parent
 * directory and paths relative to it (containerd's compaction for the one-page mount(2) limit).
 *
 * @returns The parts, or `undefined` when nothing can be shortened.
 */
export function compactLowerdir(options: readonly string[]): CompactedOverlay | undefined {
  const index = options.findIndex((option) => option.startsWith("lowerdir="));
  if (index < 0) return undefined;
  const dirs = options[index]!.slice("lowerdir=".length).split(":");
  if (dirs.length <= 1) return undefined;
  let prefix = dirs[0]!;
  for (const dir of dirs.slice(1)) {
    let n = 0;
    while (n < prefix.length && n < dir.length && prefix[n] === dir[n]) n++;
    prefix = prefix.slice(0, n);
  }
  // Keep whole path components: "/x/snapshots/1" (from ids 12 and 13) must become "/x/snapshots".
  const slash = prefix.lastIndexOf("/");
  if (slash <= 0) return undefined;
  const dir = prefix.slice(0, slash);
  const base = dir + "/";
  if (!dirs.every((lower) => lower.length > base.length && lower.startsWith(base))) {
    return undefined;
  }
  return {
    rest: [...options.slice(0, index), ...options.slice(index + 1)],
    dir,
    relative: dirs.map((lower) => lower.slice(base.length)),
  };
}

/** Overlay options from compacted parts, each lowerdir prefixed; `lowerdir=` goes last. */
export function lowerdirOptions(compacted: CompactedOverlay, prefix: string): string[] {
  return [
    ...compacted.rest,
    `lowerdir=${compacted.relative.map((path) => prefix + path).join(":")}`,
  ];
}

/**
 * Joins `path` to `root` the way continuity's `RootPath` does: symlinks met on the way are
 * resolved inside `root` (absolute targets restart at `root`) and `..` never leaves `root`.
 *
 * @throws {InvalidArgument} After 255 symlinks (a loop).
 */
export function rootPath(root: string, path: string | undefined): string {
  if (path === undefined || path === "" || normalize("/" + path) === "/") return root;
  const resolved: string[] = [];
  const pending = splitPath(path);
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === "..") {
      resolved.pop();
      continue;
    }
    const candidate = join(root, ...resolved, part);
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(candidate);
    } catch {
      // Missing (or unreadable) components are joined as they are.
      resolved.push(part);
      continue;
    }
    if (!info.isSymlink) {
      resolved.push(part);
      continue;
    }
    if (++links > 255) {
      throw new InvalidArgument(
        `Cannot resolve "${path}" inside "${root}": too many levels of symbolic links`,
      );
    }
    const target = Deno.readLinkSync(candidate);
    if (isAbsolute(target)) resolved.length = 0;
    pending.unshift(...splitPath(target));
  }
  return join(root, ...resolved);
}

function splitPath(path: string): string[] {
  return path.split("/").filter((part) => part !== "" && part !== ".");
}
