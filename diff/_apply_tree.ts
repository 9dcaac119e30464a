// The extraction side of the layer applier: one root directory opened once, every entry applied
// with descriptor-relative calls. Parents are resolved with openat2(RESOLVE_IN_ROOT) (symlinks
// followed, never out of the root); the final component is never followed: whatever is there is
// replaced. See apply.ts for the rules this implements.

import { InvalidArgument } from "../errors.ts";
import * as sys from "../sys/mod.ts";
import { nameByteLength } from "../sys/_names.ts";
import type { TarEntry, TarHeader, TarSparse, TarTime } from "./tar/mod.ts";
import {
  cleanName,
  closeQuietly,
  DIR_PATH,
  DIR_READ,
  entryError,
  IN_ROOT,
  inodeKey,
  isDir,
  isSymlink,
  isWhiteoutDevice,
  type Kind,
  kindOf,
  MAX_PATH,
  procPath,
  quote,
  removeAt,
  statAt,
} from "./_apply_fs.ts";
import { type LowerHit, Lowers } from "./_apply_lower.ts";

/** How whiteouts are applied; see `ApplyOptions.whiteouts`. */
export type WhiteoutPolicy = "delete" | "overlay" | "overlay-userxattr";

/** Something of a layer that was not applied, and why. */
export interface Skipped {
  /** The entry's name as stored in the layer. */
  path: string;
  /** Why it was not applied (in full or in part). */
  reason: string;
}

/** Options of a {@linkcode Tree}. */
export interface TreeOptions {
  /** The whiteout policy. */
  policy: WhiteoutPolicy;
  /** Lower directories, newest first (overlay policies only). */
  lowerDirs: readonly string[];
  /**
   * Overlay policies, applying before the lower layers exist (parallel unpack): gives the lower
   * directories, newest first, once they do. Called at most once, by the first entry that needs
   * them; that entry waits and is then applied as if they had been there from the start.
   */
  awaitLowerDirs?: () => Promise<readonly string[]>;
  /**
   * With `awaitLowerDirs`: a directory implied before the lower layers exist is created at once
   * (provisionally, and the lowers are asked for without waiting) instead of waiting for them;
   * once they are there (at the latest in {@linkcode Tree.finish}) it gets what the lower
   * directory would have given it. When a lower layer holds a non-directory at such a path (a
   * symlink the layer wrote through), {@linkcode LowersConflict} is thrown: the caller applies
   * the layer again, from the start, into an empty root with the lowers given.
   */
  provisional?: boolean;
  /** Whether to work without privileges: owners and devices that cannot be set are recorded. */
  rootless: boolean;
  /** Receives what was not applied. */
  skipped: Skipped[];
}

const WH_PREFIX = ".wh.";
const WH_META_PREFIX = ".wh..wh.";
const WH_OPAQUE = ".wh..wh..opq";
const MAX_LINKS = 255;
// The last second whose nanoseconds still fit an int64 (containerd's upper bound for times).
const MAX_SEC = 9223372036;
const MAX_NSEC_AT_MAX_SEC = 854775807;

/** A directory whose mode or times are set again once every entry is applied. */
interface DirRecord {
  parent: string;
  base: string;
  depth: number;
  key: number | string;
  mode?: number;
  times?: [sys.Timespec, sys.Timespec];
}

/** An object being given its metadata: by descriptor (regular files) or by parent and name. */
interface Target {
  dirfd: number;
  name: string;
  fd?: number;
  kind: Kind;
  /** The entry name for messages and `skipped`. */
  entry: string;
  /** Its metadata just before the owner is set, when known. */
  st?: sys.Stat;
}

let usernsCache: boolean | undefined;

/** Whether this process runs in a user namespace other than the initial one. */
export function inUserNamespace(): boolean {
  if (usernsCache === undefined) {
    try {
      const map = Deno.readTextFileSync("/proc/self/uid_map").trim().split(/\s+/);
      usernsCache = !(map[0] === "0" && map[1] === "0" && map[2] === "4294967295");
    } catch {
      usernsCache = false;
    }
  }
  return usernsCache;
}

function splitName(name: string): [string, string] {
  const slash = name.lastIndexOf("/");
  return slash < 0 ? ["", name] : [name.slice(0, slash), name.slice(slash + 1)];
}

function bound(t: TarTime): sys.Timespec {
  if (t.sec < 0 || t.sec > MAX_SEC || (t.sec === MAX_SEC && t.nsec > MAX_NSEC_AT_MAX_SEC)) {
    return { sec: 0, nsec: 0 };
  }
  return { sec: t.sec, nsec: t.nsec };
}

/** containerd's times: mtime from the header, atime = max(atime, mtime), both bounded. */
function headerTimes(h: TarHeader): [sys.Timespec, sys.Timespec] {
  const m = h.mtime;
  const a = h.atime;
  const later = a !== undefined && (a.sec > m.sec || (a.sec === m.sec && a.nsec > m.nsec));
  return [bound(later ? a : m), bound(m)];
}

/** The names in the directory `dfd`. */
function readNames(dfd: number): string[] {
  const rfd = sys.openat(dfd, ".", DIR_READ);
  try {
    return sys.readDirFd(rfd).map((e) => e.name);
  } finally {
    sys.close(rfd);
  }
}

function pwriteAll(fd: number, buf: Uint8Array, offset: number): void {
  while (buf.length > 0) {
    const n = sys.pwrite(fd, buf, offset);
    buf = buf.subarray(n);
    offset += n;
  }
}

async function writeSparse(
  fd: number,
  sparse: TarSparse,
  body: AsyncIterable<Uint8Array>,
): Promise<void> {
  // The size first: everything no segment covers stays a hole.
  sys.ftruncate(fd, sparse.realSize);
  const segments = sparse.segments;
  let i = 0;
  let done = 0;
  for await (const chunk of body) {
    let p = 0;
    while (p < chunk.length) {
      while (i < segments.length && done >= segments[i]!.length) {
        i++;
        done = 0;
      }
      const seg = segments[i];
      if (seg === undefined) {
        throw new InvalidArgument("Cannot write sparse file: its data is longer than its map");
      }
      const n = Math.min(seg.length - done, chunk.length - p);
      pwriteAll(fd, chunk.subarray(p, p + n), seg.offset + done);
      p += n;
      done += n;
    }
  }
}

/**
 * Thrown (and caught in {@linkcode Tree.apply}) where an entry needs the lower layers before they
 * exist. Nothing of the entry has been changed yet at the points that throw it.
 */
class LowersPending extends Error {
  override readonly name: string = "LowersPending";
}

