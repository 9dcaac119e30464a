import { createHash } from "node:crypto";
import { TarWriter } from "../../diff/tar/mod.ts";
import { FailedPrecondition, InvalidArgument, NotFound } from "../../errors.ts";
import { children, walk } from "../manifest.ts";
import { isIndexType, isManifestType, isNonDistributable } from "../media_types.ts";
import { allPlatforms } from "../platforms.ts";
import { familiarReference, parseNormalizedReference } from "../reference.ts";
import type { Descriptor, ImageRecord, MatchComparer } from "../types.ts";
import { parseIndex, parseManifest } from "../validate.ts";
import { ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, type ArchiveStores } from "./_stores.ts";

/** Options for {@linkcode exportArchive}. */
export interface ExportOptions {
  /**
   * Which platform to export from index images (default: every platform). The best match also
   * represents the image in `manifest.json`.
   */
  platform?: MatchComparer;
  /** Export every entry of each index (all must be in the store). */
  allPlatforms?: boolean;
  /** Do not write a Docker `manifest.json`. */
  skipManifestJson?: boolean;
  /** Leave out non-distributable (foreign) layers. */
  skipNonDistributable?: boolean;
}

const EPOCH = { sec: 0, nsec: 0 };

/**
 * Writes images as an OCI image layout tar: `oci-layout`, `index.json` naming each image (with
 * `io.containerd.image.name` and `org.opencontainers.image.ref.name`), every reachable blob under
 * `blobs/<alg>/<hex>` re-verified while it is written, and a Docker-compatible `manifest.json`.
 * Entries are sorted by name, so the same images give the same bytes.
 *
 * @example Export an image to a file
 * ```ts ignore
 * import { Client, exportArchive } from "@strata/strata";
 * const client = Client.open();
 * const file = await Deno.open("out.tar", { write: true, create: true });
 * const image = client.images.get("docker.io/library/alpine:latest");
 * await exportArchive(client, [image], async (chunk) => { await file.write(chunk); });
 * ```
 *
 * @param stores The content and image stores.
 * @param images The image records to export.
 * @param sink Receives the tar's bytes in order.
 * @param options Platforms and what to leave out.
 */
