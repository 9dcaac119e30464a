import { createGunzip } from "node:zlib";
import { Readable } from "node:stream";
import { posix } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { readTar } from "../../diff/tar/mod.ts";
import {
  AlreadyExists,
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  NotImplemented,
} from "../../errors.ts";
import { isValidDigest } from "../digest.ts";
import { childGcLabels, children, filterPlatforms, walk } from "../manifest.ts";
import {
  MEDIA_TYPE_DOCKER_CONFIG,
  MEDIA_TYPE_DOCKER_LAYER,
  MEDIA_TYPE_DOCKER_LAYER_GZIP,
  MEDIA_TYPE_DOCKER_LAYER_ZSTD,
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_OCI_INDEX,
} from "../media_types.ts";
import { allPlatforms, normalizePlatform } from "../platforms.ts";
import { leasedContentStore } from "../../leases/content.ts";
import { LeaseManager, withLease } from "../../leases/leases.ts";
import type { MetadataDb } from "../../metadata/db.ts";
import { normalizeReference, parseNormalizedReference } from "../reference.ts";
import type { Descriptor, ImageRecord, Index, MatchComparer, Platform } from "../types.ts";
import { parseImageConfig, parseIndex } from "../validate.ts";
import {
  ANNOTATION_IMAGE_NAME,
  ANNOTATION_REF_NAME,
  ANNOTATION_SUBJECT,
  type ArchiveStores,
  MAX_JSON_SIZE,
} from "./_stores.ts";

/** The stores {@linkcode importArchive} writes to; with `db`, the import runs under a lease. */
export interface ImportStores extends ArchiveStores {
  /** The metadata database of the root, for the import's lease. */
  db?: MetadataDb;
}

/** Options for {@linkcode importArchive}. */
export interface ImportOptions {
  /**
   * Which platforms' content the imported images keep referenced (default: every platform).
   * Blobs of other platforms are still stored when the archive carries them, but are not
   * referenced, so `prune` may remove them.
   */
  platform?: MatchComparer;
  /**
   * Prefix for names: a tag-only name `TAG` becomes `<baseName>:TAG`, and full names that do not
   * start with `baseName` are skipped (ctr's `--base-name`). Default prefix:
   * `import-<YYYY-MM-DD>`, with no filtering.
   */
  baseName?: string;
  /** Also create an image with this name pointing at the whole imported index. */
  indexName?: string;
  /** Also name every image `<name>@<digest>`. */
  digests?: boolean;
}

/** What {@linkcode importArchive} created. */
export interface ImportResult {
  /** The image records created or updated. */
  images: ImageRecord[];
  /** The descriptor of the imported index (for a docker-archive, one Strata wrote). */
  index: Descriptor;
  /** The archive's format. */
  format: "oci-layout" | "docker-archive";
}

/**
 * Imports images from an OCI image layout (a directory, or a tar of one) or a `docker save`
 * archive (`docker-archive`), possibly gzip-compressed, into the content and image stores.
 *
 * Every blob is verified against its digest before it is committed. A docker-archive gets a Docker
 * schema 2 manifest per image and an OCI index, like containerd's importer. Each index entry named
 * by `io.containerd.image.name` or `org.opencontainers.image.ref.name` becomes an image; an entry
 * with no name is named `<prefix>@<digest>` so that nothing imported is left unnamed (containerd
 * would skip it).
 *
 * With `stores.db` (a `Client` has it) the import runs under a temporary lease (24 hours, deleted
 * at the end) that pins every blob and ingest before it is looked at or written, so a concurrent
 * prune cannot remove blobs before the image records that reference them exist.
 *
 * @example Import an OCI layout directory
 * ```ts ignore
 * import { Client, importArchive } from "@strata/strata";
 * const client = Client.open();
 * const { images } = await importArchive(client, "./layout");
 * console.log(images.map((i) => i.name));
 * ```
 *
 * @param stores The content and image stores.
 * @param source A path to a directory or tar file, or a stream of tar bytes.
 * @param options Platform, naming.
 * @returns The images created and the index imported.
 */
export async function importArchive(
  stores: ImportStores,
  source: string | AsyncIterable<Uint8Array>,
  options: ImportOptions = {},
): Promise<ImportResult> {
  if (stores.db === undefined) return await importUnleased(stores, source, options);
  const leases = new LeaseManager(stores.db);
  return await withLease(leases, (lease) =>
    importUnleased(
      { content: leasedContentStore(stores.content, leases, lease.id), images: stores.images },
      source,
      options,
    ));
}

