import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { randomBytes } from "node:crypto";
import process from "node:process";
import type { ContentStore } from "../content/mod.ts";
import { type ApplyOptions, applyToMounts } from "../diff/apply.ts";
import { keepInflateWorkers } from "../diff/_inflate.ts";
import { AlreadyExists, FailedPrecondition, isNotFound, NotFound } from "../errors.ts";
import {
  chainIds,
  formatPlatform,
  imageLayers,
  normalizePlatform,
  readImageConfig,
  resolveManifest,
} from "../images/mod.ts";
import type { Descriptor, ImageRecord, MatchComparer, Platform } from "../images/mod.ts";
import { anyPlatform } from "../images/platforms.ts";
import { LeaseManager, type LeaseResource, withLease } from "../leases/leases.ts";
import type { MetadataDb } from "../metadata/db.ts";
import { singleBindSource } from "../mount/mod.ts";
import type { Mount } from "../mount/types.ts";
import type { SnapshotCommitOptions, Snapshotter, Usage } from "../snapshotters/types.ts";
import { collectBetweenLayers } from "./_gc.ts";
import { withKeyLock } from "./_lock.ts";
import { EarlyWriteback, Limiter, SyncQueue } from "./_sync.ts";
import { WorkerPool } from "./_worker_pool.ts";
import {
  type Follow,
  FOLLOW_DONE,
  FOLLOW_STOPPED,
  FOLLOW_WRITING,
  newFollowState,
} from "../diff/follow.ts";
import * as sys from "../sys/mod.ts";

/** Snapshot label: the chain ID the extraction snapshot is for (containerd's). */
export const LABEL_SNAPSHOT_REF = "containerd.io/snapshot.ref";
/** Snapshot label: the diff ID of the layer a snapshot holds. */
export const LABEL_DIFF_ID = "containerd.io/snapshot/diff-id";
/** Snapshot label: the chain ID of the parent. */
export const LABEL_PARENT_CHAIN_ID = "containerd.io/snapshot/parent-chain-id";
/** Content label: the uncompressed digest of a layer blob. */
export const LABEL_UNCOMPRESSED = "containerd.io/uncompressed";
/** Prefix of the config blob's label naming the top snapshot in a snapshotter. */
export const LABEL_GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot.";

/** What {@linkcode unpackImage} needs from a client. */
export interface UnpackTarget {
  /** The root directory (for lock files). */
  root: string;
  /** The content store holding the image. */
  content: ContentStore;
  /** Opens a snapshotter by name (default when omitted). */
  snapshotter(name?: string): Promise<Snapshotter>;
  /**
   * The metadata database. When given, the unpack runs under a lease (24 hours) that pins the
   * image's blobs and every snapshot it uses or makes, so a concurrent prune removes none of them.
   */
  db?: MetadataDb;
}

/** Options for {@linkcode unpackImage}. */
export interface UnpackOptions {
  /** The snapshotter's name (default: the client's default). */
  snapshotter?: string;
  /** Picks the manifest from an index (default: every platform, first match in document order). */
  platform?: MatchComparer;
  /**
   * Refuse, before touching disk, an image whose config platform the snapshotter does not
   * support (default true).
   */
  checkPlatform?: boolean;
  /**
   * `syncfs(2)` each layer's file system after it is applied and before it is committed. The
   * call runs off the event loop, so the next layer goes on applying meanwhile (parallel mode);
   * calls on one file system are coalesced, each layer waiting for one that started after its
   * apply ended. No snapshot is committed before its data is on disk. While layers are prepared
   * and applied, further syncs are started whenever 64 MiB more were written and none is running
   * (a head start for the writeback), so that the sync each layer waits for has little left. The
   * usage each commit stores is measured while the layer's sync runs.
   */
  syncFs?: boolean;
  /**
   * Apply layers concurrently (default true), as containerd does with `max_concurrent_unpacks`
   * above 1. It takes effect when the snapshotter has the `rebase` capability (overlayfs outside
   * a user namespace) and more than one CPU is available (`navigator.hardwareConcurrency`): up
   * to one layer per CPU is applied at once, each into a snapshot prepared without a parent with
   * overlay whiteouts, and the layers are committed strictly bottom up, each with its parent. A
   * directory the layer implies is made at once and given the lower directory's attributes once
   * the layers below are committed (a layer writing through a symlink of a lower layer is applied
   * again on them); an entry that needs the layers below otherwise (a hardlink to a file of a
   * lower layer, a whiteout in a directory the layer does not hold) waits until they are
   * committed. The result is the same as sequential. `false` applies one layer at a time, each on
   * its committed parent.
   */
  parallel?: boolean;
  /** Told about each layer as it is handled. */
  onLayer?: (event: LayerEvent) => void;
  /** Stops the unpack between entries; the layer in progress is not committed. */
  signal?: AbortSignal;
  /**
   * Brings layer blobs into the content store while the unpack runs (a pull's downloads). Without
   * it every layer blob must already be in the content store. A fetcher that tells where a blob
   * is being downloaded to ({@linkcode LayerFetcher.ingestFile}) has its layers applied while
   * they download: should the apply of a layer read as it downloads fail, the download's error
   * is reported when it failed, and otherwise the layer is applied again from the blob.
   */
  fetcher?: LayerFetcher;
}

