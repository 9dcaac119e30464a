/**
 * The image graph: walking and dispatching handlers over descriptors, manifest selection by
 * platform, the image config and its root filesystem, chain IDs, platforms, availability checks,
 * size and usage, and the GC reference labels a parent blob carries for its children. Modelled on
 * containerd's `core/images` (`image.go`, `handlers.go`) and `core/images/usage`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import type { Provider } from "../content/types.ts";
import { FailedPrecondition, InvalidArgument, isNotFound, NotFound } from "../errors.ts";
import { isValidDigest } from "./digest.ts";
import {
  isIndexType,
  isKnownConfigType,
  isLayerType,
  isManifestType,
  MEDIA_TYPE_DOCKER_CONFIG,
  MEDIA_TYPE_OCI_CONFIG,
} from "./media_types.ts";
import { defaultPlatformMatcher, normalizePlatform } from "./platforms.ts";
import type { Descriptor, ImageConfig, Manifest, MatchComparer, Platform } from "./types.ts";
import { parseImageConfig, parseIndex, parseManifest } from "./validate.ts";

/** A handler visits one descriptor and returns the children to visit next. */
export type Handler = (desc: Descriptor) => Promise<Descriptor[]>;

/**
 * Thrown by a {@linkcode Handler} to say "do not descend into this descriptor's children"; the walk
 * goes on with the next sibling and does not report an error (containerd's `ErrSkipDesc`).
 *
 * @example
 * ```ts
 * import { SkipDescriptor, walk } from "./manifest.ts";
 * await walk(async () => {
 *   throw new SkipDescriptor();
 * }, []);
 * ```
 */
export class SkipDescriptor extends Error {
  /** Always `"SkipDescriptor"`. */
  override readonly name: string = "SkipDescriptor";

  /**
   * Creates the sentinel.
   *
   * @param message An optional explanation.
   */
  constructor(message = "Skip the descriptor's children") {
    super(message);
  }
}

const SUPPORTED_HASHES: ReadonlySet<string> = new Set(["sha256", "sha384", "sha512"]);

/** Reads a descriptor's blob, using its embedded `data` when the size and digest agree. */
async function readContent(provider: Provider, desc: Descriptor): Promise<Uint8Array> {
  if (typeof desc.data === "string") {
    const bytes = new Uint8Array(Buffer.from(desc.data, "base64"));
    const colon = desc.digest.indexOf(":");
    const algorithm = desc.digest.slice(0, colon);
    if (bytes.length === desc.size && SUPPORTED_HASHES.has(algorithm)) {
      const encoded = createHash(algorithm).update(bytes).digest("hex");
      if (`${algorithm}:${encoded}` === desc.digest) return bytes;
    }
  }
  return await provider.readBlob(desc.digest);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads a config blob as loosely as containerd does (any JSON object). */
async function readLooseConfig(
  provider: Provider,
  desc: Descriptor,
): Promise<Record<string, unknown>> {
  const bytes = await readContent(provider, desc);
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new InvalidArgument(
      `Cannot parse image config "${desc.digest}": invalid JSON: ${(err as Error).message}`,
    );
  }
  if (!isObject(doc)) {
    throw new InvalidArgument(
      `Cannot parse image config "${desc.digest}": document is not a JSON object`,
    );
  }
  return doc;
}

/** The normalised platform of a config document (containerd's `ConfigPlatform`). */
function configPlatform(doc: Record<string, unknown>): Platform {
  const str = (v: unknown): string => typeof v === "string" ? v : "";
  const p: Platform = { os: str(doc.os), architecture: str(doc.architecture) };
  if (str(doc.variant) !== "") p.variant = str(doc.variant);
  if (str(doc["os.version"]) !== "") p["os.version"] = str(doc["os.version"]);
  const features = doc["os.features"];
  if (Array.isArray(features) && features.length > 0) {
    p["os.features"] = features.filter((f): f is string => typeof f === "string");
  }
  return normalizePlatform(p);
}

/**
 * Returns the children of a descriptor, as containerd's `Children`: a manifest gives its config
 * then its layers, an index gives its manifests, anything else has none. Manifests and indexes are
 * read from `provider` and validated.
 *
 * @example
 * ```ts
 * import { children } from "./manifest.ts";
 * const provider = { readBlob: (): Promise<Uint8Array> => Promise.reject(new Error("none")) };
 * const layer = { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: "sha256:" + "0".repeat(64), size: 1 };
 * console.log(await children(provider, layer));
 * ```
 *
 * @param provider Where blobs are read from.
 * @param desc The descriptor.
 * @returns The children, in document order.
 * @throws {NotFound} When a manifest or index blob is missing.
 * @throws {InvalidArgument} When a manifest or index is malformed.
 */
