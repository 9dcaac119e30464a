// The change walkers of diff compare and the tar writer they feed: containerd's double walk
// (continuity `fs.Changes`), an overlay upperdir walk, and `ChangeWriter.HandleChange` (parent
// inclusion, whiteouts, hardlink groups, `security.capability` as the only xattr).

import { Buffer } from "node:buffer";
import { FailedPrecondition } from "../errors.ts";
import * as sys from "../sys/mod.ts";
import { encodeName } from "../sys/_names.ts";
import type { TarWriteHeader, TarWriter } from "./tar/mod.ts";

/** The only extended attribute a layer made by compare carries (containerd's rule). */
const CAPABILITY = "security.capability";
/** Bytes read from a file at a time, for the layer and for content comparison. */
const READ_CHUNK = 1 << 20;
const OPEN_FILE = sys.O_RDONLY | sys.O_NOFOLLOW | sys.O_CLOEXEC;
const EMPTY = new Uint8Array(0);

/** How a path changed between the lower and the upper tree. */
export type ChangeKind = "add" | "modify" | "unmodified";

/** Whether `st` is a directory. */
export function isDir(st: sys.Stat): boolean {
  return (st.mode & sys.S_IFMT) === sys.S_IFDIR;
}

function fileType(st: sys.Stat): number {
  return st.mode & sys.S_IFMT;
}