/**
 * Makes layer blobs available to an unpack as they arrive, so downloads run ahead of extraction
 * (containerd's unpacker fetching `layers[i:]` from the first layer that needs work).
 */
export interface LayerFetcher {
  /**
   * Called once, with the first layer that needs work and every layer above it, bottom first;
   * starts their downloads. Layers below are already unpacked and are never fetched.
   *
   * @param blobs The layer blobs to fetch.
   */
  start(blobs: Descriptor[]): void;
  /**
   * Waits for one blob started by {@linkcode LayerFetcher.start}.
   *
   * @param blob The layer blob.
   * @returns A promise that resolves once the blob is committed to the content store and rejects
   *   when its download failed.
   */
  ready(blob: Descriptor): Promise<void>;
  /**
   * Optional: the file a blob started by {@linkcode LayerFetcher.start} is being downloaded into,
   * once its download writes it, so that the layer is applied while it downloads (read as it
   * grows; checked against the blob's digest as ever; committed only after
   * {@linkcode LayerFetcher.ready}). Resolves to `undefined` when there is no such file (the blob
   * was in the content store, or its download ended or failed first); the unpack then waits for
   * {@linkcode LayerFetcher.ready}. With this method, the unpack calls `ready` for every blob
   * it starts, at once, to know which downloads are still running.
   *
   * @param blob The layer blob.
   * @returns The path of the file being written, or `undefined`.
   */
  ingestFile?(blob: Descriptor): Promise<string | undefined>;
}

/** What happened to one layer. */
export interface LayerEvent {
  /** The layer's position, bottom first. */
  index: number;
  /** The layer blob. */
  blob: Descriptor;
  /** Its diff ID. */
  diffId: string;
  /** The chain ID of the snapshot holding it and everything below. */
  chainId: string;
  /** `extracting` when work starts; `extracted` when committed; `exists` when it was there. */
  state: "extracting" | "extracted" | "exists";
  /** Entries the layer could not apply without privileges (rootless). */
  skipped?: number;
}

/** What {@linkcode unpackImage} did. */
export interface UnpackResult {
  /** The chain ID of the top snapshot: the image's root filesystem. */
  chainId: string;
  /** The snapshotter used. */
  snapshotter: string;
  /** Per layer: its chain ID and whether this call applied it. */
  layers: { diffId: string; chainId: string; applied: boolean }[];
}

/**
 * Unpacks an image's layers into a snapshotter, bottom up, as containerd does: a layer whose chain
 * ID is already committed is skipped; otherwise it is applied into a fresh active snapshot (under
 * a unique `extract-...` key), its diff ID is verified, and it is committed under its chain ID. A
 * failure removes the active snapshot, so nothing half-applied is ever committed; a concurrent
 * unpack that committed the same chain first counts as success. Layers are serialised per chain
 * ID within the process and across processes. Afterwards each applied layer blob carries
 * `containerd.io/uncompressed` and the config blob `containerd.io/gc.ref.snapshot.<name>`.
 * With `target.db`, the work runs under a temporary lease, deleted at the end.
 *
 * @example Unpack an image into the native snapshotter
 * ```ts ignore
 * import { Client, unpackImage } from "@strata/strata";
 * const client = Client.open();
 * const image = client.images.get("docker.io/library/alpine:latest");
 * const { chainId } = await unpackImage(client, image, { snapshotter: "native" });
 * console.log(chainId);
 * ```
 *
 * @param target The client (content store, snapshotters, root).
 * @param image The image record.
 * @param options Snapshotter, platform, durability.
 * @returns The top chain ID and what was applied.
 */