export async function children(provider: Provider, desc: Descriptor): Promise<Descriptor[]> {
  if (isManifestType(desc.mediaType)) {
    const bytes = await readContent(provider, desc);
    const m = parseManifest(bytes, desc.mediaType, { digest: desc.digest });
    return [m.config, ...m.layers];
  }
  if (isIndexType(desc.mediaType)) {
    const bytes = await readContent(provider, desc);
    return [...parseIndex(bytes, desc.mediaType, { digest: desc.digest }).manifests];
  }
  return [];
}

/**
 * Walks descriptors sequentially, depth first, siblings in order: calls `handler` on each and then
 * walks the children it returns. A handler throwing {@linkcode SkipDescriptor} skips that
 * descriptor's children; any other error stops the walk.
 *
 * @example
 * ```ts
 * import { walk } from "./manifest.ts";
 * const seen: string[] = [];
 * await walk(async (d) => {
 *   seen.push(d.digest);
 *   return [];
 * }, [{ mediaType: "application/octet-stream", digest: "sha256:" + "0".repeat(64), size: 1 }]);
 * console.log(seen.length);
 * ```
 *
 * @param handler Called for every descriptor.
 * @param descs The descriptors to start from.
 * @returns When the walk is complete.
 */
export async function walk(handler: Handler, descs: readonly Descriptor[]): Promise<void> {
  for (const desc of descs) {
    let next: Descriptor[];
    try {
      next = await handler(desc);
    } catch (err) {
      if (err instanceof SkipDescriptor) continue;
      throw err;
    }
    if (next.length > 0) await walk(handler, next);
  }
}

/** A counting semaphore handing out permits in FIFO order. */
class Semaphore {
  #free: number;
  #waiters: (() => void)[] = [];

  constructor(permits: number) {
    this.#free = permits;
  }

  acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#free++;
  }
}

/** Options for {@linkcode dispatch}. */
export interface DispatchOptions {
  /** How many handler calls may run at once; 0 or absent means no limit. */
  limit?: number | undefined;
}

/**
 * Calls `handler` on every descriptor and, recursively, on the children it returns, running
 * siblings and subtrees concurrently (containerd's `Dispatch`). The concurrency limit applies to
 * handler calls only: a permit is taken before a call and given back when it returns. After the
 * first error no new handler call starts; the error is thrown once running calls have finished.
 * {@linkcode SkipDescriptor} skips a descriptor's children without error.
 *
 * @example
 * ```ts
 * import { dispatch } from "./manifest.ts";
 * let n = 0;
 * await dispatch(async () => {
 *   n++;
 *   return [];
 * }, [{ mediaType: "application/octet-stream", digest: "sha256:" + "0".repeat(64), size: 1 }], { limit: 3 });
 * console.log(n);
 * ```
 *
 * @param handler Called for every descriptor.
 * @param descs The descriptors to start from.
 * @param options The concurrency limit.
 * @returns When every descriptor has been handled.
 */
export async function dispatch(
  handler: Handler,
  descs: readonly Descriptor[],
  options: DispatchOptions = {},
): Promise<void> {
  const limit = options.limit ?? 0;
  const semaphore = limit > 0 ? new Semaphore(limit) : undefined;
  const tasks: Promise<void>[] = [];
  let failure: { error: unknown } | undefined;

  const start = (desc: Descriptor): void => {
    tasks.push((async () => {
      if (failure) return;
      await semaphore?.acquire();
      let next: Descriptor[];
      try {
        if (failure) return;
        next = await handler(desc);
      } catch (err) {
        if (!(err instanceof SkipDescriptor)) failure ??= { error: err };
        return;
      } finally {
        semaphore?.release();
      }
      for (const child of next) start(child);
    })());
  };

  for (const desc of descs) start(desc);
  // Children are queued before their parent's task settles, so this sees every task.
  for (let i = 0; i < tasks.length; i++) await tasks[i];
  if (failure) throw failure.error;
}

function comparePlatformed(matcher: Pick<MatchComparer, "less">) {
  return (a: Descriptor, b: Descriptor): number => {
    if (a.platform === undefined) return b.platform === undefined ? 0 : 1;
    if (b.platform === undefined) return -1;
    if (matcher.less(a.platform, b.platform)) return -1;
    if (matcher.less(b.platform, a.platform)) return 1;
    return 0;
  };
}

