/**
 * Media types of OCI and Docker schema 2 documents and blobs, and the predicates containerd uses to
 * classify them (`core/images/mediatypes.go`).
 *
 * @module
 */

import { NotImplemented } from "../errors.ts";

/** OCI image manifest. */
export const MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
/** OCI image index. */
export const MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json";
/** OCI image config. */
export const MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
/** OCI layer, uncompressed tar. */
export const MEDIA_TYPE_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar";
/** OCI layer, gzip-compressed tar. */
export const MEDIA_TYPE_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
/** OCI layer, zstd-compressed tar. */
export const MEDIA_TYPE_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";
/** OCI non-distributable layer, uncompressed tar (deprecated by the image spec). */
export const MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE =
  "application/vnd.oci.image.layer.nondistributable.v1.tar";
/** OCI non-distributable layer, gzip-compressed tar (deprecated by the image spec). */
export const MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_GZIP =
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/** OCI non-distributable layer, zstd-compressed tar (deprecated by the image spec). */
export const MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_ZSTD =
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/** The OCI empty JSON blob (`{}`), used as the config of artifacts. */
export const MEDIA_TYPE_OCI_EMPTY = "application/vnd.oci.empty.v1+json";
/** Docker schema 2 manifest. */
export const MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
/** Docker schema 2 manifest list. */
export const MEDIA_TYPE_DOCKER_MANIFEST_LIST =
  "application/vnd.docker.distribution.manifest.list.v2+json";
/** Docker image config. */
export const MEDIA_TYPE_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
/** Docker layer, tar (may in fact be compressed). */
export const MEDIA_TYPE_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar";
/** Docker layer, gzip-compressed tar. */
export const MEDIA_TYPE_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/** Docker layer, zstd-compressed tar. */
export const MEDIA_TYPE_DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/** Docker foreign (non-distributable) layer, tar. */
export const MEDIA_TYPE_DOCKER_FOREIGN_LAYER =
  "application/vnd.docker.image.rootfs.foreign.diff.tar";
/** Docker foreign (non-distributable) layer, gzip-compressed tar. */
export const MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP =
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/** Docker schema 1 signed manifest; not supported anywhere. */
export const MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST =
  "application/vnd.docker.distribution.manifest.v1+prettyjws";
/** In-toto attestation statement (buildx attestation layers). */
export const MEDIA_TYPE_IN_TOTO = "application/vnd.in-toto+json";
/** EROFS filesystem image layer. */
export const MEDIA_TYPE_EROFS_LAYER = "application/vnd.erofs.layer.v1";
/** containerd checkpoint (CRIU image tar); a known config type. */
export const MEDIA_TYPE_CONTAINERD_CHECKPOINT =
  "application/vnd.containerd.container.criu.checkpoint.criu.tar";
/** containerd checkpoint config; a known config type. */
export const MEDIA_TYPE_CONTAINERD_CHECKPOINT_CONFIG =
  "application/vnd.containerd.container.checkpoint.config.v1+proto";

const OCI_LAYER_PREFIX = "application/vnd.oci.image.layer.";
const DOCKER_LAYER_BASES: ReadonlySet<string> = new Set([
  MEDIA_TYPE_DOCKER_LAYER,
  MEDIA_TYPE_DOCKER_LAYER_GZIP,
  MEDIA_TYPE_DOCKER_LAYER_ZSTD,
  MEDIA_TYPE_DOCKER_FOREIGN_LAYER,
  MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP,
  MEDIA_TYPE_EROFS_LAYER,
]);

/** Splits `base+s1+s2` into the base and its suffixes, sorted as containerd does. */
function splitMediaType(mediaType: string): { base: string; suffixes: string[] } {
  const plus = mediaType.indexOf("+");
  if (plus < 0) return { base: mediaType, suffixes: [] };
  return { base: mediaType.slice(0, plus), suffixes: mediaType.slice(plus + 1).split("+").sort() };
}

/**
 * Reports whether a media type is an image manifest (OCI or Docker schema 2).
 *
 * @example
 * ```ts
 * import { isManifestType } from "@strata/strata/images";
 * console.log(isManifestType("application/vnd.oci.image.manifest.v1+json"));
 * ```
 *
 * @param mediaType The media type.
 * @returns `true` for the two manifest types.
 */
export function isManifestType(mediaType: string): boolean {
  return mediaType === MEDIA_TYPE_OCI_MANIFEST || mediaType === MEDIA_TYPE_DOCKER_MANIFEST;
}

/**
 * Reports whether a media type is an image index (OCI index or Docker manifest list).
 *
 * @example
 * ```ts
 * import { isIndexType } from "@strata/strata/images";
 * console.log(isIndexType("application/vnd.docker.distribution.manifest.list.v2+json"));
 * ```
 *
 * @param mediaType The media type.
 * @returns `true` for the two index types.
 */
export function isIndexType(mediaType: string): boolean {
  return mediaType === MEDIA_TYPE_OCI_INDEX || mediaType === MEDIA_TYPE_DOCKER_MANIFEST_LIST;
}

