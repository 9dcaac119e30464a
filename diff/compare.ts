/**
 * Diff compare: make a layer from two trees (containerd's walking differ).
 *
 * {@linkcode writeDiff} writes the uncompressed tar of the changes from a lower to an upper
 * directory; {@linkcode compareMounts} mounts two mount lists read-only, compresses that tar and
 * stores it in the content store; {@linkcode compareSnapshot} does it for a snapshot against its
 * parent.
 *
 * Layers follow containerd's `ChangeWriter`: entries in depth-first name order (`/` sorts
 * lowest), parents written before their children and only once, the root never; a deletion is a
 * whiteout `<dir>/.wh.<name>` (regular file, size 0, mode 0, owner 0:0, mtime 0); a deleted
 * directory gives one whiteout and a directory replaced by a file none for its children; sockets
 * are skipped; `security.capability` is the only xattr carried; no user or group names; mtimes
 * are whole seconds (truncated, and lowered to `sourceDateEpoch` when later); directories whose
 * only change is their mtime are not written. A file counts as changed when its type,
 * permissions, owner, device number, `security.capability`, size or mtime seconds differ, or
 * when the mtime nanoseconds differ, or, when both mtimes have no nanoseconds (an earlier layer
 * may have truncated them), when the content (a symlink's target) differs. Hardlink groups are
 * kept: the first changed member is written as a file and the group's unchanged members are
 * written as links to it. Link counts are not compared (containerd's rule), so a file split from
 * its hardlink group with nothing else changed (an overlay copy-up can do that) is not seen.
 *
 * The overlay fast path walks only the overlay's upper layer: a 0:0 character device is a
 * whiteout (always; containerd's upperdir walk writes the device itself when nothing below has
 * its name, and a whiteout of a missing path applies as a no-op), an opaque directory is written
 * once and followed by its `.wh..wh..opq` marker (containerd may write its header twice), a
 * directory that is a directory below too is written only when its mode, owner or capability
 * changed, or as a parent (the double walk's rule; containerd's upperdir walk also compares size
 * and mtime), and every other entry is a change. The two paths give layers that apply to the same
 * tree, not identical bytes.
 *
 * @example Make a gzip layer from two directories
 * ```ts
 * import { ContentStore } from "@strata/strata/content";
 * import { MetadataDb } from "@strata/strata/metadata";
 * import { compareMounts } from "@strata/strata/diff";
 *
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * const store = new ContentStore(`${root}/content`, db);
 * const lower = await Deno.makeTempDir();
 * const upper = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${upper}/hello`, "hi\n");
 * const { descriptor, diffId } = await compareMounts(
 *   store,
 *   [{ type: "bind", source: lower, options: ["ro", "rbind"] }],
 *   [{ type: "bind", source: upper, options: ["ro", "rbind"] }],
 * );
 * console.log(descriptor.digest, diffId);
 * db.close();
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { ContentStore, ContentWriter } from "../content/mod.ts";
import {
  AlreadyExists,
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  NotImplemented,
} from "../errors.ts";
import type { Descriptor } from "../images/types.ts";
import type { Mount } from "../mount/mod.ts";
import type { Snapshotter } from "../snapshotters/types.ts";
import * as sys from "../sys/mod.ts";
import { overlayUpper, withReadOnlyRoot } from "./_compare_mounts.ts";
import { BytePipe, PipeClosed } from "./_compare_pipe.ts";
import { ChangeWriter, isDir, walkTrees, walkUpperdir } from "./_compare_walk.ts";
import { compress, type Compression } from "./compression.ts";
import { TarWriter } from "./tar/mod.ts";

/** The content label holding a compressed layer's uncompressed digest (its diffID). */
const UNCOMPRESSED_LABEL = "containerd.io/uncompressed";

const MEDIA_TYPES: Readonly<Record<string, Compression>> = {
  "application/vnd.oci.image.layer.v1.tar": "none",
  "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
};

/** Options of {@linkcode compareMounts} and {@linkcode compareSnapshot}. */
export interface CompareOptions {
  /**
   * The layer's media type: `application/vnd.oci.image.layer.v1.tar+gzip` (the default),
   * `...v1.tar` (uncompressed) or `...v1.tar+zstd`. Anything else is {@linkcode NotImplemented}.
   */
  mediaType?: string;
  /**
   * The ingest ref in the content store (default `diff-<random>`). An ingest left under a given
   * ref is restarted from zero; on failure only a generated ref's ingest is aborted.
   */
  ref?: string;
  /** Extra labels of the stored blob (not applied when the blob exists already). */
  labels?: Record<string, string>;
  /** Lowers later mtimes to this time, as containerd's `SOURCE_DATE_EPOCH`. */
  sourceDateEpoch?: Date;
  /**
   * How the changes are found. `"walk"`: both trees are walked and compared. `"overlay"`: only
   * the upper overlay layer is walked (its 0:0 character devices are whiteouts, its opaque
   * directories get `.wh..wh..opq`); needs `upper` to be one overlay mount whose layers are one
   * directory on top of exactly `lower`'s layers. `"auto"` (the default): `"overlay"` when
   * possible (and the overlay cannot use metacopy or redirect_dir), else `"walk"`.
   */
  method?: "auto" | "overlay" | "walk";
}

