/**
 * Checking an unpacked image: each committed snapshot of the image's chain is compared with the
 * layers it was made from, entry by entry, so damage that a power cut or a stray hand left behind
 * (zero-length files, missing files, replaced files) shows up as a list of differences.
 *
 * How layers map to snapshots depends on the snapshotter:
 *
 * - `native`: the snapshot of chain i is the whole tree as of layer i (a copy of its parent with
 *   layer i applied), so it is compared with layers 0..i replayed on top of each other: every
 *   entry still standing must be there, every whiteout's or opaque directory's victim absent.
 * - `overlayfs`: the snapshot's `fs` directory (the overlay upperdir) holds exactly layer i's
 *   changes: its entries, whiteouts as 0:0 character devices (or `user.overlay.*` xattr
 *   whiteouts), opaque directories marked with the `overlay.opaque` xattr. Directories that a
 *   lower layer made symlinks are followed through the parents' directories, as the applier did.
 *   The bottom snapshot is a plain directory (its layer was applied through a bind mount), so it
 *   is compared like a native one.
 *
 * Compared per path: the type; a regular file's size and sha256 content digest (of a sparse file:
 * the size and its data segments; holes are not read); a symlink's target; that a hardlink still
 * shares its target's inode; device numbers; permission bits (not for symlinks); owners (not in
 * rootless mode, where the applier could not set them); implied parent directories (existence
 * only). Times and xattrs other than the overlay markers are not compared, and files that no
 * layer made are not looked for. The layer's diff ID is recomputed from its blob as well.
 *
 * Entries are replayed in archive order the way the applier applies them: a later entry at the
 * same path wins; a non-directory replaces a whole subtree; a whiteout or opaque marker spares
 * what the same layer made (implied parent directories included) and removes what lower layers
 * made, in a directory the layer wrote into as well.
 *
 * @module
 */

import { createHash, type Hash, randomBytes } from "node:crypto";
import process from "node:process";
import type { ContentStore } from "../content/mod.ts";
import { cleanName } from "../diff/_apply_fs.ts";
import { decompress } from "../diff/compression.ts";
import { readTar, type TarHeader, type TarSparseSegment } from "../diff/tar/mod.ts";
import { AlreadyExists, FailedPrecondition, isNotFound, NotFound } from "../errors.ts";
import { chainIds, imageLayers } from "../images/mod.ts";
import type { Descriptor, ImageRecord, MatchComparer } from "../images/mod.ts";
import { singleBindSource } from "../mount/mod.ts";
import type { Mount } from "../mount/types.ts";
import type { Snapshotter } from "../snapshotters/types.ts";
import * as sys from "../sys/mod.ts";

/** What kind of difference {@linkcode checkUnpacked} found. */
export type CheckProblem =
  /** The entry is not in the snapshot (or a directory on its way is not). */
  | "missing"
  /** The object has another type (a symlink where a file should be, ...). */
  | "type"
  /** A regular file has another size. */
  | "size"
  /** A regular file of the right size has other content. */
  | "digest"
  /** A symlink points elsewhere. */
  | "link"
  /** A hardlink does not share its target's inode. */
  | "hardlink"
  /** A device has other device numbers. */
  | "device"
  /** Other permission bits. */
  | "mode"
  /** Another owner. */
  | "owner"
  /** A whiteout's target is present (native), or the whiteout is not there (overlayfs). */
  | "whiteout"
  /** A directory the layer marks opaque is not marked (overlayfs). */
  | "opaque"
  /** The layer blob's uncompressed digest is not the diff ID the image config names. */
  | "diff-id";

/** One difference between a layer and the snapshot made from it. */
export interface CheckDifference {
  /** The committed snapshot (the chain ID of the layer and everything below it). */
  chainId: string;
  /** The layer blob's digest. */
  layer: string;
  /** The entry's path in the snapshot (`/etc/hostname`); `""` for the layer as a whole. */
  path: string;
  /** What is wrong. */
  problem: CheckProblem;
  /** What the layer says, in words (`65536 bytes`, `file`, `sha256:...`). */
  expected: string;
  /** What the snapshot holds, in words. */
  actual: string;
}

/** One layer that {@linkcode checkUnpacked} compared. */
export interface CheckedLayer {
  /** The layer's position, bottom first. */
  index: number;
  /** The layer blob's digest. */
  digest: string;
  /** The layer's diff ID. */
  diffId: string;
  /** The snapshot compared with it. */
  chainId: string;
  /** Tar entries read. */
  entries: number;
  /** Paths compared (after replaying the layer's entries). */
  checked: number;
}