/** Joins a directory path and a name (or relative path). */
export function joinPath(dir: string, name: string): string {
  if (name === "") return dir;
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

/**
 * Orders names by their bytes (Go's `filepath.Walk` order): for UTF-8 names that is the order of
 * their code points (plain `<` on strings compares UTF-16 code units instead); names holding
 * bytes that are not UTF-8 (U+DC80-U+DCFF, see `sys/_names.ts`) are compared encoded.
 */
export function compareNames(a: string, b: string): number {
  if (!a.isWellFormed() || !b.isWellFormed()) return compareBytes(encodeName(a), encodeName(b));
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const sx = x >= 0xd800 && x <= 0xdfff;
    const sy = y >= 0xd800 && y <= 0xdfff;
    if (sx !== sy) return sx ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/** Lists a directory without following a symlink, sorted by {@linkcode compareNames}. */
export function listDir(path: string): string[] {
  return sys.readDirAt(sys.AT_FDCWD, path).map((entry) => entry.name).sort(compareNames);
}

/** `lstat`, or `undefined` when the path does not exist. */
export function lstatOrNone(path: string): sys.Stat | undefined {
  try {
    return sys.lstat(path);
  } catch (err) {
    if (sys.isErrno(err, "ENOENT", "ENOTDIR")) return undefined;
    throw err;
  }
}

/** `lstat` of a path just listed: a missing entry means the tree changed meanwhile. */
function lstatListed(path: string): sys.Stat {
  try {
    return sys.lstat(path);
  } catch (err) {
    if (sys.isErrno(err, "ENOENT")) {
      throw new FailedPrecondition(
        `Cannot diff "${path}": it vanished after its directory was listed`,
      );
    }
    throw err;
  }
}

/** Lists xattr names without following a symlink; none where xattrs are unsupported. */
function xattrNames(path: string): string[] {
  try {
    return sys.llistxattr(path);
  } catch (err) {
    if (sys.isErrno(err, "EOPNOTSUPP", "ENOTSUP")) return [];
    throw err;
  }
}

/** Reads an xattr without following a symlink; `undefined` when absent or unsupported. */
export function xattrOrNone(path: string, name: string): Uint8Array | undefined {
  try {
    return sys.lgetxattr(path, name);
  } catch (err) {
    if (sys.isErrno(err, "ENODATA", "EOPNOTSUPP", "ENOTSUP")) return undefined;
    throw err;
  }
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return Buffer.compare(a ?? EMPTY, b ?? EMPTY) === 0;
}

/** Reads up to `buf.length` bytes, fewer only at the end of the file. */
function readFull(fd: number, buf: Uint8Array): number {
  let got = 0;
  while (got < buf.length) {
    const n = sys.read(fd, buf.subarray(got));
    if (n === 0) break;
    got += n;
  }
  return got;
}

function sameContent(lowerPath: string, upperPath: string): boolean {
  const a = sys.open(lowerPath, OPEN_FILE);
  try {
    const b = sys.open(upperPath, OPEN_FILE);
    try {
      const bufA = new Uint8Array(64 * 1024);
      const bufB = new Uint8Array(64 * 1024);
      for (;;) {
        const n = readFull(a, bufA);
        const m = readFull(b, bufB);
        if (n !== m) return false;
        if (n === 0) return true;
        if (Buffer.compare(bufA.subarray(0, n), bufB.subarray(0, m)) !== 0) return false;
      }
    } finally {
      sys.close(b);
    }
  } finally {
    sys.close(a);
  }
}

/**
 * containerd's `sameFile`: is the upper entry unchanged from the lower one?
 *
 * Same inode; else type and permission bits, owner, device number and `security.capability`
 * must match; directories match on those alone; other entries also need the same size and mtime
 * seconds, and then: both mtimes without nanoseconds (maybe truncated by an earlier layer)
 * means the content (or symlink target) decides, different nanoseconds mean changed.
 */
export function sameFile(
  lower: sys.Stat,
  upper: sys.Stat,
  lowerPath: string,
  upperPath: string,
): boolean {
  if (lower.dev === upper.dev && lower.ino === upper.ino) return true;
  if (
    lower.mode !== upper.mode || lower.uid !== upper.uid || lower.gid !== upper.gid ||
    lower.rdev !== upper.rdev
  ) {
    return false;
  }
  if (!sameBytes(xattrOrNone(lowerPath, CAPABILITY), xattrOrNone(upperPath, CAPABILITY))) {
    return false;
  }
  if (isDir(upper)) return true;
  if (lower.size !== upper.size || lower.mtime.sec !== upper.mtime.sec) return false;
  if (lower.mtime.nsec === 0 && upper.mtime.nsec === 0) {
    if (fileType(upper) === sys.S_IFLNK) {
      return sys.readlinkat(sys.AT_FDCWD, lowerPath) === sys.readlinkat(sys.AT_FDCWD, upperPath);
    }
    if (upper.size === 0) return true;
    // Only regular files have a non-zero size here (devices and fifos have none).
    return sameContent(lowerPath, upperPath);
  }
  return lower.mtime.nsec === upper.mtime.nsec;
}

/** Options of {@linkcode ChangeWriter}. */
export interface ChangeWriterOptions {
  /** Later mtimes are lowered to this time (whole seconds). */
  sourceDateEpoch?: Date | undefined;
}

/**
 * Turns changes into tar entries, as containerd's `ChangeWriter`: paths relative to the upper
 * root, parents written before their children once, hardlink groups kept.
 */
export class ChangeWriter {
  #tar: TarWriter;
  #root: string;
  #epoch: number | undefined;
  #addedDirs = new Set<string>();
  #inodeSource = new Map<string, string>();
  #inodeRefs = new Map<string, string[]>();
  #entries = 0;

  /**
   * Creates a writer of changes into `tar`.
   *
   * @param tar The archive to write.
   * @param upperRoot The upper tree: entry paths are relative to it, parents are read from it.
   * @param options The source date epoch.
   */
  constructor(tar: TarWriter, upperRoot: string, options: ChangeWriterOptions = {}) {
    this.#tar = tar;
    this.#root = upperRoot;
    const epoch = options.sourceDateEpoch;
    this.#epoch = epoch === undefined ? undefined : Math.floor(epoch.getTime() / 1000);
  }

  /** Number of tar entries written. */
  get entries(): number {
    return this.#entries;
  }

  /** Writes the whiteout of a deleted path: `<dir>/.wh.<name>`. */
  async delete(rel: string): Promise<void> {
    const slash = rel.lastIndexOf("/");
    const name = slash < 0 ? `.wh.${rel}` : `${rel.slice(0, slash)}/.wh.${rel.slice(slash + 1)}`;
    await this.#whiteout(name);
  }

  /** Writes the opaque marker of a directory: `<dir>/.wh..wh..opq`. */
  async opaque(rel: string): Promise<void> {
    await this.#whiteout(`${rel}/.wh..wh..opq`);
  }

  async #whiteout(name: string): Promise<void> {
    await this.#includeParents(name);
    await this.#add({
      name,
      type: "file",
      mode: 0,
      uid: 0,
      gid: 0,
      size: 0,
      mtime: { sec: 0, nsec: 0 },
    });
  }

  /**
   * Handles an added, modified or (hardlinked) unmodified entry of the upper tree. A directory
   * already written (as a parent) is not written again.
   */
  async change(kind: ChangeKind, rel: string, st: sys.Stat): Promise<void> {
    if (isDir(st) && this.#addedDirs.has(rel)) return;
    await this.#emit(kind, rel, st);
  }

  async #emit(kind: ChangeKind, rel: string, st: sys.Stat): Promise<void> {
    const abs = joinPath(this.#root, rel);
    const header = this.#header(rel, abs, st);
    if (header === undefined) return; // A socket.
    let extra: string[] | undefined;
    if (!isDir(st) && st.nlink > 1) {
      const inode = `${st.dev}:${st.ino}`;
      const source = this.#inodeSource.get(inode);
      if (source !== undefined) {
        await this.#includeParents(rel);
        await this.#add(linkHeader(header, rel, source));
        return;
      }
      if (kind === "unmodified") {
        const refs = this.#inodeRefs.get(inode);
        if (refs === undefined) this.#inodeRefs.set(inode, [rel]);
        else refs.push(rel);
        return;
      }
      this.#inodeSource.set(inode, rel);
      extra = this.#inodeRefs.get(inode);
      this.#inodeRefs.delete(inode);
    } else if (kind === "unmodified") {
      return;
    }
    await this.#includeParents(rel);
    if (isDir(st)) this.#addedDirs.add(rel);
    if (header.type === "file" && header.size! > 0) {
      await this.#addFile(header, abs, st);
    } else {
      await this.#add(header);
    }
    for (const name of extra ?? []) {
      await this.#includeParents(name);
      await this.#add(linkHeader(header, name, rel));
    }
  }

  /** Writes the directories above `rel` that have not been written yet, top-down. */
  async #includeParents(rel: string): Promise<void> {
    const slash = rel.lastIndexOf("/");
    if (slash <= 0) return; // The root is never written.
    const parent = rel.slice(0, slash);
    if (this.#addedDirs.has(parent)) return;
    this.#addedDirs.add(parent);
    const path = joinPath(this.#root, parent);
    const st = sys.lstat(path);
    if (!isDir(st)) {
      throw new FailedPrecondition(
        `Cannot write diff entry "${rel}": its parent "${path}" is no longer a directory`,
      );
    }
    await this.#emit("modify", parent, st);
  }

  #header(rel: string, abs: string, st: sys.Stat): TarWriteHeader | undefined {
    let mtime = st.mtime.sec;
    if (this.#epoch !== undefined && mtime > this.#epoch) mtime = this.#epoch;
    const header: TarWriteHeader = {
      name: rel,
      type: "file",
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      mtime: { sec: mtime, nsec: 0 },
    };
    switch (fileType(st)) {
      case sys.S_IFREG:
        header.size = st.size;
        break;
      case sys.S_IFDIR:
        header.type = "directory";
        break;
      case sys.S_IFLNK:
        header.type = "symlink";
        header.linkname = sys.readlinkat(sys.AT_FDCWD, abs);
        break;
      case sys.S_IFCHR:
      case sys.S_IFBLK:
        header.type = fileType(st) === sys.S_IFCHR ? "char" : "block";
        header.devmajor = sys.major(st.rdev);
        header.devminor = sys.minor(st.rdev);
        break;
      case sys.S_IFIFO:
        header.type = "fifo";
        break;
      case sys.S_IFSOCK:
        return undefined;
      default:
        throw new FailedPrecondition(
          `Cannot write diff entry "${rel}": unknown file type ${
            (st.mode & sys.S_IFMT).toString(8)
          }`,
        );
    }
    const capability = xattrOrNone(abs, CAPABILITY);
    if (capability !== undefined) header.xattrs = { [CAPABILITY]: capability };
    return header;
  }

  async #add(header: TarWriteHeader, body?: AsyncIterable<Uint8Array>): Promise<void> {
    await this.#tar.add(header, body);
    this.#entries++;
  }

  async #addFile(header: TarWriteHeader, abs: string, st: sys.Stat): Promise<void> {
    const fd = sys.open(abs, OPEN_FILE);
    try {
      const now = sys.fstat(fd);
      if (now.ino !== st.ino || now.dev !== st.dev) {
        throw new FailedPrecondition(
          `Cannot write diff entry "${header.name}": "${abs}" was replaced while it was read`,
        );
      }
      await this.#add(header, readBody(fd, st.size, header.name));
    } finally {
      sys.close(fd);
    }
  }
}

