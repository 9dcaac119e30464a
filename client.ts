import { join } from "node:path";
import { ContentStore } from "./content/mod.ts";
import {
  allPlatforms,
  defaultPlatformMatcher,
  imageConfig,
  imageSize,
  ImageStore,
  imageUsage,
  normalizePlatform,
  readImageConfig,
  rootFS,
} from "./images/mod.ts";
import type {
  Descriptor,
  ImageConfig,
  ImageRecord,
  MatchComparer,
  Platform,
} from "./images/mod.ts";
import { MetadataDb } from "./metadata/mod.ts";
import { defaultSnapshotterName, openSnapshotter } from "./snapshotters/registry.ts";
import type { Snapshotter } from "./snapshotters/types.ts";
import { unpackImage, type UnpackOptions, type UnpackResult } from "./unpack/unpack.ts";
import { chainId } from "./images/manifest.ts";
import { isNotFound } from "./errors.ts";
import { pullImage, type PullOptions } from "./transfer/pull.ts";
import { pushImage, type PushImageOptions, type PushResult } from "./transfer/push.ts";

/** Options for {@linkcode Client.open}. */
export interface ClientOptions {
  /** The root directory holding `metadata.db` and `content/`. Default: {@linkcode defaultRoot}. */
  root?: string;
  /** The platform used to pick manifests from indexes. Default: the host's (containerd's `Only`). */
  platform?: MatchComparer;
}

/**
 * The default root: `/var/lib/strata` for root, `$XDG_DATA_HOME/strata` (or
 * `~/.local/share/strata`) otherwise.
 *
 * @example
 * ```ts
 * import { defaultRoot } from "@strata/strata";
 * console.log(defaultRoot());
 * ```
 *
 * @returns The path.
 */
export function defaultRoot(): string {
  if (Deno.uid() === 0) return "/var/lib/strata";
  const xdg = Deno.env.get("XDG_DATA_HOME");
  if (xdg) return join(xdg, "strata");
  return join(Deno.env.get("HOME") ?? ".", ".local", "share", "strata");
}

/**
 * A Strata client on one root: the content store, the image store and the operations built on them.
 * Several clients (in one process or many) may share a root.
 *
 * @example Open a root and list its images
 * ```ts
 * import { Client } from "@strata/strata";
 * const client = Client.open({ root: await Deno.makeTempDir() });
 * console.log(client.images.list().length);
 * client.close();
 * ```
 */
export class Client {
  /** The root directory. */
  readonly root: string;
  /** The metadata database. */
  readonly db: MetadataDb;
  /** The content store. */
  readonly content: ContentStore;
  /** The image store. */
  readonly images: ImageStore;
  /** The platform matcher used for images by default. */
  readonly platform: MatchComparer;
  #snapshotters = new Map<string, Promise<Snapshotter>>();

  private constructor(root: string, platform: MatchComparer) {
    this.root = root;
    this.db = MetadataDb.open(root);
    this.content = new ContentStore(join(root, "content"), this.db);
    this.images = new ImageStore(this.db);
    this.platform = platform;
  }

  /**
   * Opens a client, creating the root when it is missing.
   *
   * @param options Root and platform.
   * @returns The client.
   */
  static open(options: ClientOptions = {}): Client {
    return new Client(options.root ?? defaultRoot(), options.platform ?? defaultPlatformMatcher());
  }

  /**
   * Gets an image by name.
   *
   * @param name The image name, as stored.
   * @param options A platform matcher overriding the client's.
   * @returns The image.
   * @throws {NotFound} When there is no such image.
   */
  getImage(name: string, options: { platform?: MatchComparer } = {}): Image {
    return new Image(this, this.images.get(name), options.platform ?? this.platform);
  }

  /**
   * Pulls an image from a registry and, by default, unpacks it as its layers arrive (see
   * {@linkcode pullImage}).
   *
   * @example
   * ```ts ignore
   * import { Client } from "@strata/strata";
   * using client = Client.open();
   * const image = await client.pull("localhost:5000/app:1", { snapshotter: "native" });
   * console.log(image.target.digest, await image.isUnpacked("native"));
   * ```
   *
   * @param ref The reference, familiar (`alpine`) or full.
   * @param options Platform, unpack, registry and progress options.
   * @returns The pulled image, for the platform it was pulled for.
   */
  async pull(ref: string, options: PullOptions = {}): Promise<Image> {
    const { image } = await pullImage(this, ref, options);
    return new Image(this, image, options.platform ?? this.platform);
  }

  /**
   * Pushes a stored image to a registry (see {@linkcode pushImage}).
   *
   * @example
   * ```ts ignore
   * import { Client } from "@strata/strata";
   * using client = Client.open();
   * await client.push("example.com/app:1", { remote: "localhost:5000/app:1" });
   * ```
   *
   * @param name The stored image's name.
   * @param options Where to push, the platform, registry and progress options.
   * @returns The reference, its target and what was sent.
   */
  push(name: string, options: PushImageOptions = {}): Promise<PushResult> {
    return pushImage(this, name, options);
  }

