import assert from "node:assert/strict";
import { InvalidArgument, NotImplemented } from "../../errors.ts";
import {
  parseImageConfig,
  parseIndex,
  parseManifest,
  validateDescriptor,
  validateMediaType,
} from "../../images/validate.ts";

const D1 = "sha256:" + "1".repeat(64);
const D2 = "sha256:" + "2".repeat(64);
const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const INDEX = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
const CONFIG = "application/vnd.oci.image.config.v1+json";
const LAYER = "application/vnd.oci.image.layer.v1.tar+gzip";

/** A JSON document being edited by a test case; loosely typed on purpose. */
// deno-lint-ignore no-explicit-any
type Doc = any;

function goodManifest(): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: MANIFEST,
    config: { mediaType: CONFIG, digest: D1, size: 10 },
    layers: [
      { mediaType: LAYER, digest: D2, size: 20 },
      { mediaType: LAYER, digest: D2, size: 20, urls: ["https://example.com/x"] },
      { mediaType: LAYER, digest: D2, size: 0, annotations: { a: "b" } },
    ],
    annotations: { "org.opencontainers.image.created": "2024-01-01T00:00:00Z" },
  };
}

function goodIndex(): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: INDEX,
    manifests: [
      {
        mediaType: MANIFEST,
        digest: D1,
        size: 10,
        platform: { os: "linux", architecture: "arm", variant: "v7" },
      },
      {
        mediaType: MANIFEST,
        digest: D2,
        size: 11,
        platform: { os: "windows", architecture: "amd64", "os.version": "10.0.20348.1" },
      },
    ],
  };
}

function goodConfig(): Record<string, unknown> {
  return {
    os: "linux",
    architecture: "amd64",
    created: "2024-01-01T00:00:00Z",
    config: { Cmd: ["sh"] },
    rootfs: { type: "layers", diff_ids: [D1, D2] },
    history: [{ created_by: "x" }],
  };
}

/** Applies `edit` to a copy of `base` and returns it as JSON. */
function edited(base: Record<string, unknown>, edit: (doc: Doc) => void): string {
  const doc = structuredClone(base);
  edit(doc);
  return JSON.stringify(doc);
}

function rejects(fn: () => unknown, message: string): void {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof InvalidArgument, `not InvalidArgument: ${err}`);
    assert.equal(err.message, message);
    return true;
  });
}

Deno.test("parseManifest() returns a valid manifest", () => {
  const m = parseManifest(JSON.stringify(goodManifest()), MANIFEST);
  assert.equal(m.config.digest, D1);
  assert.equal(m.layers.length, 3);
  const bytes = new TextEncoder().encode(JSON.stringify(goodManifest()));
  assert.equal(parseManifest(bytes).layers[1]!.urls![0], "https://example.com/x");
});

Deno.test("parseManifest() turns missing or null layers into an empty list", () => {
  assert.deepEqual(parseManifest(edited(goodManifest(), (d) => delete d.layers)).layers, []);
  assert.deepEqual(parseManifest(edited(goodManifest(), (d) => (d.layers = null))).layers, []);
});

Deno.test("parseManifest() names each bad field in its message", () => {
  const cases: [(doc: Doc) => void, string][] = [
    [(d) => delete d.schemaVersion, `"schemaVersion" is missing`],
    [(d) => (d.schemaVersion = 1), `"schemaVersion" must be 2: 1`],
    [(d) => (d.mediaType = 5), `"mediaType" must be a string: 5`],
    [(d) => delete d.config, `"config" is missing`],
    [(d) => (d.config = "x"), `"config" must be an object: "x"`],
    [(d) => delete d.config.mediaType, `"config.mediaType" is missing`],
    [(d) => (d.config.mediaType = ""), `"config.mediaType" must be a non-empty string: ""`],
    [(d) => delete d.config.digest, `"config.digest" is missing`],
    [(d) => (d.config.digest = 7), `"config.digest" is not a valid digest: 7`],
    [(d) => delete d.config.size, `"config.size" is missing`],
    [(d) => (d.layers = {}), `"layers" must be an array: {}`],
    [(d) => (d.layers[1] = null), `"layers[1]" must be an object: null`],
    [
      (d) => (d.layers[2].digest = "sha256:xyz"),
      `"layers[2].digest" is not a valid digest: "sha256:xyz"`,
    ],
    [
      (d) => (d.layers[2].digest = "md5:d41d8cd98f00b204e9800998ecf8427e"),
      `"layers[2].digest" is not a valid digest: "md5:d41d8cd98f00b204e9800998ecf8427e"`,
    ],
    [(d) => (d.layers[0].size = -1), `"layers[0].size" must be a non-negative integer: -1`],
    [(d) => (d.layers[0].size = 1.5), `"layers[0].size" must be a non-negative integer: 1.5`],
    [(d) => (d.layers[0].size = "3"), `"layers[0].size" must be a non-negative integer: "3"`],
    [(d) => (d.layers[1].urls = "u"), `"layers[1].urls" must be an array of strings: "u"`],
    [(d) => (d.layers[1].urls = ["a", 1]), `"layers[1].urls[1]" must be a string: 1`],
    [
      (d) => (d.layers[2].annotations = { a: 1 }),
      `"layers[2].annotations" must be a map of strings: value of "a" is 1`,
    ],
    [
      (d) => (d.layers[2].annotations = ["a"]),
      `"layers[2].annotations" must be a map of strings: ["a"]`,
    ],
    [(d) => (d.layers[0].data = 1), `"layers[0].data" must be a string: 1`],
    [(d) => (d.layers[0].platform = "linux"), `"layers[0].platform" must be an object: "linux"`],
    [
      (d) => (d.layers[0].platform = { os: "linux" }),
      `"layers[0].platform.architecture" is missing`,
    ],
    [(d) => (d.subject = { digest: D1 }), `"subject.mediaType" is missing`],
    [
      (d) => (d.annotations = { a: null }),
      `"annotations" must be a map of strings: value of "a" is null`,
    ],
  ];
  for (const [edit, problem] of cases) {
    rejects(
      () => parseManifest(edited(goodManifest(), edit), MANIFEST),
      `Cannot parse manifest: ${problem}`,
    );
  }
});

