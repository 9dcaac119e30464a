/**
 * Snapshots of a directory tree's metadata and content, and a readable diff of two snapshots,
 * for comparing what Strata unpacks with what umoci or containerd unpack.
 *
 * @example Compare two unpacked root filesystems
 * ```ts
 * import { diffTrees, snapshotTree } from "./_tree.ts";
 *
 * const ours = await snapshotTree("/tmp/ours/rootfs");
 * const theirs = await snapshotTree("/tmp/umoci/bundle/rootfs");
 * console.log(diffTrees(ours, theirs, { ignore: ["mtime"] }));
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { NotFound } from "../errors.ts";
import * as sys from "../sys/mod.ts";
import { decodeName } from "../sys/_names.ts";
import { runOk } from "./_peers.ts";

/** The kind of a tree entry. */
export type EntryType = "file" | "dir" | "symlink" | "char" | "block" | "fifo" | "socket";

/** Metadata (and content hash) of one path in a tree. */
export interface TreeEntry {
  /** Kind of the entry (symlinks are not followed). */
  type: EntryType;
  /** Permission bits including setuid, setgid and sticky (`mode & 0o7777`). */
  mode: number;
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
  /** Size in bytes as `lstat` reports it (not compared for directories). */
  size: number;
  /** Modification time in milliseconds since the epoch (Deno gives no nanoseconds). */
  mtime: number;
  /** Target of a symlink. */
  linkTarget?: string;
  /** Device number of a char or block device. */
  rdev?: number;
  /** Hex sha256 of a regular file's content. */
  sha256?: string;
  /** For a file hardlinked to other paths of the tree: the lexicographically first of them. */
  hardlinkGroup?: string;
  /** Extended attributes, name to hex value (no `0x`), when read and present. */
  xattrs?: Record<string, string>;
}

/** Options for {@linkcode snapshotTree}. */
export interface SnapshotOptions {
  /** Read extended attributes with `getfattr` (default `true`; needs the `attr` package). */
  xattrs?: boolean;
}

/**
 * Records every path under `dir` (the root itself as `"."`), without following symlinks.
 *
 * Keys are relative paths such as `etc/passwd`, in sorted order.
 *
 * @param dir The directory to walk.
 * @param options Whether to read extended attributes.
 * @returns The entries by relative path.
 * @throws {NotFound} When xattrs are wanted and `getfattr` is not installed.
 * @throws {CommandError} When `getfattr` fails.
 *
 * @example
 * ```ts
 * import { snapshotTree } from "./_tree.ts";
 * const tree = await snapshotTree("/tmp/rootfs", { xattrs: false });
 * console.log(tree.get("etc/hostname")?.sha256);
 * ```
 */