function linkHeader(header: TarWriteHeader, name: string, target: string): TarWriteHeader {
  const link: TarWriteHeader = { ...header, name, type: "hardlink", linkname: target, size: 0 };
  delete link.devmajor;
  delete link.devminor;
  return link;
}

/** Yields exactly `size` bytes of an open file in fresh buffers (the sink may keep them). */
async function* readBody(
  fd: number,
  size: number,
  name: string,
): AsyncGenerator<Uint8Array, void, undefined> {
  let left = size;
  while (left > 0) {
    const buf = new Uint8Array(Math.min(left, READ_CHUNK));
    const n = readFull(fd, buf);
    if (n < buf.length) {
      throw new FailedPrecondition(
        `Cannot write diff entry "${name}": the file shrank to ${
          size - left + n
        } bytes while it was read (expected ${size})`,
      );
    }
    left -= n;
    yield buf;
  }
}

/**
 * containerd's double walk: both trees in depth-first name order, merged; each difference goes
 * to the writer. A deleted directory gives one whiteout; a directory replaced by something else
 * gives no whiteouts for its children.
 */
export async function walkTrees(
  lowerRoot: string,
  upperRoot: string,
  writer: ChangeWriter,
): Promise<void> {
  await mergeDir("", lowerRoot, upperRoot, writer);
}