/**
 * Wraps a handler so that only children without a `platform` or with a matching one are kept
 * (containerd's `FilterPlatforms`). With no matcher every child is kept.
 *
 * @example
 * ```ts
 * import { children, filterPlatforms } from "./manifest.ts";
 * import { defaultPlatformMatcher } from "./platforms.ts";
 * const provider = { readBlob: (): Promise<Uint8Array> => Promise.reject(new Error("none")) };
 * const handler = filterPlatforms((d) => children(provider, d), defaultPlatformMatcher());
 * console.log(typeof handler);
 * ```
 *
 * @param handler The handler whose children are filtered.
 * @param matcher Which platforms to keep; `undefined` keeps all.
 * @returns The wrapped handler.
 */
export function filterPlatforms(
  handler: Handler,
  matcher: Pick<MatchComparer, "match"> | undefined,
): Handler {
  return async (desc) => {
    const found = await handler(desc);
    if (matcher === undefined) return found;
    return found.filter((d) => d.platform === undefined || matcher.match(d.platform));
  };
}

/**
 * Wraps a handler so that the children of an index are ordered by preference (entries with a
 * platform first, by `matcher.less`; then entries without one, in document order) and, when `n`
 * is positive, cut to the first `n` (containerd's `LimitManifests`). Other nodes pass through.
 *
 * @example
 * ```ts
 * import { children, limitManifests } from "./manifest.ts";
 * import { defaultPlatformMatcher } from "./platforms.ts";
 * const provider = { readBlob: (): Promise<Uint8Array> => Promise.reject(new Error("none")) };
 * const handler = limitManifests((d) => children(provider, d), defaultPlatformMatcher(), 1);
 * console.log(typeof handler);
 * ```
 *
 * @param handler The handler whose children are limited.
 * @param matcher The preference order.
 * @param n How many index entries to keep; 0 keeps all (sorted).
 * @returns The wrapped handler.
 * @throws {NotFound} From the wrapped handler, when `n` is positive and an index has no entries
 *   left: "no match for platform in manifest".
 */
export function limitManifests(
  handler: Handler,
  matcher: Pick<MatchComparer, "less">,
  n: number,
): Handler {
  return async (desc) => {
    let found = await handler(desc);
    if (!isIndexType(desc.mediaType)) return found;
    found = [...found].sort(comparePlatformed(matcher));
    if (n > 0) {
      if (found.length === 0) {
        throw new NotFound(
          `Cannot select manifests of "${desc.digest}": no match for platform in manifest "${desc.digest}"`,
        );
      }
      found = found.slice(0, n);
    }
    return found;
  };
}

/** A manifest chosen by {@linkcode resolveManifest} and the descriptor it was reached through. */
export interface ResolvedManifest {
  /** The manifest's descriptor (the target itself, or an index entry). */
  descriptor: Descriptor;
  /** The parsed manifest. */
  manifest: Manifest;
}

/** Options for the functions that select a manifest by platform. */
export interface PlatformOptions {
  /**
   * The platforms to select by. Absent means no platform filtering: every index entry is walked
   * and the first manifest in document order wins (containerd's nil matcher).
   */
  platform?: MatchComparer | undefined;
}

/**
 * Selects the manifest of an image for a platform, exactly as containerd's `images.Manifest`: a
 * sequential depth-first walk from the target. At each index only the single best entry is
 * followed: entries whose `platform` is absent or matches, those with a platform first (ordered by
 * `less`), then those without. A manifest reached through an index is accepted when its entry's
 * platform matches or, for an entry without a platform, when the platform in its config matches.
 * A target that is itself a manifest is never platform-checked.
 *
 * @example
 * ```ts
 * import { resolveManifest } from "./manifest.ts";
 * import { defaultPlatformMatcher } from "./platforms.ts";
 * import type { Descriptor } from "./types.ts";
 * async function pick(provider: { readBlob(d: string): Promise<Uint8Array> }, target: Descriptor) {
 *   const { manifest } = await resolveManifest(provider, target, { platform: defaultPlatformMatcher() });
 *   return manifest.config;
 * }
 * console.log(typeof pick);
 * ```
 *
 * @param provider Where blobs are read from.
 * @param target The image's target: an index or a manifest.
 * @param options The platform matcher.
 * @returns The chosen manifest and its descriptor.
 * @throws {NotFound} When no manifest matches ("no match for platform in manifest"), a blob is
 *   missing, or a node has an unexpected media type.
 * @throws {InvalidArgument} When a document is malformed.
 */