Deno.test("parseManifest() names the document's digest when given", () => {
  rejects(
    () =>
      parseManifest(edited(goodManifest(), (d) => (d.layers[2].digest = "sha256:xyz")), MANIFEST, {
        digest: D1,
      }),
    `Cannot parse manifest "${D1}": "layers[2].digest" is not a valid digest: "sha256:xyz"`,
  );
});

Deno.test("parseManifest() rejects invalid JSON and non-objects", () => {
  assert.throws(
    () => parseManifest("{not json"),
    (err) =>
      err instanceof InvalidArgument && /^Cannot parse manifest: invalid JSON: /.test(err.message),
  );
  rejects(() => parseManifest("[]"), "Cannot parse manifest: document is not a JSON object: []");
});

Deno.test("parseManifest() rejects an index and a non-manifest declared type", () => {
  rejects(
    () => parseManifest(JSON.stringify(goodIndex())),
    `Cannot parse manifest: expected manifest but found index`,
  );
  rejects(
    () => parseManifest(JSON.stringify(goodIndex()), MANIFEST),
    `Cannot parse manifest: expected manifest but found index (declared media type "${MANIFEST}")`,
  );
  rejects(
    () => parseManifest(JSON.stringify(goodManifest()), INDEX),
    `Cannot parse manifest: "${INDEX}" is not a manifest media type`,
  );
});

Deno.test("parseIndex() returns a valid index", () => {
  const idx = parseIndex(JSON.stringify(goodIndex()), INDEX);
  assert.equal(idx.manifests.length, 2);
  assert.equal(idx.manifests[0]!.platform!.variant, "v7");
  assert.deepEqual(parseIndex('{"schemaVersion":2}', DOCKER_LIST).manifests, []);
});

Deno.test("parseIndex() names each bad field in its message", () => {
  const cases: [(doc: Doc) => void, string][] = [
    [(d) => (d.schemaVersion = "2"), `"schemaVersion" must be 2: "2"`],
    [(d) => (d.manifests = "x"), `"manifests" must be an array: "x"`],
    [(d) => (d.manifests[1].size = -3), `"manifests[1].size" must be a non-negative integer: -3`],
    [
      (d) => (d.manifests[0].platform.os = 3),
      `"manifests[0].platform.os" must be a string: 3`,
    ],
    [
      (d) => (d.manifests[0].platform.variant = 7),
      `"manifests[0].platform.variant" must be a string: 7`,
    ],
    [
      (d) => (d.manifests[1].platform["os.version"] = 10),
      `"manifests[1].platform.os.version" must be a string: 10`,
    ],
    [
      (d) => (d.manifests[1].platform["os.features"] = ["a", 2]),
      `"manifests[1].platform.os.features[1]" must be a string: 2`,
    ],
    [(d) => (d.artifactType = 1), `"artifactType" must be a string: 1`],
  ];
  for (const [edit, problem] of cases) {
    rejects(
      () => parseIndex(edited(goodIndex(), edit), INDEX),
      `Cannot parse index: ${problem}`,
    );
  }
});

Deno.test("parseIndex() rejects a manifest", () => {
  rejects(
    () => parseIndex(JSON.stringify(goodManifest()), INDEX),
    `Cannot parse index: expected index but found manifest (declared media type "${INDEX}")`,
  );
  rejects(
    () => parseIndex('{"schemaVersion":2,"mediaType":"' + MANIFEST + '"}'),
    `Cannot parse index: expected index but found manifest`,
  );
});

