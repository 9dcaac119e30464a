/**
 * Layer application ("diff apply"): a (compressed) layer tar streamed onto a directory or onto a
 * snapshot's mounts, with containerd's semantics and the kernel confining every path to the root.
 *
 * Rules (containerd's `archive.Apply`, `spec/containerd-snapshots-and-diff.md` section 5):
 *
 * - The root is opened once. An entry's parent directory is resolved with
 *   `openat2(root, parent, RESOLVE_IN_ROOT)`: symlinks on the way are followed inside the root
 *   (absolute targets start at the root, `..` stops there); absolute names and `..` are confined
 *   the same way. The final component is never followed: what is there is replaced (a directory
 *   with everything below it), except that an existing directory and a directory entry merge.
 *   Entries resolving to the root itself are skipped (the root's type and attributes never
 *   change). Paths longer than 4095 bytes are refused.
 * - Missing parents are created (0755, owned by the process; on the overlay policies with the
 *   mode, owner, xattrs other than `trusted.*` and times of the same directory in the lower
 *   layers, and through symlinks a lower layer planted, inside the root). A non-directory on the
 *   way fails the apply.
 * - Per entry: create, then owner (`fchown`/`fchownat(AT_SYMLINK_NOFOLLOW)`), then xattrs from
 *   `SCHILY.xattr.*` (never `trusted.*`; `ENOTSUP`, and `EPERM` on `user.*` of a non-file
 *   non-directory, are skipped), then mode (never on symlinks; after the owner, so setuid
 *   survives), then times (nanoseconds, `atime = max(atime, mtime)`, out-of-range times become
 *   the epoch). Directory times (rootless: modes too) are set again after the last entry.
 * - Hardlink targets resolve like entry names (the final component not followed, so a link to a
 *   symlink links the symlink); the link's header metadata goes to the shared inode.
 * - Devices: numbers above 2^32-1 are refused; rootless or in a user namespace devices are not
 *   created. A character device 0:0 is a whiteout on every policy.
 * - Whiteouts: `.wh.<name>` and the opaque marker `.wh..wh..opq`; `.wh.`, `.wh..` and `.wh...`
 *   are invalid. Markers are never written as files. `"delete"`: the named object goes (a
 *   symlink, not its target; nothing when missing); the opaque marker removes every object of its
 *   directory that this layer did not create. `"overlay"`: a 0:0 character device owned by the
 *   header's ids, and `trusted.overlay.opaque=y`; a directory that replaces one of this layer's
 *   whiteouts is made opaque. `"overlay-userxattr"`: the same with `user.overlay.opaque`, and
 *   (when a 0:0 device cannot be made) an xattr whiteout (`user.overlay.whiteout` on an empty
 *   file, its directory marked `user.overlay.opaque=x`, as overlayfs 6.7+ reads them). On every
 *   policy a whiteout or opaque marker spares what the same layer made (OCI: whiteouts apply to
 *   lower layers): a whiteout of a directory the layer wrote into hides what the lower layers
 *   hold there and keeps what the layer put there (the directory stays if the layer listed it or
 *   left something in it), where containerd deletes it all (`"delete"`) or fails (overlay).
 * - AUFS metadata (names starting with `.wh..wh.`, other than the opaque marker) is skipped.
 * - The diffID is the sha256 of the whole decompressed stream, trailing bytes after the tar's
 *   end included; `size` counts those bytes. The compressed digest and size cover the input.
 *
 * Errors: malformed archives throw `TarError` (an `InvalidArgument`); content that cannot be
 * applied (invalid whiteouts, a file where a directory is needed, symlink loops, missing or
 * directory hardlink targets, out-of-range devices, unknown entry types, oversized xattrs)
 * `InvalidArgument`; digest mismatches `FailedPrecondition`; machine failures (`ENOSPC`, `EIO`)
 * `FailedPrecondition`. What was applied before an error stays: the caller discards the
 * snapshot (containerd's unpacker removes the active snapshot).
 *
 * @example Apply a gzip layer to a directory
 * ```ts
 * import { applyLayer } from "@strata/strata/diff";
 *
 * const root = await Deno.makeTempDir();
 * await using file = await Deno.open("layer.tar.gz");
 * const result = await applyLayer(file.readable, root);
 * console.log(result.diffId, result.entries, result.skipped);
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { FailedPrecondition, InvalidArgument, NotFound } from "../errors.ts";
import { isReadOnly, singleBindSource, withTempMount } from "../mount/mod.ts";
import type { Mount } from "../mount/types.ts";
import * as sys from "../sys/mod.ts";
import { type Compression, decompress, detectCompression } from "./compression.ts";
import { readFileChunks } from "./_follow.ts";
import type { Follow } from "./follow.ts";
import { OffThreadInflate } from "./_inflate.ts";
import { readTar } from "./tar/mod.ts";
import { LowersConflict, type Skipped, Tree, type WhiteoutPolicy } from "./_apply_tree.ts";
import { closeQuietly, DIR_READ, removeAt } from "./_apply_fs.ts";

export type { Skipped } from "./_apply_tree.ts";

/** Options of {@linkcode applyLayer} and {@linkcode applyToMounts}. */
export interface ApplyOptions {
  /**
   * How whiteouts are applied: `"delete"` removes what they name (any plain directory, the
   * native snapshotter); `"overlay"` writes overlayfs whiteouts into an overlay upperdir;
   * `"overlay-userxattr"` the `user.overlay.*` form for overlays mounted with `userxattr`.
   * Default for {@linkcode applyLayer}: `"delete"`; {@linkcode applyToMounts} picks it from the
   * mounts.
   */
  whiteouts?: "delete" | "overlay" | "overlay-userxattr";
  /**
   * Overlay policies: the lower layers, newest first, for the attributes of implied parent
   * directories, for symlinks and hardlink targets that only exist below.
   */
  lowerDirs?: string[];
  /**
   * Overlay policies, for a layer applied before its lower layers exist (the parallel unpack of
   * a snapshotter with the `rebase` capability, into the empty upper directory of a parentless
   * snapshot): gives the lower directories, newest first, once they do. It is called at most
   * once, by the first entry that needs them (an implied parent directory, a hardlink target or
   * a whiteout's directory that this layer does not hold); that entry waits for the promise and
   * the apply goes on as if they had been given in `lowerDirs` from the start, so the result is
   * the same. A layer that lists every directory it uses never calls it.
   */
  awaitLowerDirs?: () => Promise<string[]>;
  /**
   * With `awaitLowerDirs`: opens the layer's bytes again, from the first. Given, the apply does
   * not wait for the lower layers at a directory it implies: it creates the directory at once
   * and asks for the lowers without waiting, and gives the directory the lower directory's mode,
   * owner, xattrs and times once they are there (at the latest after the last entry, which then
   * waits), so the result is the same. In the rare case that a lower layer holds a symlink or a
   * file at such a directory (the layer writes through a lower symlink), what was applied is
   * removed and the layer is applied again, from the start, with the lowers.
   */
  reopen?: () => AsyncIterable<Uint8Array> | URL;
  /**
   * Work without privileges: owners that cannot be set, devices, and xattrs that need privilege
   * are recorded in {@linkcode ApplyResult.skipped}. Default: `Deno.uid() !== 0`.
   */
  rootless?: boolean;
  /** The expected diffID (`sha256:...`); a different one fails with `FailedPrecondition`. */
  expectedDiffId?: string;
  /** The expected digest of the input as read; a different one fails with `FailedPrecondition`. */
  expectedDigest?: string;
  /** `syncfs(2)` on the root's file system after a successful apply. */
  syncFs?: boolean;
  /** Stops the apply between entries. */
  signal?: AbortSignal;
  /**
   * When the source is a file (a `file:` URL) that is compressed and at least 4 MiB: decompress
   * and hash it on a worker thread while this thread writes the files (default `true`). The
   * results are the same; on several CPUs the apply is faster.
   */
  offThread?: boolean;
  /**
   * With a `file:` URL source that is still being written (a layer being downloaded): its final
   * size and the writer's state, so that the apply runs behind the download instead of after it.
   * The file is read up to `size` bytes, waiting at its end for more while the state says it is
   * written; the read fails once the state says the writer stopped, or when the file is complete
   * but shorter. `expectedDigest` should be given: only it tells that the bytes read were the
   * right ones.
   */
  follow?: Follow;
}

