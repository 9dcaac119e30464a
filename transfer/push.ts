/**
 * `pushImage`: send a stored image to a registry, children before parents, so the registry can
 * check every reference of a manifest when it arrives.
 *
 * @module
 */

import type { ContentStore } from "../content/mod.ts";
import { FailedPrecondition, isNotFound } from "../errors.ts";
import type { ImageStore } from "../images/store.ts";
import type { Descriptor, MatchComparer } from "../images/types.ts";
import { isIndexType, isManifestType } from "../images/media_types.ts";
import { children, resolveManifest } from "../images/manifest.ts";
import { normalizeReference, parseRemoteReference } from "../images/reference.ts";
import { Resolver } from "../remotes/resolver.ts";
import type { Pusher, ResolverOptions } from "../remotes/types.ts";
import { type ProgressEvent, progressKind, throttleProgress } from "./progress.ts";
import { distributionSource } from "./pull.ts";

/** What {@linkcode pushImage} reads: a `Client` has both. */
export interface PushSource {
  /** The content store holding the image's blobs. */
  content: ContentStore;
  /** The image store holding its record. */
  images: ImageStore;
}

/** Options for {@linkcode pushImage}; the registry options go to the resolver it makes. */
export interface PushImageOptions extends ResolverOptions {
  /** A resolver to use instead of making one from the registry options. */
  resolver?: Resolver;
  /** Where to push (default: the image's own name). */
  remote?: string;
  /**
   * Push only this platform's manifest, as the tagged target, instead of the whole index (useful
   * when only one platform of an index was pulled).
   */
  platform?: MatchComparer;
  /** How many blobs may upload at once (default 3). */
  maxConcurrentUploads?: number;
  /** Told about every blob; byte progress arrives at most every 100 ms per blob. */
  onProgress?: (event: ProgressEvent) => void;
}

/** What {@linkcode pushImage} did. */
export interface PushResult {
  /** The reference pushed to (normalised). */
  ref: string;
  /** The descriptor the reference now points at. */
  target: Descriptor;
  /** Blobs and manifests uploaded. */
  uploaded: number;
  /** Blobs and manifests the registry already had. */
  existed: number;
}

/**
 * Pushes a stored image to a registry: layers and configs first (several at once), then
 * manifests, then the index, and the root under the reference's tag. Blobs the registry already
 * has (`HEAD`) are not sent again.
 *
 * @example Push to a local registry and read it back
 * ```ts ignore
 * import { Client } from "@strata/strata";
 * import { pushImage } from "@strata/strata/transfer";
 *
 * using client = Client.open({ root: "/tmp/strata" });
 * const result = await pushImage(client, "docker.io/library/app:1", {
 *   remote: "localhost:5000/app:1",
 * });
 * console.log(result.ref, result.target.digest, result.uploaded);
 * ```
 *
 * @param source The content and image stores.
 * @param name The stored image's name.
 * @param options Where to push, the platform, registry and progress options.
 * @returns The reference, its target and what was sent.
 * @throws {NotFound} When there is no such image.
 * @throws {FailedPrecondition} When a blob of the image is missing from the content store.
 * @throws {PermissionDenied} When the registry refuses the credentials or the access.
 * @throws {Unavailable} When the registry stays unreachable after retries.
 */
export async function pushImage(
  source: PushSource,
  name: string,
  options: PushImageOptions = {},
): Promise<PushResult> {
  const record = source.images.get(name);
  const ref = normalizeReference(options.remote ?? name);
  const object = parseRemoteReference(ref).object;
  const tag = object.includes("@") ? object.slice(0, object.indexOf("@")) : object;
  let root = record.target;
  if (options.platform !== undefined && isIndexType(root.mediaType)) {
    root = (await resolveManifest(source.content, root, { platform: options.platform }))
      .descriptor;
  }
  const { platform: _p, ...target } = root;
  const emit = throttleProgress(options.onProgress ?? (() => {}));
  const resolver = options.resolver ?? new Resolver(resolverOptions(options));
  try {
    const pusher = await resolver.pusher(ref);
    const job = new PushJob(source.content, pusher, emit, {
      limit: options.maxConcurrentUploads ?? 3,
      sourceLabel: distributionSource(ref).key,
    });
    await job.push(target, tag);
    emit({ id: ref, kind: "image", status: "pushed", digest: target.digest });
    return { ref, target, uploaded: job.uploaded, existed: job.existed };
  } finally {
    if (options.resolver === undefined) resolver.close();
  }
}