async function importUnleased(
  stores: ArchiveStores,
  source: string | AsyncIterable<Uint8Array>,
  options: ImportOptions,
): Promise<ImportResult> {
  const label = typeof source === "string" ? source : "standard input";
  let index: Descriptor;
  let format: ImportResult["format"];
  if (typeof source === "string" && (await statOrUndefined(source))?.isDirectory) {
    index = await importLayoutDirectory(stores, source);
    format = "oci-layout";
  } else {
    const stream = typeof source === "string" ? await openFile(source) : source;
    ({ index, format } = await importTar(stores, stream, label));
  }
  const images = await createImages(stores, index, label, options);
  return { images, index, format };
}

async function statOrUndefined(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

/** Reads a file in 1 MiB pieces (a file's `readable` gives 64 KiB ones, which costs ~30%). */
async function* readChunks(file: Deno.FsFile): AsyncGenerator<Uint8Array> {
  try {
    for (;;) {
      const buf = new Uint8Array(1 << 20);
      const n = await file.read(buf);
      if (n === null) return;
      yield buf.subarray(0, n);
    }
  } finally {
    file.close();
  }
}

async function openFile(path: string): Promise<AsyncIterable<Uint8Array>> {
  try {
    return readChunks(await Deno.open(path));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new NotFound(`Cannot import "${path}": it does not exist`);
    }
    throw err;
  }
}

/** Yields the stream's bytes, gunzipped when they start with the gzip magic. */
async function* maybeGunzip(stream: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const it = stream[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done) return;
  const head: Uint8Array = first.value;
  const rest = (async function* () {
    yield head;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  })();
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) {
    const gunzip = Readable.from(rest).pipe(createGunzip({ chunkSize: 1 << 20 }));
    for await (const chunk of gunzip) yield chunk as Uint8Array;
  } else {
    yield* rest;
  }
}

interface ArchiveFile {
  digest: string;
  size: number;
  head: Uint8Array;
}

function cleanPath(name: string): string {
  const p = posix.normalize("/" + name).slice(1);
  return p.replace(/\/+$/, "");
}

/** The digest a layout path names (`blobs/sha256/<hex>`), when it names one. */
function digestFromPath(path: string): string | undefined {
  const m = /^blobs\/([a-z0-9+._-]+)\/([a-zA-Z0-9=_-]+)$/.exec(path);
  if (!m) return undefined;
  const d = `${m[1]}:${m[2]}`;
  return isValidDigest(d) ? d : undefined;
}

async function importTar(
  stores: ArchiveStores,
  stream: AsyncIterable<Uint8Array>,
  label: string,
): Promise<{ index: Descriptor; format: ImportResult["format"] }> {
  const files = new Map<string, ArchiveFile>();
  const links = new Map<string, string>();
  const json = new Map<string, Uint8Array>();
  const session = `import-${Deno.pid}-${randomBytes(4).toString("hex")}`;
  for await (const entry of readTar(maybeGunzip(stream))) {
    const h = entry.header;
    const path = cleanPath(h.name);
    if (h.type === "symlink") {
      const target = h.linkname.startsWith("/")
        ? cleanPath(h.linkname)
        : cleanPath(posix.join(posix.dirname(path), h.linkname));
      links.set(path, target);
      continue;
    }
    if (h.type === "hardlink") {
      links.set(path, cleanPath(h.linkname));
      continue;
    }
    if (h.type !== "file") continue;
    const keep = ["oci-layout", "index.json", "manifest.json"].includes(path);
    if (keep && h.size > MAX_JSON_SIZE) {
      throw new InvalidArgument(
        `Cannot import "${label}": "${path}" is ${h.size} bytes, larger than ${MAX_JSON_SIZE}`,
      );
    }
    const named = digestFromPath(path);
    files.set(
      path,
      await ingestEntry(stores, entry.body, {
        ref: `${session}-${path}`,
        size: h.size,
        label,
        path,
        ...(named ? { digest: named } : {}),
        ...(keep ? { keep: (bytes: Uint8Array) => json.set(path, bytes) } : {}),
      }),
    );
  }
  const resolve = (path: string): ArchiveFile => {
    let p = cleanPath(path);
    for (let i = 0; i < 16 && !files.has(p) && links.has(p); i++) p = links.get(p)!;
    const f = files.get(p);
    if (!f) throw new NotFound(`Cannot import "${label}": the archive has no file "${path}"`);
    return f;
  };
  const layout = json.get("oci-layout");
  if (layout) {
    let version: unknown;
    try {
      version = (JSON.parse(new TextDecoder().decode(layout)) as Record<string, unknown>)
        .imageLayoutVersion;
    } catch {
      throw new InvalidArgument(`Cannot import "${label}": "oci-layout" is not valid JSON`);
    }
    if (version !== undefined) {
      if (version !== "1.0.0") {
        throw new NotImplemented(
          `Cannot import "${label}": unsupported OCI layout version "${String(version)}"`,
        );
      }
      const idx = files.get("index.json");
      if (!idx) throw new NotFound(`Cannot import "${label}": OCI layout without "index.json"`);
      parseIndex(json.get("index.json")!, MEDIA_TYPE_OCI_INDEX);
      return {
        index: { mediaType: MEDIA_TYPE_OCI_INDEX, digest: idx.digest, size: idx.size },
        format: "oci-layout",
      };
    }
  }
  const manifestJson = json.get("manifest.json");
  if (manifestJson) {
    return {
      index: await dockerIndex(stores, manifestJson, resolve, label),
      format: "docker-archive",
    };
  }
  throw new InvalidArgument(
    `Cannot import "${label}": unrecognized image format (no "oci-layout" or "manifest.json")`,
  );
}