/** What {@linkcode applyLayer} did. */
export interface ApplyResult {
  /** sha256 of the decompressed stream (trailing bytes included), `sha256:<hex>`. */
  diffId: string;
  /** Bytes of the decompressed stream, trailing bytes included. */
  size: number;
  /** sha256 of the input as read, `sha256:<hex>`. */
  compressedDigest: string;
  /** Bytes of the input. */
  compressedSize: number;
  /** Tar entries read (whiteouts and skipped entries included). */
  entries: number;
  /**
   * What was not applied, never dropped silently: entries resolving to the root, AUFS metadata,
   * `trusted.*` xattrs, and (rootless) owners, devices and xattrs that need privilege.
   */
  skipped: Skipped[];
}

const POLICIES: readonly WhiteoutPolicy[] = ["delete", "overlay", "overlay-userxattr"];

async function* tap(
  source: AsyncIterable<Uint8Array>,
  fn: (chunk: Uint8Array) => void,
): AsyncGenerator<Uint8Array, void, undefined> {
  for await (const chunk of source) {
    fn(chunk);
    yield chunk;
  }
}

/**
 * Applies a layer (gzip, zstd or plain tar, detected by its first bytes) to the directory `root`.
 * See the module documentation for the rules.
 *
 * @example Apply a layer and check its diffID
 * ```ts
 * import { applyLayer } from "@strata/strata/diff";
 *
 * const root = await Deno.makeTempDir();
 * await using file = await Deno.open("layer.tar");
 * await applyLayer(file.readable, root, {
 *   expectedDiffId: "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
 * });
 * ```
 *
 * @param source The layer's bytes, or a `file:` URL of the layer file.
 * @param root The directory to apply to: a snapshot directory, an overlay upperdir, any directory.
 * @param options Whiteout policy, lower layers, privilege, expected digests, syncfs, abort.
 * @returns The diffID, sizes, entry count and what was skipped.
 * @throws {InvalidArgument} For a malformed layer or content that cannot be applied.
 * @throws {FailedPrecondition} For a digest mismatch or a machine failure (`ENOSPC`, ...).
 * @throws {NotFound} When `root` or a lower directory does not exist.
 */