export async function unpackImage(
  target: UnpackTarget,
  image: ImageRecord,
  options: UnpackOptions = {},
): Promise<UnpackResult> {
  if (target.db === undefined) return await unpackPinned(target, image, options, () => {});
  const leases = new LeaseManager(target.db);
  return await withLease(
    leases,
    (lease) =>
      unpackPinned(target, image, options, (resources) => leases.addResources(lease.id, resources)),
  );
}

/** The unpack; `pin` adds a resource to the lease before it is used or made. */
async function unpackPinned(
  target: UnpackTarget,
  image: ImageRecord,
  options: UnpackOptions,
  pin: (resources: LeaseResource[]) => void,
): Promise<UnpackResult> {
  const content = target.content;
  const platformOpt = options.platform ? { platform: options.platform } : {};
  const { descriptor, manifest } = await resolveManifest(content, image.target, platformOpt);
  const layers = await imageLayers(content, image.target, platformOpt);
  const snapshotter = await target.snapshotter(options.snapshotter);
  const snapshotType = `snapshots/${snapshotter.name}`;
  // One transaction: the blobs and every chain ID, before any of them is checked or made.
  pin([
    ...[image.target, descriptor, manifest.config, ...layers.map((l) => l.blob)].map((d) => ({
      type: "content",
      id: d.digest,
    })),
    ...chainIds(layers.map((l) => l.diffId)).map((id) => ({ type: snapshotType, id })),
  ]);
  const pinSnapshot = (key: string) => pin([{ type: snapshotType, id: key }]);
  if (options.checkPlatform ?? true) {
    const config = await readImageConfig(content, manifest.config);
    const p: Platform = { os: config.os, architecture: config.architecture };
    if (config.variant) p.variant = config.variant;
    if (config["os.features"]) p["os.features"] = config["os.features"];
    const platform = normalizePlatform(p);
    if (!anyPlatform(snapshotter.supportedPlatforms()).match(platform)) {
      throw new FailedPrecondition(
        `Cannot unpack image "${image.name}": snapshotter "${snapshotter.name}" does not support platform "${
          formatPlatform(platform)
        }" (config ${manifest.config.digest})`,
      );
    }
  }
  const chain = chainIds(layers.map((l) => l.diffId));
  const result: UnpackResult = {
    chainId: chain.at(-1) ?? "",
    snapshotter: snapshotter.name,
    layers: [],
  };
  const cores = navigator.hardwareConcurrency ?? 1;
  const parallel = options.parallel !== false && cores > 1 &&
    snapshotter.capabilities.includes("rebase");
  const syncs = new SyncQueue();
  const syncFs = options.syncFs ?? false;
  const run: Run = {
    content,
    snapshotter,
    lockDir: join(target.root, "locks", "unpack"),
    syncFs,
    syncs,
    // Head starts for the per-layer syncs, so that the last one has little left to write.
    early: syncFs ? new EarlyWriteback(syncs) : undefined,
    signal: options.signal,
    pin: pinSnapshot,
    parallel,
    whiteouts: overlayPolicy(snapshotter),
    onLayer: options.onLayer,
    fetcher: options.fetcher,
    downloading: new Set(),
    failed: null,
    aborts: [],
    // Parallel: layers are applied on worker threads and on this one (one CPU each), so that
    // they use several CPUs. The main thread takes a layer when every worker is busy: one
    // isolate less keeps the peak memory down.
    pool: parallel ? new WorkerPool(cores - 1) : undefined,
    appliedHere: 0,
  };
  // One decompression worker serves this thread's layers one after the other.
  const releaseInflaters = keepInflateWorkers();
  const limiter = new Limiter(parallel ? cores : 1);
  const tasks: Promise<boolean>[] = [];
  // Settles when chain[i - 1] is committed (or already was); rejects when that layer failed.
  let below: Promise<void> = Promise.resolve();
  let belowDone = true;
  let fetching = false;
  try {
    for (const [i, layer] of layers.entries()) {
      if (run.failed !== null) break;
      const chainId = chain[i]!;
      const event: LayerEventBase = { index: i, blob: layer.blob, diffId: layer.diffId, chainId };
      if (belowDone && await exists(snapshotter, chainId)) {
        options.onLayer?.({ ...event, state: "exists" });
        tasks.push(Promise.resolve(false));
        continue;
      }
      if (options.fetcher && !fetching) {
        fetching = true;
        const blobs = layers.slice(i).map((l) => l.blob);
        options.fetcher.start(blobs);
        // Which downloads are still running, for the layers applied while they download.
        for (const blob of options.fetcher.ingestFile ? blobs : []) {
          run.downloading.add(blob);
          const ended = () => run.downloading.delete(blob);
          options.fetcher.ready(blob).then(ended, ended);
        }
      }
      // Turns are taken in layer order, so a layer waiting for the one below never holds the
      // turn that one needs.
      const release = await limiter.acquire();
      if (run.failed !== null) {
        release();
        break;
      }
      const abort = new AbortController();
      run.aborts[i] = abort;
      const task = unpackLayer(run, {
        ...event,
        parent: i > 0 ? chain[i - 1] : undefined,
        below,
        belowDone,
        release,
        abort,
      });
      tasks.push(task);
      // The rejection is handled where the tasks are awaited.
      task.catch(() => {});
      below = task.then(() => {});
      below.catch(() => {});
      belowDone = false;
      // Sequential: each layer is committed before the next one is looked at.
      if (!parallel) {
        await task;
        belowDone = true;
      }
    }
  } finally {
    await Promise.allSettled(tasks);
    releaseInflaters();
    run.early?.close();
    run.pool?.close();
    await syncs.close();
  }
  if (run.failed !== null) throw run.failed.err;
  for (const [i, task] of tasks.entries()) {
    const applied = await task;
    const layer = layers[i]!;
    result.layers.push({ diffId: layer.diffId, chainId: chain[i]!, applied });
  }
  if (result.chainId !== "") {
    const key = `${LABEL_GC_REF_SNAPSHOT}${snapshotter.name}`;
    await content.update(manifest.config.digest, { [key]: result.chainId }, {
      fieldpaths: [`labels.${key}`],
    });
  }
  return result;
}