async function ingestEntry(
  stores: ArchiveStores,
  body: AsyncIterable<Uint8Array>,
  options: {
    ref: string;
    size: number;
    label: string;
    path: string;
    digest?: string;
    keep?: (bytes: Uint8Array) => void;
  },
): Promise<ArchiveFile> {
  const { content } = stores;
  const head = new Uint8Array(8);
  let headLen = 0;
  const kept: Uint8Array[] = [];
  const take = (chunk: Uint8Array) => {
    if (headLen < head.length) {
      const n = Math.min(head.length - headLen, chunk.length);
      head.set(chunk.subarray(0, n), headLen);
      headLen += n;
    }
    if (options.keep) kept.push(chunk.slice());
  };
  const finish = (digest: string): ArchiveFile => {
    if (options.keep) options.keep(concat(kept));
    return { digest, size: options.size, head: head.slice(0, headLen) };
  };
  if (options.digest) {
    // A blob the store already has: read only what is needed, trust the stored, verified copy.
    try {
      const info = await content.info(options.digest);
      if (info.size === options.size) {
        for await (const chunk of body) {
          if (options.keep || headLen < head.length) take(chunk);
        }
        return finish(options.digest);
      }
    } catch (err) {
      if (!(err instanceof NotFound)) throw err;
    }
  }
  let writer;
  try {
    writer = await content.writer({
      ref: options.ref,
      expected: { size: options.size, ...(options.digest ? { digest: options.digest } : {}) },
    });
  } catch (err) {
    if (!(err instanceof AlreadyExists)) throw err;
    for await (const chunk of body) take(chunk);
    return finish(options.digest!);
  }
  try {
    if (writer.offset > 0) await writer.truncate(0);
    for await (const chunk of body) {
      take(chunk);
      await writer.write(chunk);
    }
    const digest = writer.digest();
    if (options.digest && digest !== options.digest) {
      await writer.close();
      await content.abort(options.ref);
      throw new FailedPrecondition(
        `Cannot import "${options.label}": "${options.path}" has digest ${digest}, not the one its name says`,
      );
    }
    try {
      await writer.commit({ size: options.size, expected: digest });
    } catch (err) {
      if (!(err instanceof AlreadyExists)) throw err;
    }
    return finish(digest);
  } finally {
    await writer.close();
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

function jsonBytes(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}

function putJson(
  stores: ArchiveStores,
  value: unknown,
  mediaType: string,
): Promise<Descriptor> {
  return putBytes(stores, jsonBytes(value), mediaType);
}

interface DockerManifestEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

function layerMediaType(head: Uint8Array): string {
  if (head[0] === 0x1f && head[1] === 0x8b) return MEDIA_TYPE_DOCKER_LAYER_GZIP;
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) {
    return MEDIA_TYPE_DOCKER_LAYER_ZSTD;
  }
  return MEDIA_TYPE_DOCKER_LAYER;
}

async function dockerIndex(
  stores: ArchiveStores,
  manifestJson: Uint8Array,
  resolve: (path: string) => ArchiveFile,
  label: string,
): Promise<Descriptor> {
  let entries: DockerManifestEntry[];
  try {
    entries = JSON.parse(new TextDecoder().decode(manifestJson));
  } catch {
    throw new InvalidArgument(`Cannot import "${label}": "manifest.json" is not valid JSON`);
  }
  if (!Array.isArray(entries)) {
    throw new InvalidArgument(`Cannot import "${label}": "manifest.json" is not a list`);
  }
  const manifests: Descriptor[] = [];
  for (const [i, e] of entries.entries()) {
    if (typeof e?.Config !== "string" || !Array.isArray(e.Layers)) {
      throw new InvalidArgument(
        `Cannot import "${label}": "manifest.json[${i}]" needs "Config" and "Layers"`,
      );
    }
    const cfgFile = resolve(e.Config);
    const cfgBytes = await stores.content.readBlob(cfgFile.digest);
    const config = parseImageConfig(cfgBytes);
    const layers = e.Layers.map((p) => {
      const f = resolve(p);
      return { mediaType: layerMediaType(f.head), digest: f.digest, size: f.size };
    });
    const desc = await putJson(stores, {
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_DOCKER_MANIFEST,
      config: { mediaType: MEDIA_TYPE_DOCKER_CONFIG, digest: cfgFile.digest, size: cfgFile.size },
      layers,
    }, MEDIA_TYPE_DOCKER_MANIFEST);
    const platform: Platform = { os: config.os, architecture: config.architecture };
    if (config.variant) platform.variant = config.variant;
    if (config["os.version"]) platform["os.version"] = config["os.version"];
    desc.platform = normalizePlatform(platform);
    const tags = e.RepoTags ?? [];
    if (tags.length === 0) manifests.push(desc);
    for (const tag of tags) {
      const name = normalizeReference(tag);
      const ref = parseNormalizedReference(name);
      manifests.push({
        ...desc,
        annotations: {
          [ANNOTATION_IMAGE_NAME]: name,
          [ANNOTATION_REF_NAME]: ref.tag ?? name,
        },
      });
    }
  }
  const index: Index = { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_INDEX, manifests };
  return await putJson(stores, index, MEDIA_TYPE_OCI_INDEX);
}

async function importLayoutDirectory(stores: ArchiveStores, dir: string): Promise<Descriptor> {
  const read = async (name: string): Promise<Uint8Array> => {
    try {
      const info = await Deno.stat(posix.join(dir, name));
      if (info.size > MAX_JSON_SIZE) {
        throw new InvalidArgument(`Cannot import "${dir}": "${name}" is too large`);
      }
      return await Deno.readFile(posix.join(dir, name));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new InvalidArgument(
          `Cannot import "${dir}": not an OCI image layout (no "${name}")`,
        );
      }
      throw err;
    }
  };
  let version: unknown;
  try {
    version = (JSON.parse(new TextDecoder().decode(await read("oci-layout"))) as Record<
      string,
      unknown
    >).imageLayoutVersion;
  } catch (err) {
    if (err instanceof InvalidArgument) throw err;
    throw new InvalidArgument(`Cannot import "${dir}": "oci-layout" is not valid JSON`);
  }
  if (version !== "1.0.0") {
    throw new NotImplemented(
      `Cannot import "${dir}": unsupported OCI layout version "${String(version)}"`,
    );
  }
  const indexBytes = await read("index.json");
  parseIndex(indexBytes, MEDIA_TYPE_OCI_INDEX);
  const index = await putBytes(stores, indexBytes, MEDIA_TYPE_OCI_INDEX);
  // Copy every blob reachable from the index (all platforms) from blobs/<alg>/<hex>.
  const seen = new Set<string>([index.digest]);
  const copy = async (desc: Descriptor): Promise<Descriptor[]> => {
    if (desc.digest !== index.digest) {
      await copyLayoutBlob(stores, dir, desc);
    }
    const kids = await children(stores.content, desc);
    return kids.filter((k) => !seen.has(k.digest) && seen.add(k.digest));
  };
  await walk(copy, [index]);
  return index;
}