export async function applyLayer(
  source: AsyncIterable<Uint8Array> | URL,
  root: string,
  options: ApplyOptions = {},
): Promise<ApplyResult> {
  const signal = options.signal;
  signal?.throwIfAborted();
  const policy = options.whiteouts ?? "delete";
  if (!POLICIES.includes(policy)) {
    throw new InvalidArgument(
      `Cannot apply layer with whiteout policy ${
        JSON.stringify(policy)
      }: use "delete", "overlay" or "overlay-userxattr"`,
    );
  }
  const rootless = options.rootless ?? Deno.uid() !== 0;
  let lowerDirs: readonly string[] = options.lowerDirs ?? [];
  let awaitLowerDirs = options.awaitLowerDirs;
  for (;;) {
    try {
      return await applyOnce(source, root, {
        signal,
        policy,
        rootless,
        lowerDirs,
        awaitLowerDirs,
        provisional: awaitLowerDirs !== undefined && options.reopen !== undefined,
        expectedDigest: options.expectedDigest,
        expectedDiffId: options.expectedDiffId,
        syncFs: options.syncFs === true,
        offThread: options.offThread ?? true,
        follow: options.follow,
      });
    } catch (err) {
      if (!(err instanceof LowersConflict) || options.reopen === undefined) throw err;
      // A directory made ahead of the lowers is a symlink or a file below: start again with them.
      clearRoot(root, rootless);
      lowerDirs = err.lowerDirs;
      awaitLowerDirs = undefined;
      source = options.reopen();
    }
  }
}

