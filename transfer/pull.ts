/**
 * `pullImage`: resolve a reference at a registry, fetch the manifests and configs, then download
 * the layers concurrently while the unpacker applies each one as soon as it and the layers below
 * it are in (containerd's pipelined pull). The image record is written last.
 *
 * @module
 */

import type { ContentInfo, ContentStore } from "../content/mod.ts";
import { AlreadyExists, isNotFound } from "../errors.ts";
import type { ImageStore } from "../images/store.ts";
import type { Descriptor, ImageRecord, MatchComparer } from "../images/types.ts";
import { isLayerType, isManifestType } from "../images/media_types.ts";
import {
  childGcLabels,
  children,
  dispatch,
  filterPlatforms,
  limitManifests,
  manifestLayers,
  resolveManifest,
} from "../images/manifest.ts";
import { parseManifest } from "../images/validate.ts";
import { defaultPlatformMatcher } from "../images/platforms.ts";
import { normalizeReference, parseRemoteReference, remoteHostname } from "../images/reference.ts";
import { leasedContentStore } from "../leases/content.ts";
import { LeaseManager, withLease } from "../leases/leases.ts";
import type { MetadataDb } from "../metadata/db.ts";
import { fetchToContent } from "../remotes/fetch.ts";
import { Resolver } from "../remotes/resolver.ts";
import type { Fetcher, ResolverOptions } from "../remotes/types.ts";
import {
  type LayerFetcher,
  unpackImage,
  type UnpackResult,
  type UnpackTarget,
} from "../unpack/unpack.ts";
import { type ProgressEvent, progressKind, throttleProgress } from "./progress.ts";

/** Content label naming the repositories a blob was pulled from (containerd's). */
export const LABEL_DISTRIBUTION_SOURCE = "containerd.io/distribution.source.";

/**
 * The distribution source label of a reference's registry, and the repository it names:
 * `containerd.io/distribution.source.<host without port>` and `<path>`.
 *
 * @example
 * ```ts
 * import { distributionSource } from "@strata/strata/transfer";
 * console.log(distributionSource("localhost:5000/team/app:1"));
 * ```
 *
 * @param ref A normalised reference.
 * @returns The label key and the repository.
 */
export function distributionSource(ref: string): { key: string; repo: string } {
  const remote = parseRemoteReference(ref);
  const host = remoteHostname(remote).replace(/:\d+$/, "");
  return {
    key: `${LABEL_DISTRIBUTION_SOURCE}${host}`,
    repo: remote.locator.slice(remote.locator.indexOf("/") + 1),
  };
}

/** What {@linkcode pullImage} needs: a `Client` has all of it. */
export interface PullTarget extends UnpackTarget {
  /** The image store the record is written to. */
  images: ImageStore;
  /** The metadata database, for the pull's lease. */
  db: MetadataDb;
}

/** Options for {@linkcode pullImage}; the registry options go to the resolver it makes. */
export interface PullOptions extends ResolverOptions {
  /** A resolver to use instead of making one from the registry options. */
  resolver?: Resolver;
  /**
   * The platform to fetch and unpack (default: the host's, containerd's default matcher). With
   * `allPlatforms`, the one to unpack.
   */
  platform?: MatchComparer;
  /** Fetch the content of every platform of an index (unpack still only `platform`). */
  allPlatforms?: boolean;
  /** Unpack into a snapshotter (default true); otherwise only fetch. */
  unpack?: boolean;
  /** The snapshotter to unpack into (default: the client's default). */
  snapshotter?: string;
  /** `syncfs(2)` each layer before committing it. */
  syncFs?: boolean;
  /** Refuse an image whose platform the snapshotter does not support (default true). */
  checkPlatform?: boolean;
  /** Apply layers in parallel when the snapshotter can rebase (default true; see unpack). */
  parallel?: boolean;
  /** Told about every step; byte progress arrives at most every 100 ms per item. */
  onProgress?: (event: ProgressEvent) => void;
}