/** What {@linkcode compareMounts} stored. */
export interface CompareResult {
  /** The stored blob: its media type, digest and size. */
  descriptor: Descriptor;
  /** The sha256 digest of the uncompressed tar (equal to the blob digest when uncompressed). */
  diffId: string;
}

/** Options of {@linkcode writeDiff}. */
export interface WriteDiffOptions {
  /** Lowers later mtimes to this time (whole seconds). */
  sourceDateEpoch?: Date;
  /**
   * `upperDir` is an overlay upper layer and `lowerDir` the merged tree below it: walk only
   * `upperDir` (the overlay fast path).
   */
  upperdirOnly?: boolean;
  /** With `upperdirOnly`: the overlay used `userxattr` (`user.overlay.*` xattrs). */
  userxattr?: boolean;
}

/** What {@linkcode writeDiff} wrote. */
export interface WriteDiffResult {
  /** Number of tar entries (whiteouts included). */
  entries: number;
}

function checkRoot(path: string, what: string): void {
  let st: sys.Stat;
  try {
    st = sys.lstat(path);
  } catch (err) {
    if (sys.isErrno(err, "ENOENT", "ENOTDIR")) {
      throw new NotFound(`Cannot diff ${what} directory "${path}": not found`);
    }
    throw err;
  }
  if (!isDir(st)) {
    throw new InvalidArgument(`Cannot diff ${what} directory "${path}": not a directory`);
  }
}

function checkEpoch(epoch: Date | undefined): void {
  if (epoch !== undefined && !(epoch instanceof Date && Number.isFinite(epoch.getTime()))) {
    throw new InvalidArgument(`Cannot diff with source date epoch "${epoch}": not a valid date`);
  }
}

/**
 * Writes the uncompressed tar of the changes that turn `lowerDir` into `upperDir` (see the
 * module documentation for the rules), ending with the end-of-archive blocks.
 *
 * @example Write a layer to a file
 * ```ts
 * import { writeDiff } from "@strata/strata/diff";
 *
 * const lower = await Deno.makeTempDir();
 * const upper = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${upper}/motd`, "hello\n");
 * const path = await Deno.makeTempFile({ suffix: ".tar" });
 * await using file = await Deno.open(path, { write: true });
 * const { entries } = await writeDiff(lower, upper, async (chunk) => {
 *   await file.write(chunk);
 * });
 * console.log(entries);
 * ```
 *
 * @param lowerDir The tree before the changes (with `upperdirOnly`, the merged lower layers).
 * @param upperDir The tree after the changes (with `upperdirOnly`, the overlay upper layer).
 * @param sink Receives the tar bytes in order; a chunk handed over is never changed afterwards.
 * @param options The source date epoch and the overlay fast path.
 * @returns The number of entries written.
 * @throws {NotFound} When a directory does not exist.
 * @throws {InvalidArgument} When a path is not a directory or the epoch is not a valid date.
 * @throws {FailedPrecondition} When a tree changes while it is read, or an upperdir holds
 *   metacopy or redirect entries.
 */
export async function writeDiff(
  lowerDir: string,
  upperDir: string,
  sink: (chunk: Uint8Array) => Promise<void>,
  options: WriteDiffOptions = {},
): Promise<WriteDiffResult> {
  checkEpoch(options.sourceDateEpoch);
  checkRoot(lowerDir, "lower");
  checkRoot(upperDir, "upper");
  const tar = new TarWriter(sink);
  const writer = new ChangeWriter(tar, upperDir, { sourceDateEpoch: options.sourceDateEpoch });
  if (options.upperdirOnly === true) {
    await walkUpperdir(lowerDir, upperDir, writer, { userxattr: options.userxattr });
  } else {
    await walkTrees(lowerDir, upperDir, writer);
  }
  await tar.finish();
  return { entries: writer.entries };
}

function compressionOf(mediaType: string): Compression {
  const compression = Object.hasOwn(MEDIA_TYPES, mediaType) ? MEDIA_TYPES[mediaType] : undefined;
  if (compression === undefined) {
    throw new NotImplemented(
      `Cannot make a layer of media type "${mediaType}": use ${
        Object.keys(MEDIA_TYPES).map((type) => `"${type}"`).join(", ")
      }`,
    );
  }
  return compression;
}

