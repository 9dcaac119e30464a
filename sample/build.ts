/**
 * Builds the built-in sample image from the files under `sample/layers` and the description in
 * `sample/sample.json`: an OCI image layout with two gzip layers (files, a symlink, a hardlink,
 * and a deletion in the second layer), for the host's platform. Strata's own tar writer makes the
 * layers, so the sample needs no other tool. The same inputs give the same digests.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { join, relative } from "node:path";
import { createTar, type TarInput } from "../diff/tar/mod.ts";
import { defaultPlatformSpec } from "../images/platforms.ts";
import {
  MEDIA_TYPE_OCI_CONFIG,
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_LAYER_GZIP,
  MEDIA_TYPE_OCI_MANIFEST,
} from "../images/media_types.ts";
import type { Descriptor } from "../images/types.ts";

interface ExtraEntry {
  type: "file" | "directory" | "symlink" | "hardlink";
  name: string;
  linkname?: string;
  mode?: string;
}

interface SampleSpec {
  name: string;
  created: string;
  config: Record<string, unknown>;
  layers: { comment: string; modes: Record<string, string>; extra: ExtraEntry[] }[];
}

/** What {@linkcode buildSample} wrote. */
export interface Sample {
  /** The OCI layout directory. */
  layout: string;
  /** The image's name, as recorded in the layout's index. */
  name: string;
  /** The manifest's descriptor. */
  manifest: Descriptor;
  /** The layers' uncompressed digests. */
  diffIds: string[];
}

const SAMPLE_DIR = new URL(".", import.meta.url).pathname;

function sha256(bytes: Uint8Array): string {
  return "sha256:" + createHash("sha256").update(bytes).digest("hex");
}

async function listTree(dir: string): Promise<{ path: string; isDir: boolean }[]> {
  const out: { path: string; isDir: boolean }[] = [];
  const visit = async (d: string) => {
    const entries = [];
    for await (const e of Deno.readDir(d)) entries.push(e);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const full = join(d, e.name);
      out.push({ path: relative(dir, full), isDir: e.isDirectory });
      if (e.isDirectory) await visit(full);
    }
  };
  await visit(dir);
  return out;
}

async function layerTar(
  dir: string,
  layer: SampleSpec["layers"][number],
  mtime: number,
): Promise<Uint8Array> {
  const base = { uid: 0, gid: 0, mtime: { sec: mtime, nsec: 0 } };
  const entries: TarInput[] = [];
  for (const { path, isDir } of await listTree(dir)) {
    const mode = layer.modes[path] ? parseInt(layer.modes[path]!, 8) : isDir ? 0o755 : 0o644;
    if (isDir) {
      entries.push({ header: { ...base, name: path, type: "directory", mode } });
    } else {
      const body = await Deno.readFile(join(dir, path));
      entries.push({
        header: { ...base, name: path, type: "file", mode, size: body.length },
        body,
      });
    }
  }
  for (const e of layer.extra) {
    const mode = e.mode
      ? parseInt(e.mode, 8)
      : e.type === "directory"
      ? 0o755
      : e.type === "symlink"
      ? 0o777
      : 0o644;
    const header = {
      ...base,
      name: e.name,
      type: e.type,
      mode,
      size: 0,
      linkname: e.linkname ?? "",
    };
    entries.push(e.type === "file" ? { header, body: new Uint8Array(0) } : { header });
  }
  return await createTar(entries);
}

/**
 * Writes the sample image as an OCI layout into `outDir` (created when missing).
 *
 * @param outDir Where the layout goes.
 * @returns The layout's path, the image name, its manifest and diff IDs.
 */
export async function buildSample(outDir: string): Promise<Sample> {
  const spec = JSON.parse(await Deno.readTextFile(join(SAMPLE_DIR, "sample.json"))) as SampleSpec;
  const mtime = Math.floor(Date.parse(spec.created) / 1000);
  await Deno.mkdir(join(outDir, "blobs", "sha256"), { recursive: true });
  const put = async (bytes: Uint8Array, mediaType: string): Promise<Descriptor> => {
    const digest = sha256(bytes);
    await Deno.writeFile(join(outDir, "blobs", "sha256", digest.slice(7)), bytes);
    return { mediaType, digest, size: bytes.length };
  };
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const [i, layer] of spec.layers.entries()) {
    const tar = await layerTar(join(SAMPLE_DIR, "layers", String(i + 1)), layer, mtime);
    diffIds.push(sha256(tar));
    layers.push(await put(gzipSync(tar, { level: 9 }), MEDIA_TYPE_OCI_LAYER_GZIP));
  }
  const platform = defaultPlatformSpec();
  const enc = new TextEncoder();
  const config = await put(
    enc.encode(JSON.stringify({
      created: spec.created,
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: spec.config,
      rootfs: { type: "layers", diff_ids: diffIds },
      history: spec.layers.map((l) => ({ created: spec.created, created_by: l.comment })),
    })),
    MEDIA_TYPE_OCI_CONFIG,
  );
  const manifest = await put(
    enc.encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_OCI_MANIFEST,
      config,
      layers,
    })),
    MEDIA_TYPE_OCI_MANIFEST,
  );
  const tag = spec.name.slice(spec.name.lastIndexOf(":") + 1);
  await Deno.writeTextFile(
    join(outDir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_OCI_INDEX,
      manifests: [{
        ...manifest,
        platform,
        annotations: {
          "io.containerd.image.name": spec.name,
          "org.opencontainers.image.ref.name": tag,
        },
      }],
    }),
  );
  await Deno.writeTextFile(
    join(outDir, "oci-layout"),
    JSON.stringify({ imageLayoutVersion: "1.0.0" }),
  );
  return { layout: outDir, name: spec.name, manifest, diffIds };
}