/** The settings of one pass of {@linkcode applyLayer}. */
interface Pass {
  signal: AbortSignal | undefined;
  policy: WhiteoutPolicy;
  rootless: boolean;
  lowerDirs: readonly string[];
  awaitLowerDirs: (() => Promise<string[]>) | undefined;
  provisional: boolean;
  expectedDigest: string | undefined;
  expectedDiffId: string | undefined;
  syncFs: boolean;
  offThread: boolean;
  follow: Follow | undefined;
}

/** Removes everything in the directory `root` (not the directory itself). */
function clearRoot(root: string, rootless: boolean): void {
  const fd = sys.open(root, DIR_READ);
  try {
    for (const entry of sys.readDirFd(fd)) removeAt(fd, entry.name, null, rootless);
  } finally {
    closeQuietly(fd);
  }
}

/** One pass of {@linkcode applyLayer}: the layer read once, applied, checked. */
async function applyOnce(
  source: AsyncIterable<Uint8Array> | URL,
  root: string,
  pass: Pass,
): Promise<ApplyResult> {
  const { signal, policy, rootless } = pass;
  const skipped: Skipped[] = [];
  let tree: Tree;
  try {
    tree = new Tree(root, {
      policy,
      lowerDirs: pass.lowerDirs,
      rootless,
      skipped,
      provisional: pass.provisional,
      ...(pass.awaitLowerDirs ? { awaitLowerDirs: pass.awaitLowerDirs } : {}),
    });
  } catch (err) {
    throw openError(root, pass.lowerDirs, err);
  }
  let entries = 0;
  let digests: () => LayerDigests;
  try {
    const layer = await openLayer(source, pass.offThread, pass.follow);
    digests = layer.digests;
    // readTar drains the stream after the end-of-archive marker: trailing bytes are hashed too.
    for await (const entry of readTar(layer.plain)) {
      signal?.throwIfAborted();
      entries++;
      await tree.apply(entry);
    }
    signal?.throwIfAborted();
    await tree.finish();
  } finally {
    tree.close();
  }
  const { diffId, size, compressedDigest, compressedSize } = digests();
  if (pass.expectedDigest !== undefined && pass.expectedDigest !== compressedDigest) {
    throw new FailedPrecondition(
      `Cannot apply layer: its digest "${compressedDigest}" does not match the expected "${pass.expectedDigest}"`,
    );
  }
  if (pass.expectedDiffId !== undefined && pass.expectedDiffId !== diffId) {
    throw new FailedPrecondition(
      `Cannot apply layer: its diffID "${diffId}" does not match the expected "${pass.expectedDiffId}"`,
    );
  }
  if (pass.syncFs) syncRoot(root);
  return { diffId, size, compressedDigest, compressedSize, entries, skipped };
}

/** Digests and sizes of a layer as read. */
interface LayerDigests {
  diffId: string;
  size: number;
  compressedDigest: string;
  compressedSize: number;
}

/** Compressed files at least this big are decompressed on a worker thread. */
const OFF_THREAD_MIN = 4 << 20;
const READ_CHUNK = 1 << 20;

/**
 * The decompressed bytes of a layer and, once they are read, its digests. A file (a `file:` URL)
 * that is compressed and big enough is decompressed and hashed on a worker thread.
 */
async function openLayer(
  source: AsyncIterable<Uint8Array> | URL,
  offThread: boolean,
  follow: Follow | undefined,
): Promise<{ plain: AsyncIterable<Uint8Array>; digests: () => LayerDigests }> {
  if (source instanceof URL) {
    const path = layerPath(source);
    const { head, size } = await fileHead(path, follow);
    if (offThread && size >= OFF_THREAD_MIN && detectCompression(head) !== "none") {
      const inflate = new OffThreadInflate(path, follow);
      return {
        plain: inflate,
        digests: () => {
          if (inflate.result === undefined) throw new Error("the layer was not read to its end");
          return inflate.result;
        },
      };
    }
    source = readFileChunks(path, { chunkSize: READ_CHUNK, follow });
  }
  const compressedHash = createHash("sha256");
  const hash = createHash("sha256");
  let compressedSize = 0;
  let size = 0;
  const peeked = await peekCompression(source);
  const compression = peeked.compression;
  // A plain tar is hashed once: its digest is its diffID.
  const input = compression === "none" ? peeked.stream : tap(peeked.stream, (chunk) => {
    compressedHash.update(chunk);
    compressedSize += chunk.length;
  });
  // `releaseChunks`: readTar and the tree are done with a chunk before they ask for the next
  // (headers copy what they keep), so each one is freed at once instead of left to the GC.
  const plain = tap(decompress(input, { compression, releaseChunks: true }), (chunk) => {
    hash.update(chunk);
    size += chunk.length;
  });
  return {
    plain,
    digests: () => {
      const diffId = `sha256:${hash.digest("hex")}`;
      return compression === "none"
        ? { diffId, size, compressedDigest: diffId, compressedSize: size }
        : {
          diffId,
          size,
          compressedDigest: `sha256:${compressedHash.digest("hex")}`,
          compressedSize,
        };
    },
  };
}