async function putBytes(
  stores: ArchiveStores,
  bytes: Uint8Array,
  mediaType: string,
): Promise<Descriptor> {
  const digest = "sha256:" + createHash("sha256").update(bytes).digest("hex");
  await stores.content.writeBlob(`import-${digest}`, bytes, {
    expected: { digest, size: bytes.length },
  });
  return { mediaType, digest, size: bytes.length };
}

async function copyLayoutBlob(stores: ArchiveStores, dir: string, desc: Descriptor): Promise<void> {
  try {
    const info = await stores.content.info(desc.digest);
    if (info.size === desc.size) return;
  } catch (err) {
    if (!(err instanceof NotFound)) throw err;
  }
  const [alg, hex] = desc.digest.split(":") as [string, string];
  const path = posix.join(dir, "blobs", alg, hex);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new NotFound(
        `Cannot import "${dir}": blob ${desc.digest} (${desc.mediaType}) is missing from the layout`,
      );
    }
    throw err;
  }
  try {
    await stores.content.writeBlob(`import-${desc.digest}`, readChunks(file), {
      expected: { digest: desc.digest, size: desc.size },
    });
  } catch (err) {
    if (err instanceof FailedPrecondition) {
      throw new FailedPrecondition(
        `Cannot import "${dir}": blob file "blobs/${alg}/${hex}" does not match its descriptor: ${err.message}`,
      );
    }
    throw err;
  }
}