function resolverOptions(options: PushImageOptions): ResolverOptions {
  const {
    resolver: _r,
    remote: _m,
    platform: _p,
    maxConcurrentUploads: _c,
    onProgress: _o,
    ...rest
  } = options;
  return rest;
}

/** One push: uploads deduplicated by digest, blob uploads limited. */
class PushJob {
  uploaded = 0;
  existed = 0;
  #content: ContentStore;
  #pusher: Pusher;
  #emit: (event: ProgressEvent) => void;
  #done = new Map<string, Promise<void>>();
  #free: number;
  #waiters: (() => void)[] = [];
  #sourceLabel: string;

  constructor(
    content: ContentStore,
    pusher: Pusher,
    emit: (event: ProgressEvent) => void,
    options: { limit: number; sourceLabel: string },
  ) {
    this.#content = content;
    this.#pusher = pusher;
    this.#emit = emit;
    this.#free = Math.max(1, options.limit);
    this.#sourceLabel = options.sourceLabel;
  }

  /** Pushes `desc` after all its children; `tag` only for the root. */
  push(desc: Descriptor, tag?: string): Promise<void> {
    const key = tag === undefined ? desc.digest : `${desc.digest} ${tag}`;
    let p = this.#done.get(key);
    if (p === undefined) {
      p = this.#pushTree(desc, tag);
      p.catch(() => {});
      this.#done.set(key, p);
    }
    return p;
  }

  async #pushTree(desc: Descriptor, tag: string | undefined): Promise<void> {
    let kids: Descriptor[];
    try {
      kids = await children(this.#content, desc);
    } catch (err) {
      if (isNotFound(err)) throw missing(desc);
      throw err;
    }
    const results = await Promise.allSettled(kids.map((k) => this.push(k)));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    await this.#pushOne(desc, tag);
  }

  async #pushOne(desc: Descriptor, tag: string | undefined): Promise<void> {
    const kind = progressKind(desc);
    const isManifest = isManifestType(desc.mediaType) || isIndexType(desc.mediaType);
    if (!isManifest) await this.#acquire();
    try {
      let labels: Record<string, string>;
      try {
        labels = (await this.#content.info(desc.digest)).labels;
      } catch (err) {
        if (isNotFound(err)) throw missing(desc);
        throw err;
      }
      // Repositories of this registry the blob was pulled from: a mount saves the upload.
      const sources = (labels[this.#sourceLabel] ?? "").split(",").filter((r) => r !== "");
      // A manifest is put again under a tag even when the registry has it by digest.
      if (tag === undefined && await this.#pusher.exists(desc)) {
        this.existed++;
        this.#emit({
          id: desc.digest,
          kind,
          status: "exists",
          current: desc.size,
          total: desc.size,
        });
        return;
      }
      this.#emit({ id: desc.digest, kind, status: "uploading", current: 0, total: desc.size });
      const data = isManifest
        ? await this.#content.readBlob(desc.digest)
        : () => this.#content.stream(desc.digest);
      await this.#pusher.push(desc, data, {
        ...(tag ? { tag } : {}),
        ...(sources.length > 0 && !isManifest ? { mountFrom: sources } : {}),
        onProgress: (sent) =>
          this.#emit({
            id: desc.digest,
            kind,
            status: "uploading",
            current: sent,
            total: desc.size,
          }),
      });
      this.uploaded++;
      this.#emit({
        id: desc.digest,
        kind,
        status: "uploaded",
        current: desc.size,
        total: desc.size,
      });
    } finally {
      if (!isManifest) this.#release();
    }
  }

  #acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#free++;
  }
}

function missing(desc: Descriptor): FailedPrecondition {
  return new FailedPrecondition(
    `Cannot push ${desc.mediaType} ${desc.digest}: it is not in the content store (pull it with --all-platforms, or push one platform with --platform)`,
  );
}