export async function snapshotTree(
  dir: string,
  options: SnapshotOptions = {},
): Promise<Map<string, TreeEntry>> {
  const entries = new Map<string, TreeEntry>();
  const inodes = new Map<string, string[]>();
  await walk(dir, ".", entries, inodes);
  for (const paths of inodes.values()) {
    if (paths.length < 2) continue;
    const first = paths.reduce((a, b) => (b < a ? b : a));
    for (const path of paths) {
      const entry = entries.get(path);
      if (entry !== undefined) entry.hardlinkGroup = first;
    }
  }
  if (options.xattrs !== false) {
    for (const [path, xattrs] of await readXattrs(dir)) {
      const entry = entries.get(path);
      if (entry !== undefined) entry.xattrs = xattrs;
    }
  }
  const sorted = [...entries.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return new Map(sorted.map((path) => [path, entries.get(path) as TreeEntry]));
}

async function walk(
  root: string,
  rel: string,
  entries: Map<string, TreeEntry>,
  inodes: Map<string, string[]>,
): Promise<void> {
  // Through Strata's sys calls, not Deno's file APIs: names that are not UTF-8 (U+DC80-U+DCFF,
  // see sys/_names.ts) must open the same files again.
  const abs = rel === "." ? root : join(root, rel);
  const st = sys.lstat(abs);
  const type = entryType(st.mode);
  const entry: TreeEntry = {
    type,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    mtime: st.mtime.sec * 1000 + Math.floor(st.mtime.nsec / 1e6),
  };
  entries.set(rel, entry);
  if (type === "symlink") {
    entry.linkTarget = sys.readlinkat(sys.AT_FDCWD, abs);
  } else if (type === "char" || type === "block") {
    entry.rdev = st.rdev;
  } else if (type === "file") {
    entry.sha256 = hashFile(abs);
    if (st.nlink > 1) {
      const key = `${st.dev}:${st.ino}`;
      const paths = inodes.get(key);
      if (paths === undefined) inodes.set(key, [rel]);
      else paths.push(rel);
    }
  } else if (type === "dir") {
    const names = sys.readDirAt(sys.AT_FDCWD, abs).map((child) => child.name);
    for (const name of names.sort()) {
      await walk(root, rel === "." ? name : `${rel}/${name}`, entries, inodes);
    }
  }
}

function entryType(mode: number): EntryType {
  switch (mode & sys.S_IFMT) {
    case sys.S_IFLNK:
      return "symlink";
    case sys.S_IFDIR:
      return "dir";
    case sys.S_IFREG:
      return "file";
    case sys.S_IFCHR:
      return "char";
    case sys.S_IFBLK:
      return "block";
    case sys.S_IFIFO:
      return "fifo";
    default:
      return "socket";
  }
}

const hashBuf = new Uint8Array(1 << 20);

function hashFile(path: string): string {
  const hash = createHash("sha256");
  const fd = sys.open(path, sys.O_RDONLY | sys.O_NOFOLLOW | sys.O_CLOEXEC);
  try {
    for (;;) {
      const n = sys.read(fd, hashBuf);
      if (n === 0) break;
      hash.update(hashBuf.subarray(0, n));
    }
  } finally {
    sys.close(fd);
  }
  return hash.digest("hex");
}

/** Reads all xattrs under `dir` with one `getfattr` run; keys are relative paths. */
async function readXattrs(dir: string): Promise<Map<string, Record<string, string>>> {
  const cmd = ["getfattr", "-R", "-P", "-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", dir];
  let stdout: string;
  try {
    // LC_ALL=C makes getfattr escape every non-ASCII byte of a name as \ooo.
    stdout = (await runOk(cmd, { env: { LC_ALL: "C" } })).stdout;
  } catch (err) {
    if (err instanceof NotFound) {
      throw new NotFound(
        `Cannot read xattrs under "${dir}": "getfattr" is not on PATH (install attr, or pass xattrs: false)`,
      );
    }
    throw err;
  }
  const result = new Map<string, Record<string, string>>();
  const base = unescapeName(dir.replace(/\/+$/, ""));
  let current: Record<string, string> | undefined;
  for (const line of stdout.split("\n")) {
    if (line.startsWith("# file: ")) {
      const path = unescapeName(line.slice("# file: ".length));
      const rel = path === base
        ? "."
        : path.startsWith(base + "/")
        ? path.slice(base.length + 1)
        : path;
      current = {};
      result.set(rel, current);
    } else if (current !== undefined && line !== "") {
      const eq = line.indexOf("=");
      const name = unescapeName(eq < 0 ? line : line.slice(0, eq));
      const value = eq < 0 ? "" : line.slice(eq + 1);
      current[name] = value.startsWith("0x") ? value.slice(2) : value;
    }
  }
  return result;
}

/** Turns getfattr's `\ooo` escapes back into the name they encode (bytes that are not UTF-8 kept). */
function unescapeName(text: string): string {
  const bytes: number[] = [];
  const encoder = new TextEncoder();
  for (let i = 0; i < text.length; i++) {
    const octal = text.slice(i + 1, i + 4);
    if (text[i] === "\\" && /^[0-7]{3}$/.test(octal)) {
      bytes.push(parseInt(octal, 8));
      i += 3;
    } else {
      bytes.push(...encoder.encode(text[i]));
    }
  }
  return decodeName(new Uint8Array(bytes));
}

/**
 * Every path below `dir` with its symlink target, as find(1) lists them (no decoding of Strata's
 * involved): `"<path> <target>"`, the target empty for what is not a symlink, sorted. Each byte is
 * one character (latin1), so names that are not UTF-8 compare by their bytes: `"caf\xe9 "`.
 *
 * @param dir The directory to list.
 * @returns One line per path.
 */
export function findListing(dir: string): string[] {
  const out = new Deno.Command("find", { args: [dir, "-mindepth", "1", "-printf", "%P %l\\0"] })
    .outputSync();
  if (!out.success) {
    throw new Error(`Cannot list "${dir}" with find: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder("latin1").decode(out.stdout).split("\0").filter((l) => l !== "").sort();
}

/** Options for {@linkcode diffTrees}. */
export interface DiffOptions {
  /** Attributes not to compare. */
  ignore?: ("mtime" | "xattrs" | "uid" | "gid")[];
  /** Paths not to compare, each with everything below it (`"."` ignores only the root itself). */
  ignorePaths?: string[];
}

/**
 * Lists the differences between two snapshots as readable lines; empty when they match.
 *
 * Sizes are not compared for directories; mtimes are compared in milliseconds.
 *
 * @param a The first snapshot ("a" in the messages).
 * @param b The second snapshot ("b").
 * @param options Attributes and paths to ignore.
 * @returns One line per difference, e.g. `"etc/motd": mode 0644 != 0600`.
 *
 * @example
 * ```ts
 * import { diffTrees, snapshotTree } from "./_tree.ts";
 * const a = await snapshotTree("/tmp/a");
 * const b = await snapshotTree("/tmp/b");
 * console.log(diffTrees(a, b, { ignore: ["mtime"], ignorePaths: ["."] }));
 * ```
 */
export function diffTrees(
  a: Map<string, TreeEntry>,
  b: Map<string, TreeEntry>,
  options: DiffOptions = {},
): string[] {
  const ignore = new Set(options.ignore ?? []);
  const ignorePaths = options.ignorePaths ?? [];
  const ignored = (path: string): boolean =>
    ignorePaths.some((p) => path === p || (p !== "." && path.startsWith(p + "/")));
  const paths = [...new Set([...a.keys(), ...b.keys()])].sort((x, y) => x < y ? -1 : x > y ? 1 : 0);
  const diffs: string[] = [];
  for (const path of paths) {
    if (ignored(path)) continue;
    const x = a.get(path);
    const y = b.get(path);
    const q = JSON.stringify(path);
    if (x === undefined) {
      diffs.push(`${q}: only in b (${y?.type})`);
      continue;
    }
    if (y === undefined) {
      diffs.push(`${q}: only in a (${x.type})`);
      continue;
    }
    if (x.type !== y.type) {
      diffs.push(`${q}: type ${x.type} != ${y.type}`);
      continue;
    }
    const differs = (what: string, u: unknown, v: unknown): void => {
      if (u !== v) diffs.push(`${q}: ${what} ${u} != ${v}`);
    };
    differs("mode", octal(x.mode), octal(y.mode));
    if (!ignore.has("uid")) differs("uid", x.uid, y.uid);
    if (!ignore.has("gid")) differs("gid", x.gid, y.gid);
    if (x.type !== "dir") differs("size", x.size, y.size);
    if (!ignore.has("mtime")) {
      differs("mtime", new Date(x.mtime).toISOString(), new Date(y.mtime).toISOString());
    }
    differs("sha256", x.sha256, y.sha256);
    differs("link target", quote(x.linkTarget), quote(y.linkTarget));
    differs("device", device(x.rdev), device(y.rdev));
    differs("hardlink group", quote(x.hardlinkGroup), quote(y.hardlinkGroup));
    if (!ignore.has("xattrs")) {
      const names = [...new Set([...Object.keys(x.xattrs ?? {}), ...Object.keys(y.xattrs ?? {})])];
      for (const name of names.sort()) {
        differs(`xattr ${JSON.stringify(name)}`, hex(x.xattrs?.[name]), hex(y.xattrs?.[name]));
      }
    }
  }
  return diffs;
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, "0");
}

function quote(value: string | undefined): string {
  return value === undefined ? "(none)" : JSON.stringify(value);
}

function hex(value: string | undefined): string {
  return value === undefined ? "(none)" : `0x${value}`;
}

/** Formats a Linux `dev_t` as `major:minor`. */
function device(rdev: number | undefined): string {
  if (rdev === undefined) return "(none)";
  const low = rdev % 2 ** 32;
  const high = Math.floor(rdev / 2 ** 32);
  const major = ((low >>> 8) & 0xfff) | ((high & 0xfffff000) >>> 0);
  const minor = ((low & 0xff) | (((low >>> 12) | ((high & 0xfff) << 20)) & 0xffffff00)) >>> 0;
  return `${major}:${minor}`;
}