/**
 * Reports whether a media type is an image config (OCI or Docker).
 *
 * @example
 * ```ts
 * import { isConfigType } from "@strata/strata/images";
 * console.log(isConfigType("application/vnd.docker.container.image.v1+json"));
 * ```
 *
 * @param mediaType The media type.
 * @returns `true` for the two image config types.
 */
export function isConfigType(mediaType: string): boolean {
  return mediaType === MEDIA_TYPE_OCI_CONFIG || mediaType === MEDIA_TYPE_DOCKER_CONFIG;
}

/**
 * Reports whether a media type is a config containerd knows: the image configs plus the containerd
 * checkpoint and checkpoint config types.
 *
 * @example
 * ```ts
 * import { isKnownConfigType } from "@strata/strata/images";
 * console.log(isKnownConfigType("application/vnd.containerd.container.checkpoint.config.v1+proto"));
 * ```
 *
 * @param mediaType The media type.
 * @returns `true` for a known config type.
 */
export function isKnownConfigType(mediaType: string): boolean {
  return isConfigType(mediaType) || mediaType === MEDIA_TYPE_CONTAINERD_CHECKPOINT ||
    mediaType === MEDIA_TYPE_CONTAINERD_CHECKPOINT_CONFIG;
}

/**
 * Reports whether a media type is a layer: any `application/vnd.oci.image.layer.` type, the Docker
 * layer types (with any `+suffix` stripped) and the EROFS layer type.
 *
 * @example
 * ```ts
 * import { isLayerType } from "@strata/strata/images";
 * console.log(isLayerType("application/vnd.oci.image.layer.v1.tar+zstd"));
 * ```
 *
 * @param mediaType The media type.
 * @returns `true` for a layer type.
 */
export function isLayerType(mediaType: string): boolean {
  if (mediaType.startsWith(OCI_LAYER_PREFIX)) return true;
  return DOCKER_LAYER_BASES.has(splitMediaType(mediaType).base);
}

/**
 * Reports whether a layer media type is non-distributable (OCI `nondistributable` or Docker
 * `foreign`); such layers are usually fetched from their `urls`.
 *
 * @example
 * ```ts
 * import { isNonDistributable } from "@strata/strata/images";
 * console.log(isNonDistributable("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"));
 * ```
 *
 * @param mediaType The media type.
 * @returns `true` for a non-distributable layer type.
 */
export function isNonDistributable(mediaType: string): boolean {
  return mediaType.startsWith("application/vnd.oci.image.layer.nondistributable.") ||
    mediaType.startsWith("application/vnd.docker.image.rootfs.foreign.");
}

/**
 * Reports whether a media type is the Docker schema 1 manifest, which is not supported.
 *
 * @example
 * ```ts
 * import { isSchema1 } from "@strata/strata/images";
 * console.log(isSchema1("application/vnd.docker.distribution.manifest.v1+prettyjws"));
 * ```
 *
 * @param mediaType The media type.
 * @returns `true` for the schema 1 manifest types.
 */
export function isSchema1(mediaType: string): boolean {
  return mediaType === MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST ||
    mediaType === "application/vnd.docker.distribution.manifest.v1+json";
}

/** The compression a layer media type declares (see {@linkcode diffCompression}). */
export type DiffCompression = "gzip" | "zstd" | "unknown" | "";

/**
 * Tells the compression a layer media type declares, as containerd's `DiffCompression`: Docker
 * plain tar types give `"unknown"` (they may be compressed anyway), Docker gzip and zstd types give
 * `"gzip"` and `"zstd"`, a Docker type wrapped in another `+suffix` gives `""`, and OCI layer types
 * give their last sorted `+suffix` when it is `gzip` or `zstd`, else `""` (uncompressed, or wrapped
 * as in `+encrypted`).
 *
 * @example
 * ```ts
 * import { diffCompression } from "@strata/strata/images";
 * console.log(diffCompression("application/vnd.oci.image.layer.v1.tar+gzip"));
 * ```
 *
 * @param mediaType The layer media type.
 * @returns The compression.
 * @throws {NotImplemented} When the media type is not a recognised layer type.
 */
export function diffCompression(mediaType: string): DiffCompression {
  const { base, suffixes } = splitMediaType(mediaType);
  switch (base) {
    case MEDIA_TYPE_DOCKER_LAYER:
    case MEDIA_TYPE_DOCKER_FOREIGN_LAYER:
      return suffixes.length > 0 ? "" : "unknown";
    case MEDIA_TYPE_DOCKER_LAYER_GZIP:
    case MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP:
      return suffixes.length > 0 ? "" : "gzip";
    case MEDIA_TYPE_DOCKER_LAYER_ZSTD:
      return suffixes.length > 0 ? "" : "zstd";
    case MEDIA_TYPE_OCI_LAYER:
    case MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE: {
      const last = suffixes[suffixes.length - 1];
      return last === "gzip" || last === "zstd" ? last : "";
    }
  }
  throw new NotImplemented(
    `Cannot tell the compression of media type "${mediaType}": unrecognised layer media type`,
  );
}