function layerPath(url: URL): string {
  if (url.protocol !== "file:") {
    throw new InvalidArgument(`Cannot apply layer from "${url.href}": only file: URLs are read`);
  }
  return fileURLToPath(url);
}

/**
 * The first bytes of a file (to detect its compression) and its size (a file still being written:
 * the size it will have).
 */
async function fileHead(
  path: string,
  follow: Follow | undefined,
): Promise<{ head: Uint8Array; size: number }> {
  try {
    const size = follow?.size ?? (await Deno.stat(path)).size;
    let head = new Uint8Array(0);
    for await (const chunk of readFileChunks(path, { chunkSize: 10, follow })) {
      head = chunk.slice();
      break;
    }
    return { head, size };
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new NotFound(`Cannot apply layer from "${path}": the file does not exist`);
    }
    throw err;
  }
}

/** Reads the first bytes of `source` to detect its compression; `stream` yields them again. */
async function peekCompression(
  source: AsyncIterable<Uint8Array>,
): Promise<{ compression: Compression; stream: AsyncIterable<Uint8Array> }> {
  const it = source[Symbol.asyncIterator]();
  const head: Uint8Array[] = [];
  let got = 0;
  let done = false;
  try {
    while (got < 10) {
      const r = await it.next();
      if (r.done) {
        done = true;
        break;
      }
      head.push(r.value);
      got += r.value.length;
    }
  } catch (err) {
    await it.return?.().catch(() => undefined);
    throw err;
  }
  const joined = new Uint8Array(got);
  let pos = 0;
  for (const chunk of head) {
    joined.set(chunk, pos);
    pos += chunk.length;
  }
  const compression = detectCompression(joined);
  async function* stream(): AsyncGenerator<Uint8Array, void, undefined> {
    let finished = done;
    try {
      for (const chunk of head) yield chunk;
      while (!finished) {
        const r = await it.next();
        if (r.done) {
          finished = true;
          return;
        }
        yield r.value;
      }
    } finally {
      if (!finished) await it.return?.();
    }
  }
  return { compression, stream: stream() };
}

function openError(root: string, lowerDirs: readonly string[], err: unknown): Error {
  if (!(err instanceof sys.SysError)) return err instanceof Error ? err : new Error(String(err));
  const what = lowerDirs.length === 0
    ? `"${root}"`
    : `"${root}" with lower directories ${JSON.stringify(lowerDirs)}`;
  const message = `Cannot apply layer to ${what}: ${err.message}`;
  if (sys.isErrno(err, "ENOENT")) return new NotFound(message, { cause: err });
  if (sys.isErrno(err, "ENOTDIR")) return new InvalidArgument(message, { cause: err });
  return new FailedPrecondition(message, { cause: err });
}

function syncRoot(root: string): void {
  const fd = sys.open(root, sys.O_RDONLY | sys.O_DIRECTORY | sys.O_CLOEXEC);
  try {
    sys.syncfs(fd);
  } catch (err) {
    throw new FailedPrecondition(
      `Cannot sync the file system of "${root}": ${(err as Error).message}`,
      { cause: err },
    );
  } finally {
    sys.close(fd);
  }
}