/**
 * Thrown when a directory created provisionally (see {@linkcode TreeOptions.provisional}) is a
 * symlink or another non-directory in the lower layers: what the layer wrote below it went to
 * the wrong place. The root must be emptied and the layer applied again with `lowerDirs`.
 */
export class LowersConflict extends Error {
  override readonly name: string = "LowersConflict";
  /** The lower directories, newest first, as `awaitLowerDirs` gave them. */
  readonly lowerDirs: readonly string[];

  /**
   * @param path The provisional directory.
   * @param lowerDirs The lower directories.
   */
  constructor(path: string, lowerDirs: readonly string[]) {
    super(
      `Cannot keep the provisional directory ${
        quote(path)
      }: it is not a directory in a lower layer`,
    );
    this.lowerDirs = lowerDirs;
  }
}

/** A directory created before the lower layers were there, reconciled with them later. */
interface Provisional {
  /** The resolved path of its parent directory (what the lowers are looked up with). */
  parent: string;
  base: string;
  key: number | string;
  /** The entry that implied it. */
  entry: string;
  /** Whether this layer has a directory entry for it too (its metadata then wins). */
  explicit: boolean;
  /** Its times record, filled in from the lower directory. */
  rec: DirRecord;
}

/**
 * One extraction root. Not reentrant: entries are applied one at a time, in archive order.
 */
export class Tree {
  #root: number;
  #policy: WhiteoutPolicy;
  #overlay: boolean;
  #prefix: string;
  #rootless: boolean;
  /** The process's user id: rootless, only its own directories can be unlocked. */
  #uid = Deno.uid();
  #userns: boolean;
  #lowers: Lowers;
  #awaitLowers: (() => Promise<readonly string[]>) | null;
  /** The lowers asked for ahead (provisional mode); `settled` once they are there or failed. */
  #asked: { promise: Promise<readonly string[]>; settled: boolean } | null = null;
  #provisional: boolean;
  /** Provisional directories, in the order they were made (parents first). */
  #provisionals: Provisional[] = [];
  /** The current provisional directory of each inode (older records are stale). */
  #provisionalKeys = new Map<number | string, Provisional>();
  #lowerPaths: readonly string[] = [];
  #skipped: Skipped[];
  /** Inodes this layer created or merged (opaque markers and whiteouts keep these). */
  #layer = new Set<number | string>();
  /** Directories this layer has entries for (not only implied by entries below them). */
  #listed = new Set<number | string>();
  #dirs: DirRecord[] = [];
  /** Rootless: directories made `u+rwx` for this layer, their modes in {@linkcode #dirs}. */
  #unlocked = new Set<number | string>();
  /**
   * The last parent directory resolved, reused while nothing was removed or replaced since: a
   * path's resolution can only change when one of its components goes (nothing is renamed), so
   * any removal makes the cache stale (unlike containerd 2.1.0's cache, CVE-2025-47290).
   */
  #cache: { path: string; fd: number } | null = null;
  #stale = false;

  /**
   * Opens `root` (which must be a directory) and the lower directories.
   *
   * @param root The extraction root.
   * @param options Policy, lowers, privilege and the list of skipped things.
   */
  constructor(root: string, options: TreeOptions) {
    this.#policy = options.policy;
    this.#overlay = options.policy !== "delete";
    this.#prefix = options.policy === "overlay-userxattr" ? "user.overlay." : "trusted.overlay.";
    this.#rootless = options.rootless;
    this.#userns = inUserNamespace();
    this.#skipped = options.skipped;
    this.#awaitLowers = (this.#overlay ? options.awaitLowerDirs : undefined) ?? null;
    this.#provisional = this.#awaitLowers !== null && options.provisional === true;
    this.#lowerPaths = options.lowerDirs;
    this.#root = sys.open(root, DIR_PATH);
    try {
      this.#lowers = new Lowers(this.#overlay ? options.lowerDirs : [], this.#prefix);
    } catch (err) {
      closeQuietly(this.#root);
      throw err;
    }
  }

  /** Closes the root and the lower directories. */
  close(): void {
    this.#dropCache();
    this.#lowers.close();
    closeQuietly(this.#root);
  }

  #skip(entry: string, reason: string): void {
    this.#skipped.push({ path: entry, reason });
  }

  #mark(st: sys.Stat): void {
    this.#layer.add(inodeKey(st));
  }