export async function resolveManifest(
  provider: Provider,
  target: Descriptor,
  options: PlatformOptions = {},
): Promise<ResolvedManifest> {
  const matcher = options.platform;
  const found: ResolvedManifest[] = [];
  let wasIndex = false;
  await walk(async (desc) => {
    if (isManifestType(desc.mediaType)) {
      const bytes = await readContent(provider, desc);
      const manifest = parseManifest(bytes, desc.mediaType, { digest: desc.digest });
      if (desc.digest !== target.digest && matcher !== undefined) {
        if (desc.platform !== undefined) {
          if (!matcher.match(desc.platform)) return [];
        } else {
          const config = await readLooseConfig(provider, manifest.config);
          if (!matcher.match(configPlatform(config))) return [];
        }
      }
      found.push({ descriptor: desc, manifest });
      return [];
    }
    if (isIndexType(desc.mediaType)) {
      const bytes = await readContent(provider, desc);
      const index = parseIndex(bytes, desc.mediaType, { digest: desc.digest });
      if (matcher === undefined) return index.manifests;
      const candidates = index.manifests
        .filter((d) => d.platform === undefined || matcher.match(d.platform))
        .sort(comparePlatformed(matcher));
      wasIndex = true;
      return candidates.slice(0, 1);
    }
    throw new NotFound(
      `Cannot resolve manifest of "${target.digest}": unexpected media type "${desc.mediaType}" of "${desc.digest}"`,
    );
  }, [target]);
  const first = found[0];
  if (first === undefined) {
    throw new NotFound(
      wasIndex
        ? `Cannot resolve manifest: no match for platform in manifest "${target.digest}"`
        : `Cannot resolve manifest: no manifest in "${target.digest}"`,
    );
  }
  return first;
}

/**
 * Returns the config descriptor of the manifest {@linkcode resolveManifest} selects
 * (containerd's `images.Config`).
 *
 * @example
 * ```ts
 * import { imageConfig } from "./manifest.ts";
 * import type { Descriptor } from "./types.ts";
 * async function configOf(provider: { readBlob(d: string): Promise<Uint8Array> }, target: Descriptor) {
 *   return (await imageConfig(provider, target)).digest;
 * }
 * console.log(typeof configOf);
 * ```
 *
 * @param provider Where blobs are read from.
 * @param target The image's target.
 * @param options The platform matcher.
 * @returns The config descriptor.
 * @throws {NotFound} As {@linkcode resolveManifest}.
 */
export async function imageConfig(
  provider: Provider,
  target: Descriptor,
  options: PlatformOptions = {},
): Promise<Descriptor> {
  return (await resolveManifest(provider, target, options)).manifest.config;
}

/**
 * Reads and validates an image config blob (see {@linkcode parseImageConfig}).
 *
 * @example
 * ```ts
 * import { readImageConfig } from "./manifest.ts";
 * import type { Descriptor } from "./types.ts";
 * async function osOf(provider: { readBlob(d: string): Promise<Uint8Array> }, config: Descriptor) {
 *   return (await readImageConfig(provider, config)).os;
 * }
 * console.log(typeof osOf);
 * ```
 *
 * @param provider Where blobs are read from.
 * @param configDesc The config descriptor.
 * @returns The parsed config.
 * @throws {NotFound} When the blob is missing.
 * @throws {InvalidArgument} When the config is malformed.
 */
export async function readImageConfig(
  provider: Provider,
  configDesc: Descriptor,
): Promise<ImageConfig> {
  const bytes = await readContent(provider, configDesc);
  return parseImageConfig(bytes, { digest: configDesc.digest });
}

/**
 * Returns the DiffIDs (`rootfs.diff_ids`) of an image config. Like containerd, `rootfs.type` is not
 * checked here; each DiffID must be a valid digest.
 *
 * @example
 * ```ts
 * import { rootFS } from "./manifest.ts";
 * import type { Descriptor } from "./types.ts";
 * async function layersOf(provider: { readBlob(d: string): Promise<Uint8Array> }, config: Descriptor) {
 *   return (await rootFS(provider, config)).length;
 * }
 * console.log(typeof layersOf);
 * ```
 *
 * @param provider Where blobs are read from.
 * @param configDesc The config descriptor.
 * @returns The DiffIDs, bottom layer first.
 * @throws {NotFound} When the blob is missing.
 * @throws {InvalidArgument} When the config is not JSON or a DiffID is malformed.
 */
