import { join } from "node:path";
import { randomBytes } from "node:crypto";
import process from "node:process";
import type { ContentStore } from "../content/mod.ts";
import { applyToMounts } from "../diff/apply.ts";
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
import type { Snapshotter } from "../snapshotters/types.ts";
import { withKeyLock } from "./_lock.ts";

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
  /** `syncfs(2)` each layer's filesystem after it is applied and before it is committed. */
  syncFs?: boolean;
  /** Told about each layer as it is handled. */
  onLayer?: (event: LayerEvent) => void;
  /** Stops the unpack between entries; the layer in progress is not committed. */
  signal?: AbortSignal;
  /**
   * Brings layer blobs into the content store while the unpack runs (a pull's downloads). Without
   * it every layer blob must already be in the content store.
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
  const lockDir = join(target.root, "locks", "unpack");
  let fetching = false;
  for (const [i, layer] of layers.entries()) {
    const chainId = chain[i]!;
    const parent = i > 0 ? chain[i - 1] : undefined;
    const event = { index: i, blob: layer.blob, diffId: layer.diffId, chainId };
    if (await exists(snapshotter, chainId)) {
      options.onLayer?.({ ...event, state: "exists" });
      result.layers.push({ diffId: layer.diffId, chainId, applied: false });
      continue;
    }
    if (options.fetcher && !fetching) {
      fetching = true;
      options.fetcher.start(layers.slice(i).map((l) => l.blob));
    }
    const applied = await withKeyLock(
      lockDir,
      `${snapshotter.name} ${chainId}`,
      async () => {
        // Another unpack may have committed it while this one waited for the lock.
        if (await exists(snapshotter, chainId)) return false;
        await options.fetcher?.ready(layer.blob);
        options.onLayer?.({ ...event, state: "extracting" });
        const skipped = await applyOne(content, snapshotter, {
          chainId,
          parent,
          blob: layer.blob,
          diffId: layer.diffId,
          syncFs: options.syncFs ?? false,
          signal: options.signal,
          pin: pinSnapshot,
        });
        options.onLayer?.({ ...event, state: "extracted", skipped });
        return true;
      },
    );
    if (applied) {
      await content.update(layer.blob.digest, { [LABEL_UNCOMPRESSED]: layer.diffId }, {
        fieldpaths: [`labels.${LABEL_UNCOMPRESSED}`],
      });
    } else {
      options.onLayer?.({ ...event, state: "exists" });
    }
    result.layers.push({ diffId: layer.diffId, chainId, applied });
  }
  if (result.chainId !== "") {
    const key = `${LABEL_GC_REF_SNAPSHOT}${snapshotter.name}`;
    await content.update(manifest.config.digest, { [key]: result.chainId }, {
      fieldpaths: [`labels.${key}`],
    });
  }
  return result;
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

async function applyOne(
  content: ContentStore,
  snapshotter: Snapshotter,
  layer: {
    chainId: string;
    parent: string | undefined;
    blob: Descriptor;
    diffId: string;
    syncFs: boolean;
    signal: AbortSignal | undefined;
    pin: (key: string) => void;
  },
): Promise<number> {
  const labels: Record<string, string> = {
    [LABEL_SNAPSHOT_REF]: layer.chainId,
    [LABEL_DIFF_ID]: layer.diffId,
    ...(layer.parent ? { [LABEL_PARENT_CHAIN_ID]: layer.parent } : {}),
  };
  let key = extractKey(layer.chainId);
  let mounts;
  for (let attempt = 0;; attempt++) {
    try {
      layer.pin(key);
      mounts = await snapshotter.prepare(key, {
        labels,
        ...(layer.parent ? { parent: layer.parent } : {}),
      });
      break;
    } catch (err) {
      if (err instanceof AlreadyExists && attempt < 3) {
        key = extractKey(layer.chainId);
        continue;
      }
      throw err;
    }
  }
  try {
    let source;
    try {
      source = content.stream(layer.blob.digest);
    } catch (err) {
      if (err instanceof NotFound) {
        throw new NotFound(
          `Cannot unpack layer ${layer.blob.digest}: it is not in the content store (pull or import the image first)`,
        );
      }
      throw err;
    }
    const result = await applyToMounts(source, mounts, {
      expectedDiffId: layer.diffId,
      expectedDigest: layer.blob.digest,
      syncFs: layer.syncFs,
      ...(layer.signal ? { signal: layer.signal } : {}),
    });
    try {
      await snapshotter.commit(layer.chainId, key, { labels });
    } catch (err) {
      if (!(err instanceof AlreadyExists)) throw err;
      await snapshotter.remove(key); // Someone else committed this chain first: that is success.
    }
    return result.skipped.length;
  } catch (err) {
    try {
      await snapshotter.remove(key);
    } catch (removeErr) {
      if (!isNotFound(removeErr)) {
        console.error(`strata: cannot remove snapshot "${key}": ${(removeErr as Error).message}`);
      }
    }
    throw err;
  }
}
