// Test images for the unpack tests: OCI layouts written from layer tars, and a seeded generator
// of many-file layers (edits, whiteouts, an opaque directory, symlinks, hardlinks within and
// across layers, a write through a symlinked directory).

import { createHash } from "node:crypto";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { createTar, type TarInput } from "../../diff/tar/mod.ts";
import { defaultPlatformSpec } from "../../images/platforms.ts";

/** An OCI layout written by {@linkcode writeLayout}. */
export interface BuiltImage {
  /** The layout directory. */
  layout: string;
  /** The image's name. */
  name: string;
  /** The layers' diff IDs. */
  diffIds: string[];
}

function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** A descriptor of a blob written by {@linkcode blobWriter}. */
export interface WrittenBlob {
  mediaType: string;
  digest: string;
  size: number;
}

/**
 * Makes a function that stores blobs in an OCI layout's `blobs/sha256` (created).
 *
 * @param dir The layout directory.
 * @returns `put(bytes, mediaType)`, giving the blob's descriptor.
 */
export async function blobWriter(
  dir: string,
): Promise<(bytes: Uint8Array, mediaType: string) => Promise<WrittenBlob>> {
  const blobs = join(dir, "blobs", "sha256");
  await Deno.mkdir(blobs, { recursive: true });
  return async (bytes, mediaType) => {
    const digest = sha256(bytes);
    await Deno.writeFile(join(blobs, digest.slice(7)), bytes);
    return { mediaType, digest, size: bytes.length };
  };
}

/**
 * Writes an OCI layout with one image of layers made from plain tars, for the host platform:
 * gzip layers, except those listed in `uncompressed`, stored as plain tars.
 *
 * @param dir The layout directory (created).
 * @param tars The layers' tars, bottom first.
 * @param options The image's name, the gzip level, the layers to leave uncompressed.
 * @returns The layout, name and diff IDs.
 */
export async function writeLayout(
  dir: string,
  tars: Uint8Array[],
  options: { name: string; level?: number; uncompressed?: number[] },
): Promise<BuiltImage> {
  const put = await blobWriter(dir);
  const enc = new TextEncoder();
  const diffIds = tars.map(sha256);
  const layers = [];
  for (const [i, tar] of tars.entries()) {
    layers.push(
      options.uncompressed?.includes(i)
        ? await put(tar, "application/vnd.oci.image.layer.v1.tar")
        : await put(
          gzipSync(tar, { level: options.level ?? 1 }),
          "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
    );
  }
  const platform = defaultPlatformSpec();
  const config = await put(
    enc.encode(JSON.stringify({
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: {},
      rootfs: { type: "layers", diff_ids: diffIds },
    })),
    "application/vnd.oci.image.config.v1+json",
  );
  const manifest = await put(
    enc.encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config,
      layers,
    })),
    "application/vnd.oci.image.manifest.v1+json",
  );
  await Deno.writeTextFile(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{ ...manifest, annotations: { "io.containerd.image.name": options.name } }],
    }),
  );
  await Deno.writeTextFile(
    join(dir, "oci-layout"),
    JSON.stringify({ imageLayoutVersion: "1.0.0" }),
  );
  return { layout: dir, name: options.name, diffIds };
}

/**
 * A seeded pseudo-random generator (mulberry32): the same seed gives the same numbers.
 *
 * @param seed The seed.
 * @returns A function giving numbers in [0, 1).
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** File content: a 64-byte seeded pattern repeated (compresses well, differs per file). */
function content(random: () => number, size: number): Uint8Array {
  const pattern = new Uint8Array(64);
  for (let i = 0; i < pattern.length; i++) pattern[i] = Math.floor(random() * 256);
  const out = new Uint8Array(size);
  for (let off = 0; off < size; off += pattern.length) {
    out.set(pattern.subarray(0, Math.min(pattern.length, size - off)), off);
  }
  return out;
}

/** Options of {@linkcode manyFileLayers}. */
export interface ManyFileOptions {
  /** The generator's seed. */
  seed: number;
  /** Regular files in each layer. */
  filesPerLayer: number;
  /** Largest file size in bytes (sizes are uniform in [0, maxSize]). */
  maxSize: number;
  /** Directories the files are spread over. */
  dirs?: number;
}

/**
 * Three layers of many files: a base; edits, whiteouts (files and a directory), an opaque
 * directory, symlinks, hardlinks and a fifo; then new files, a hardlink to a file of the first
 * layer, a file written through a symlinked directory and a sparse file.
 *
 * @param options Seed, counts and sizes.
 * @returns The three layer tars.
 */