/** What {@linkcode pullImage} did. */
export interface PullResult {
  /** The image record written. */
  image: ImageRecord;
  /** The unpack, when one was asked for and a manifest matched. */
  unpack?: UnpackResult;
  /** Blobs this pull downloaded (not those already present) and their bytes. */
  downloaded: { count: number; bytes: number };
}

interface Manifested {
  descriptor: Descriptor;
  layers: Descriptor[];
}

/**
 * Pulls an image from a registry into the content store and (by default) unpacks it.
 *
 * Steps, as containerd's pull: resolve the reference (HEAD, then GET when needed); walk the
 * index, manifests and configs concurrently, writing GC reference labels on every parent and
 * keeping only the chosen platform's manifest (or every one with `allPlatforms`); then start the
 * unpack, which checks the snapshotter supports the image's platform before anything is
 * downloaded, skips layers whose chain is already committed, and from the first layer that needs
 * work downloads every layer above it concurrently (the resolver's `maxConcurrentDownloads`, 3)
 * while applying each one as soon as it is in. Blobs already in the store are not downloaded
 * again; an interrupted download resumes from where the last run stopped. Everything runs under
 * a lease, so a concurrent prune removes nothing; the image record is written last, so a failed
 * pull leaves no image but keeps what it stored.
 *
 * @example Pull and unpack from a local registry
 * ```ts ignore
 * import { Client } from "@strata/strata";
 * import { pullImage } from "@strata/strata/transfer";
 *
 * using client = Client.open({ root: "/tmp/strata" });
 * const result = await pullImage(client, "localhost:5000/app:1", {
 *   onProgress: (e) => console.log(e.kind, e.id, e.status),
 * });
 * console.log(result.image.target.digest, result.unpack?.chainId);
 * ```
 *
 * @param target The client: content and image stores, snapshotters, database.
 * @param ref The reference, familiar (`alpine`) or full (`registry.example:5000/app:1`).
 * @param options Platform, unpack, registry and progress options.
 * @returns The image record, the unpack result and what was downloaded.
 * @throws {InvalidArgument} When `ref` is not a valid reference.
 * @throws {NotFound} When the registry has no such image, or no manifest for the platform.
 * @throws {PermissionDenied} When the registry refuses the credentials or the access.
 * @throws {FailedPrecondition} When a blob does not match its digest (nothing of it is kept), or
 *   the snapshotter does not support the image's platform.
 * @throws {Unavailable} When the registry stays unreachable after retries.
 */
export async function pullImage(
  target: PullTarget,
  ref: string,
  options: PullOptions = {},
): Promise<PullResult> {
  const name = normalizeReference(ref);
  const emit = throttleProgress(options.onProgress ?? (() => {}));
  const resolver = options.resolver ?? new Resolver(resolverOptions(options));
  try {
    emit({ id: name, kind: "image", status: "resolving" });
    const resolved = await resolver.resolve(name);
    const root = resolved.descriptor;
    emit({ id: name, kind: "image", status: "resolved", digest: root.digest });
    const fetcher = await resolver.fetcher(name);
    const leases = new LeaseManager(target.db);
    return await withLease(leases, async (lease) => {
      const content = leasedContentStore(target.content, leases, lease.id);
      const puller = new Puller(content, fetcher, name, emit, options.signal);
      return await puller.run(target, root, options);
    });
  } finally {
    if (options.resolver === undefined) resolver.close();
  }
}

function resolverOptions(options: PullOptions): ResolverOptions {
  const {
    resolver: _r,
    platform: _p,
    allPlatforms: _a,
    unpack: _u,
    snapshotter: _s,
    syncFs: _f,
    checkPlatform: _c,
    parallel: _l,
    onProgress: _o,
    ...rest
  } = options;
  return rest;
}

/** One pull's state: downloads in flight, progress, labels. */
class Puller {
  #content: ContentStore;
  #fetcher: Fetcher;
  #name: string;
  #emit: (event: ProgressEvent) => void;
  #abort = new AbortController();
  /**
   * Per blob: its download, and the file it writes once open (`undefined`: none, or the
   * download ended first).
   */
  #downloads = new Map<string, { done: Promise<void>; file: Promise<string | undefined> }>();
  #count = 0;
  #bytes = 0;
  #source: { key: string; repo: string };