function importPrefix(): string {
  return `import-${new Date().toISOString().slice(0, 10)}`;
}

const TAG = /^[\w][\w.-]{0,127}$/;

/** The name an index entry gets, or `undefined` when `--base-name` filters it out. */
function entryName(desc: Descriptor, options: ImportOptions): string | undefined {
  const prefix = options.baseName ?? importPrefix();
  const name = desc.annotations?.[ANNOTATION_IMAGE_NAME];
  const ref = desc.annotations?.[ANNOTATION_REF_NAME];
  if (name) {
    if (options.baseName && !name.startsWith(options.baseName)) return undefined;
    return name;
  }
  if (ref) {
    if (TAG.test(ref)) return `${prefix}:${ref}`;
    let full: string;
    try {
      full = normalizeReference(ref);
    } catch {
      return `${prefix}:${ref.replace(/[^\w.-]/g, "_").slice(0, 128)}`;
    }
    if (options.baseName && !full.startsWith(options.baseName)) return undefined;
    return full;
  }
  return `${prefix}@${desc.digest}`;
}

async function createImages(
  stores: ArchiveStores,
  index: Descriptor,
  label: string,
  options: ImportOptions,
): Promise<ImageRecord[]> {
  const platform = options.platform ?? allPlatforms;
  // Label every parent with GC references to the children kept, checking they are all present.
  const labelled = new Set<string>();
  const handler = filterPlatforms(async (desc: Descriptor) => {
    let kids: Descriptor[];
    try {
      kids = await children(stores.content, desc);
      if (kids.length > 0) {
        // Probe that every child exists before labelling.
        for (const k of kids) await stores.content.info(k.digest);
      }
    } catch (err) {
      if (err instanceof NotFound) {
        throw new NotFound(`Cannot import "${label}": ${err.message}`);
      }
      throw err;
    }
    return kids;
  }, platform);
  const labelling = async (desc: Descriptor): Promise<Descriptor[]> => {
    const kids = await handler(desc);
    if (kids.length > 0 && !labelled.has(desc.digest)) {
      labelled.add(desc.digest);
      const labels = childGcLabels(kids);
      await stores.content.update(desc.digest, labels, {
        fieldpaths: Object.keys(labels).map((k) => `labels.${k}`),
      });
    }
    return kids;
  };
  await walk(labelling, [index]);
  const idx = parseIndex(await stores.content.readBlob(index.digest), MEDIA_TYPE_OCI_INDEX);
  const records: ImageRecord[] = [];
  const upsert = (name: string, target: Descriptor) => {
    const { platform: _p, ...plain } = target;
    records.push(stores.images.upsert({ name, target: plain }));
  };
  for (const entry of idx.manifests) {
    if (entry.annotations?.[ANNOTATION_SUBJECT]) continue;
    const name = entryName(entry, options);
    if (name === undefined) continue;
    upsert(name, entry);
    if (options.digests && !name.includes("@")) {
      const base = name.replace(/:[\w][\w.-]{0,127}$/, "");
      upsert(`${base}@${entry.digest}`, entry);
    }
  }
  if (options.indexName) upsert(options.indexName, index);
  return records;
}