export async function exportArchive(
  stores: ArchiveStores,
  images: ImageRecord[],
  sink: (chunk: Uint8Array) => Promise<void>,
  options: ExportOptions = {},
): Promise<void> {
  if (images.length === 0) throw new InvalidArgument("Cannot export: no images given");
  const platform = options.allPlatforms ? allPlatforms : (options.platform ?? allPlatforms);
  const blobs = new Map<string, Descriptor>();
  const indexEntries: Descriptor[] = [];
  const dockerEntries = new Map<string, { config: string; layers: string[]; tags: string[] }>();
  for (const image of images) {
    const target = image.target;
    if (!isManifestType(target.mediaType) && !isIndexType(target.mediaType)) {
      throw new InvalidArgument(
        `Cannot export "${image.name}": only manifests and indexes can be exported, not "${target.mediaType}"`,
      );
    }
    const manifests: Descriptor[] = [];
    const handler = async (desc: Descriptor): Promise<Descriptor[]> => {
      if (options.skipNonDistributable && isNonDistributable(desc.mediaType)) return [];
      await requireBlob(stores, image.name, desc);
      blobs.set(desc.digest, desc);
      if (isManifestType(desc.mediaType)) {
        manifests.push(desc);
        return await children(stores.content, desc);
      }
      if (isIndexType(desc.mediaType)) {
        const idx = parseIndex(await stores.content.readBlob(desc.digest), desc.mediaType);
        if (options.allPlatforms) return idx.manifests;
        const kept = idx.manifests.filter((m) => !m.platform || platform.match(m.platform));
        if (kept.length === 0) {
          throw new NotFound(
            `Cannot export "${image.name}": no manifest found for platform in ${desc.digest}`,
          );
        }
        return kept;
      }
      return [];
    };
    await walk(handler, [target]);
    const annotations: Record<string, string> = { ...(target.annotations ?? {}) };
    annotations[ANNOTATION_IMAGE_NAME] = image.name;
    const tag = tagOf(image.name);
    annotations[ANNOTATION_REF_NAME] = tag ?? image.name;
    indexEntries.push({
      mediaType: target.mediaType,
      digest: target.digest,
      size: target.size,
      annotations,
    });
    if (!options.skipManifestJson) {
      const best = pickManifest(manifests, platform);
      if (best) {
        const m = parseManifest(await stores.content.readBlob(best.digest), best.mediaType);
        const key = best.digest;
        const entry = dockerEntries.get(key) ?? {
          config: blobPath(m.config.digest),
          layers: m.layers.map((l) => blobPath(l.digest)),
          tags: [],
        };
        if (tag !== undefined) entry.tags.push(familiarReference(image.name));
        dockerEntries.set(key, entry);
      }
    }
  }
  const files = new Map<string, { desc?: Descriptor; bytes?: Uint8Array; mode: number }>();
  const enc = new TextEncoder();
  files.set("oci-layout", {
    bytes: enc.encode(JSON.stringify({ imageLayoutVersion: "1.0.0" })),
    mode: 0o444,
  });
  files.set("index.json", {
    bytes: enc.encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: indexEntries,
    })),
    mode: 0o644,
  });
  if (!options.skipManifestJson && dockerEntries.size > 0) {
    files.set("manifest.json", {
      bytes: enc.encode(JSON.stringify(
        [...dockerEntries.values()].map((e) => ({
          Config: e.config,
          RepoTags: e.tags,
          Layers: e.layers,
        })),
      )),
      mode: 0o644,
    });
  }
  for (const desc of blobs.values()) files.set(blobPath(desc.digest), { desc, mode: 0o444 });
  const dirs = new Set<string>(["blobs"]);
  for (const desc of blobs.values()) dirs.add(`blobs/${desc.digest.split(":")[0]}`);
  const names = [...files.keys(), ...[...dirs].map((d) => d + "/")].sort();
  const tar = new TarWriter(sink);
  for (const name of names) {
    if (name.endsWith("/")) {
      await tar.add({ name, type: "directory", mode: 0o755, mtime: EPOCH });
      continue;
    }
    const f = files.get(name)!;
    if (f.bytes) {
      await tar.add(
        { name, type: "file", mode: f.mode, size: f.bytes.length, mtime: EPOCH },
        f.bytes,
      );
      continue;
    }
    const desc = f.desc!;
    await tar.add(
      { name, type: "file", mode: f.mode, size: desc.size, mtime: EPOCH },
      verified(stores, desc),
    );
  }
  await tar.finish();
}

function blobPath(digest: string): string {
  const [alg, hex] = digest.split(":");
  return `blobs/${alg}/${hex}`;
}

function tagOf(name: string): string | undefined {
  try {
    return parseNormalizedReference(name).tag;
  } catch {
    return undefined;
  }
}

function pickManifest(manifests: Descriptor[], platform: MatchComparer): Descriptor | undefined {
  let best: Descriptor | undefined;
  for (const m of manifests) {
    if (!best) {
      best = m;
      continue;
    }
    if (m.platform && (!best.platform || platform.less(m.platform, best.platform))) best = m;
  }
  return best;
}

async function requireBlob(stores: ArchiveStores, name: string, desc: Descriptor): Promise<void> {
  try {
    const info = await stores.content.info(desc.digest);
    if (info.size !== desc.size) {
      throw new FailedPrecondition(
        `Cannot export "${name}": blob ${desc.digest} has size ${info.size}, its descriptor says ${desc.size}`,
      );
    }
  } catch (err) {
    if (err instanceof NotFound) {
      throw new NotFound(
        `Cannot export "${name}": blob ${desc.digest} (${desc.mediaType}) is not in the content store`,
      );
    }
    throw err;
  }
}

/** Streams a blob, failing at the end when its bytes do not hash to its digest. */
async function* verified(stores: ArchiveStores, desc: Descriptor): AsyncGenerator<Uint8Array> {
  const hash = createHash("sha256");
  for await (const chunk of stores.content.stream(desc.digest)) {
    hash.update(chunk);
    yield chunk;
  }
  const got = "sha256:" + hash.digest("hex");
  if (got !== desc.digest) {
    throw new FailedPrecondition(
      `Cannot export blob ${desc.digest}: the stored bytes hash to ${got}`,
    );
  }
}