/** What every layer of one unpack shares. */
interface Run {
  content: ContentStore;
  snapshotter: Snapshotter;
  lockDir: string;
  syncFs: boolean;
  syncs: SyncQueue;
  /** Starts the writeback of what the layers write while they are written (with `syncFs`). */
  early: EarlyWriteback | undefined;
  signal: AbortSignal | undefined;
  pin: (key: string) => void;
  parallel: boolean;
  /** The whiteout policy of a layer applied without its parent (parallel mode). */
  whiteouts: "overlay" | "overlay-userxattr";
  onLayer: ((event: LayerEvent) => void) | undefined;
  fetcher: LayerFetcher | undefined;
  /** The layer blobs the fetcher was asked for whose download has not ended. */
  downloading: Set<Descriptor>;
  /** The failure of the lowest layer that failed. */
  failed: { index: number; err: unknown } | null;
  /** Per layer being unpacked: stops its apply when a layer below fails. */
  aborts: AbortController[];
  /** The worker threads of a parallel unpack. */
  pool: WorkerPool | undefined;
  /** Layers this thread is applying. */
  appliedHere: number;
}

type LayerEventBase = Omit<LayerEvent, "state" | "skipped">;

/** One layer to unpack. */
interface LayerTask extends LayerEventBase {
  /** The chain ID of the layer below, when there is one. */
  parent: string | undefined;
  /** Settles when the parent is committed; rejects when the layer below failed. */
  below: Promise<void>;
  /** Whether the parent was known to be committed when this layer was started. */
  belowDone: boolean;
  /** Ends the layer's apply turn. */
  release: () => void;
  /** Aborts this layer (a layer below failed). */
  abort: AbortController;
}

/** The layer below failed: this one is removed unapplied (containerd's "aborted"). */
class Aborted extends Error {
  override readonly name: string = "Aborted";
}

/**
 * Unpacks one layer under its chain lock: applied into a fresh active snapshot, synced, and
 * committed once the layer below is. Returns whether it applied the layer.
 */