/**
 * Streams `writeDiff` through the compressor into the content writer; returns the diffID.
 * The tar producer and the compressing consumer run concurrently, joined by a bounded pipe.
 */
async function streamLayer(
  writer: ContentWriter,
  compression: Compression,
  diff: (sink: (chunk: Uint8Array) => Promise<void>) => Promise<unknown>,
): Promise<string> {
  // Uncompressed, the content writer's digest is the diffID: no second hash.
  const hash = compression === "none" ? undefined : createHash("sha256");
  const pipe = new BytePipe();
  const produced = (async (): Promise<{ error: unknown } | undefined> => {
    try {
      await diff(async (chunk) => {
        hash?.update(chunk);
        await pipe.push(chunk);
      });
      pipe.end();
      return undefined;
    } catch (error) {
      pipe.fail(error);
      return { error };
    }
  })();
  let failure: { error: unknown } | undefined;
  try {
    for await (const chunk of compress(pipe, compression)) await writer.write(chunk);
  } catch (error) {
    failure = { error };
  }
  const producer = await produced;
  // The producer's error is the cause when it has one; a PipeClosed only echoes the consumer's.
  if (producer !== undefined && !(producer.error instanceof PipeClosed)) throw producer.error;
  if (failure !== undefined) throw failure.error;
  if (producer !== undefined) throw producer.error;
  return hash === undefined ? writer.digest() : `sha256:${hash.digest("hex")}`;
}

/**
 * Makes a layer of the changes from `lower` to `upper` and stores it in the content store, as
 * containerd's walking differ `Compare`. Both mount lists are read read-only: an empty list is an
 * empty tree, a single bind mount is read from its source without mounting, anything else is
 * mounted read-only on a temporary directory (an overlay's upperdir folded into its lowerdirs)
 * and unmounted afterwards. A compressed blob gets the label `containerd.io/uncompressed` with
 * the diffID, added also to an identical blob already in the store that lacks it.
 *
 * @example Make a zstd layer of two bind-mounted directories
 * ```ts
 * import { ContentStore } from "@strata/strata/content";
 * import { MetadataDb } from "@strata/strata/metadata";
 * import { compareMounts } from "@strata/strata/diff";
 *
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * const store = new ContentStore(`${root}/content`, db);
 * const lower = await Deno.makeTempDir();
 * const upper = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${upper}/hello`, "hi\n");
 * const result = await compareMounts(
 *   store,
 *   [{ type: "bind", source: lower, options: ["ro", "rbind"] }],
 *   [{ type: "bind", source: upper, options: ["ro", "rbind"] }],
 *   { mediaType: "application/vnd.oci.image.layer.v1.tar+zstd" },
 * );
 * console.log(result.descriptor, result.diffId);
 * db.close();
 * ```
 *
 * @param store The content store the layer is written to.
 * @param lower The mounts of the tree before the changes (the parent).
 * @param upper The mounts of the tree after the changes.
 * @param options Media type, ingest ref, labels, source date epoch and walk method.
 * @returns The stored blob's descriptor and the layer's diffID.
 * @throws {NotImplemented} For a media type other than the OCI tar, tar+gzip and tar+zstd ones.
 * @throws {InvalidArgument} For an unknown method or an invalid epoch.
 * @throws {FailedPrecondition} When `method` is `"overlay"` and the mounts do not allow it, or a
 *   tree changes while it is read.
 * @throws {Unavailable} When another writer holds the ingest ref.
 */