  #unprivileged(): boolean {
    return this.#rootless || this.#userns;
  }

  /** Whether the lower layers may hold something: there are some, or they are still to come. */
  #mayHaveLowers(): boolean {
    return this.#awaitLowers !== null || !this.#lowers.empty;
  }

  /** Throws {@linkcode LowersPending} when the lower layers are still to come. */
  #needLowers(): void {
    if (this.#awaitLowers !== null) throw new LowersPending();
  }

  /** Asks for the lower layers (once), without waiting for them. */
  #askLowers(): Promise<readonly string[]> {
    if (this.#asked === null) {
      const asked = { promise: this.#awaitLowers!(), settled: false };
      const settle = () => (asked.settled = true);
      asked.promise.then(settle, settle);
      this.#asked = asked;
    }
    return this.#asked.promise;
  }

  /** Waits for the lower layers, opens them and reconciles the provisional directories. */
  async #loadLowers(): Promise<void> {
    if (this.#awaitLowers === null) return;
    const paths = await this.#askLowers();
    const lowers = new Lowers(paths, this.#prefix);
    this.#lowers.close();
    this.#lowers = lowers;
    this.#lowerPaths = paths;
    this.#awaitLowers = null;
    this.#reconcile();
  }

  // --- resolution ------------------------------------------------------------------------------

  /** Opens the directory `rel` (resolved in the root), or `null` when it is not there. */
  #openDir(rel: string, entry: string): number | null {
    for (let attempt = 0;; attempt++) {
      try {
        return sys.openat2(this.#root, rel === "" ? "." : rel, {
          flags: DIR_PATH,
          resolve: IN_ROOT,
        });
      } catch (err) {
        if (sys.isErrno(err, "ENOENT", "ENOTDIR")) return null;
        // Rootless: a directory on the way cannot be searched; the walk unlocks it.
        if (this.#rootless && sys.isErrno(err, "EACCES")) return null;
        // openat2 asks to retry when a rename raced with a ".." resolution.
        if (sys.isErrno(err, "EAGAIN") && attempt < 8) continue;
        throw this.#resolveError(err, rel, entry);
      }
    }
  }

  #resolveError(err: unknown, rel: string, entry: string): Error {
    if (sys.isErrno(err, "ELOOP")) {
      return new InvalidArgument(
        `Cannot apply layer entry ${quote(entry)}: too many levels of symbolic links resolving ${
          quote(rel)
        }`,
        { cause: err },
      );
    }
    return entryError(entry, `cannot resolve ${quote(rel)}`, err);
  }

  /**
   * The directory `rel` for an entry to go in, resolved in the root, with missing directories
   * created (`create: "all"`), or created only where the lower layers have them
   * (`"merged"`: whiteouts need no directory that nothing below holds).
   *
   * @returns A descriptor owned by the tree (cached for the next entries: callers never close
   *   it), or `null` (`"merged"` only).
   */
  #parent(rel: string, entry: string, create: "all" | "merged"): number | null {
    const cache = this.#cache;
    if (cache !== null && !this.#stale && cache.path === rel) return cache.fd;
    this.#dropCache();
    const fd = this.#openDir(rel, entry) ?? this.#walk(rel, entry, create)?.fd ?? null;
    if (fd !== null) {
      this.#cache = { path: rel, fd };
      this.#unlock(fd, entry);
    }
    return fd;
  }

  /**
   * Rootless: makes a directory the process owns but cannot write or search `u+rwx` for the rest
   * of the layer and puts its mode back in {@linkcode finish}, as umoci's rootless unpack does.
   * Without it a layer adding to a directory an earlier layer left 0555 (RPM-based images ship
   * `/usr/bin`, `/usr/lib` and `/root` so) fails with `EACCES` on the native snapshotter, whose
   * snapshots hold copies of those directories. Root needs none of this, nor does a user
   * namespace's root, which has `CAP_DAC_OVERRIDE` over what it owns.
   *
   * @param fd The directory (an `O_PATH` descriptor is enough).
   * @param entry The entry being applied, for messages.
   */
  #unlock(fd: number, entry: string): void {
    if (!this.#rootless) return;
    try {
      const st = sys.fstat(fd);
      if ((st.mode & 0o700) === 0o700 || !isDir(st) || st.uid !== this.#uid) return;
      const key = inodeKey(st);
      if (this.#unlocked.has(key)) return;
      const path = this.#pathOf(fd);
      if (path === null || path === "") return;
      sys.fchmodat(sys.AT_FDCWD, `/proc/self/fd/${fd}`, (st.mode & 0o7777) | 0o700, 0);
      this.#unlocked.add(key);
      const [parent, base] = splitName(path);
      const depth = parent === "" ? 0 : parent.split("/").length;
      this.#dirs.push({ parent, base, depth, key, mode: st.mode & 0o7777 });
    } catch (err) {
      throw entryError(entry, "cannot make its directory writable", err);
    }
  }

  #dropCache(): void {
    if (this.#cache !== null) closeQuietly(this.#cache.fd);
    this.#cache = null;
    this.#stale = false;
  }

  /**
   * Resolves `rel` one component at a time, as openat2 would, creating what is missing: the
   * slow path behind {@linkcode #parent}. Each step is an `*at` call on the previous directory
   * with no following of the component; symlinks (in the root, or in a lower layer on the overlay
   * policies) restart resolution at their target, absolute targets at the root, `..` stops at
   * the root.
   *
   * @returns The directory's descriptor and its resolved path, or `null` (`"merged"` only).
   */
  #walk(rel: string, entry: string, create: "all" | "merged"): { fd: number; path: string } | null {
    const stack: { name: string; fd: number; hidden: boolean }[] = [];
    const queue = rel.split("/");
    let links = 0;
    const follow = (target: string, where: string): void => {
      if (++links > MAX_LINKS) {
        throw new InvalidArgument(
          `Cannot apply layer entry ${quote(entry)}: too many levels of symbolic links at ${
            quote(where)
          }`,
        );
      }
      if (target.startsWith("/")) {
        for (const s of stack.splice(0)) closeQuietly(s.fd);
      }
      queue.unshift(...target.split("/"));
    };
    try {
      while (queue.length > 0) {
        const c = queue.shift()!;
        if (c === "" || c === ".") continue;
        if (c === "..") {
          const top = stack.pop();
          if (top !== undefined) closeQuietly(top.fd);
          continue;
        }
        const top = stack.at(-1);
        const cur = top?.fd ?? this.#root;
        const path = [...stack.map((s) => s.name), c].join("/");
        let st: sys.Stat | null;
        try {
          st = statAt(cur, c);
        } catch (err) {
          if (!(this.#rootless && top !== undefined && sys.isErrno(err, "EACCES"))) throw err;
          this.#unlock(top.fd, entry);
          st = statAt(cur, c);
        }
        if (st !== null && isDir(st)) {
          const fd = sys.openat(cur, c, DIR_PATH | sys.O_NOFOLLOW);
          const hidden = (top?.hidden ?? false) || (this.#overlay && this.#lowers.isOpaque(fd));
          stack.push({ name: c, fd, hidden });
          continue;
        }
        if (st !== null && isSymlink(st)) {
          follow(sys.readlinkat(cur, c), path);
          continue;
        }
        if (st !== null) {
          if (this.#overlay && isWhiteoutDevice(st)) {
            // A whiteout this layer made, now needed as a directory: a fresh, opaque one (the
            // lower directory it deleted must stay deleted).
            if (create === "merged") return null;
            if (top !== undefined) this.#unlock(top.fd, entry);
            this.#stale = true;
            sys.unlinkat(cur, c, 0);
            this.#mkdir(cur, c, null, entry);
            this.#setOpaque(cur, c);
            stack.push({
              name: c,
              fd: sys.openat(cur, c, DIR_PATH | sys.O_NOFOLLOW),
              hidden: true,
            });
            continue;
          }
          if (create === "merged") return null;
          throw new InvalidArgument(
            `Cannot apply layer entry ${quote(entry)}: ${quote(path)} is not a directory`,
          );
        }
        // Missing here. On the overlay policies the lower layers may hold it.
        let hit: LowerHit | null = null;
        if (this.#overlay && !(top?.hidden ?? false) && this.#mayHaveLowers()) {
          if (this.#awaitLowers !== null && this.#provisional && create === "all") {
            // Made now, given the lower directory's attributes once the lowers are there.
            if (top !== undefined) this.#unlock(top.fd, entry);
            this.#mkdirProvisional(cur, c, stack.map((s) => s.name).join("/"), entry);
            stack.push({
              name: c,
              fd: sys.openat(cur, c, DIR_PATH | sys.O_NOFOLLOW),
              hidden: false,
            });
            continue;
          }
          this.#needLowers();
          hit = this.#lowers.lookup(stack.map((s) => s.name).join("/"), c);
        }
        try {
          if (hit?.kind === "symlink") {
            follow(sys.readlinkat(hit.dirfd, hit.name), path);
            continue;
          }
          if (hit?.kind === "other") {
            if (create === "merged") return null;
            throw new InvalidArgument(
              `Cannot apply layer entry ${quote(entry)}: ${
                quote(path)
              } is not a directory in a lower layer`,
            );
          }
          if (hit === null && create === "merged") return null;
          if (top !== undefined) this.#unlock(top.fd, entry);
          this.#mkdir(cur, c, hit, entry);
        } finally {
          if (hit !== null) closeQuietly(hit.dirfd);
        }
        stack.push({ name: c, fd: sys.openat(cur, c, DIR_PATH | sys.O_NOFOLLOW), hidden: false });
      }
      const top = stack.pop();
      const fd = top?.fd ?? sys.openat(this.#root, ".", DIR_PATH);
      return { fd, path: [...stack.map((s) => s.name), ...(top ? [top.name] : [])].join("/") };
    } catch (err) {
      throw this.#resolveError(err, rel, entry);
    } finally {
      for (const s of stack) closeQuietly(s.fd);
    }
  }

  /**
   * Creates an implied directory `name` in `dirfd`: 0755 owned by the process, or with the mode,
   * owner, xattrs (not `trusted.*` or overlay ones) and times of the lower directory `hit`.
   */
  #mkdir(dirfd: number, name: string, hit: LowerHit | null, entry: string): void {
    sys.mkdirat(dirfd, name, 0o700);
    const st = sys.statx(dirfd, name, sys.AT_SYMLINK_NOFOLLOW);
    this.#mark(st);
    this.#provisionalKeys.delete(inodeKey(st));
    const target: Target = { dirfd, name, kind: "dir", entry };
    if (hit === null) {
      sys.fchmodat(dirfd, name, 0o755, sys.AT_SYMLINK_NOFOLLOW);
      return;
    }
    const low = hit.st;
    this.#chown(target, low.uid, low.gid);
    this.#copyXattrs(hit, target);
    const mode = low.mode & 0o7777;
    sys.fchmodat(dirfd, name, this.#rootless ? mode | 0o700 : mode, sys.AT_SYMLINK_NOFOLLOW);
    const times: [sys.Timespec, sys.Timespec] = [low.atime, low.mtime];
    sys.utimensat(dirfd, name, times, sys.AT_SYMLINK_NOFOLLOW);
    // Children created later change the mtime: set it again at the end, like a header's.
    this.#recordDir(dirfd, name, st, this.#rootless ? mode : undefined, times);
  }

  /**
   * Creates the implied directory `name` in `dirfd` (at `parent`, a resolved path) before the
   * lower layers are there: as if no lower layer had it (0755, owned by the process), with an
   * empty times record in its place in the order, both completed by {@linkcode #reconcile}.
   */
  #mkdirProvisional(dirfd: number, name: string, parent: string, entry: string): void {
    sys.mkdirat(dirfd, name, 0o700);
    const st = sys.statx(dirfd, name, sys.AT_SYMLINK_NOFOLLOW);
    this.#mark(st);
    sys.fchmodat(dirfd, name, 0o755, sys.AT_SYMLINK_NOFOLLOW);
    const key = inodeKey(st);
    const rec: DirRecord = {
      parent: this.#pathOf(dirfd) ?? parent,
      base: name,
      depth: 0,
      key,
    };
    rec.depth = rec.parent === "" ? 0 : rec.parent.split("/").length;
    this.#dirs.push(rec);
    const p: Provisional = { parent, base: name, key, entry, explicit: false, rec };
    this.#provisionals.push(p);
    this.#provisionalKeys.set(key, p);
    this.#askLowers().catch(() => {}); // A failure is thrown where the lowers are awaited.
  }

  /**
   * Gives each provisional directory, parents first, what the sequential apply would have: the
   * mode, owner, xattrs and times of the lower directory (only the xattrs it does not have yet
   * when the layer also lists it); nothing more when no lower layer has it.
   *
   * @throws {LowersConflict} When a lower layer has a non-directory at one of them.
   */
  #reconcile(): void {
    const list = this.#provisionals;
    const current = this.#provisionalKeys;
    this.#provisionals = [];
    this.#provisionalKeys = new Map();
    for (const p of list) {
      const path = p.parent === "" ? p.base : `${p.parent}/${p.base}`;
      const hit = this.#lowers.lookup(p.parent, p.base);
      if (hit === null) continue;
      let dfd: number | null = null;
      try {
        // Sequential would have followed a lower symlink (or failed on a file): the layer's
        // entries below went elsewhere. Checked even when the directory is gone since.
        if (hit.kind !== "dir") throw new LowersConflict(path, this.#lowerPaths);
        if (current.get(p.key) !== p) continue;
        dfd = this.#openReal(p.parent);
        const st = dfd === null ? null : statAt(dfd, p.base);
        if (dfd === null || st === null || !isDir(st) || inodeKey(st) !== p.key) continue;
        const target: Target = { dirfd: dfd, name: p.base, kind: "dir", entry: p.entry };
        if (p.explicit) {
          // The layer's own entry set owner, mode and times after the lower's would have been:
          // only the xattrs it did not set come from below.
          this.#copyXattrs(hit, target);
          continue;
        }
        const low = hit.st;
        this.#chown(target, low.uid, low.gid);
        this.#copyXattrs(hit, target);
        const mode = low.mode & 0o7777;
        sys.fchmodat(dfd, p.base, this.#rootless ? mode | 0o700 : mode, sys.AT_SYMLINK_NOFOLLOW);
        const times: [sys.Timespec, sys.Timespec] = [low.atime, low.mtime];
        sys.utimensat(dfd, p.base, times, sys.AT_SYMLINK_NOFOLLOW);
        p.rec.times = times;
        if (this.#rootless) p.rec.mode = mode;
      } catch (err) {
        throw entryError(p.entry, `cannot complete the implied directory ${quote(path)}`, err);
      } finally {
        closeQuietly(hit.dirfd);
        if (dfd !== null) closeQuietly(dfd);
      }
    }
  }

  /** Opens the directory at the resolved path `rel` without following symlinks, or `null`. */
  #openReal(rel: string): number | null {
    try {
      return sys.openat2(this.#root, rel === "" ? "." : rel, {
        flags: DIR_PATH,
        resolve: sys.RESOLVE_BENEATH | sys.RESOLVE_NO_SYMLINKS | sys.RESOLVE_NO_MAGICLINKS,
      });
    } catch (err) {
      if (sys.isErrno(err, "ENOENT", "ENOTDIR", "ELOOP", "EXDEV", "EAGAIN")) return null;
      throw err;
    }
  }

  #recordDir(
    dirfd: number,
    name: string,
    st: sys.Stat,
    mode: number | undefined,
    times: [sys.Timespec, sys.Timespec],
  ): void {
    // The path is recomputed from the descriptor: implied directories may sit behind symlinks.
    const path = this.#pathOf(dirfd);
    if (path === null) return;
    const rec: DirRecord = {
      parent: path,
      base: name,
      depth: path === "" ? 0 : path.split("/").length,
      key: inodeKey(st),
      times,
    };
    if (mode !== undefined) rec.mode = mode;
    this.#dirs.push(rec);
  }

  /** The path of a directory descriptor relative to the root, or `null` when it is elsewhere. */
  #pathOf(dirfd: number): string | null {
    const root = sys.readlinkat(sys.AT_FDCWD, `/proc/self/fd/${this.#root}`);
    const dir = sys.readlinkat(sys.AT_FDCWD, `/proc/self/fd/${dirfd}`);
    if (dir === root) return "";
    const prefix = root === "/" ? "/" : `${root}/`;
    return dir.startsWith(prefix) ? dir.slice(prefix.length) : null;
  }

  #copyXattrs(hit: LowerHit, target: Target): void {
    const src = procPath(hit.dirfd, hit.name);
    let names: string[];
    try {
      names = sys.llistxattr(src);
    } catch (err) {
      if (sys.isErrno(err, "EOPNOTSUPP")) return;
      throw err;
    }
    for (const name of names) {
      if (name.startsWith("trusted.") || name.startsWith("user.overlay.")) continue;
      try {
        sys.lsetxattr(
          procPath(target.dirfd, target.name),
          name,
          sys.lgetxattr(src, name),
          sys.XATTR_CREATE,
        );
      } catch (err) {
        if (sys.isErrno(err, "EOPNOTSUPP", "ENODATA", "EEXIST")) continue;
        if (sys.isErrno(err, "EPERM") && this.#unprivileged()) {
          this.#skip(
            target.entry,
            `xattr "${name}" of an implied directory not copied: no privilege`,
          );
          continue;
        }
        throw err;
      }
    }
  }

  #setOpaque(dirfd: number, name: string): void {
    sys.lsetxattr(procPath(dirfd, name), `${this.#prefix}opaque`, new Uint8Array([0x79]));
  }

  // --- entries ---------------------------------------------------------------------------------

  /**
   * Applies one entry (its body is read here when it is written).
   *
   * @param entry The entry.
   */
  async apply(entry: TarEntry): Promise<void> {
    // The lowers asked for ahead are there: from now on entries see them as sequential would.
    if (this.#asked?.settled && this.#awaitLowers !== null) await this.#loadLowers();
    for (;;) {
      try {
        return await this.#apply(entry);
      } catch (err) {
        if (!(err instanceof LowersPending)) throw err;
        await this.#loadLowers();
      }
    }
  }

  async #apply(entry: TarEntry): Promise<void> {
    const h = entry.header;
    const raw = h.name;
    if (raw.includes("\0")) {
      throw new InvalidArgument(`Cannot apply layer entry ${quote(raw)}: the name contains a NUL`);
    }
    const name = cleanName(raw);
    if (name === "") {
      this.#skip(raw, "resolves to the root directory, which a layer never changes");
      return;
    }
    if (nameByteLength(name) > MAX_PATH) {
      throw new InvalidArgument(
        `Cannot apply layer entry ${quote(raw)}: the path is longer than ${MAX_PATH} bytes`,
      );
    }
    const [parent, base] = splitName(name);
    const first = name.split("/", 1)[0]!;
    if (first.startsWith(WH_META_PREFIX) && name !== WH_OPAQUE) {
      this.#skip(raw, "AUFS metadata (.wh..wh.*) is not applied");
      return;
    }
    try {
      if (base === WH_OPAQUE) return this.#opaque(parent, raw);
      if (base.startsWith(WH_PREFIX)) {
        const x = base.slice(WH_PREFIX.length);
        if (x === "" || x === "." || x === "..") {
          throw new InvalidArgument(
            `Cannot apply layer entry ${quote(raw)}: invalid whiteout name`,
          );
        }
        return this.#whiteout(parent, x, h, raw);
      }
      switch (h.type) {
        case "file":
          return await this.#file(parent, base, h, raw, entry.body);
        case "directory":
          return this.#directory(parent, base, h, raw);
        case "symlink":
          return this.#symlink(parent, base, h, raw);
        case "hardlink":
          return this.#hardlink(parent, base, h, raw);
        case "char":
          // A 0:0 character device is an overlayfs whiteout: treated as one on every policy.
          if (h.devmajor === 0 && h.devminor === 0) return this.#whiteout(parent, base, h, raw);
          return this.#node(parent, base, h, raw);
        case "block":
        case "fifo":
          return this.#node(parent, base, h, raw);
        default:
          throw new InvalidArgument(
            `Cannot apply layer entry ${quote(raw)}: unhandled tar header type ${
              JSON.stringify(h.typeflag)
            }`,
          );
      }
    } catch (err) {
      throw entryError(raw, "cannot apply it", err);
    }
  }

  /** Makes room for a new object at `name` in `dirfd`: removes what is there (a whole tree). */
  #clear(dirfd: number, name: string): void {
    this.#remove(dirfd, name, null);
  }

  /** Removes `name` in `dirfd` (a whole tree); cached resolutions are stale from now on. */
  #remove(dirfd: number, name: string, st: sys.Stat | null): void {
    this.#stale = true;
    removeAt(dirfd, name, st, this.#rootless);
  }

  async #file(
    parent: string,
    base: string,
    h: TarHeader,
    raw: string,
    body: AsyncIterable<Uint8Array>,
  ): Promise<void> {
    // The parent descriptors from #parent belong to the tree's cache: never closed here.
    const pfd = this.#parent(parent, raw, "all")!;
    const flags = sys.O_WRONLY | sys.O_CREAT | sys.O_EXCL | sys.O_NOFOLLOW | sys.O_CLOEXEC;
    let fd: number;
    try {
      fd = sys.openat(pfd, base, flags, 0o600);
    } catch (err) {
      if (!sys.isErrno(err, "EEXIST")) throw err;
      this.#clear(pfd, base);
      fd = sys.openat(pfd, base, flags, 0o600);
    }
    try {
      if (h.sparse !== undefined) {
        await writeSparse(fd, h.sparse, body);
      } else {
        for await (const chunk of body) sys.writeAll(fd, chunk);
      }
      const st = sys.fstat(fd);
      this.#mark(st);
      this.#metadata({ dirfd: pfd, name: base, fd, kind: "file", entry: raw, st }, h);
    } finally {
      sys.close(fd);
    }
  }

  #directory(parent: string, base: string, h: TarHeader, raw: string): void {
    const pfd = this.#parent(parent, raw, "all")!;
    let st = statAt(pfd, base);
    let opaque = false;
    if (st !== null && !isDir(st)) {
      // On the overlay policies a directory replacing this layer's whiteout must not merge
      // with the lower directory the whiteout deleted.
      opaque = this.#overlay && isWhiteoutDevice(st);
      this.#clear(pfd, base);
      st = null;
    }
    if (st === null) {
      sys.mkdirat(pfd, base, 0o700);
      st = sys.statx(pfd, base, sys.AT_SYMLINK_NOFOLLOW);
      if (opaque) this.#setOpaque(pfd, base);
      this.#provisionalKeys.delete(inodeKey(st));
    } else {
      const p = this.#provisionalKeys.get(inodeKey(st));
      if (p !== undefined) p.explicit = true;
    }
    this.#mark(st);
    this.#listed.add(inodeKey(st));
    this.#metadata({ dirfd: pfd, name: base, kind: "dir", entry: raw, st }, h);
    const rec: DirRecord = {
      parent,
      base,
      depth: parent === "" ? 0 : parent.split("/").length,
      key: inodeKey(st),
      times: headerTimes(h),
    };
    if (this.#rootless) rec.mode = h.mode & 0o7777;
    this.#dirs.push(rec);
  }

  #symlink(parent: string, base: string, h: TarHeader, raw: string): void {
    if (h.linkname === "") {
      throw new InvalidArgument(`Cannot apply layer entry ${quote(raw)}: the symlink is empty`);
    }
    const pfd = this.#parent(parent, raw, "all")!;
    try {
      sys.symlinkat(h.linkname, pfd, base);
    } catch (err) {
      if (!sys.isErrno(err, "EEXIST")) throw err;
      this.#clear(pfd, base);
      sys.symlinkat(h.linkname, pfd, base);
    }
    const st = sys.statx(pfd, base, sys.AT_SYMLINK_NOFOLLOW);
    this.#mark(st);
    this.#metadata({ dirfd: pfd, name: base, kind: "symlink", entry: raw, st }, h);
  }

  #hardlink(parent: string, base: string, h: TarHeader, raw: string): void {
    const target = cleanName(h.linkname);
    if (target === "") {
      throw new InvalidArgument(
        `Cannot apply layer entry ${quote(raw)}: its hardlink target ${
          quote(h.linkname)
        } is the root directory`,
      );
    }
    if (nameByteLength(target) > MAX_PATH) {
      throw new InvalidArgument(
        `Cannot apply layer entry ${
          quote(raw)
        }: the hardlink target is longer than ${MAX_PATH} bytes`,
      );
    }
    const [tparent, tbase] = splitName(target);
    let tfd = this.#openDir(tparent, raw);
    if (this.#overlay && this.#mayHaveLowers() && (tfd === null || statAt(tfd, tbase) === null)) {
      // On an overlay upperdir the target may exist only in a lower layer: copy it up.
      if (tfd !== null) sys.close(tfd);
      this.#needLowers();
      tfd = this.#copyUp(tparent, tbase, raw);
    }
    if (tfd === null) throw this.#missingTarget(raw, h.linkname);
    try {
      const pfd = this.#parent(parent, raw, "all")!;
      try {
        sys.linkat(tfd, tbase, pfd, base, 0);
      } catch (err) {
        if (!sys.isErrno(err, "EEXIST")) throw this.#linkError(err, raw, h.linkname, tfd, tbase);
        this.#clear(pfd, base);
        try {
          sys.linkat(tfd, tbase, pfd, base, 0);
        } catch (err2) {
          throw this.#linkError(err2, raw, h.linkname, tfd, tbase);
        }
      }
      const st = sys.statx(pfd, base, sys.AT_SYMLINK_NOFOLLOW);
      this.#mark(st);
      // Like containerd, the link's header metadata goes to the shared inode.
      this.#metadata({ dirfd: pfd, name: base, kind: kindOf(st), entry: raw, st }, h);
    } finally {
      sys.close(tfd);
    }
  }

  #missingTarget(raw: string, linkname: string): InvalidArgument {
    return new InvalidArgument(
      `Cannot apply layer entry ${quote(raw)}: its hardlink target ${
        quote(linkname)
      } does not exist`,
    );
  }

  #linkError(err: unknown, raw: string, linkname: string, tfd: number, tbase: string): Error {
    if (sys.isErrno(err, "ENOENT")) return this.#missingTarget(raw, linkname);
    if (sys.isErrno(err, "EPERM")) {
      const st = statAt(tfd, tbase);
      if (st !== null && isDir(st)) {
        return new InvalidArgument(
          `Cannot apply layer entry ${quote(raw)}: its hardlink target ${
            quote(linkname)
          } is a directory`,
          { cause: err },
        );
      }
    }
    return entryError(raw, `cannot link to ${quote(linkname)}`, err);
  }

  /**
   * Copies `tparent/tbase` up from the lower layers into the upper directory (parents included),
   * with its content, owner, xattrs (not `trusted.*`), mode and times.
   *
   * @returns The directory now holding it, or `null` when no layer has it.
   */
  #copyUp(tparent: string, tbase: string, raw: string): number | null {
    const dir = this.#walk(tparent, raw, "merged");
    if (dir === null) return null;
    try {
      if (statAt(dir.fd, tbase) !== null) return dir.fd;
      const hit = this.#lowers.lookup(dir.path, tbase);
      if (hit === null) {
        sys.close(dir.fd);
        return null;
      }
      try {
        const st = hit.st;
        const target: Target = { dirfd: dir.fd, name: tbase, kind: kindOf(st), entry: raw };
        switch (st.mode & sys.S_IFMT) {
          case sys.S_IFDIR:
            throw new InvalidArgument(
              `Cannot apply layer entry ${quote(raw)}: its hardlink target is a directory`,
            );
          case sys.S_IFREG:
            this.#copyFileUp(hit, dir.fd, tbase);
            break;
          case sys.S_IFLNK:
            sys.symlinkat(sys.readlinkat(hit.dirfd, hit.name), dir.fd, tbase);
            break;
          default:
            sys.mknodat(dir.fd, tbase, st.mode, st.rdev);
        }
        this.#chown(target, st.uid, st.gid);
        this.#copyXattrs(hit, target);
        if (target.kind !== "symlink") {
          sys.fchmodat(dir.fd, tbase, st.mode & 0o7777, sys.AT_SYMLINK_NOFOLLOW);
        }
        sys.utimensat(dir.fd, tbase, [st.atime, st.mtime], sys.AT_SYMLINK_NOFOLLOW);
        return dir.fd;
      } finally {
        closeQuietly(hit.dirfd);
      }
    } catch (err) {
      closeQuietly(dir.fd);
      throw err;
    }
  }

  #copyFileUp(hit: LowerHit, dirfd: number, name: string): void {
    const src = sys.openat(hit.dirfd, hit.name, sys.O_RDONLY | sys.O_NOFOLLOW | sys.O_CLOEXEC);
    try {
      const dst = sys.openat(
        dirfd,
        name,
        sys.O_WRONLY | sys.O_CREAT | sys.O_EXCL | sys.O_NOFOLLOW | sys.O_CLOEXEC,
        0o600,
      );
      try {
        let left = hit.st.size;
        while (left > 0) {
          const n = sys.copyFileRange(src, null, dst, null, Math.min(left, 1 << 30));
          if (n === 0) break;
          left -= n;
        }
      } finally {
        sys.close(dst);
      }
    } finally {
      sys.close(src);
    }
  }

  #node(parent: string, base: string, h: TarHeader, raw: string): void {
    const device = h.type === "char" || h.type === "block";
    if (device) {
      for (const n of [h.devmajor, h.devminor]) {
        if (!(Number.isInteger(n) && n >= 0 && n <= 0xffffffff)) {
          throw new InvalidArgument(
            `Cannot apply layer entry ${
              quote(raw)
            }: device number ${h.devmajor}:${h.devminor} is out of range`,
          );
        }
      }
      if (this.#unprivileged()) {
        this.#skip(raw, `${h.type} device ${h.devmajor}:${h.devminor} not created: no privilege`);
        return;
      }
    }
    const type = h.type === "char" ? sys.S_IFCHR : h.type === "block" ? sys.S_IFBLK : sys.S_IFIFO;
    const dev = device ? sys.makedev(h.devmajor, h.devminor) : 0;
    const pfd = this.#parent(parent, raw, "all")!;
    const mode = type | (h.mode & 0o7777);
    try {
      sys.mknodat(pfd, base, mode, dev);
    } catch (err) {
      if (!sys.isErrno(err, "EEXIST")) throw err;
      this.#clear(pfd, base);
      sys.mknodat(pfd, base, mode, dev);
    }
    const st = sys.statx(pfd, base, sys.AT_SYMLINK_NOFOLLOW);
    this.#mark(st);
    this.#metadata({ dirfd: pfd, name: base, kind: "other", entry: raw, st }, h);
  }

  // --- whiteouts -------------------------------------------------------------------------------

  #whiteout(parent: string, name: string, h: TarHeader, raw: string): void {
    if (!this.#overlay) {
      // Nothing to delete when the directory does not resolve to one.
      let pfd: number | null;
      try {
        pfd = this.#openDir(parent, raw);
      } catch (err) {
        if (err instanceof InvalidArgument) return;
        throw err;
      }
      if (pfd === null) return;
      try {
        const st = statAt(pfd, name);
        if (st === null) return;
        if (isDir(st)) {
          if (!this.#hideLowersIn(pfd, name, st)) this.#remove(pfd, name, st);
          return;
        }
        // Whiteouts apply to lower layers only: what this layer made stays.
        if (this.#layer.has(inodeKey(st))) return;
        this.#remove(pfd, name, st);
      } finally {
        sys.close(pfd);
      }
      return;
    }
    const pfd = this.#parent(parent, raw, "merged");
    if (pfd === null) return;
    // In an opaque directory nothing below shows through, and overlayfs would list a whiteout
    // there (it reads such a directory as it is) while lookups of its name fail: none is made.
    // overlayfs itself never leaves one there either.
    if (this.#lowers.isOpaque(pfd)) return;
    const st = statAt(pfd, name);
    if (st !== null) {
      if (isWhiteoutDevice(st)) return;
      const mine = this.#layer.has(inodeKey(st));
      if (mine && (!isDir(st) || this.#hideLowersIn(pfd, name, st))) return;
      this.#clear(pfd, name);
    }
    try {
      sys.mknodat(pfd, name, sys.S_IFCHR, 0);
    } catch (err) {
      if (!(sys.isErrno(err, "EPERM") && this.#policy === "overlay-userxattr")) throw err;
      this.#xattrWhiteout(pfd, name);
      return;
    }
    this.#chown({ dirfd: pfd, name, kind: "other", entry: raw }, h.uid, h.gid);
  }

  /**
   * The whiteout overlayfs (6.7+) also accepts where 0:0 devices cannot be made: an empty file
   * with `user.overlay.whiteout`, in a directory marked `user.overlay.opaque=x`.
   */
  #xattrWhiteout(pfd: number, name: string): void {
    const fd = sys.openat(
      pfd,
      name,
      sys.O_WRONLY | sys.O_CREAT | sys.O_EXCL | sys.O_NOFOLLOW |
        sys.O_CLOEXEC,
      0o000,
    );
    try {
      sys.fsetxattr(fd, `${this.#prefix}whiteout`, new Uint8Array([0x79]));
    } finally {
      sys.close(fd);
    }
    sys.lsetxattr(procPath(pfd, ""), `${this.#prefix}opaque`, new Uint8Array([0x78]));
  }

  #opaque(parent: string, raw: string): void {
    this.#hideLowers(this.#parent(parent, raw, "all")!);
  }

  /**
   * Hides what the lower layers hold in the directory `dfd`, keeping what this layer put there:
   * removes the rest (`"delete"`), or makes it opaque and removes the whiteouts this layer made
   * in it, which now hide nothing (overlay policies).
   */
  #hideLowers(dfd: number): void {
    if (!this.#overlay) {
      this.#clearOpaque(dfd);
      return;
    }
    this.#setOpaque(dfd, "");
    for (const entry of readNames(dfd)) {
      const st = statAt(dfd, entry);
      if (st !== null && this.#lowers.isWhiteout(dfd, entry, st)) this.#remove(dfd, entry, st);
    }
  }

  /**
   * A whiteout of a directory this layer may have written into, which applies to the lower
   * layers only (OCI): what they hold there is hidden, what this layer put there stays. Returns
   * whether the directory stays: when this layer listed it or left something in it; otherwise
   * the caller deletes it (or whites it out).
   */
  #hideLowersIn(pfd: number, name: string, st: sys.Stat): boolean {
    const dfd = sys.openat(pfd, name, DIR_PATH | sys.O_NOFOLLOW);
    try {
      this.#hideLowers(dfd);
      return this.#listed.has(inodeKey(st)) || readNames(dfd).length > 0;
    } finally {
      sys.close(dfd);
    }
  }

  /** Removes everything below `dfd` that this layer did not make (descending into what it did). */
  #clearOpaque(dfd: number): void {
    for (const name of readNames(dfd)) {
      const st = statAt(dfd, name);
      if (st === null) continue;
      if (!this.#layer.has(inodeKey(st))) {
        this.#remove(dfd, name, st);
      } else if (isDir(st)) {
        const cfd = sys.openat(dfd, name, DIR_PATH | sys.O_NOFOLLOW);
        try {
          this.#clearOpaque(cfd);
        } finally {
          sys.close(cfd);
        }
      }
    }
  }

  // --- metadata --------------------------------------------------------------------------------

  /** Owner, then xattrs, then mode (never on symlinks), then times: containerd's order. */
  #metadata(target: Target, h: TarHeader): void {
    this.#chown(target, h.uid, h.gid);
    for (const [name, value] of Object.entries(h.xattrs)) this.#xattr(target, name, value);
    if (target.kind !== "symlink") {
      let mode = h.mode & 0o7777;
      if (target.kind === "dir" && this.#rootless) mode |= 0o700;
      if (target.fd !== undefined) sys.fchmod(target.fd, mode);
      else sys.fchmodat(target.dirfd, target.name, mode, sys.AT_SYMLINK_NOFOLLOW);
    }
    const times = headerTimes(h);
    if (target.fd !== undefined) sys.futimens(target.fd, times);
    else sys.utimensat(target.dirfd, target.name, times, sys.AT_SYMLINK_NOFOLLOW);
  }

  #chown(target: Target, uid: number, gid: number): void {
    // chown(2) of a non-directory drops file capabilities and setuid even when the owner does
    // not change, so an owner that is already right is left alone: a hardlink header without
    // xattrs (GNU tar writes none) must not strip the capabilities of the inode it shares.
    if (target.st !== undefined && target.st.uid === uid && target.st.gid === gid) return;
    try {
      if (target.fd !== undefined) sys.fchown(target.fd, uid, gid);
      else sys.fchownat(target.dirfd, target.name, uid, gid, sys.AT_SYMLINK_NOFOLLOW);
    } catch (err) {
      if (!(sys.isErrno(err, "EPERM", "EINVAL") && this.#unprivileged())) throw err;
      const st = target.fd !== undefined
        ? sys.fstat(target.fd)
        : sys.statx(target.dirfd, target.name, sys.AT_SYMLINK_NOFOLLOW);
      if (st.uid !== uid || st.gid !== gid) {
        this.#skip(
          target.entry,
          `owner ${uid}:${gid} not set: no privilege (owned by ${st.uid}:${st.gid})`,
        );
      }
    }
  }

  #xattr(target: Target, name: string, value: Uint8Array): void {
    if (name.startsWith("trusted.")) {
      this.#skip(target.entry, `xattr "${name}" not set: trusted.* is never taken from a layer`);
      return;
    }
    if (this.#policy === "overlay-userxattr" && name.startsWith("user.overlay.")) {
      this.#skip(
        target.entry,
        `xattr "${name}" not set: user.overlay.* would steer the overlay (userxattr mode)`,
      );
      return;
    }
    try {
      if (target.fd !== undefined) sys.fsetxattr(target.fd, name, value);
      else sys.lsetxattr(procPath(target.dirfd, target.name), name, value);
    } catch (err) {
      if (sys.isErrno(err, "EOPNOTSUPP")) {
        this.#skip(target.entry, `xattr "${name}" not set: not supported here`);
        return;
      }
      if (sys.isErrno(err, "EPERM")) {
        if (name.startsWith("user.") && target.kind !== "file" && target.kind !== "dir") {
          this.#skip(target.entry, `xattr "${name}" not set: user.* needs a file or directory`);
          return;
        }
        if (this.#unprivileged()) {
          this.#skip(target.entry, `xattr "${name}" not set: no privilege`);
          return;
        }
      }
      if (sys.isErrno(err, "E2BIG", "ERANGE", "ENOSPC", "EINVAL")) {
        throw new InvalidArgument(
          `Cannot apply layer entry ${
            quote(target.entry)
          }: cannot set xattr "${name}" (${value.length} bytes): ${(err as Error).message}`,
          { cause: err },
        );
      }
      throw entryError(target.entry, `cannot set xattr "${name}"`, err);
    }
  }

  /**
   * Reconciles the provisional directories (waiting for the lower layers when there are any),
   * then sets the times (and, rootless, the modes) of directories again, deepest first, now that
   * no more children will be created in them. A directory that was removed or replaced since is
   * left alone.
   *
   * @throws {LowersConflict} See {@linkcode TreeOptions.provisional}.
   */
  async finish(): Promise<void> {
    if (this.#provisionals.length > 0) await this.#loadLowers();
    const dirs = this.#dirs;
    this.#dirs = [];
    const order = dirs.map((_, i) => i).sort((a, b) => dirs[b]!.depth - dirs[a]!.depth || a - b);
    for (const i of order) {
      const rec = dirs[i]!;
      const entry = rec.parent === "" ? rec.base : `${rec.parent}/${rec.base}`;
      let pfd: number | null;
      try {
        pfd = this.#openDir(rec.parent, entry);
      } catch (err) {
        if (err instanceof InvalidArgument) continue;
        throw err;
      }
      if (pfd === null) continue;
      try {
        const st = statAt(pfd, rec.base);
        if (st === null || !isDir(st) || inodeKey(st) !== rec.key) continue;
        if (rec.mode !== undefined) {
          sys.fchmodat(pfd, rec.base, rec.mode, sys.AT_SYMLINK_NOFOLLOW);
        }
        if (rec.times !== undefined) {
          sys.utimensat(pfd, rec.base, rec.times, sys.AT_SYMLINK_NOFOLLOW);
        }
      } catch (err) {
        throw entryError(entry, "cannot restore the directory's times", err);
      } finally {
        sys.close(pfd);
      }
    }
  }
}