  constructor(
    content: ContentStore,
    fetcher: Fetcher,
    name: string,
    emit: (event: ProgressEvent) => void,
    signal: AbortSignal | undefined,
  ) {
    this.#content = content;
    this.#fetcher = fetcher;
    this.#name = name;
    this.#emit = emit;
    if (signal) {
      if (signal.aborted) this.#abort.abort(signal.reason);
      else signal.addEventListener("abort", () => this.#abort.abort(signal.reason), { once: true });
    }
    this.#source = distributionSource(name);
  }

  async run(target: PullTarget, root: Descriptor, options: PullOptions): Promise<PullResult> {
    const platform = options.platform ?? defaultPlatformMatcher();
    const manifests = await this.#fetchMetadata(root, options.allPlatforms ? undefined : platform);
    try {
      let unpacked: UnpackResult | undefined;
      let pending = manifests.flatMap((m) => m.layers);
      if (options.unpack ?? true) {
        const chosen = await this.#chooseManifest(root, platform, options.allPlatforms === true);
        if (chosen !== undefined) {
          unpacked = await unpackImage(target, { name: this.#name, target: root } as ImageRecord, {
            platform,
            ...(options.snapshotter !== undefined ? { snapshotter: options.snapshotter } : {}),
            ...(options.syncFs !== undefined ? { syncFs: options.syncFs } : {}),
            ...(options.checkPlatform !== undefined
              ? { checkPlatform: options.checkPlatform }
              : {}),
            ...(options.parallel !== undefined ? { parallel: options.parallel } : {}),
            signal: this.#abort.signal,
            fetcher: this.#layerFetcher(),
            onLayer: (e) => {
              if (e.state === "exists" && !this.#downloads.has(e.blob.digest)) {
                this.#emit({ id: e.blob.digest, kind: "layer", status: "unpacked" });
              } else if (e.state !== "exists") {
                this.#emit({ id: e.blob.digest, kind: "layer", status: e.state });
              }
            },
          });
          // Layers under an unpacked chain are not needed (containerd does not fetch them).
          const chosenLayers = new Set(chosen.layers.map((l) => l.digest));
          pending = pending.filter((l) => !chosenLayers.has(l.digest));
        }
      }
      // The other platforms' layers (allPlatforms), or every layer when not unpacking.
      this.#start(pending);
      for (const { done } of this.#downloads.values()) await done;
      const { platform: _p, ...plain } = root;
      const image = target.images.upsert({ name: this.#name, target: plain });
      this.#emit({ id: this.#name, kind: "image", status: "saved", digest: root.digest });
      return {
        image,
        ...(unpacked ? { unpack: unpacked } : {}),
        downloaded: { count: this.#count, bytes: this.#bytes },
      };
    } catch (err) {
      // Stop the other downloads; what they stored stays as ingests for the next pull.
      this.#abort.abort(err);
      await Promise.allSettled([...this.#downloads.values()].map((d) => d.done));
      throw err;
    }
  }

  /**
   * Fetches the index, manifests and configs (not layers), labelling parents with their
   * children; returns every manifest kept and its layers.
   */
  async #fetchMetadata(
    root: Descriptor,
    platform: MatchComparer | undefined,
  ): Promise<Manifested[]> {
    const manifests: Manifested[] = [];
    const handler = async (desc: Descriptor): Promise<Descriptor[]> => {
      if (isLayerType(desc.mediaType)) return [];
      await this.#fetch(desc);
      const kids = await children(this.#content, desc);
      if (kids.length === 0) return [];
      // Every child is referenced, including platforms that will not be fetched (as containerd).
      const labels = childGcLabels(kids);
      await this.#content.update(desc.digest, labels, {
        fieldpaths: Object.keys(labels).map((k) => `labels.${k}`),
      });
      if (isManifestType(desc.mediaType)) {
        const manifest = parseManifest(await this.#content.readBlob(desc.digest), desc.mediaType, {
          digest: desc.digest,
        });
        manifests.push({ descriptor: desc, layers: manifestLayers(manifest) });
        return [manifest.config];
      }
      return kids;
    };
    const filtered = filterPlatforms(handler, platform);
    const limited = platform === undefined ? filtered : limitManifests(filtered, platform, 1);
    await dispatch(limited, [root], { limit: 8 });
    return manifests;
  }

  /** The manifest to unpack, or `undefined` when `allPlatforms` holds none for the platform. */
  async #chooseManifest(
    root: Descriptor,
    platform: MatchComparer,
    allPlatforms: boolean,
  ): Promise<{ layers: Descriptor[] } | undefined> {
    try {
      const { manifest } = await resolveManifest(this.#content, root, { platform });
      return { layers: manifestLayers(manifest) };
    } catch (err) {
      if (allPlatforms && isNotFound(err)) return undefined;
      throw err;
    }
  }

  #layerFetcher(): LayerFetcher {
    return {
      start: (blobs) => this.#start(blobs),
      ready: (blob) => {
        this.#start([blob]);
        return this.#downloads.get(blob.digest)!.done;
      },
      ingestFile: (blob) => {
        this.#start([blob]);
        return this.#downloads.get(blob.digest)!.file;
      },
    };
  }

  /** Starts downloads (in order, so the resolver's FIFO limit serves lower layers first). */
  #start(blobs: readonly Descriptor[]): void {
    for (const blob of blobs) {
      if (this.#downloads.has(blob.digest)) continue;
      const opened = Promise.withResolvers<string | undefined>();
      const p = this.#fetch(blob, (ref) => opened.resolve(this.#content.ingestPath(ref)));
      const ended = () => opened.resolve(undefined);
      // Awaited by the unpack or at the end; never an unhandled rejection.
      p.then(ended, ended);
      this.#downloads.set(blob.digest, { done: p, file: opened.promise });
    }
  }

  /**
   * Brings one blob into the content store, with progress events and the source label;
   * `onOpen` is told the ingest's ref once its file is being written.
   */
  async #fetch(desc: Descriptor, onOpen?: (ref: string) => void): Promise<void> {
    const kind = progressKind(desc);
    const existing = await this.#info(desc.digest);
    if (existing !== undefined) {
      this.#emit({ id: desc.digest, kind, status: "exists", current: desc.size, total: desc.size });
      await this.#label(existing);
      return;
    }
    this.#emit({ id: desc.digest, kind, status: "waiting", current: 0, total: desc.size });
    let info: ContentInfo;
    try {
      info = await fetchToContent(this.#content, this.#fetcher, desc, {
        signal: this.#abort.signal,
        ...(onOpen ? { onOpen } : {}),
        onProgress: (current, total) =>
          this.#emit({ id: desc.digest, kind, status: "downloading", current, total }),
      });
    } catch (err) {
      if (!(err instanceof AlreadyExists)) throw err;
      info = await this.#content.info(desc.digest);
    }
    this.#count++;
    this.#bytes += desc.size;
    this.#emit({
      id: desc.digest,
      kind,
      status: "downloaded",
      current: desc.size,
      total: desc.size,
    });
    await this.#label(info);
  }

  async #info(digest: string): Promise<ContentInfo | undefined> {
    try {
      return await this.#content.info(digest);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** Adds this repository to the blob's `containerd.io/distribution.source.<host>` label. */
  async #label(info: ContentInfo): Promise<void> {
    const { key, repo } = this.#source;
    const repos = new Set((info.labels[key] ?? "").split(",").filter((r) => r !== ""));
    if (repos.has(repo)) return;
    repos.add(repo);
    const value = [...repos].sort().join(",");
    if (value.length > 4096) return; // containerd skips a label that would grow past 4 KiB.
    await this.#content.update(info.digest, { [key]: value }, { fieldpaths: [`labels.${key}`] });
  }
}