async function unpackLayer(run: Run, task: LayerTask): Promise<boolean> {
  const { snapshotter } = run;
  const event: LayerEventBase = {
    index: task.index,
    blob: task.blob,
    diffId: task.diffId,
    chainId: task.chainId,
  };
  try {
    const applied = await withKeyLock(
      run.lockDir,
      `${snapshotter.name} ${task.chainId}`,
      async () => {
        // Another unpack may have committed it while this one waited for the lock.
        if (await exists(snapshotter, task.chainId)) return false;
        if (run.failed !== null) throw new Aborted();
        const streamed = await followDownload(run, task);
        if (streamed === undefined) await run.fetcher?.ready(task.blob);
        run.onLayer?.({ ...event, state: "extracting" });
        let skipped: number;
        try {
          skipped = await applyOne(run, task, streamed);
        } catch (err) {
          if (streamed === undefined || err instanceof Aborted || task.abort.signal.aborted) {
            throw err;
          }
          if (run.signal?.aborted) throw err;
          // Read while it downloaded: a failed download is the error to report; otherwise the
          // bytes read were not the blob's (a download that started over), so apply the blob.
          await run.fetcher!.ready(task.blob);
          skipped = await applyOne(run, task, undefined);
        } finally {
          streamed?.close();
        }
        run.onLayer?.({ ...event, state: "extracted", skipped });
        return true;
      },
    );
    if (applied) {
      await run.content.update(task.blob.digest, { [LABEL_UNCOMPRESSED]: task.diffId }, {
        fieldpaths: [`labels.${LABEL_UNCOMPRESSED}`],
      });
    } else {
      run.onLayer?.({ ...event, state: "exists" });
    }
    return applied;
  } catch (err) {
    if (!(err instanceof Aborted) && (run.failed === null || run.failed.index > task.index)) {
      run.failed = { index: task.index, err };
    }
    // Layers above stop: none of them can be committed now.
    for (const [i, abort] of run.aborts.entries()) {
      if (i > task.index) abort?.abort(new Aborted());
    }
    throw err;
  } finally {
    task.release();
  }
}

/** A layer blob being downloaded, read through a descriptor that outlives its ingest's rename. */
interface Streamed {
  /** `/proc/self/fd/N`: opens the file on any thread of this process. */
  path: string;
  follow: Follow;
  /** Closes the descriptor (the apply has ended). */
  close(): void;
}

/**
 * Opens the file a layer is being downloaded into, when the fetcher tells it; `undefined` when
 * the layer should be applied from the content store once {@linkcode LayerFetcher.ready}.
 */
async function followDownload(run: Run, task: LayerTask): Promise<Streamed | undefined> {
  const fetcher = run.fetcher;
  if (fetcher?.ingestFile === undefined) return undefined;
  // In parallel, only the biggest layer still downloading: the others' downloads end sooner, and
  // applying them as well while they download takes CPU from the downloads, which run on this
  // thread (measured: slower from a local registry, and than this from a throttled one).
  if (run.parallel) {
    const biggest = [...run.downloading].reduce<Descriptor | undefined>(
      (a, b) => (a === undefined || b.size > a.size ? b : a),
      undefined,
    );
    if (biggest?.digest !== task.blob.digest) return undefined;
  }
  const path = await fetcher.ingestFile(task.blob);
  if (path === undefined) return undefined;
  let fd: number;
  try {
    fd = sys.open(path, sys.O_RDONLY | sys.O_CLOEXEC);
  } catch {
    // Committed (renamed) or discarded meanwhile: the content store has the answer.
    return undefined;
  }
  const state = newFollowState();
  const stop = () => Atomics.store(state, 0, FOLLOW_STOPPED);
  fetcher.ready(task.blob).then(
    () => Atomics.compareExchange(state, 0, FOLLOW_WRITING, FOLLOW_DONE),
    stop,
  );
  const signals = [task.abort.signal, ...(run.signal ? [run.signal] : [])];
  for (const signal of signals) signal.addEventListener("abort", stop, { once: true });
  return {
    path: `/proc/self/fd/${fd}`,
    follow: { size: task.blob.size, state },
    close() {
      for (const signal of signals) signal.removeEventListener("abort", stop);
      stop();
      sys.close(fd);
    },
  };
}