export async function rootFS(provider: Provider, configDesc: Descriptor): Promise<string[]> {
  const doc = await readLooseConfig(provider, configDesc);
  const rootfs = doc.rootfs;
  if (rootfs === undefined || rootfs === null) return [];
  const diffIds = isObject(rootfs) ? rootfs.diff_ids : undefined;
  if (diffIds === undefined || diffIds === null) return [];
  if (!Array.isArray(diffIds)) {
    throw new InvalidArgument(
      `Cannot parse image config "${configDesc.digest}": "rootfs.diff_ids" must be an array`,
    );
  }
  return diffIds.map((d, i) => {
    if (typeof d !== "string" || !isValidDigest(d)) {
      throw new InvalidArgument(
        `Cannot parse image config "${configDesc.digest}": "rootfs.diff_ids[${i}]" is not a valid digest: ${
          JSON.stringify(d)
        }`,
      );
    }
    return d;
  });
}

/**
 * Computes the ChainID of a stack of layers: the first DiffID itself, then
 * `sha256(parent + " " + diffId)` for each next one. An empty list gives `""`.
 *
 * @example
 * ```ts
 * import { chainId } from "./manifest.ts";
 * console.log(chainId(["sha256:" + "a".repeat(64), "sha256:" + "b".repeat(64)]));
 * ```
 *
 * @param diffIds The DiffIDs, bottom layer first.
 * @returns The ChainID of the whole stack.
 */
export function chainId(diffIds: readonly string[]): string {
  return chainIds(diffIds).at(-1) ?? "";
}

/**
 * Computes the ChainID of every prefix of a stack of layers: entry `i` is the ChainID of layers
 * `0..i`.
 *
 * @example
 * ```ts
 * import { chainIds } from "./manifest.ts";
 * console.log(chainIds(["sha256:" + "a".repeat(64), "sha256:" + "b".repeat(64)]).length);
 * ```
 *
 * @param diffIds The DiffIDs, bottom layer first.
 * @returns The ChainIDs, one per layer.
 */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  let parent = "";
  for (const diffId of diffIds) {
    parent = parent === ""
      ? diffId
      : `sha256:${createHash("sha256").update(`${parent} ${diffId}`).digest("hex")}`;
    out.push(parent);
  }
  return out;
}

/**
 * Lists the platforms an image provides (containerd's `images.Platforms`): every descriptor
 * carrying a `platform` contributes it as written and its subtree is skipped, except entries whose
 * OS or architecture is `unknown` (attestations), which are skipped without contributing; an image
 * config reached without a platform contributes the normalised platform in the config.
 *
 * @example
 * ```ts
 * import { imagePlatforms } from "./manifest.ts";
 * import type { Descriptor } from "./types.ts";
 * async function list(provider: { readBlob(d: string): Promise<Uint8Array> }, target: Descriptor) {
 *   return (await imagePlatforms(provider, target)).length;
 * }
 * console.log(typeof list);
 * ```
 *
 * @param provider Where blobs are read from.
 * @param target The image's target.
 * @returns The platforms, in walk order (not de-duplicated).
 * @throws {NotFound} When a manifest, index or config blob on the way is missing.
 */
export async function imagePlatforms(provider: Provider, target: Descriptor): Promise<Platform[]> {
  const out: Platform[] = [];
  await walk(async (desc) => {
    if (desc.platform !== undefined) {
      if (desc.platform.os !== "unknown" && desc.platform.architecture !== "unknown") {
        out.push(desc.platform);
      }
      throw new SkipDescriptor();
    }
    if (desc.mediaType === MEDIA_TYPE_OCI_CONFIG || desc.mediaType === MEDIA_TYPE_DOCKER_CONFIG) {
      out.push(configPlatform(await readLooseConfig(provider, desc)));
    }
    return await children(provider, desc);
  }, [target]);
  return out;
}

/** Reports whether a blob exists; used to probe without reading large blobs. */
export type InfoFunction = (digest: string) => Promise<BlobInfo>;

/** What {@linkcode InfoFunction} reports about a stored blob. */
export interface BlobInfo {
  /** The stored size in bytes. */
  size: number;
  /** The blob's labels. */
  labels: Record<string, string>;
}

/** A provider that can also look a blob up without reading it, as the content store can. */
export interface InfoProvider extends Provider {
  /**
   * Looks a blob up, throwing {@linkcode NotFound} when it is absent.
   *
   * @param digest The blob's digest.
   */
  info?(digest: string): Promise<BlobInfo>;
}