/** The `upperdir`, `lowerdir` list and `userxattr` flag of an overlay mount's options. */
function overlayOptions(
  options: readonly string[],
): { upperdir?: string; lowerdirs: string[]; userxattr: boolean } {
  const out: { upperdir?: string; lowerdirs: string[]; userxattr: boolean } = {
    lowerdirs: [],
    userxattr: false,
  };
  for (const option of options) {
    if (option.startsWith("upperdir=")) out.upperdir = option.slice("upperdir=".length);
    else if (option.startsWith("lowerdir=")) {
      out.lowerdirs = option.slice("lowerdir=".length).split(":").filter((d) => d !== "");
    } else if (option === "userxattr") out.userxattr = true;
  }
  return out;
}

/**
 * Applies a layer onto a snapshot's mounts, like containerd's Linux applier:
 *
 * - a single bind mount: straight into its source (no mounting, so the native snapshotter needs
 *   no privileges), whiteouts `"delete"`;
 * - one overlay mount with an `upperdir=`: straight into the upperdir with the overlay whiteout
 *   policy (`"overlay-userxattr"` when the options have `userxattr`) and the `lowerdir=` list as
 *   lower layers, no mounting (containerd takes this path outside user namespaces only; here the
 *   userxattr form keeps it available inside one);
 * - anything else: mounted on a temporary directory (`tempMountDir`), applied with `"delete"`,
 *   unmounted.
 *
 * With `syncFs`, the file system of the directory written is synced after a successful apply.
 *
 * @example Apply a layer into a prepared snapshot
 * ```ts
 * import { applyToMounts } from "@strata/strata/diff";
 *
 * const mounts = [{
 *   type: "overlay",
 *   source: "overlay",
 *   options: ["workdir=/s/3/work", "upperdir=/s/3/fs", "lowerdir=/s/2/fs:/s/1/fs"],
 * }];
 * await using file = await Deno.open("layer.tar.gz");
 * const { diffId } = await applyToMounts(file.readable, mounts, { syncFs: true });
 * console.log(diffId);
 * ```
 *
 * @param source The layer's bytes, or a `file:` URL of the layer file.
 * @param mounts The snapshot's mounts (as `prepare` returns them).
 * @param options {@linkcode ApplyOptions} and where temporary mounts go.
 * @returns What {@linkcode applyLayer} returns.
 * @throws {InvalidArgument} For an empty mount list, a malformed layer or content that cannot be
 *   applied.
 * @throws {FailedPrecondition} For read-only mounts, digest mismatches, machine failures.
 */
export async function applyToMounts(
  source: AsyncIterable<Uint8Array> | URL,
  mounts: Mount[],
  options: ApplyOptions & { tempMountDir?: string } = {},
): Promise<ApplyResult> {
  const { tempMountDir, ...rest } = options;
  if (mounts.length === 0) {
    throw new InvalidArgument("Cannot apply layer to mounts: the mount list is empty");
  }
  if (mounts.some(isReadOnly)) {
    throw new FailedPrecondition(
      `Cannot apply layer to mounts: ${
        JSON.stringify(mounts.map((m) => `${m.type}:${m.source}`))
      } are read-only`,
    );
  }
  const bind = singleBindSource(mounts);
  if (bind !== undefined) {
    return await applyLayer(source, bind, { ...rest, whiteouts: rest.whiteouts ?? "delete" });
  }
  const [mount] = mounts;
  if (mounts.length === 1 && mount !== undefined && mount.type === "overlay") {
    const overlay = overlayOptions(mount.options);
    if (overlay.upperdir !== undefined) {
      return await applyLayer(source, overlay.upperdir, {
        ...rest,
        whiteouts: rest.whiteouts ?? (overlay.userxattr ? "overlay-userxattr" : "overlay"),
        lowerDirs: rest.lowerDirs ?? overlay.lowerdirs,
      });
    }
  }
  return await withTempMount(
    mounts,
    (root) => applyLayer(source, root, { ...rest, whiteouts: rest.whiteouts ?? "delete" }),
    tempMountDir === undefined ? {} : { location: tempMountDir },
  );
}