/** What {@linkcode checkUnpacked} found. */
export interface CheckReport {
  /** The image's name. */
  image: string;
  /** The snapshotter checked. */
  snapshotter: string;
  /** The image's top chain ID. */
  chainId: string;
  /** The layers compared, bottom first. */
  layers: CheckedLayer[];
  /** Every difference, layer by layer, paths in sorted order; empty when the image is intact. */
  differences: CheckDifference[];
}

/** Options of {@linkcode checkUnpacked}. */
export interface CheckOptions {
  /** The snapshotter's name (default: the client's default). */
  snapshotter?: string;
  /** Picks the manifest from an index (default: every platform, first match in document order). */
  platform?: MatchComparer;
  /**
   * The image was unpacked without privileges: owners and devices are not compared (the applier
   * could not set or create them). Default: `Deno.uid() !== 0`.
   */
  rootless?: boolean;
  /** Stops the check between layers and files. */
  signal?: AbortSignal;
}

/** What {@linkcode checkUnpacked} needs from a client. */
export interface CheckTarget {
  /** The content store holding the image. */
  content: ContentStore;
  /** Opens a snapshotter by name (default when omitted). */
  snapshotter(name?: string): Promise<Snapshotter>;
}

/** Where a committed snapshot's files are, found by {@linkcode snapshotDirs}. */
export interface SnapshotDirs {
  /**
   * The snapshot's own directory: the whole tree (native), or the layer's changes (the overlay
   * `fs` directory).
   */
  dir: string;
  /** The parents' directories, immediate parent first (overlayfs; empty for native). */
  lowers: string[];
}

const WH_PREFIX = ".wh.";
const WH_META_PREFIX = ".wh..wh.";
const WH_OPAQUE = ".wh..wh..opq";
const MAX_LINKS = 255;
const READ_SIZE = 1 << 20;

/**
 * The directories of a committed snapshot, from the mounts of a read-only view whose parent is
 * that snapshot: a single bind mount (native; overlayfs with one layer) is the snapshot's
 * directory; an overlay without `upperdir` lists the snapshot's directory first in `lowerdir`,
 * then its parents'.
 *
 * @example
 * ```ts
 * import { snapshotDirsFromView } from "@strata/strata/unpack";
 * const dirs = snapshotDirsFromView([{
 *   type: "overlay",
 *   source: "overlay",
 *   options: ["lowerdir=/s/snapshots/3/fs:/s/snapshots/1/fs"],
 * }]);
 * console.log(dirs.dir, dirs.lowers);
 * ```
 *
 * @param mounts The view's mounts.
 * @returns The snapshot's directory and its parents'.
 * @throws {FailedPrecondition} For mounts of any other shape.
 */
export function snapshotDirsFromView(mounts: readonly Mount[]): SnapshotDirs {
  const bind = singleBindSource(mounts);
  if (bind !== undefined) return { dir: bind, lowers: [] };
  const [mount] = mounts;
  if (mounts.length === 1 && mount !== undefined && mount.type === "overlay") {
    let lowerdir: string | undefined;
    let upper = false;
    for (const o of mount.options) {
      if (o.startsWith("lowerdir=")) lowerdir = o.slice("lowerdir=".length);
      if (o.startsWith("upperdir=")) upper = true;
    }
    if (lowerdir !== undefined && lowerdir !== "" && !upper && !lowerdir.includes("\\")) {
      const [dir, ...lowers] = lowerdir.split(":");
      return { dir: dir!, lowers };
    }
  }
  throw new FailedPrecondition(
    `Cannot find a snapshot's directory from mounts ${
      JSON.stringify(mounts.map((m) => `${m.type}:${m.source}`))
    }: expected one bind mount or one read-only overlay`,
  );
}

/**
 * Finds the directories of a committed snapshot: makes a view on it (under a unique key),
 * reads the view's mounts with {@linkcode snapshotDirsFromView} and removes the view. The
 * directories stay valid as long as the snapshot exists.
 *
 * @example
 * ```ts ignore
 * import { Client } from "@strata/strata";
 * import { snapshotDirs } from "@strata/strata/unpack";
 * const client = Client.open();
 * const sn = await client.snapshotter("overlayfs");
 * console.log(await snapshotDirs(sn, "sha256:..."));
 * ```
 *
 * @param snapshotter The snapshotter.
 * @param name The committed snapshot's name.
 * @returns Its directory and its parents'.
 * @throws {NotFound} When there is no such snapshot.
 * @throws {FailedPrecondition} When it is not committed, or its view's mounts have another shape.
 */
export async function snapshotDirs(snapshotter: Snapshotter, name: string): Promise<SnapshotDirs> {
  const info = await snapshotter.stat(name);
  if (info.kind !== "committed") {
    throw new FailedPrecondition(
      `Cannot find the directory of snapshot "${name}": it is ${info.kind}, not committed`,
    );
  }
  let key = viewKey(name);
  let mounts: Mount[];
  for (let attempt = 0;; attempt++) {
    try {
      mounts = await snapshotter.view(key, { parent: name });
      break;
    } catch (err) {
      if (!(err instanceof AlreadyExists) || attempt >= 3) throw err;
      key = viewKey(name);
    }
  }
  try {
    return snapshotDirsFromView(mounts);
  } finally {
    await snapshotter.remove(key);
  }
}

