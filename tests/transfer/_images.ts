// Images for the pull and push tests: OCI layouts with one or several platforms, made from
// seeded many-file layers (whiteouts, opaque directories, links), so a pulled tree can be
// compared with an imported one.

import { createHash } from "node:crypto";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import type { Platform } from "../../images/types.ts";
import { defaultPlatformSpec } from "../../images/platforms.ts";
import { blobWriter, manyFileLayers } from "../unpack/_build_image.ts";

/** One platform of a test image: its platform and the seed of its layers. */
export interface TestPlatform {
  platform: Platform;
  seed: number;
}

/** What {@linkcode writeTestLayout} wrote. */
export interface TestLayout {
  /** The layout directory. */
  layout: string;
  /** The tag in the layout (`oci:<layout>:<tag>` for skopeo). */
  tag: string;
  /** The root descriptor's digest: the index when several platforms, else the manifest. */
  digest: string;
  /** Per platform: the manifest digest and the layer digests, bottom first. */
  manifests: { platform: Platform; digest: string; layers: string[] }[];
}

function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** The host's platform, for the image that gets unpacked. */
export function hostPlatform(): Platform {
  return defaultPlatformSpec();
}

/**
 * Writes an OCI layout whose `index.json` names one image under `tag`: a manifest for a single
 * platform, or an image index with a manifest per platform.
 */
export async function writeTestLayout(
  dir: string,
  options: { tag: string; platforms: TestPlatform[]; filesPerLayer?: number },
): Promise<TestLayout> {
  const put = await blobWriter(dir);
  const enc = new TextEncoder();
  const manifests: TestLayout["manifests"] = [];
  const entries = [];
  for (const p of options.platforms) {
    const tars = await manyFileLayers({
      seed: p.seed,
      filesPerLayer: options.filesPerLayer ?? 40,
      maxSize: 16 * 1024,
    });
    const layers = [];
    for (const tar of tars) {
      layers.push(
        await put(gzipSync(tar, { level: 1 }), "application/vnd.oci.image.layer.v1.tar+gzip"),
      );
    }
    const config = await put(
      enc.encode(JSON.stringify({
        architecture: p.platform.architecture,
        os: p.platform.os,
        ...(p.platform.variant ? { variant: p.platform.variant } : {}),
        config: {},
        rootfs: { type: "layers", diff_ids: tars.map(sha256) },
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
    manifests.push({
      platform: p.platform,
      digest: manifest.digest,
      layers: layers.map((l) => l.digest),
    });
    entries.push({ ...manifest, platform: p.platform });
  }
  let root;
  if (entries.length === 1) {
    const { platform: _p, ...plain } = entries[0]!;
    root = plain;
  } else {
    root = await put(
      enc.encode(JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.index.v1+json",
        manifests: entries,
      })),
      "application/vnd.oci.image.index.v1+json",
    );
  }
  await Deno.writeTextFile(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{ ...root, annotations: { "org.opencontainers.image.ref.name": options.tag } }],
    }),
  );
  await Deno.writeTextFile(
    join(dir, "oci-layout"),
    JSON.stringify({ imageLayoutVersion: "1.0.0" }),
  );
  return { layout: dir, tag: options.tag, digest: root.digest, manifests };
}