export async function manyFileLayers(options: ManyFileOptions): Promise<Uint8Array[]> {
  const random = seededRandom(options.seed);
  const dirs = options.dirs ?? 40;
  const t = { sec: 1700000000, nsec: 0 };
  const base = { uid: 0, gid: 0, mtime: t };
  const dirName = (d: number) => `data/d${String(d).padStart(2, "0")}`;
  const size = () => Math.floor(random() * (options.maxSize + 1));
  const file = (name: string, mode = 0o644): TarInput => {
    const body = content(random, size());
    return { header: { ...base, name, type: "file", mode, size: body.length }, body };
  };
  const dir = (name: string, mode = 0o755): TarInput => ({
    header: { ...base, name, type: "directory", mode },
  });

  const l1: TarInput[] = [dir("data"), dir("etc")];
  for (let d = 0; d < dirs; d++) l1.push(dir(dirName(d)));
  for (let i = 0; i < options.filesPerLayer; i++) {
    l1.push(file(`${dirName(i % dirs)}/f${i}`, i % 7 === 0 ? 0o755 : 0o644));
  }
  l1.push(file("etc/config", 0o600));
  l1.push({ header: { ...base, name: "link-to-d01", type: "symlink", linkname: "data/d01" } });

  const l2: TarInput[] = [dir("data/d00", 0o700), dir("extra")];
  const edits = Math.floor(options.filesPerLayer / 5);
  for (let k = 0; k < edits; k++) {
    const i = Math.floor(random() * options.filesPerLayer);
    l2.push(file(`${dirName(i % dirs)}/f${i}`));
  }
  for (let k = 0; k < Math.floor(options.filesPerLayer / 20); k++) {
    const i = Math.floor(random() * options.filesPerLayer);
    l2.push({
      header: { ...base, name: `${dirName(i % dirs)}/.wh.f${i}`, type: "file" },
      body: new Uint8Array(0),
    });
  }
  l2.push({
    header: { ...base, name: `data/.wh.${dirName(dirs - 1).slice(5)}`, type: "file" },
    body: new Uint8Array(0),
  });
  l2.push({
    header: { ...base, name: `${dirName(2)}/.wh..wh..opq`, type: "file" },
    body: new Uint8Array(0),
  });
  l2.push(file(`${dirName(2)}/after-opaque`));
  const extras = Math.max(10, Math.floor(options.filesPerLayer / 2));
  for (let k = 0; k < extras; k++) l2.push(file(`extra/e${k}`));
  for (let k = 0; k < Math.min(50, extras); k++) {
    l2.push({
      header: { ...base, name: `extra/s${k}`, type: "symlink", linkname: `e${k}` },
    });
    l2.push({
      header: {
        ...base,
        name: `extra/h${k}`,
        type: "hardlink",
        linkname: `extra/e${k}`,
        mode: 0o644,
      },
    });
  }
  l2.push({ header: { ...base, name: "extra/fifo", type: "fifo", mode: 0o600 } });

  const l3: TarInput[] = [dir("more")];
  for (let k = 0; k < options.filesPerLayer; k++) l3.push(file(`more/m${k}`));
  l3.push({
    header: {
      ...base,
      name: "more/hl-lower",
      type: "hardlink",
      linkname: "etc/config",
      mode: 0o640,
    },
  });
  l3.push(file("link-to-d01/through-symlink"));
  // A sparse file: 8 MiB, data in its first and fifth MiB only.
  const segments = [{ offset: 0, length: 4096 }, { offset: 4 << 20, length: 4096 }];
  l3.push({
    header: {
      ...base,
      name: "more/sparse",
      type: "file",
      mode: 0o644,
      sparse: { realSize: 8 << 20, segments },
    },
    body: content(random, 8192),
  });
  return [await createTar(l1), await createTar(l2), await createTar(l3)];
}

/**
 * Layers of equal-sized regular files (`l<k>/f<i>`), each with its own content.
 *
 * @param options Seed, number of layers, files per layer and file size.
 * @returns The layer tars.
 */
export async function fixedSizeLayers(
  options: { seed: number; layers: number; files: number; size: number },
): Promise<Uint8Array[]> {
  const random = seededRandom(options.seed);
  const base = { uid: 0, gid: 0, mtime: { sec: 1700000000, nsec: 0 } };
  const tars = [];
  for (let k = 0; k < options.layers; k++) {
    const entries: TarInput[] = [{
      header: { ...base, name: `l${k}`, type: "directory", mode: 0o755 },
    }];
    for (let i = 0; i < options.files; i++) {
      const body = content(random, options.size);
      entries.push({
        header: { ...base, name: `l${k}/f${i}`, type: "file", mode: 0o644, size: body.length },
        body,
      });
    }
    tars.push(await createTar(entries));
  }
  return tars;
}