function viewKey(name: string): string {
  return `check-${process.hrtime.bigint()}-${randomBytes(3).toString("base64url")} ${name}`;
}

/**
 * Verifies that an unpacked image's snapshots still hold what its layers say. Each layer blob is
 * read again (decompressed, its diff ID recomputed) and its entries are compared with the
 * committed snapshot of the same chain ID; see the module documentation for the rules. Nothing is
 * changed, except for a short-lived view per layer used to find the snapshot's directory.
 *
 * @example Check an image unpacked into the overlay snapshotter
 * ```ts ignore
 * import { Client } from "@strata/strata";
 * import { checkUnpacked } from "@strata/strata/unpack";
 * const client = Client.open();
 * const image = client.images.get("docker.io/library/alpine:latest");
 * const report = await checkUnpacked(client, image, { snapshotter: "overlayfs" });
 * for (const d of report.differences) console.log(d.path, d.problem);
 * ```
 *
 * @param target The client (content store and snapshotters).
 * @param image The image record.
 * @param options Snapshotter, platform, rootless mode, abort signal.
 * @returns The layers compared and every difference found.
 * @throws {FailedPrecondition} When the image is not unpacked in the snapshotter, or a layer blob
 *   is no longer in the content store.
 * @throws {InvalidArgument} When a layer blob is not a readable (compressed) tar.
 */
export async function checkUnpacked(
  target: CheckTarget,
  image: ImageRecord,
  options: CheckOptions = {},
): Promise<CheckReport> {
  const content = target.content;
  const platformOpt = options.platform ? { platform: options.platform } : {};
  const layers = await imageLayers(content, image.target, platformOpt);
  const snapshotter = await target.snapshotter(options.snapshotter);
  const chain = chainIds(layers.map((l) => l.diffId));
  const report: CheckReport = {
    image: image.name,
    snapshotter: snapshotter.name,
    chainId: chain.at(-1) ?? "",
    layers: [],
    differences: [],
  };
  if (report.chainId === "") return report;
  if (!(await isCommitted(snapshotter, report.chainId))) {
    throw new FailedPrecondition(
      `Cannot check image "${image.name}": it is not unpacked in snapshotter "${snapshotter.name}" (snapshot "${report.chainId}" is not committed)`,
    );
  }
  const rootless = options.rootless ?? Deno.uid() !== 0;
  const overlay = snapshotter.name === "overlayfs";
  // Native snapshots hold the whole tree: one replay of the chain. Overlay snapshots hold one
  // layer each; the bottom one is a bind mount, applied like a plain directory.
  const tree = new Replay("tree");
  for (const [i, layer] of layers.entries()) {
    options.signal?.throwIfAborted();
    const chainId = chain[i]!;
    const upper = overlay && i > 0;
    const replay = upper ? new Replay("upper") : tree;
    replay.layer = i;
    const read = await readLayer(content, layer.blob, replay, { rootless, image: image.name });
    const diff = (path: string, problem: CheckProblem, expected: string, actual: string) =>
      report.differences.push({
        chainId,
        layer: layer.blob.digest,
        path,
        problem,
        expected,
        actual,
      });
    if (read.diffId !== layer.diffId) diff("", "diff-id", layer.diffId, read.diffId);
    const dirs = await snapshotDirs(snapshotter, chainId);
    const checked = compareLayer(replay, dirs, {
      overlay: upper,
      rootless,
      diff,
      signal: options.signal,
    });
    report.layers.push({
      index: i,
      digest: layer.blob.digest,
      diffId: layer.diffId,
      chainId,
      entries: read.entries,
      checked,
    });
  }
  return report;
}