/** The result of {@linkcode checkImage}. */
export interface ImageCheck {
  /** Whether a manifest for the platform was found (even if some of its blobs are missing). */
  available: boolean;
  /** The blobs the image needs: config then layers (or just the target when unavailable). */
  required: Descriptor[];
  /** The required blobs that are present. */
  present: Descriptor[];
  /** The required blobs that are missing. */
  missing: Descriptor[];
}

/**
 * Checks which blobs of an image are present (containerd's `images.Check`). When no manifest can
 * be selected (NotFound), the image is unavailable and the target itself is reported required and
 * missing. Otherwise it is available and the config and layers are probed one by one, with
 * `provider.info` when the provider has it (the content store does), else by reading them.
 *
 * @example
 * ```ts
 * import { checkImage } from "./manifest.ts";
 * import type { Descriptor } from "./types.ts";
 * async function complete(provider: { readBlob(d: string): Promise<Uint8Array> }, target: Descriptor) {
 *   const r = await checkImage(provider, target);
 *   return r.available && r.missing.length === 0;
 * }
 * console.log(typeof complete);
 * ```
 *
 * @param provider Where blobs are read from.
 * @param target The image's target.
 * @param platform The platform matcher; absent means no platform filtering (see
 *   {@linkcode resolveManifest}).
 * @returns What is required, present and missing.
 * @throws {InvalidArgument} When a document is malformed; other errors than NotFound propagate.
 */
export async function checkImage(
  provider: InfoProvider,
  target: Descriptor,
  platform?: MatchComparer,
): Promise<ImageCheck> {
  let manifest: Manifest;
  try {
    ({ manifest } = await resolveManifest(provider, target, { platform }));
  } catch (err) {
    if (isNotFound(err)) {
      return { available: false, required: [target], present: [], missing: [target] };
    }
    throw err;
  }
  const required = [manifest.config, ...manifest.layers];
  const present: Descriptor[] = [];
  const missing: Descriptor[] = [];
  for (const desc of required) {
    try {
      if (provider.info) await provider.info(desc.digest);
      else await provider.readBlob(desc.digest);
      present.push(desc);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      missing.push(desc);
    }
  }
  return { available: true, required, present, missing };
}

/**
 * Sums the declared sizes of an image for one platform (containerd's metadata `Image.Size`): a
 * sequential walk of the target and, at each index, the single best entry for the platform; the
 * target, manifest, config and layers all count.
 *
 * @example
 * ```ts
 * import { imageSize } from "./manifest.ts";
 * import type { Descriptor } from "./types.ts";
 * async function size(provider: { readBlob(d: string): Promise<Uint8Array> }, target: Descriptor) {
 *   return await imageSize(provider, target);
 * }
 * console.log(typeof size);
 * ```
 *
 * @param provider Where blobs are read from.
 * @param target The image's target.
 * @param platform The platform matcher; defaults to the host's ({@linkcode defaultPlatformMatcher}).
 * @returns The size in bytes.
 * @throws {NotFound} When a manifest or index is missing, or an index has no entry for the
 *   platform.
 * @throws {InvalidArgument} When a descriptor has a negative size.
 */
export async function imageSize(
  provider: Provider,
  target: Descriptor,
  platform?: MatchComparer,
): Promise<number> {
  const matcher = platform ?? defaultPlatformMatcher();
  const next = limitManifests(
    filterPlatforms((d) => children(provider, d), matcher),
    matcher,
    1,
  );
  let size = 0;
  await walk(async (desc) => {
    if (desc.size < 0) {
      throw new InvalidArgument(
        `Cannot compute image size: invalid size ${desc.size} of "${desc.digest}" ("${desc.mediaType}")`,
      );
    }
    size += desc.size;
    return await next(desc);
  }, [target]);
  return size;
}

/** Options for {@linkcode imageUsage}. */
export interface ImageUsageOptions {
  /**
   * Follow at most this many index entries, best first for `platform`, and require every visited
   * manifest to exist (0 follows all entries, but they must exist). Absent: walk everything and
   * silently skip missing manifests and their subtrees.
   */
  manifestLimit?: number | undefined;
  /** The preference order used with `manifestLimit`; defaults to the host's. */
  platform?: MatchComparer | undefined;
  /** Count declared descriptor sizes instead of stored sizes; missing blobs still count. */
  manifestOnly?: boolean | undefined;
  /**
   * Add the size of every snapshot a blob references through a
   * `containerd.io/gc.ref.snapshot.<snapshotter>` label (needs `info` and `snapshotUsage`).
   */
  snapshots?: boolean | undefined;
  /**
   * Looks a blob up in the store (throwing {@linkcode NotFound} when absent); defaults to
   * `provider.info`. Without either, declared sizes are used and blobs are not probed.
   */
  info?: InfoFunction | undefined;
  /**
   * Returns the size of a snapshot; {@linkcode NotFound} and {@linkcode InvalidArgument} are
   * ignored.
   */
  snapshotUsage?: ((snapshotter: string, key: string) => Promise<number>) | undefined;
}