  /**
   * Opens (once per client) a snapshotter of this root.
   *
   * @param name `overlayfs` or `native`; default `$STRATA_SNAPSHOTTER`, else `overlayfs` on Linux.
   * @returns The snapshotter.
   * @throws {NotFound} For an unknown name.
   */
  snapshotter(name?: string): Promise<Snapshotter> {
    const n = name ?? Deno.env.get("STRATA_SNAPSHOTTER") ?? defaultSnapshotterName();
    let sn = this.#snapshotters.get(n);
    if (!sn) {
      sn = openSnapshotter(n, { root: this.root, db: this.db });
      this.#snapshotters.set(n, sn);
      sn.catch(() => this.#snapshotters.delete(n));
    }
    return sn;
  }

  /** Closes the database; the snapshotters opened through this client hold nothing else. */
  close(): void {
    for (const sn of this.#snapshotters.values()) sn.then((s) => s.close(), () => {});
    this.#snapshotters.clear();
    this.db.close();
  }

  /** Closes the database (for `using`). */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * An image in a root, with containerd's client surface for the parts that need no snapshotter:
 * name, target, labels, config, rootFS, size, usage, platform and spec.
 *
 * @example Read an image's diff IDs
 * ```ts ignore
 * import { Client } from "@strata/strata";
 * const client = Client.open();
 * const image = client.getImage("docker.io/library/alpine:latest");
 * console.log(await image.rootFS());
 * ```
 */
export class Image {
  #client: Client;
  #record: ImageRecord;
  #platform: MatchComparer;
  #diffIds: string[] | undefined;

  /**
   * Wraps an image record.
   *
   * @param client The client the image lives in.
   * @param record The stored record.
   * @param platform The platform matcher used to pick manifests.
   */
  constructor(client: Client, record: ImageRecord, platform: MatchComparer) {
    this.#client = client;
    this.#record = record;
    this.#platform = platform;
  }

  /** The image's name. */
  get name(): string {
    return this.#record.name;
  }

  /** The image's root descriptor (an index or a manifest). */
  get target(): Descriptor {
    return this.#record.target;
  }

  /** The image's labels. */
  get labels(): Record<string, string> {
    return this.#record.labels;
  }

  /** The stored record. */
  get metadata(): ImageRecord {
    return this.#record;
  }

  /** The content store the image reads from. */
  get contentStore(): ContentStore {
    return this.#client.content;
  }

  /** The platform matcher used to pick manifests. */
  get platform(): MatchComparer {
    return this.#platform;
  }

  /**
   * The descriptor of the image config for the image's platform.
   *
   * @returns The config descriptor.
   */
  config(): Promise<Descriptor> {
    return imageConfig(this.#client.content, this.target, { platform: this.#platform });
  }

  /**
   * The image config document.
   *
   * @returns The parsed config.
   */
  async spec(): Promise<ImageConfig> {
    return await readImageConfig(this.#client.content, await this.config());
  }

  /**
   * The platform the image config declares, normalised.
   *
   * @returns The platform.
   */
  async configPlatform(): Promise<Platform> {
    const c = await this.spec();
    const p: Platform = { os: c.os, architecture: c.architecture };
    if (c.variant) p.variant = c.variant;
    if (c["os.version"]) p["os.version"] = c["os.version"];
    if (c["os.features"]) p["os.features"] = c["os.features"];
    return normalizePlatform(p);
  }

  /**
   * The layers' diff IDs, bottom first (cached).
   *
   * @returns The diff IDs.
   */
  async rootFS(): Promise<string[]> {
    this.#diffIds ??= await rootFS(this.#client.content, await this.config());
    return this.#diffIds;
  }

  /**
   * Unpacks the image into a snapshotter (see {@linkcode unpackImage}).
   *
   * @param snapshotter The snapshotter's name; default the client's.
   * @param options Platform check, syncfs, progress.
   * @returns The top chain ID and what was applied.
   */
  unpack(
    snapshotter?: string,
    options: Omit<UnpackOptions, "snapshotter" | "platform"> = {},
  ): Promise<UnpackResult> {
    return unpackImage(this.#client, this.#record, {
      ...options,
      platform: this.#platform,
      ...(snapshotter !== undefined ? { snapshotter } : {}),
    });
  }

  /**
   * Whether the image's top snapshot (the chain ID of its diff IDs) is committed in a snapshotter.
   *
   * @param snapshotter The snapshotter's name; default the client's.
   * @returns `true` when unpacked.
   */
  async isUnpacked(snapshotter?: string): Promise<boolean> {
    const sn = await this.#client.snapshotter(snapshotter);
    try {
      const info = await sn.stat(chainId(await this.rootFS()));
      return info.kind === "committed";
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /**
   * The image's size: the declared sizes of the target, the manifest for the image's platform, its
   * config and its layers.
   *
   * @returns The size in bytes.
   */
  size(): Promise<number> {
    return imageSize(this.#client.content, this.target, this.#platform);
  }

  /**
   * The content the image uses in the store.
   *
   * @param options `manifestLimit` restricts to the best N manifests for the image's platform;
   *   `manifestOnly` trusts declared sizes; `snapshots` adds the sizes of the snapshots the config
   *   references (`containerd.io/gc.ref.snapshot.<name>`; each chain's snapshot only, as
   *   containerd does).
   * @returns The size in bytes.
   */
  usage(
    options: { manifestLimit?: number; manifestOnly?: boolean; snapshots?: boolean } = {},
  ): Promise<number> {
    const content = this.#client.content;
    return imageUsage(content, this.target, {
      ...(options.manifestLimit !== undefined
        ? { manifestLimit: options.manifestLimit, platform: this.#platform }
        : { platform: allPlatforms }),
      ...(options.manifestOnly !== undefined ? { manifestOnly: options.manifestOnly } : {}),
      ...(options.snapshots
        ? {
          snapshots: true,
          snapshotUsage: async (name: string, key: string) =>
            (await (await this.#client.snapshotter(name)).usage(key)).size,
        }
        : {}),
      info: (digest: string) => content.info(digest),
    });
  }
}