async function isCommitted(snapshotter: Snapshotter, name: string): Promise<boolean> {
  try {
    return (await snapshotter.stat(name)).kind === "committed";
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

// --- the layers, replayed -------------------------------------------------------------------

type ExpectKind = "file" | "dir" | "symlink" | "char" | "block" | "fifo" | "whiteout" | "lower";

/** What one object must look like. Hardlinks share the object of their target. */
interface Expect {
  kind: ExpectKind;
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  /** Hex sha256 of the content (of a sparse file: of its data segments, back to back). */
  digest?: string;
  /** A sparse file's data segments (holes are not read). */
  segments?: TarSparseSegment[];
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** A directory the layer marks opaque (overlayfs). */
  opaque?: boolean;
  /** A directory no entry names: only its type (and opaque mark) is compared. */
  implied?: boolean;
}

/** One path of the replayed layers. */
interface Slot {
  obj: Expect;
  /** The layer that made the object at this path. */
  layer: number;
  /** For a hardlink: its target, the target's object then, and when the link was made. */
  link?: { target: string; obj: Expect | undefined; serial: number };
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "" : path.slice(0, slash);
}

function baseOf(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

function ancestors(path: string): string[] {
  const out: string[] = [];
  for (let p = parentOf(path); p !== ""; p = parentOf(p)) out.push(p);
  return out;
}

function impliedDir(opaque = false): Expect {
  return { kind: "dir", mode: 0, uid: 0, gid: 0, implied: true, ...(opaque ? { opaque } : {}) };
}

/**
 * Layer entries replayed in archive order into the state the applier leaves behind.
 *
 * `"tree"` (native, and the bottom overlay snapshot): one replay for the whole chain, every
 * layer on top of the ones below, the way the applier works on a copy of the parent: implied
 * directories are recorded (they decide what whiteouts spare), whiteouts and opaque markers
 * remove what earlier layers made. `"upper"` (overlayfs above the bottom): one replay per layer,
 * whiteouts and opaque markers recorded as overlayfs markers.
 */
class Replay {
  readonly slots = new Map<string, Slot>();
  /** When each path last changed (entry serial numbers). */
  readonly changed = new Map<string, number>();
  #upper: boolean;
  /** Paths with at least one slot below them. */
  #parents = new Set<string>();
  serial = 0;
  layer = 0;

  constructor(mode: "tree" | "upper") {
    this.#upper = mode === "upper";
  }

  #set(path: string, obj: Expect, link?: Slot["link"]): void {
    const slot: Slot = { obj, layer: this.layer };
    if (link !== undefined) slot.link = link;
    this.slots.set(path, slot);
    this.changed.set(path, this.serial);
    for (const a of ancestors(path)) this.#parents.add(a);
    if (path !== "") this.#parents.add("");
  }

  #below(path: string): string[] {
    if (!this.#parents.has(path)) return [];
    const prefix = path === "" ? "" : `${path}/`;
    return [...this.slots.keys()].filter((k) => k !== path && k.startsWith(prefix));
  }

  #remove(path: string): void {
    for (const key of [path, ...this.#below(path)]) {
      if (this.slots.delete(key)) this.changed.set(key, this.serial);
    }
  }

  /** Directories on the way to a new object: implied ones recorded, whiteouts made dirs again. */
  #ancestorsFor(path: string): void {
    for (const a of ancestors(path).reverse()) {
      const slot = this.slots.get(a);
      if (slot === undefined) {
        // The applier creates missing parents (marking them as made by this layer).
        if (!this.#upper) this.#set(a, impliedDir());
      } else if (slot.obj.kind === "whiteout") {
        // A whiteout on the way: the applier removed it (tree) or turned its own whiteout into
        // a fresh opaque directory (upper).
        this.#set(a, impliedDir(this.#upper));
      } else if (slot.obj.kind === "symlink") {
        return; // Resolution leaves the literal path here; the check resolves it.
      }
    }
  }

  add(path: string, obj: Expect, link?: Slot["link"]): void {
    this.#ancestorsFor(path);
    const prev = this.slots.get(path);
    if (prev !== undefined && (obj.kind !== "dir" || prev.obj.kind !== "dir")) {
      this.#remove(path);
    }
    if (obj.kind === "dir" && prev !== undefined) {
      // An existing directory merges (and stays opaque); one replacing this layer's whiteout is
      // opaque on the upper policy.
      if (prev.obj.kind === "dir" && prev.obj.opaque) obj.opaque = true;
      if (prev.obj.kind === "whiteout" && this.#upper) obj.opaque = true;
    }
    this.#set(path, obj, link);
  }

  whiteout(path: string): void {
    if (ancestors(path).some((a) => this.slots.get(a)?.obj.kind === "whiteout")) return;
    // No whiteout in an opaque upper directory: nothing below shows through (the applier makes
    // none there, as overlayfs lists them while lookups fail).
    if (this.#upper && this.#opaqueDir(parentOf(path))) return;
    const prev = this.slots.get(path);
    // A directory (in the upperdir, one this layer implied has no slot): whiteouts apply to the
    // lower layers only, so what they hold there goes and what this layer put there stays; the
    // directory too when this layer listed it or left something in it.
    const isDir = prev === undefined
      ? this.#upper && this.#below(path).length > 0
      : prev.obj.kind === "dir";
    if (isDir) {
      if (this.#upper) {
        if (prev === undefined) this.#set(path, impliedDir(true));
        else prev.obj.opaque = true;
        this.#dropWhiteoutsIn(path);
      } else {
        this.#clearOpaque(path);
      }
      const listed = prev !== undefined && prev.layer === this.layer && !prev.obj.implied;
      if (listed || this.#below(path).some((k) => this.slots.get(k)?.obj.kind !== "whiteout")) {
        return;
      }
      this.#remove(path);
    } else if (prev !== undefined && prev.obj.kind !== "whiteout") {
      // Whiteouts apply to lower layers: what this layer made stays.
      if (prev.layer === this.layer) return;
      this.#remove(path);
    }
    this.#set(path, { kind: "whiteout", mode: 0, uid: 0, gid: 0 });
  }

  /** Removes the whiteouts this layer made directly in the (now opaque) upper directory `dir`. */
  #dropWhiteoutsIn(dir: string): void {
    const prefix = dir === "" ? "" : `${dir}/`;
    for (const child of this.#below(dir)) {
      if (child.slice(prefix.length).includes("/")) continue;
      if (this.slots.get(child)?.obj.kind === "whiteout") this.#remove(child);
    }
  }

  #opaqueDir(dir: string): boolean {
    const slot = this.slots.get(dir);
    return slot !== undefined && slot.obj.kind === "dir" && slot.obj.opaque === true;
  }

  opaque(dir: string): void {
    if (dir !== "") this.#ancestorsFor(`${dir}/x`);
    const slot = this.slots.get(dir);
    if (this.#upper) {
      if (slot !== undefined && slot.obj.kind === "dir") slot.obj.opaque = true;
      else this.#set(dir, impliedDir(true));
      // Whiteouts this layer made in it earlier are removed.
      this.#dropWhiteoutsIn(dir);
      return;
    }
    if (slot === undefined && dir !== "") this.#set(dir, impliedDir());
    this.#clearOpaque(dir);
  }

  /** Removes what earlier layers made below `dir`, descending into what this layer made. */
  #clearOpaque(dir: string): void {
    const prefix = dir === "" ? "" : `${dir}/`;
    const children = this.#below(dir).filter((k) => !k.slice(prefix.length).includes("/"));
    for (const child of children) {
      const slot = this.slots.get(child);
      if (slot === undefined) continue;
      if (slot.obj.kind === "whiteout") {
        this.#remove(child);
      } else if (slot.layer !== this.layer) {
        this.#remove(child);
        this.#set(child, { kind: "whiteout", mode: 0, uid: 0, gid: 0 }); // Now absent.
      } else if (slot.obj.kind === "dir") {
        this.#clearOpaque(child);
      }
    }
  }
}

async function* tap(
  source: AsyncIterable<Uint8Array>,
  hash: Hash,
): AsyncGenerator<Uint8Array, void, undefined> {
  for await (const chunk of source) {
    hash.update(chunk);
    yield chunk;
  }
}

function expectOf(h: TarHeader): Expect {
  const obj: Expect = { kind: "file", mode: h.mode & 0o7777, uid: h.uid, gid: h.gid };
  switch (h.type) {
    case "directory":
      obj.kind = "dir";
      break;
    case "symlink":
      obj.kind = "symlink";
      obj.linkname = h.linkname;
      break;
    case "char":
    case "block":
      obj.kind = h.type;
      obj.devmajor = h.devmajor;
      obj.devminor = h.devminor;
      break;
    case "fifo":
      obj.kind = "fifo";
      break;
  }
  return obj;
}

/** Replays one layer blob; returns its diff ID and number of entries. */
async function readLayer(
  content: ContentStore,
  blob: Descriptor,
  replay: Replay,
  options: { rootless: boolean; image: string },
): Promise<{ diffId: string; entries: number }> {
  let source: AsyncIterable<Uint8Array>;
  try {
    source = content.stream(blob.digest);
  } catch (err) {
    if (err instanceof NotFound) {
      throw new FailedPrecondition(
        `Cannot check layer ${blob.digest} of image "${options.image}": its blob is not in the content store`,
      );
    }
    throw err;
  }
  const diffHash = createHash("sha256");
  let entries = 0;
  for await (const entry of readTar(tap(decompress(source), diffHash))) {
    entries++;
    replay.serial++;
    const h = entry.header;
    const name = cleanName(h.name);
    const first = name.split("/", 1)[0]!;
    const base = baseOf(name);
    const skip = name === "" || name.includes("\0") ||
      (first.startsWith(WH_META_PREFIX) && name !== WH_OPAQUE);
    if (skip) continue;
    if (base === WH_OPAQUE) {
      replay.opaque(parentOf(name));
      continue;
    }
    if (base.startsWith(WH_PREFIX)) {
      const x = base.slice(WH_PREFIX.length);
      if (x === "" || x === "." || x === "..") continue;
      const parent = parentOf(name);
      replay.whiteout(parent === "" ? x : `${parent}/${x}`);
      continue;
    }
    switch (h.type) {
      case "file": {
        const obj = expectOf(h);
        const hash = createHash("sha256");
        for await (const chunk of entry.body) hash.update(chunk);
        obj.size = h.sparse?.realSize ?? h.size;
        obj.digest = hash.digest("hex");
        if (h.sparse !== undefined) obj.segments = h.sparse.segments;
        replay.add(name, obj);
        break;
      }
      case "hardlink": {
        const target = cleanName(h.linkname);
        if (target === "" || target === name) break;
        const t = replay.slots.get(target)?.obj;
        const usable = t !== undefined && t.kind !== "dir" && t.kind !== "whiteout";
        const obj: Expect = usable ? t : { kind: "lower", mode: 0, uid: 0, gid: 0 };
        // The link's header metadata goes to the shared inode.
        obj.mode = h.mode & 0o7777;
        obj.uid = h.uid;
        obj.gid = h.gid;
        replay.add(name, obj, { target, obj: usable ? t : undefined, serial: replay.serial });
        break;
      }
      case "char":
        if (h.devmajor === 0 && h.devminor === 0) {
          replay.whiteout(name);
          break;
        }
        if (!options.rootless) replay.add(name, expectOf(h));
        break;
      case "block":
        if (!options.rootless) replay.add(name, expectOf(h));
        break;
      case "directory":
      case "symlink":
      case "fifo":
        replay.add(name, expectOf(h));
        break;
      default:
        break; // The applier refuses other types: such a layer never made a snapshot.
    }
  }
  return { diffId: `sha256:${diffHash.digest("hex")}`, entries };
}

// --- the snapshot ---------------------------------------------------------------------------

function lstatOrNull(path: string): sys.Stat | null {
  try {
    return sys.lstat(path);
  } catch (err) {
    if (sys.isErrno(err, "ENOENT", "ENOTDIR")) return null;
    throw err;
  }
}

function typeName(st: sys.Stat): string {
  switch (st.mode & sys.S_IFMT) {
    case sys.S_IFREG:
      return "file";
    case sys.S_IFDIR:
      return "dir";
    case sys.S_IFLNK:
      return "symlink";
    case sys.S_IFCHR:
      return sys.major(st.rdev) === 0 && sys.minor(st.rdev) === 0 ? "whiteout" : "char";
    case sys.S_IFBLK:
      return "block";
    case sys.S_IFIFO:
      return "fifo";
    case sys.S_IFSOCK:
      return "socket";
    default:
      return "unknown";
  }
}

function xattrText(path: string, name: string): string | undefined {
  try {
    return new TextDecoder().decode(sys.lgetxattr(path, name));
  } catch (err) {
    if (sys.isErrno(err, "ENODATA", "EOPNOTSUPP", "EPERM", "ENOENT")) return undefined;
    throw err;
  }
}

function isOpaqueDir(path: string): boolean {
  if (xattrText(path, "trusted.overlay.opaque") === "y") return true;
  const user = xattrText(path, "user.overlay.opaque");
  return user === "y" || user === "x";
}

function isWhiteoutAt(path: string, st: sys.Stat): boolean {
  const type = st.mode & sys.S_IFMT;
  if (type === sys.S_IFCHR) return st.rdev === 0;
  if (type !== sys.S_IFREG || st.size !== 0) return false;
  return xattrText(path, "trusted.overlay.whiteout") !== undefined ||
    xattrText(path, "user.overlay.whiteout") !== undefined;
}

function join(...parts: string[]): string {
  return parts.filter((p) => p !== "").join("/");
}

/** Where a directory of a layer entry is in the snapshot. */
interface Resolved {
  /** Its path below the snapshot's directory (symlinks resolved). */
  path: string;
  /** Whether every directory on the way is in the snapshot's own directory. */
  complete: boolean;
}

/**
 * Resolves entry directories the way the applier did: symlinks followed inside the root, and on
 * overlayfs, symlinks (and directories) only the lower layers hold looked up through them.
 */
class Resolver {
  #root: string;
  #lowers: string[];
  #overlay: boolean;
  #cache = new Map<string, Resolved | null>();

  constructor(dirs: SnapshotDirs, overlay: boolean) {
    this.#root = dirs.dir;
    this.#lowers = overlay ? dirs.lowers : [];
    this.#overlay = overlay;
  }

  /** The absolute path of `rel` in the snapshot's own directory. */
  abs(rel: string): string {
    return rel === "" ? this.#root : `${this.#root}/${rel}`;
  }

  /**
   * Resolves the directory `dir`.
   *
   * @returns Where it is, or `null` when nothing in the snapshot or below makes it a directory.
   */
  resolve(dir: string): Resolved | null {
    const cached = this.#cache.get(dir);
    if (cached !== undefined || this.#cache.has(dir)) return cached ?? null;
    const result = this.#walk(dir);
    this.#cache.set(dir, result);
    return result;
  }

  #walk(dir: string): Resolved | null {
    const queue = dir === "" ? [] : dir.split("/");
    const stack: { name: string; hidden: boolean; virtual: boolean }[] = [];
    let links = 0;
    const follow = (target: string): boolean => {
      if (++links > MAX_LINKS) return false;
      if (target.startsWith("/")) stack.length = 0;
      queue.unshift(...target.split("/"));
      return true;
    };
    while (queue.length > 0) {
      const c = queue.shift()!;
      if (c === "" || c === ".") continue;
      if (c === "..") {
        stack.pop();
        continue;
      }
      const top = stack.at(-1);
      const names = stack.map((s) => s.name);
      const rel = join(...names, c);
      const st = top?.virtual ? null : lstatOrNull(this.abs(rel));
      if (st !== null) {
        const type = st.mode & sys.S_IFMT;
        if (type === sys.S_IFDIR) {
          const hidden = (top?.hidden ?? false) || (this.#overlay && isOpaqueDir(this.abs(rel)));
          stack.push({ name: c, hidden, virtual: false });
          continue;
        }
        if (type === sys.S_IFLNK) {
          if (!follow(sys.readlinkat(sys.AT_FDCWD, this.abs(rel)))) return null;
          continue;
        }
        return null; // A file, device or whiteout: nothing can be below it.
      }
      if (!this.#overlay || (top?.hidden ?? false)) return null;
      const hit = this.#lowerLookup(names.join("/"), c);
      if (hit === null) return null;
      if (hit.kind === "symlink") {
        if (!follow(sys.readlinkat(sys.AT_FDCWD, hit.path))) return null;
        continue;
      }
      if (hit.kind !== "dir") return null;
      stack.push({ name: c, hidden: false, virtual: true });
    }
    return { path: stack.map((s) => s.name).join("/"), complete: !stack.some((s) => s.virtual) };
  }

  /** Looks `name` up in `dirPath` of the merged lower layers (newest wins; whiteouts hide). */
  #lowerLookup(dirPath: string, name: string): { kind: string; path: string } | null {
    const components = dirPath === "" ? [] : dirPath.split("/");
    for (const lower of this.#lowers) {
      let cur = lower;
      let opaque = false;
      let missing = false;
      for (const c of components) {
        cur = `${cur}/${c}`;
        const st = lstatOrNull(cur);
        if (st === null) {
          missing = true;
          break;
        }
        if ((st.mode & sys.S_IFMT) !== sys.S_IFDIR) return null;
        if (isOpaqueDir(cur)) opaque = true;
      }
      if (!missing) {
        const path = `${cur}/${name}`;
        const st = lstatOrNull(path);
        if (st !== null) {
          if (isWhiteoutAt(path, st)) return null;
          return { kind: typeName(st), path };
        }
      }
      if (opaque) return null;
    }
    return null;
  }
}

function describe(obj: Expect): string {
  return obj.kind === "lower" ? "non-directory" : obj.kind;
}

function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, "0")}`;
}

/** One read buffer for every digest (checks are synchronous between awaits). */
let readBuffer: Uint8Array | undefined;

/** The sha256 of a file's content, or of the given segments of it, back to back. */
function fileDigest(
  path: string,
  segments: TarSparseSegment[] | undefined,
  signal: AbortSignal | undefined,
): string {
  signal?.throwIfAborted();
  const fd = sys.open(path, sys.O_RDONLY | sys.O_NOFOLLOW | sys.O_CLOEXEC);
  try {
    const hash = createHash("sha256");
    const buf = readBuffer ??= new Uint8Array(READ_SIZE);
    if (segments === undefined) {
      for (;;) {
        const n = sys.read(fd, buf);
        if (n === 0) break;
        hash.update(buf.subarray(0, n));
      }
    } else {
      for (const seg of segments) {
        let off = seg.offset;
        let left = seg.length;
        while (left > 0) {
          const n = sys.pread(fd, buf.subarray(0, Math.min(left, buf.length)), off);
          if (n === 0) break;
          hash.update(buf.subarray(0, n));
          off += n;
          left -= n;
        }
      }
    }
    return hash.digest("hex");
  } finally {
    sys.close(fd);
  }
}

type DiffFn = (path: string, problem: CheckProblem, expected: string, actual: string) => void;

/** Compares a replayed layer with a snapshot's directory; returns how many paths were compared. */
function compareLayer(
  model: Replay,
  dirs: SnapshotDirs,
  options: { overlay: boolean; rootless: boolean; diff: DiffFn; signal: AbortSignal | undefined },
): number {
  const { overlay, rootless, diff } = options;
  const resolver = new Resolver(dirs, overlay);
  const digests = new Map<string, string>();
  const locate = (path: string): { abs: string; st: sys.Stat | null } | null => {
    if (path === "") return { abs: dirs.dir, st: lstatOrNull(dirs.dir) };
    const parent = resolver.resolve(parentOf(path));
    if (parent === null || !parent.complete) return null;
    const abs = resolver.abs(join(parent.path, baseOf(path)));
    return { abs, st: lstatOrNull(abs) };
  };
  const paths = [...model.slots.keys()].sort();
  for (const path of paths) {
    const slot = model.slots.get(path)!;
    const obj = slot.obj;
    const shown = `/${path}`;
    if (obj.kind === "whiteout") {
      const parent = resolver.resolve(parentOf(path));
      if (parent === null) continue; // Nothing below to hide; the applier made no whiteout.
      if (!overlay) {
        const abs = resolver.abs(join(parent.path, baseOf(path)));
        const st = lstatOrNull(abs);
        if (st !== null) diff(shown, "whiteout", "absent", typeName(st));
        continue;
      }
      if (!parent.complete) {
        diff(shown, "missing", "whiteout", "absent (a directory on the way is missing)");
        continue;
      }
      const abs = resolver.abs(join(parent.path, baseOf(path)));
      const st = lstatOrNull(abs);
      if (st === null) diff(shown, "whiteout", "whiteout", "absent");
      else if (!isWhiteoutAt(abs, st)) diff(shown, "whiteout", "whiteout", typeName(st));
      continue;
    }
    const at = locate(path);
    if (at === null || at.st === null) {
      diff(
        shown,
        "missing",
        describe(obj),
        at === null ? "absent (a directory on the way)" : "absent",
      );
      continue;
    }
    const { abs, st } = at;
    const type = typeName(st);
    const typeOk = obj.kind === "lower" ? type !== "dir" : type === obj.kind;
    if (!typeOk) {
      diff(shown, "type", describe(obj), type);
      continue;
    }
    if (obj.implied) {
      if (obj.opaque && !isOpaqueDir(abs)) diff(shown, "opaque", "opaque", "not opaque");
      continue;
    }
    if (obj.kind === "file") {
      if (obj.size !== undefined && st.size !== obj.size) {
        diff(shown, "size", `${obj.size} bytes`, `${st.size} bytes`);
      } else if (obj.digest !== undefined) {
        // Hardlinks share the inode: read it once (a sparse file's segments are its own).
        const key = obj.segments === undefined ? `${st.dev}:${st.ino}` : undefined;
        let digest = key === undefined ? undefined : digests.get(key);
        if (digest === undefined) {
          digest = fileDigest(abs, obj.segments, options.signal);
          if (key !== undefined) digests.set(key, digest);
        }
        if (digest !== obj.digest) {
          diff(shown, "digest", `sha256:${obj.digest}`, `sha256:${digest}`);
        }
      }
    } else if (obj.kind === "symlink") {
      const target = sys.readlinkat(sys.AT_FDCWD, abs);
      if (target !== obj.linkname) diff(shown, "link", `-> ${obj.linkname}`, `-> ${target}`);
    } else if (obj.kind === "char" || obj.kind === "block") {
      const got = `${sys.major(st.rdev)}:${sys.minor(st.rdev)}`;
      if (got !== `${obj.devmajor}:${obj.devminor}`) {
        diff(shown, "device", `${obj.devmajor}:${obj.devminor}`, got);
      }
    } else if (obj.kind === "dir" && overlay && obj.opaque && !isOpaqueDir(abs)) {
      diff(shown, "opaque", "opaque", "not opaque");
    }
    if (obj.kind !== "symlink" && (st.mode & 0o7777) !== obj.mode) {
      diff(shown, "mode", octal(obj.mode), octal(st.mode & 0o7777));
    }
    if (!rootless && (st.uid !== obj.uid || st.gid !== obj.gid)) {
      diff(shown, "owner", `${obj.uid}:${obj.gid}`, `${st.uid}:${st.gid}`);
    }
    const link = slot.link;
    if (link !== undefined) {
      // Only while the target path still names the object the link was made to.
      const same = link.obj === undefined
        ? (model.changed.get(link.target) ?? 0) <= link.serial
        : model.slots.get(link.target)?.obj === link.obj;
      if (!same) continue;
      const t = locate(link.target);
      if (t === null || t.st === null) {
        diff(shown, "hardlink", `same inode as /${link.target}`, `/${link.target} is absent`);
      } else if (t.st.ino !== st.ino || t.st.dev !== st.dev) {
        diff(shown, "hardlink", `same inode as /${link.target}`, "another inode");
      }
    }
  }
  return paths.length;
}