const SNAPSHOT_REF_PREFIX = "containerd.io/gc.ref.snapshot.";

/**
 * Computes the disk usage of an image (containerd's `usage.CalculateImageUsage`). By default every
 * descriptor reachable from the target that exists counts with its stored size (or its declared
 * size when that is larger); missing manifests and their subtrees are skipped. See
 * {@linkcode ImageUsageOptions} for the variations. Descriptors are visited concurrently, at most
 * three handler calls at a time; a blob referenced twice counts twice.
 *
 * @example
 * ```ts
 * import { imageUsage } from "./manifest.ts";
 * import type { Descriptor } from "./types.ts";
 * async function usage(provider: { readBlob(d: string): Promise<Uint8Array> }, target: Descriptor) {
 *   return await imageUsage(provider, target, { manifestOnly: true });
 * }
 * console.log(typeof usage);
 * ```
 *
 * @param provider Where blobs are read from.
 * @param target The image's target.
 * @param options What to count.
 * @returns The usage in bytes.
 * @throws {NotFound} With `manifestLimit`, when a manifest or index is missing or an index has no
 *   entries.
 */
export async function imageUsage(
  provider: InfoProvider,
  target: Descriptor,
  options: ImageUsageOptions = {},
): Promise<number> {
  let next: Handler = (d) => children(provider, d);
  let mustExist = false;
  if (options.manifestLimit !== undefined) {
    next = limitManifests(
      next,
      options.platform ?? defaultPlatformMatcher(),
      options.manifestLimit,
    );
    mustExist = true;
  }
  const manifestOnly = options.manifestOnly === true;
  const lookup = options.info ?? provider.info?.bind(provider);
  const snapshots = options.snapshots === true;
  let total = 0;
  const count: Handler = async (desc) => {
    let size = desc.size;
    let usage = 0;
    let found: Descriptor[] = [];
    let missing = false;
    try {
      found = await next(desc);
    } catch (err) {
      if (!isNotFound(err) || mustExist) throw err;
      missing = true;
      if (!manifestOnly) size = 0;
    }
    if (!missing && (snapshots || !manifestOnly) && lookup) {
      let info: BlobInfo | undefined;
      try {
        info = await lookup(desc.digest);
      } catch (err) {
        if (!isNotFound(err)) throw err;
        if (!manifestOnly) size = 0;
      }
      if (info !== undefined && info.size > size) size = info.size;
      if (info !== undefined && snapshots && options.snapshotUsage) {
        for (const [key, value] of Object.entries(info.labels)) {
          if (!key.startsWith(SNAPSHOT_REF_PREFIX)) continue;
          const snapshotter = key.slice(SNAPSHOT_REF_PREFIX.length).split("/")[0]!;
          try {
            usage += await options.snapshotUsage(snapshotter, value);
          } catch (err) {
            if (!isNotFound(err) && !(err instanceof InvalidArgument)) throw err;
          }
        }
      }
    }
    if (size >= 0) usage += size;
    total += usage;
    return found;
  };
  await dispatch(count, [target], { limit: 3 });
  return total;
}

/** Options for {@linkcode childGcLabels}. */
export interface ChildGcLabelsOptions {
  /** Leave layers out (containerd's `ChildGCLabelsFilterLayers`). */
  filterLayers?: boolean | undefined;
}

const REFERRER_ANNOTATION = "io.containerd.manifest.subject";
const GC_CONTENT = "containerd.io/gc.ref.content";

function gcLabelKey(child: Descriptor, filterLayers: boolean): string | undefined {
  if (child.annotations !== undefined && Object.hasOwn(child.annotations, REFERRER_ANNOTATION)) {
    const hex = child.digest.slice(child.digest.indexOf(":") + 1, child.digest.indexOf(":") + 13);
    return `${GC_CONTENT}.referrer.sha256.${hex}`;
  }
  if (isKnownConfigType(child.mediaType)) return `${GC_CONTENT}.config`;
  if (isManifestType(child.mediaType)) return `${GC_CONTENT}.m.`;
  if (isLayerType(child.mediaType)) return filterLayers ? undefined : `${GC_CONTENT}.l.`;
  return `${GC_CONTENT}.`;
}