export async function compareMounts(
  store: ContentStore,
  lower: Mount[],
  upper: Mount[],
  options: CompareOptions = {},
): Promise<CompareResult> {
  const mediaType = options.mediaType ?? "application/vnd.oci.image.layer.v1.tar+gzip";
  const compression = compressionOf(mediaType);
  const method = options.method ?? "auto";
  if (method !== "auto" && method !== "overlay" && method !== "walk") {
    throw new InvalidArgument(
      `Cannot compare mounts with method "${method}": use "auto", "overlay" or "walk"`,
    );
  }
  checkEpoch(options.sourceDateEpoch);
  const fast = method === "walk" ? undefined : overlayUpper(lower, upper);
  if (method === "overlay" && fast === undefined) {
    throw new FailedPrecondition(
      'Cannot compare mounts with method "overlay": the upper mounts are not one overlay whose layers are one directory on top of the lower mounts\' layers (or it may use metacopy or redirect_dir)',
    );
  }
  const diffOptions: WriteDiffOptions = {};
  if (options.sourceDateEpoch !== undefined) diffOptions.sourceDateEpoch = options.sourceDateEpoch;

  const ref = options.ref ?? `diff-${crypto.randomUUID()}`;
  const writer = await store.writer({ ref });
  let committed = false;
  try {
    if (writer.offset > 0) await writer.truncate(0);
    const diffId = await withReadOnlyRoot(lower, (lowerRoot) => {
      if (fast !== undefined) {
        const fastOptions = { ...diffOptions, upperdirOnly: true, userxattr: fast.userxattr };
        return streamLayer(
          writer,
          compression,
          (sink) => writeDiff(lowerRoot, fast.upperdir, sink, fastOptions),
        );
      }
      return withReadOnlyRoot(upper, (upperRoot) =>
        streamLayer(
          writer,
          compression,
          (sink) => writeDiff(lowerRoot, upperRoot, sink, diffOptions),
        ));
    });
    const digest = writer.digest();
    const size = writer.offset;
    const labels: Record<string, string> = { ...options.labels };
    if (compression !== "none") labels[UNCOMPRESSED_LABEL] = diffId;
    committed = true;
    try {
      await writer.commit({ labels });
    } catch (err) {
      if (!(err instanceof AlreadyExists)) throw err;
      if (compression !== "none") {
        const info = await store.info(digest);
        if (info.labels[UNCOMPRESSED_LABEL] === undefined) {
          await store.update(digest, { [UNCOMPRESSED_LABEL]: diffId }, {
            fieldpaths: [`labels.${UNCOMPRESSED_LABEL}`],
          });
        }
      }
    }
    return { descriptor: { mediaType, digest, size }, diffId };
  } catch (err) {
    if (!committed) {
      await writer.close();
      if (options.ref === undefined) {
        try {
          await store.abort(ref);
        } catch {
          // Aborting is best effort; the error that stopped the diff matters.
        }
      }
    }
    throw err;
  }
}

/**
 * Makes a layer of a snapshot's changes against its parent and stores it in the content store
 * (what `strata snapshots diff KEY` does). The lower tree is a view of the parent (an empty tree
 * without a parent); the upper tree is the snapshot's own mounts when it is active (or a view),
 * or a view of it when it is committed. Views made here have unique keys and are removed before
 * returning.
 *
 * @example Diff an active snapshot of the native snapshotter
 * ```ts
 * import { ContentStore } from "@strata/strata/content";
 * import { MetadataDb } from "@strata/strata/metadata";
 * import { openSnapshotter } from "@strata/strata/snapshotters";
 * import { compareSnapshot } from "@strata/strata/diff";
 *
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * const store = new ContentStore(`${root}/content`, db);
 * const sn = await openSnapshotter("native", { root, db });
 * const [mount] = await sn.prepare("work");
 * await Deno.writeTextFile(`${mount!.source}/hello`, "hi\n");
 * const { descriptor } = await compareSnapshot(store, sn, "work");
 * console.log(descriptor.digest);
 * await sn.close();
 * db.close();
 * ```
 *
 * @param store The content store the layer is written to.
 * @param snapshotter The snapshotter holding the snapshot.
 * @param key The key of an active snapshot or the name of a committed one.
 * @param options As for {@linkcode compareMounts}.
 * @returns The stored blob's descriptor and the layer's diffID.
 * @throws {NotFound} When the snapshot does not exist.
 */
export async function compareSnapshot(
  store: ContentStore,
  snapshotter: Snapshotter,
  key: string,
  options: CompareOptions = {},
): Promise<CompareResult> {
  const info = await snapshotter.stat(key);
  compressionOf(options.mediaType ?? "application/vnd.oci.image.layer.v1.tar+gzip");
  const views: string[] = [];
  const view = async (parent: string): Promise<Mount[]> => {
    const viewKey = `diff-view-${crypto.randomUUID()}`;
    const mounts = await snapshotter.view(viewKey, { parent });
    views.push(viewKey);
    return mounts;
  };
  let result: CompareResult | undefined;
  let failure: { error: unknown } | undefined;
  try {
    const lower = info.parent === undefined ? [] : await view(info.parent);
    const upper = info.kind === "committed" ? await view(key) : await snapshotter.mounts(key);
    result = await compareMounts(store, lower, upper, options);
  } catch (error) {
    failure = { error };
  }
  const cleanup: unknown[] = [];
  for (const viewKey of views.reverse()) {
    try {
      await snapshotter.remove(viewKey);
    } catch (error) {
      cleanup.push(error);
    }
  }
  if (failure !== undefined) throw failure.error;
  if (cleanup.length > 0) {
    throw new AggregateError(
      cleanup,
      `Cannot remove the views of snapshot "${key}" made for the diff`,
    );
  }
  return result!;
}