Deno.test("parseImageConfig() returns a valid config", () => {
  const c = parseImageConfig(JSON.stringify(goodConfig()));
  assert.equal(c.architecture, "amd64");
  assert.deepEqual(c.rootfs.diff_ids, [D1, D2]);
  const empty = parseImageConfig(
    '{"os":"linux","architecture":"arm64","rootfs":{"type":"layers"}}',
  );
  assert.deepEqual(empty.rootfs.diff_ids, []);
  const nullConfig = parseImageConfig(edited(goodConfig(), (d) => (d.config = null)));
  assert.equal(nullConfig.config, undefined);
});

Deno.test("parseImageConfig() names each bad field in its message", () => {
  const cases: [(doc: Doc) => void, string][] = [
    [(d) => delete d.os, `"os" is missing`],
    [(d) => (d.architecture = 64), `"architecture" must be a string: 64`],
    [(d) => (d.variant = 8), `"variant" must be a string: 8`],
    [(d) => (d["os.features"] = "x"), `"os.features" must be an array of strings: "x"`],
    [(d) => (d.created = 0), `"created" must be a string: 0`],
    [(d) => (d.config = []), `"config" must be an object: []`],
    [(d) => (d.history = [1]), `"history[0]" must be an object: 1`],
    [(d) => delete d.rootfs, `"rootfs" is missing`],
    [(d) => (d.rootfs = "layers"), `"rootfs" must be an object: "layers"`],
    [(d) => delete d.rootfs.type, `"rootfs.type" is missing`],
    [(d) => (d.rootfs.type = "tar"), `"rootfs.type" must be "layers": "tar"`],
    [(d) => (d.rootfs.diff_ids = D1), `"rootfs.diff_ids" must be an array: "${D1}"`],
    [
      (d) => (d.rootfs.diff_ids[1] = "sha256:abc"),
      `"rootfs.diff_ids[1]" is not a valid digest: "sha256:abc"`,
    ],
  ];
  for (const [edit, problem] of cases) {
    rejects(
      () => parseImageConfig(edited(goodConfig(), edit)),
      `Cannot parse image config: ${problem}`,
    );
  }
});

Deno.test("validateDescriptor() accepts a descriptor and names bad fields", () => {
  const d: unknown = { mediaType: LAYER, digest: D1, size: 0 };
  validateDescriptor(d);
  assert.equal(d.size, 0);
  rejects(
    () => validateDescriptor({ mediaType: LAYER, digest: "sha256:1", size: 1 }),
    `Cannot validate descriptor: "digest" is not a valid digest: "sha256:1"`,
  );
  rejects(
    () => validateDescriptor({ mediaType: LAYER, digest: D1, size: -1 }, "target"),
    `Cannot validate descriptor: "target.size" must be a non-negative integer: -1`,
  );
  rejects(
    () => validateDescriptor(null),
    `Cannot validate descriptor: "descriptor" must be an object: null`,
  );
});

Deno.test("validateMediaType() accepts documents that fit their declared type", () => {
  validateMediaType(JSON.stringify(goodManifest()), MANIFEST);
  validateMediaType(JSON.stringify(goodIndex()), INDEX);
  validateMediaType("{}", "application/vnd.docker.distribution.manifest.v2+json");
  validateMediaType('{"manifests":[]}', MANIFEST);
  validateMediaType(JSON.stringify(goodManifest()), "application/octet-stream");
});

Deno.test("validateMediaType() rejects invalid JSON", () => {
  assert.throws(
    () => validateMediaType(new TextEncoder().encode("nope"), MANIFEST),
    (err) => err instanceof InvalidArgument && /invalid JSON/.test(err.message),
  );
});

Deno.test("validateMediaType() rejects schema 1 with NotImplemented", () => {
  assert.throws(
    () => validateMediaType('{"schemaVersion":1,"fsLayers":[{"blobSum":"x"}]}', MANIFEST),
    (err) =>
      err instanceof NotImplemented &&
      err.message === "Cannot parse manifest: schema 1 not supported",
  );
  assert.throws(
    () => parseManifest('{"schemaVersion":1,"fsLayers":[{"blobSum":"x"}]}'),
    NotImplemented,
  );
  validateMediaType('{"fsLayers":[]}', MANIFEST);
});

Deno.test("validateMediaType() rejects manifest and index mismatches", () => {
  const wantManifest = (doc: string) =>
    rejects(
      () => validateMediaType(doc, MANIFEST),
      `Cannot parse manifest: expected manifest but found index (declared media type "${MANIFEST}")`,
    );
  wantManifest(JSON.stringify(goodIndex()));
  wantManifest(`{"mediaType":"${DOCKER_LIST}"}`);
  const wantIndex = (doc: string) =>
    rejects(
      () => validateMediaType(doc, DOCKER_LIST),
      `Cannot parse index: expected index but found manifest (declared media type "${DOCKER_LIST}")`,
    );
  wantIndex(JSON.stringify(goodManifest()));
  wantIndex(`{"layers":[{}]}`);
  wantIndex(`{"config":{}}`);
  wantIndex(`{"mediaType":"${MANIFEST}","manifests":[]}`);
});