async function exists(snapshotter: Snapshotter, key: string): Promise<boolean> {
  try {
    const info = await snapshotter.stat(key);
    return info.kind === "committed";
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** A unique extraction key, containerd's format: `extract-<ns>-<b64url(3 bytes)> <chainID>`. */
function extractKey(chainId: string): string {
  const ns = process.hrtime.bigint();
  return `extract-${ns}-${randomBytes(3).toString("base64url")} ${chainId}`;
}

/** The whiteout policy overlay mounts of this snapshotter would get. */
function overlayPolicy(snapshotter: Snapshotter): "overlay" | "overlay-userxattr" {
  const options = (snapshotter as { mountOptions?: readonly string[] }).mountOptions ?? [];
  return options.includes("userxattr") ? "overlay-userxattr" : "overlay";
}

/** The directory a layer is written into: a bind source or an overlay upperdir. */
function writtenDir(mounts: readonly Mount[]): string | undefined {
  const bind = singleBindSource(mounts);
  if (bind !== undefined) return bind;
  const [mount] = mounts;
  if (mounts.length !== 1 || mount?.type !== "overlay") return undefined;
  const upper = mount.options.find((o) => o.startsWith("upperdir="));
  return upper?.slice("upperdir=".length);
}

/** The lower directories, newest first, of a snapshot whose parent is `parent`. */
function lowerDirsOf(mounts: readonly Mount[]): string[] {
  const bind = singleBindSource(mounts);
  if (bind !== undefined) return [bind];
  const [mount] = mounts;
  const lower = mount?.options.find((o) => o.startsWith("lowerdir="));
  if (mounts.length !== 1 || mount?.type !== "overlay" || lower === undefined) {
    throw new FailedPrecondition(
      `Cannot find the lower directories of a view: unexpected mounts ${
        JSON.stringify(mounts.map((m) => `${m.type}:${m.source}`))
      }`,
    );
  }
  return lower.slice("lowerdir=".length).split(":").filter((d) => d !== "");
}

/** Prepares an extraction snapshot under a unique key (3 tries, containerd's). */
async function prepareUnique(
  run: Run,
  chainId: string,
  create: (key: string) => Promise<Mount[]>,
): Promise<{ key: string; mounts: Mount[] }> {
  for (let attempt = 0;; attempt++) {
    const key = extractKey(chainId);
    try {
      run.pin(key);
      return { key, mounts: await create(key) };
    } catch (err) {
      if (err instanceof AlreadyExists && attempt < 2) continue;
      throw err;
    }
  }
}

async function removeQuietly(snapshotter: Snapshotter, key: string): Promise<void> {
  try {
    await snapshotter.remove(key);
  } catch (removeErr) {
    if (!isNotFound(removeErr)) {
      console.error(`strata: cannot remove snapshot "${key}": ${(removeErr as Error).message}`);
    }
  }
}

/**
 * Applies a layer into a new active snapshot and commits it. Sequential (or with the parent
 * committed already): prepared on its parent. Parallel: prepared without a parent, applied with
 * the overlay whiteout policy into the empty upper directory (lower layers fetched through a view
 * only if an entry needs them), and committed with its parent once that is committed (rebase).
 * With `syncFs` the file system is synced (off the event loop) before the commit.
 */
async function applyOne(
  run: Run,
  task: LayerTask,
  streamed: Streamed | undefined,
): Promise<number> {
  const labels: Record<string, string> = {
    [LABEL_SNAPSHOT_REF]: task.chainId,
    [LABEL_DIFF_ID]: task.diffId,
    ...(task.parent ? { [LABEL_PARENT_CHAIN_ID]: task.parent } : {}),
  };
  const rebase = run.parallel && task.parent !== undefined && !task.belowDone;
  if (!rebase) await task.below;
  // Head starts for what the prepare (the native snapshotter copies the parent) and the apply
  // write, until the apply ends.
  const written = run.early?.begin();
  try {
    return await applyPrepared(run, task, { labels, rebase, streamed }, written ?? (() => {}));
  } finally {
    written?.();
  }
}

/** {@linkcode applyOne} from the prepare on; `written` is called when the apply has ended. */
async function applyPrepared(
  run: Run,
  task: LayerTask,
  how: { labels: Record<string, string>; rebase: boolean; streamed: Streamed | undefined },
  written: () => void,
): Promise<number> {
  const { snapshotter } = run;
  const { labels, rebase, streamed } = how;
  // The layer's file: the blob, or the file it is being downloaded into.
  const blobFile = streamed?.path ?? run.content.blobPath(task.blob.digest);
  const { key, mounts } = await prepareUnique(run, task.chainId, (key) =>
    snapshotter.prepare(key, {
      labels,
      ...(task.parent && !rebase ? { parent: task.parent } : {}),
    }));
  let viewKey: string | undefined;
  try {
    const missing = (err: unknown): unknown =>
      err instanceof NotFound
        ? new NotFound(
          `Cannot unpack layer ${task.blob.digest}: it is not in the content store (pull or import the image first)`,
        )
        : err;
    const signals = [task.abort.signal, ...(run.signal ? [run.signal] : [])];
    const dir = writtenDir(mounts);
    if (dir !== undefined) run.early?.watch(dir);
    const applyOptions: ApplyOptions & { tempMountDir?: string } = {
      expectedDiffId: task.diffId,
      expectedDigest: task.blob.digest,
      // Synced here, off the event loop, when the directory is known.
      syncFs: run.syncFs && dir === undefined,
      signal: AbortSignal.any(signals),
      ...(streamed ? { follow: streamed.follow } : {}),
    };
    if (rebase) {
      applyOptions.whiteouts = run.whiteouts;
      applyOptions.awaitLowerDirs = async () => {
        await task.below;
        const viewMounts = await prepareUnique(run, task.parent!, (k) => {
          viewKey = k;
          return snapshotter.view(k, { parent: task.parent! });
        });
        return lowerDirsOf(viewMounts.mounts);
      };
      // Implied directories are made at once and completed from the lowers later; the rare
      // layer that writes through a lower symlink is read again and applied on the lowers.
      applyOptions.reopen = () => pathToFileURL(blobFile);
    }
    let result;
    // Whether this thread applies the layer (and makes its garbage).
    let here = false;
    try {
      if (streamed === undefined) {
        await run.content.info(task.blob.digest).catch((err) => {
          throw missing(err);
        });
      }
      // A layer read while it downloads (the biggest) is applied here, with decompression on a
      // worker of its own (a pool worker does both on one thread), unless this thread applies
      // a layer already.
      if (
        run.pool === undefined || !run.pool.hasRoom ||
        (streamed !== undefined && run.appliedHere === 0)
      ) {
        here = true;
        run.appliedHere++;
        // The blob file itself: a big compressed one is decompressed on a worker thread.
        const source = pathToFileURL(blobFile);
        result = await applyToMounts(source, mounts, applyOptions);
      } else {
        // Checked and taken with nothing awaited in between; the worker reads the blob file.
        result = await run.pool.apply(
          blobFile,
          mounts,
          // Layers on workers decompress on their own thread: with the layer this thread
          // applies (which decompresses on a further worker), every CPU is busy already.
          { ...applyOptions, offThread: false },
        );
      }
    } finally {
      if (here) run.appliedHere--;
      if (viewKey !== undefined) {
        await removeQuietly(snapshotter, viewKey);
        // The view's directory now belongs to no snapshot: delete it rather than leave it for
        // a later cleanup.
        await snapshotter.cleanup().catch(() => {});
      }
    }
    // Read while it downloaded: committed only once the blob is in the content store.
    if (streamed) await run.fetcher!.ready(task.blob);
    // The next layer may apply while this one syncs and waits for its turn to commit.
    written();
    task.release();
    // The heap back to its live size (see _gc.ts); not while this thread applies another layer
    // (a worker's layer ended), where the collection would hold that apply up.
    if (here) collectBetweenLayers();
    // The usage the commit stores (nothing writes the snapshot any more).
    let usage: Usage | undefined;
    if (run.syncFs && dir !== undefined) {
      const synced = run.syncs.sync(dir);
      synced.catch(() => {}); // Awaited below.
      // Measured while the sync runs, instead of by the commit after it (which measures when
      // this fails).
      usage = await snapshotter.usage(key).catch(() => undefined);
      await synced;
    }
    try {
      await task.below;
    } catch {
      throw new Aborted();
    }
    task.abort.signal.throwIfAborted();
    const commitOptions: SnapshotCommitOptions = {
      labels,
      ...(rebase ? { parent: task.parent! } : {}),
      ...(usage === undefined ? {} : { usage }),
    };
    try {
      await snapshotter.commit(task.chainId, key, commitOptions);
    } catch (err) {
      if (!(err instanceof AlreadyExists)) throw err;
      await snapshotter.remove(key); // Someone else committed this chain first: that is success.
    }
    return result.skipped.length;
  } catch (err) {
    await removeQuietly(snapshotter, key);
    throw err;
  }
}