async function mergeDir(
  rel: string,
  lowerDir: string | undefined,
  upperDir: string,
  writer: ChangeWriter,
): Promise<void> {
  const upperNames = listDir(upperDir);
  const lowerNames = lowerDir === undefined ? [] : listDir(lowerDir);
  let i = 0;
  let j = 0;
  while (i < lowerNames.length || j < upperNames.length) {
    const l = lowerNames[i];
    const u = upperNames[j];
    let order: number;
    if (l === undefined) order = 1;
    else if (u === undefined) order = -1;
    else order = compareNames(l, u);
    const name = (order <= 0 ? l : u)!;
    const childRel = rel === "" ? name : `${rel}/${name}`;
    const upperPath = joinPath(upperDir, name);
    if (order < 0) {
      i++;
      await writer.delete(childRel);
      continue;
    }
    j++;
    const upper = lstatListed(upperPath);
    if (order > 0) {
      await writer.change("add", childRel, upper);
      if (isDir(upper)) await mergeDir(childRel, undefined, upperPath, writer);
      continue;
    }
    i++;
    const lowerPath = joinPath(lowerDir!, name);
    const lower = lstatListed(lowerPath);
    if (sameFile(lower, upper, lowerPath, upperPath)) {
      // Unmodified hardlinks still matter: a changed partner re-emits them as links.
      if (!isDir(upper) && upper.nlink > 1) await writer.change("unmodified", childRel, upper);
    } else {
      await writer.change("modify", childRel, upper);
    }
    if (isDir(upper)) {
      await mergeDir(childRel, isDir(lower) ? lowerPath : undefined, upperPath, writer);
    }
  }
}

/** Options of {@linkcode walkUpperdir}. */
export interface UpperdirOptions {
  /** The overlay ran with `userxattr`: its xattrs are `user.overlay.*`, not `trusted.overlay.*`. */
  userxattr?: boolean | undefined;
}

/**
 * Walks an overlay upperdir alone: a 0:0 character device is a whiteout, an opaque directory is
 * written with its `.wh..wh..opq` marker, every other entry is a change. A directory that is a
 * directory in the lower tree too is written only when its mode, owner or capability changed
 * (or as the parent of a change), as the double walk would.
 */
export async function walkUpperdir(
  lowerRoot: string,
  upperdir: string,
  writer: ChangeWriter,
  options: UpperdirOptions = {},
): Promise<void> {
  const prefix = options.userxattr === true ? "user.overlay." : "trusted.overlay.";
  await walkUpper("", lowerRoot, upperdir, writer, prefix);
}

async function walkUpper(
  rel: string,
  lowerDir: string | undefined,
  upperDir: string,
  writer: ChangeWriter,
  prefix: string,
): Promise<void> {
  for (const name of listDir(upperDir)) {
    const childRel = rel === "" ? name : `${rel}/${name}`;
    const upperPath = joinPath(upperDir, name);
    const upper = lstatListed(upperPath);
    if (fileType(upper) === sys.S_IFCHR && upper.rdev === 0) {
      await writer.delete(childRel);
      continue;
    }
    const xattrs = xattrNames(upperPath);
    for (const attr of ["redirect", "metacopy"]) {
      if (xattrs.includes(prefix + attr)) {
        throw new FailedPrecondition(
          `Cannot diff overlay upperdir entry "${upperPath}": it has "${prefix}${attr}" (the overlay used redirect_dir or metacopy); use the walk method`,
        );
      }
    }
    const lowerPath = lowerDir === undefined ? undefined : joinPath(lowerDir, name);
    const lower = lowerPath === undefined ? undefined : lstatOrNone(lowerPath);
    const kind: ChangeKind = lower === undefined ? "add" : "modify";
    if (!isDir(upper)) {
      await writer.change(kind, childRel, upper);
      continue;
    }
    const opaqueValue = xattrs.includes(prefix + "opaque")
      ? xattrOrNone(upperPath, prefix + "opaque")
      : undefined;
    const opaque = opaqueValue !== undefined && opaqueValue.length === 1 && opaqueValue[0] === 0x79;
    const merged = lower !== undefined && isDir(lower) && !opaque;
    if (!merged || !sameFile(lower!, upper, lowerPath!, upperPath)) {
      await writer.change(kind, childRel, upper);
    }
    if (opaque) await writer.opaque(childRel);
    await walkUpper(childRel, merged ? lowerPath : undefined, upperPath, writer, prefix);
  }
}