/**
 * Builds the GC reference labels a parent blob carries for its children (containerd's
 * `SetChildrenLabels` with `ChildGCLabels`): a referrer (annotated `io.containerd.manifest.subject`)
 * → `containerd.io/gc.ref.content.referrer.sha256.<first 12 hex>`; a known config →
 * `...content.config`; a manifest → `...content.m.`; a layer → `...content.l.`; anything else →
 * `...content.`. Keys ending in `.` get a counter per key (`m.0`, `m.1`, ...); other keys get one
 * from their second use (`config`, `config1`, ...). Each value is the child's digest.
 *
 * @example
 * ```ts
 * import { childGcLabels } from "./manifest.ts";
 * const zero = "sha256:" + "0".repeat(64);
 * console.log(childGcLabels([
 *   { mediaType: "application/vnd.oci.image.config.v1+json", digest: zero, size: 2 },
 *   { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: zero, size: 3 },
 * ]));
 * ```
 *
 * @param children The children, in order.
 * @param options Whether to leave layers out.
 * @returns The labels, key to child digest.
 */
export function childGcLabels(
  children: readonly Descriptor[],
  options: ChildGcLabelsOptions = {},
): Record<string, string> {
  const labels: Record<string, string> = {};
  const counters = new Map<string, number>();
  for (const child of children) {
    const key = gcLabelKey(child, options.filterLayers === true);
    if (key === undefined) continue;
    const n = counters.get(key) ?? 0;
    counters.set(key, n + 1);
    labels[n > 0 || key.endsWith(".") ? `${key}${n}` : key] = child.digest;
  }
  return labels;
}

/**
 * Returns the layers of a manifest, leaving out blobs that are not layers (artifacts, attestation
 * statements), as containerd's unpacker does before matching layers to DiffIDs.
 *
 * @example
 * ```ts
 * import { manifestLayers } from "./manifest.ts";
 * const zero = "sha256:" + "0".repeat(64);
 * console.log(manifestLayers({
 *   schemaVersion: 2,
 *   config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: zero, size: 2 },
 *   layers: [{ mediaType: "application/vnd.in-toto+json", digest: zero, size: 3 }],
 * }).length);
 * ```
 *
 * @param manifest The manifest.
 * @returns Its layer descriptors, in order.
 */
export function manifestLayers(manifest: Manifest): Descriptor[] {
  return manifest.layers.filter((l) => isLayerType(l.mediaType));
}

/** One layer of an image: its blob and the DiffID of its uncompressed content. */
export interface ImageLayer {
  /** The (usually compressed) layer blob, from the manifest. */
  blob: Descriptor;
  /** The digest of the uncompressed tar, from the config. */
  diffId: string;
}

/**
 * Pairs the layers of an image's manifest with the DiffIDs of its config, as containerd's
 * `getLayers`: the manifest is selected by platform, non-layer blobs are dropped, and the counts
 * must be equal.
 *
 * @example
 * ```ts
 * import { imageLayers } from "./manifest.ts";
 * import type { Descriptor } from "./types.ts";
 * async function count(provider: { readBlob(d: string): Promise<Uint8Array> }, target: Descriptor) {
 *   return (await imageLayers(provider, target)).length;
 * }
 * console.log(typeof count);
 * ```
 *
 * @param provider Where blobs are read from.
 * @param target The image's target.
 * @param options The platform matcher.
 * @returns The layers, bottom first.
 * @throws {FailedPrecondition} When the number of layers and DiffIDs differ.
 * @throws {NotFound} As {@linkcode resolveManifest}, or when the config is missing.
 */
export async function imageLayers(
  provider: Provider,
  target: Descriptor,
  options: PlatformOptions = {},
): Promise<ImageLayer[]> {
  const { manifest } = await resolveManifest(provider, target, options);
  const diffIds = await rootFS(provider, manifest.config);
  const layers = manifestLayers(manifest);
  if (layers.length !== diffIds.length) {
    throw new FailedPrecondition(
      `Cannot match layers to diff IDs: mismatched image rootfs and manifest layers (${layers.length} layers, ${diffIds.length} diff IDs)`,
    );
  }
  return layers.map((blob, i) => ({ blob, diffId: diffIds[i]! }));
}
