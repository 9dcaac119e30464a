import assert from "node:assert/strict";
import { NotImplemented } from "../../errors.ts";
import {
  diffCompression,
  isConfigType,
  isIndexType,
  isKnownConfigType,
  isLayerType,
  isManifestType,
  isNonDistributable,
  isSchema1,
  MEDIA_TYPE_DOCKER_CONFIG,
  MEDIA_TYPE_DOCKER_FOREIGN_LAYER,
  MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP,
  MEDIA_TYPE_DOCKER_LAYER,
  MEDIA_TYPE_DOCKER_LAYER_GZIP,
  MEDIA_TYPE_DOCKER_LAYER_ZSTD,
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_DOCKER_MANIFEST_LIST,
  MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST,
  MEDIA_TYPE_IN_TOTO,
  MEDIA_TYPE_OCI_CONFIG,
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_LAYER,
  MEDIA_TYPE_OCI_LAYER_GZIP,
  MEDIA_TYPE_OCI_LAYER_ZSTD,
  MEDIA_TYPE_OCI_MANIFEST,
} from "../../images/media_types.ts";

Deno.test("media type constants have the registered values", () => {
  assert.equal(MEDIA_TYPE_OCI_MANIFEST, "application/vnd.oci.image.manifest.v1+json");
  assert.equal(MEDIA_TYPE_OCI_INDEX, "application/vnd.oci.image.index.v1+json");
  assert.equal(MEDIA_TYPE_OCI_CONFIG, "application/vnd.oci.image.config.v1+json");
  assert.equal(MEDIA_TYPE_OCI_LAYER, "application/vnd.oci.image.layer.v1.tar");
  assert.equal(MEDIA_TYPE_OCI_LAYER_GZIP, "application/vnd.oci.image.layer.v1.tar+gzip");
  assert.equal(MEDIA_TYPE_OCI_LAYER_ZSTD, "application/vnd.oci.image.layer.v1.tar+zstd");
  assert.equal(MEDIA_TYPE_DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json");
  assert.equal(
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    "application/vnd.docker.distribution.manifest.list.v2+json",
  );
  assert.equal(MEDIA_TYPE_DOCKER_CONFIG, "application/vnd.docker.container.image.v1+json");
  assert.equal(MEDIA_TYPE_DOCKER_LAYER, "application/vnd.docker.image.rootfs.diff.tar");
  assert.equal(MEDIA_TYPE_DOCKER_LAYER_GZIP, "application/vnd.docker.image.rootfs.diff.tar.gzip");
  assert.equal(MEDIA_TYPE_DOCKER_LAYER_ZSTD, "application/vnd.docker.image.rootfs.diff.tar.zstd");
  assert.equal(
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER,
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
  );
  assert.equal(
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  );
  assert.equal(
    MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST,
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
  );
  assert.equal(MEDIA_TYPE_IN_TOTO, "application/vnd.in-toto+json");
});

const ALL_TYPES = [
  MEDIA_TYPE_OCI_MANIFEST,
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_CONFIG,
  MEDIA_TYPE_OCI_LAYER,
  MEDIA_TYPE_OCI_LAYER_GZIP,
  MEDIA_TYPE_OCI_LAYER_ZSTD,
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_DOCKER_MANIFEST_LIST,
  MEDIA_TYPE_DOCKER_CONFIG,
  MEDIA_TYPE_DOCKER_LAYER,
  MEDIA_TYPE_DOCKER_LAYER_GZIP,
  MEDIA_TYPE_DOCKER_LAYER_ZSTD,
  MEDIA_TYPE_DOCKER_FOREIGN_LAYER,
  MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP,
  MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST,
  MEDIA_TYPE_IN_TOTO,
  "application/octet-stream",
];

Deno.test("isManifestType() and isIndexType() accept exactly the OCI and Docker types", () => {
  assert.deepEqual(ALL_TYPES.filter(isManifestType), [
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST,
  ]);
  assert.deepEqual(ALL_TYPES.filter(isIndexType), [
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
  ]);
  assert.equal(isManifestType(MEDIA_TYPE_OCI_MANIFEST + "+zstd"), false);
});

Deno.test("isConfigType() accepts image configs and isKnownConfigType() adds checkpoints", () => {
  assert.deepEqual(ALL_TYPES.filter(isConfigType), [
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_DOCKER_CONFIG,
  ]);
  assert.deepEqual(ALL_TYPES.filter(isKnownConfigType), [
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_DOCKER_CONFIG,
  ]);
  const checkpointConfig = "application/vnd.containerd.container.checkpoint.config.v1+proto";
  const checkpoint = "application/vnd.containerd.container.criu.checkpoint.criu.tar";
  assert.equal(isConfigType(checkpointConfig), false);
  assert.equal(isKnownConfigType(checkpointConfig), true);
  assert.equal(isKnownConfigType(checkpoint), true);
});

Deno.test("isLayerType() accepts OCI layer prefixes, Docker layers with suffixes and EROFS", () => {
  assert.deepEqual(ALL_TYPES.filter(isLayerType), [
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_DOCKER_LAYER,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_LAYER_ZSTD,
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER,
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP,
  ]);
  assert.equal(isLayerType("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"), true);
  assert.equal(isLayerType("application/vnd.oci.image.layer.nondistributable.v1.tar"), true);
  assert.equal(isLayerType("application/vnd.docker.image.rootfs.diff.tar.gzip+encrypted"), true);
  assert.equal(isLayerType("application/vnd.erofs.layer.v1"), true);
  assert.equal(isLayerType("application/vnd.docker.image.rootfs.diff"), false);
});

Deno.test("isNonDistributable() recognises OCI nondistributable and Docker foreign layers", () => {
  assert.deepEqual(ALL_TYPES.filter(isNonDistributable), [
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER,
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP,
  ]);
  assert.equal(
    isNonDistributable("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
    true,
  );
});

Deno.test("isSchema1() recognises the schema 1 manifest", () => {
  assert.deepEqual(ALL_TYPES.filter(isSchema1), [MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST]);
});

Deno.test("diffCompression() follows containerd's table", () => {
  const table: [string, string][] = [
    [MEDIA_TYPE_DOCKER_LAYER, "unknown"],
    [MEDIA_TYPE_DOCKER_FOREIGN_LAYER, "unknown"],
    [MEDIA_TYPE_DOCKER_LAYER_GZIP, "gzip"],
    [MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP, "gzip"],
    [MEDIA_TYPE_DOCKER_LAYER_ZSTD, "zstd"],
    [MEDIA_TYPE_DOCKER_LAYER + "+encrypted", ""],
    [MEDIA_TYPE_DOCKER_LAYER_GZIP + "+encrypted", ""],
    [MEDIA_TYPE_DOCKER_LAYER_ZSTD + "+encrypted", ""],
    [MEDIA_TYPE_OCI_LAYER, ""],
    [MEDIA_TYPE_OCI_LAYER_GZIP, "gzip"],
    [MEDIA_TYPE_OCI_LAYER_ZSTD, "zstd"],
    [MEDIA_TYPE_OCI_LAYER_GZIP + "+encrypted", "gzip"],
    [MEDIA_TYPE_OCI_LAYER_ZSTD + "+encrypted", "zstd"],
    [MEDIA_TYPE_OCI_LAYER + "+encrypted", ""],
    ["application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "gzip"],
  ];
  for (const [mediaType, want] of table) {
    assert.equal(diffCompression(mediaType), want, mediaType);
  }
});

Deno.test("diffCompression() rejects unrecognised media types with NotImplemented", () => {
  for (const mt of [MEDIA_TYPE_OCI_CONFIG, "application/vnd.erofs.layer.v1", "", "text/plain"]) {
    assert.throws(() => diffCompression(mt), (err) => {
      assert.ok(err instanceof NotImplemented, mt);
      assert.match(err.message, /^Cannot tell the compression of media type ".*"/);
      return true;
    });
  }
});
