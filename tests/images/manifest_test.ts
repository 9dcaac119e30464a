import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { Provider } from "../../content/types.ts";
import { FailedPrecondition, InvalidArgument, NotFound } from "../../errors.ts";
import {
  checkImage,
  childGcLabels,
  children,
  dispatch,
  filterPlatforms,
  type Handler,
  imageConfig,
  imageLayers,
  imagePlatforms,
  imageSize,
  imageUsage,
  limitManifests,
  manifestLayers,
  readImageConfig,
  resolveManifest,
  rootFS,
  SkipDescriptor,
  walk,
} from "../../images/manifest.ts";
import { allPlatforms, onlyPlatform } from "../../images/platforms.ts";
import type { Descriptor, MatchComparer, Platform } from "../../images/types.ts";

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
const LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
const IN_TOTO = "application/vnd.in-toto+json";

function sha256(bytes: Uint8Array): string {
  return "sha256:" + createHash("sha256").update(bytes).digest("hex");
}

/** An in-memory provider, with an `info` lookup and labels like a content store. */
class MemoryProvider implements Provider {
  blobs: Map<string, Uint8Array> = new Map();
  labels: Map<string, Record<string, string>> = new Map();
  reads: string[] = [];

  put(bytes: Uint8Array): string {
    const digest = sha256(bytes);
    this.blobs.set(digest, bytes);
    return digest;
  }

  readBlob(digest: string): Promise<Uint8Array> {
    this.reads.push(digest);
    const bytes = this.blobs.get(digest);
    if (bytes === undefined) return Promise.reject(new NotFound(`Cannot find blob "${digest}"`));
    return Promise.resolve(bytes);
  }

  info = (digest: string): Promise<{ size: number; labels: Record<string, string> }> => {
    const bytes = this.blobs.get(digest);
    if (bytes === undefined) return Promise.reject(new NotFound(`Cannot find blob "${digest}"`));
    return Promise.resolve({ size: bytes.length, labels: this.labels.get(digest) ?? {} });
  };

  /** Stores a JSON document and returns its descriptor. */
  json(mediaType: string, doc: unknown, extra: Partial<Descriptor> = {}): Descriptor {
    const bytes = new TextEncoder().encode(JSON.stringify(doc));
    return { mediaType, digest: this.put(bytes), size: bytes.length, ...extra };
  }

  /** Stores a raw blob and returns its descriptor. */
  raw(mediaType: string, text: string, extra: Partial<Descriptor> = {}): Descriptor {
    const bytes = new TextEncoder().encode(text);
    return { mediaType, digest: this.put(bytes), size: bytes.length, ...extra };
  }

  remove(d: Descriptor): void {
    this.blobs.delete(d.digest);
  }
}

interface Built {
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
}

/** Stores a config, layers and a manifest for a platform. */
function image(
  p: MemoryProvider,
  platform: Platform,
  options: { layers?: number; mediaType?: string; configType?: string; tag?: string } = {},
): Built {
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (let i = 0; i < (options.layers ?? 2); i++) {
    const label = `${options.tag ?? ""}${platform.architecture}${platform.variant ?? ""}-${i}`;
    layers.push(p.raw(LAYER_GZIP, `layer ${label}`));
    diffIds.push(sha256(new TextEncoder().encode(`diff ${label}`)));
  }
  const config = p.json(options.configType ?? OCI_CONFIG, {
    ...platform,
    rootfs: { type: "layers", diff_ids: diffIds },
    tag: options.tag,
  });
  const manifest = p.json(options.mediaType ?? OCI_MANIFEST, {
    schemaVersion: 2,
    mediaType: options.mediaType ?? OCI_MANIFEST,
    config,
    layers,
  });
  return { manifest, config, layers };
}

/** An attestation manifest as buildx makes: platform unknown/unknown, in-toto layers. */
function attestation(p: MemoryProvider, subject: Descriptor): Descriptor {
  const config = p.json(OCI_CONFIG, {
    os: "unknown",
    architecture: "unknown",
    rootfs: { type: "layers", diff_ids: [] },
  });
  const statement = p.raw(IN_TOTO, '{"_type":"https://in-toto.io/Statement/v0.1"}');
  return p.json(OCI_MANIFEST, { schemaVersion: 2, config, layers: [statement] }, {
    platform: { os: "unknown", architecture: "unknown" },
    annotations: {
      "vnd.docker.reference.digest": subject.digest,
      "vnd.docker.reference.type": "attestation-manifest",
    },
  });
}

function entry(b: Built, platform?: Platform): Descriptor {
  return platform === undefined ? { ...b.manifest } : { ...b.manifest, platform };
}

const AMD64: Platform = { os: "linux", architecture: "amd64" };
const ARM64: Platform = { os: "linux", architecture: "arm64" };
const ARMV7: Platform = { os: "linux", architecture: "arm", variant: "v7" };
const S390X: Platform = { os: "linux", architecture: "s390x" };

/** A multi-platform image: index of attestation, arm/v7, arm64, amd64 (in that order). */
function multiArch(p: MemoryProvider) {
  const amd64 = image(p, AMD64);
  const arm64 = image(p, ARM64);
  const armv7 = image(p, ARMV7);
  const att = attestation(p, amd64.manifest);
  const index = p.json(OCI_INDEX, {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [att, entry(armv7, ARMV7), entry(arm64, ARM64), entry(amd64, AMD64)],
  });
  return { amd64, arm64, armv7, att, index };
}

function isNotFoundWith(pattern: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof NotFound, `not NotFound: ${err}`);
    assert.match(err.message, pattern);
    return true;
  };
}

Deno.test("resolveManifest() picks the entry for the platform", async () => {
  const p = new MemoryProvider();
  const { amd64, arm64, armv7, index } = multiArch(p);
  const got = async (platform: MatchComparer) =>
    (await resolveManifest(p, index, { platform })).descriptor.digest;
  assert.equal(await got(onlyPlatform(AMD64)), amd64.manifest.digest);
  assert.equal(await got(onlyPlatform(ARMV7)), armv7.manifest.digest);
  // arm64 also runs arm/v7 (listed first), but prefers arm64.
  assert.equal(await got(onlyPlatform(ARM64)), arm64.manifest.digest);
  const { manifest, descriptor } = await resolveManifest(p, index, {
    platform: onlyPlatform(AMD64),
  });
  assert.deepEqual(descriptor.platform, AMD64);
  assert.equal(manifest.config.digest, amd64.config.digest);
});

Deno.test("resolveManifest() without a platform returns the first manifest in document order", async () => {
  const p = new MemoryProvider();
  const { att, index } = multiArch(p);
  // containerd's nil matcher walks every entry, attestations included.
  assert.equal((await resolveManifest(p, index)).descriptor.digest, att.digest);
});

Deno.test("resolveManifest() with allPlatforms follows the first platformed entry", async () => {
  const p = new MemoryProvider();
  const { att, index } = multiArch(p);
  assert.equal(
    (await resolveManifest(p, index, { platform: allPlatforms })).descriptor.digest,
    att.digest,
  );
});

Deno.test("resolveManifest() reports no match for platform", async () => {
  const p = new MemoryProvider();
  const { index } = multiArch(p);
  await assert.rejects(
    resolveManifest(p, index, { platform: onlyPlatform(S390X) }),
    isNotFoundWith(new RegExp(`no match for platform in manifest "${index.digest}"`)),
  );
  const empty = p.json(OCI_INDEX, { schemaVersion: 2, manifests: [] });
  await assert.rejects(
    resolveManifest(p, empty, { platform: onlyPlatform(AMD64) }),
    isNotFoundWith(/no match for platform in manifest/),
  );
  await assert.rejects(resolveManifest(p, empty), isNotFoundWith(/no manifest in/));
});

Deno.test("resolveManifest() never checks the platform of a root manifest", async () => {
  const p = new MemoryProvider();
  const { arm64 } = multiArch(p);
  const target = { ...arm64.manifest, platform: ARM64 };
  const got = await resolveManifest(p, target, { platform: onlyPlatform(S390X) });
  assert.equal(got.descriptor.digest, arm64.manifest.digest);
  assert.equal(got.manifest.config.digest, arm64.config.digest);
  assert.equal(
    (await imageConfig(p, arm64.manifest, { platform: onlyPlatform(AMD64) })).digest,
    arm64.config.digest,
  );
});

Deno.test("resolveManifest() descends nested indexes", async () => {
  const p = new MemoryProvider();
  const { amd64, arm64 } = multiArch(p);
  const inner = p.json(DOCKER_LIST, {
    schemaVersion: 2,
    mediaType: DOCKER_LIST,
    manifests: [entry(arm64, ARM64), entry(amd64, AMD64)],
  });
  const s390x = image(p, S390X);
  const outer = p.json(OCI_INDEX, {
    schemaVersion: 2,
    manifests: [entry(s390x, S390X), inner],
  });
  // Platformed entries sort first, so a matching s390x wins over the unplatformed nested index.
  assert.equal(
    (await resolveManifest(p, outer, { platform: onlyPlatform(S390X) })).descriptor.digest,
    s390x.manifest.digest,
  );
  assert.equal(
    (await resolveManifest(p, outer, { platform: onlyPlatform(AMD64) })).descriptor.digest,
    amd64.manifest.digest,
  );
  assert.equal(
    (await resolveManifest(p, outer, { platform: onlyPlatform(ARM64) })).descriptor.digest,
    arm64.manifest.digest,
  );
  await assert.rejects(
    resolveManifest(p, outer, { platform: onlyPlatform({ os: "linux", architecture: "ppc64le" }) }),
    isNotFoundWith(new RegExp(`no match for platform in manifest "${outer.digest}"`)),
  );
});

Deno.test("resolveManifest() checks unplatformed entries through their config", async () => {
  const p = new MemoryProvider();
  const amd64 = image(p, AMD64);
  const arm64 = image(p, ARM64, { mediaType: DOCKER_MANIFEST, configType: DOCKER_CONFIG });
  const index = p.json(OCI_INDEX, {
    schemaVersion: 2,
    manifests: [entry(arm64), entry(amd64, AMD64)],
  });
  // The platformed amd64 entry sorts before the unplatformed one.
  assert.equal(
    (await resolveManifest(p, index, { platform: onlyPlatform(AMD64) })).descriptor.digest,
    amd64.manifest.digest,
  );
  // For arm64 only the unplatformed entry is left; its config says arm64.
  assert.equal(
    (await resolveManifest(p, index, { platform: onlyPlatform(ARM64) })).descriptor.digest,
    arm64.manifest.digest,
  );
  await assert.rejects(
    resolveManifest(p, index, { platform: onlyPlatform(S390X) }),
    isNotFoundWith(/no match for platform in manifest/),
  );
});

Deno.test("resolveManifest() follows only the best entry even when a later one would match", async () => {
  const p = new MemoryProvider();
  const arm64 = image(p, ARM64);
  const amd64 = image(p, AMD64);
  const index = p.json(OCI_INDEX, {
    schemaVersion: 2,
    manifests: [entry(arm64), entry(amd64)],
  });
  await assert.rejects(
    resolveManifest(p, index, { platform: onlyPlatform(AMD64) }),
    isNotFoundWith(/no match for platform in manifest/),
  );
  assert.equal(
    (await resolveManifest(p, index, { platform: onlyPlatform(ARM64) })).descriptor.digest,
    arm64.manifest.digest,
  );
});

Deno.test("resolveManifest() normalises the config platform before matching", async () => {
  const p = new MemoryProvider();
  const built = image(p, { os: "linux", architecture: "aarch64", variant: "v8" });
  const index = p.json(OCI_INDEX, { schemaVersion: 2, manifests: [entry(built)] });
  assert.equal(
    (await resolveManifest(p, index, { platform: onlyPlatform(ARM64) })).descriptor.digest,
    built.manifest.digest,
  );
});

Deno.test("resolveManifest() propagates missing blobs and unexpected media types", async () => {
  const p = new MemoryProvider();
  const { amd64, index } = multiArch(p);
  p.remove(amd64.manifest);
  await assert.rejects(
    resolveManifest(p, index, { platform: onlyPlatform(AMD64) }),
    isNotFoundWith(/Cannot find blob/),
  );
  const odd = p.raw("application/octet-stream", "x");
  await assert.rejects(
    resolveManifest(p, odd),
    isNotFoundWith(/unexpected media type "application\/octet-stream"/),
  );
});

Deno.test("resolveManifest() rejects a malformed manifest", async () => {
  const p = new MemoryProvider();
  const bad = p.json(OCI_MANIFEST, { schemaVersion: 2, config: { digest: "sha256:00", size: 1 } });
  await assert.rejects(resolveManifest(p, bad), (err) => {
    assert.ok(err instanceof InvalidArgument);
    assert.equal(
      err.message,
      `Cannot parse manifest "${bad.digest}": "config.mediaType" is missing`,
    );
    return true;
  });
});

Deno.test("children() lists config and layers, index entries, and nothing for blobs", async () => {
  const p = new MemoryProvider();
  const { amd64, index, att, armv7, arm64 } = multiArch(p);
  assert.deepEqual(
    (await children(p, amd64.manifest)).map((d) => d.digest),
    [amd64.config.digest, ...amd64.layers.map((l) => l.digest)],
  );
  assert.deepEqual(
    (await children(p, index)).map((d) => d.digest),
    [att.digest, armv7.manifest.digest, arm64.manifest.digest, amd64.manifest.digest],
  );
  p.reads = [];
  assert.deepEqual(await children(p, amd64.config), []);
  assert.deepEqual(await children(p, amd64.layers[0]!), []);
  assert.deepEqual(await children(p, { ...amd64.config, mediaType: "text/plain" }), []);
  assert.deepEqual(p.reads, []);
});

Deno.test("children() uses embedded data when its size and digest agree", async () => {
  const p = new MemoryProvider();
  const { amd64 } = multiArch(p);
  const bytes = p.blobs.get(amd64.manifest.digest)!;
  p.remove(amd64.manifest);
  const data = btoa(String.fromCharCode(...bytes));
  const kids = await children(p, { ...amd64.manifest, data });
  assert.equal(kids.length, 3);
  await assert.rejects(children(p, { ...amd64.manifest, data: btoa("other") }), NotFound);
});

Deno.test("rootFS() and readImageConfig() read the config", async () => {
  const p = new MemoryProvider();
  const { amd64 } = multiArch(p);
  const diffIds = await rootFS(p, amd64.config);
  assert.equal(diffIds.length, 2);
  const config = await readImageConfig(p, amd64.config);
  assert.equal(config.architecture, "amd64");
  assert.deepEqual(config.rootfs.diff_ids, diffIds);
  const odd = p.json(OCI_CONFIG, { rootfs: { type: "other", diff_ids: [diffIds[0]] } });
  assert.deepEqual(await rootFS(p, odd), [diffIds[0]]);
  await assert.rejects(readImageConfig(p, odd), InvalidArgument);
  const bad = p.json(OCI_CONFIG, { rootfs: { diff_ids: ["nope"] } });
  await assert.rejects(rootFS(p, bad), /"rootfs.diff_ids\[0\]" is not a valid digest: "nope"/);
});

Deno.test("imageLayers() pairs layers with diff IDs and skips non-layer blobs", async () => {
  const p = new MemoryProvider();
  const built = image(p, AMD64, { layers: 2 });
  const manifest = p.json(OCI_MANIFEST, {
    schemaVersion: 2,
    config: built.config,
    layers: [built.layers[0], p.raw(IN_TOTO, "{}"), built.layers[1]],
  });
  const layers = await imageLayers(p, manifest);
  const diffIds = await rootFS(p, built.config);
  assert.deepEqual(layers, [
    { blob: built.layers[0], diffId: diffIds[0] },
    { blob: built.layers[1], diffId: diffIds[1] },
  ]);
  const parsed = JSON.parse(new TextDecoder().decode(p.blobs.get(manifest.digest)!));
  assert.equal(manifestLayers(parsed).length, 2);
});

Deno.test("imageLayers() fails when layers and diff IDs differ in number", async () => {
  const p = new MemoryProvider();
  const built = image(p, AMD64, { layers: 2 });
  const manifest = p.json(OCI_MANIFEST, {
    schemaVersion: 2,
    config: built.config,
    layers: [built.layers[0]],
  });
  await assert.rejects(imageLayers(p, manifest), (err) => {
    assert.ok(err instanceof FailedPrecondition);
    assert.equal(
      err.message,
      "Cannot match layers to diff IDs: mismatched image rootfs and manifest layers (1 layers, 2 diff IDs)",
    );
    return true;
  });
});

Deno.test("imagePlatforms() lists entry platforms, skips attestations, reads unplatformed configs", async () => {
  const p = new MemoryProvider();
  const { index } = multiArch(p);
  assert.deepEqual(await imagePlatforms(p, index), [ARMV7, ARM64, AMD64]);
  const s390x = image(p, { os: "linux", architecture: "s390x" });
  const x86 = image(p, { os: "Linux", architecture: "x86_64" }, { configType: DOCKER_CONFIG });
  const outer = p.json(OCI_INDEX, {
    schemaVersion: 2,
    manifests: [index, entry(s390x), entry(x86)],
  });
  assert.deepEqual(await imagePlatforms(p, outer), [ARMV7, ARM64, AMD64, S390X, AMD64]);
  assert.deepEqual(await imagePlatforms(p, s390x.manifest), [S390X]);
});

Deno.test("checkImage() reports present and missing blobs", async () => {
  const p = new MemoryProvider();
  const { amd64, index } = multiArch(p);
  p.remove(amd64.layers[1]!);
  const withoutInfo: Provider = { readBlob: (d) => p.readBlob(d) };
  for (const provider of [withoutInfo, p]) {
    p.reads = [];
    const r = await checkImage(provider, index, onlyPlatform(AMD64));
    assert.equal(r.available, true);
    assert.deepEqual(r.required.map((d) => d.digest), [
      amd64.config.digest,
      ...amd64.layers.map((l) => l.digest),
    ]);
    assert.deepEqual(r.present.map((d) => d.digest), [
      amd64.config.digest,
      amd64.layers[0]!.digest,
    ]);
    assert.deepEqual(r.missing.map((d) => d.digest), [amd64.layers[1]!.digest]);
    // With info the layers are probed without being read.
    assert.equal(p.reads.includes(amd64.layers[0]!.digest), provider === withoutInfo);
  }
});

Deno.test("checkImage() reports an image without a matching manifest as unavailable", async () => {
  const p = new MemoryProvider();
  const { index } = multiArch(p);
  const r = await checkImage(p, index, onlyPlatform(S390X));
  assert.deepEqual(r, { available: false, required: [index], present: [], missing: [index] });
  const gone = { ...index, digest: "sha256:" + "9".repeat(64) };
  assert.equal((await checkImage(p, gone)).available, false);
});

Deno.test("imageSize() sums target, manifest, config and layers for one platform", async () => {
  const p = new MemoryProvider();
  const { amd64, arm64, index } = multiArch(p);
  const sum = (ds: Descriptor[]) => ds.reduce((n, d) => n + d.size, 0);
  assert.equal(
    await imageSize(p, index, onlyPlatform(AMD64)),
    index.size + sum([amd64.manifest, amd64.config, ...amd64.layers]),
  );
  assert.equal(
    await imageSize(p, index, onlyPlatform(ARM64)),
    index.size + sum([arm64.manifest, arm64.config, ...arm64.layers]),
  );
  // Layers are not read, so missing layers do not matter.
  p.remove(amd64.layers[0]!);
  assert.equal(
    await imageSize(p, amd64.manifest),
    sum([amd64.manifest, amd64.config, ...amd64.layers]),
  );
  await assert.rejects(
    imageSize(p, index, onlyPlatform(S390X)),
    isNotFoundWith(/no match for platform in manifest/),
  );
});

Deno.test("imageSize() rejects a negative size", async () => {
  const p = new MemoryProvider();
  const { amd64 } = multiArch(p);
  await assert.rejects(
    imageSize(p, { ...amd64.layers[0]!, size: -1 }),
    /Cannot compute image size: invalid size -1/,
  );
});

Deno.test("imageUsage() counts every existing blob with its stored size", async () => {
  const p = new MemoryProvider();
  const { amd64, arm64, armv7, att, index } = multiArch(p);
  const stored = () => [...p.blobs.values()].reduce((n, b) => n + b.length, 0);
  assert.equal(await imageUsage(p, index, { info: p.info }), stored());
  // A missing manifest and its subtree count nothing; its config and layers are not visited.
  p.remove(arm64.manifest);
  const rest = [index, att, armv7.manifest, amd64.manifest].map((d) => d.digest);
  assert.ok(rest.every((d) => p.blobs.has(d)));
  const reachable = stored() - [arm64.config, ...arm64.layers].reduce((n, d) => n + d.size, 0);
  assert.equal(await imageUsage(p, index, { info: p.info }), reachable);
  // A missing layer counts nothing.
  p.remove(amd64.layers[0]!);
  assert.equal(
    await imageUsage(p, index, { info: p.info }),
    reachable - amd64.layers[0]!.size,
  );
});

Deno.test("imageUsage() takes the stored size when it is larger than the declared one", async () => {
  const p = new MemoryProvider();
  const { amd64 } = multiArch(p);
  const small = { ...amd64.layers[0]!, size: 1 };
  assert.equal(await imageUsage(p, small, { info: p.info }), amd64.layers[0]!.size);
  const big = { ...amd64.layers[0]!, size: 1000 };
  assert.equal(await imageUsage(p, big, { info: p.info }), 1000);
  const plain: Provider = { readBlob: (d) => p.readBlob(d) };
  assert.equal(await imageUsage(plain, small), 1);
  assert.equal(await imageUsage(p, small), amd64.layers[0]!.size);
});

Deno.test("imageUsage() with manifestOnly trusts declared sizes and counts missing blobs", async () => {
  const p = new MemoryProvider();
  const { amd64, index } = multiArch(p);
  const before = await imageUsage(p, index, { info: p.info });
  p.remove(amd64.layers[0]!);
  assert.equal(await imageUsage(p, index, { manifestOnly: true, info: p.info }), before);
});

Deno.test("imageUsage() with a manifest limit counts one platform and requires manifests", async () => {
  const p = new MemoryProvider();
  const { amd64, arm64, index } = multiArch(p);
  const sum = (ds: Descriptor[]) => ds.reduce((n, d) => n + d.size, 0);
  assert.equal(
    await imageUsage(p, index, { manifestLimit: 1, platform: onlyPlatform(ARM64), info: p.info }),
    index.size + sum([arm64.manifest, arm64.config, ...arm64.layers]),
  );
  assert.equal(
    await imageUsage(p, index, { manifestLimit: 1, platform: onlyPlatform(AMD64), info: p.info }),
    index.size + sum([amd64.manifest, amd64.config, ...amd64.layers]),
  );
  p.remove(amd64.manifest);
  await assert.rejects(
    imageUsage(p, index, { manifestLimit: 1, platform: onlyPlatform(AMD64), info: p.info }),
    isNotFoundWith(/Cannot find blob/),
  );
  await assert.rejects(
    imageUsage(p, index, { manifestLimit: 0, platform: onlyPlatform(AMD64), info: p.info }),
    NotFound,
  );
});

Deno.test("imageUsage() adds the usage of snapshots referenced by labels", async () => {
  const p = new MemoryProvider();
  const { amd64 } = multiArch(p);
  p.labels.set(amd64.config.digest, {
    "containerd.io/gc.ref.snapshot.overlayfs": "sha256:top",
    "containerd.io/gc.ref.snapshot.native": "missing",
    "containerd.io/gc.ref.content.l.0": amd64.layers[0]!.digest,
  });
  const asked: string[] = [];
  const snapshotUsage = (snapshotter: string, key: string): Promise<number> => {
    asked.push(`${snapshotter}/${key}`);
    if (snapshotter === "native") return Promise.reject(new NotFound("no snapshot"));
    return Promise.resolve(5000);
  };
  const base = await imageUsage(p, amd64.manifest, { info: p.info });
  assert.equal(
    await imageUsage(p, amd64.manifest, { info: p.info, snapshots: true, snapshotUsage }),
    base + 5000,
  );
  assert.deepEqual(asked.sort(), ["native/missing", "overlayfs/sha256:top"]);
  const failing = () => Promise.reject(new Error("disk on fire"));
  await assert.rejects(
    imageUsage(p, amd64.manifest, { info: p.info, snapshots: true, snapshotUsage: failing }),
    /disk on fire/,
  );
});

Deno.test("walk() visits depth first with siblings in order and honours SkipDescriptor", async () => {
  const d = (name: string): Descriptor => ({ mediaType: name, digest: name, size: 1 });
  const tree: Record<string, Descriptor[]> = {
    a: [d("a1"), d("a2")],
    a1: [d("a11")],
    a2: [d("a21")],
    b: [d("b1")],
  };
  const seen: string[] = [];
  await walk((desc) => {
    seen.push(desc.digest);
    if (desc.digest === "a2") return Promise.reject(new SkipDescriptor());
    return Promise.resolve(tree[desc.digest] ?? []);
  }, [d("a"), d("b")]);
  assert.deepEqual(seen, ["a", "a1", "a11", "a2", "b", "b1"]);
  await assert.rejects(
    walk((desc) => desc.digest === "b" ? Promise.reject(new Error("boom")) : Promise.resolve([]), [
      d("a"),
      d("b"),
    ]),
    /boom/,
  );
});

Deno.test("dispatch() visits everything, never exceeding the limit", async () => {
  const d = (name: string): Descriptor => ({ mediaType: "x", digest: name, size: 1 });
  const kids: Record<string, Descriptor[]> = {
    root: ["a", "b", "c", "d", "e"].map(d),
    a: ["a1", "a2", "a3"].map(d),
    c: ["c1"].map(d),
  };
  let running = 0;
  let peak = 0;
  const seen: string[] = [];
  const handler: Handler = async (desc) => {
    running++;
    peak = Math.max(peak, running);
    for (let i = 0; i < 5; i++) await Promise.resolve();
    seen.push(desc.digest);
    running--;
    if (desc.digest === "c") throw new SkipDescriptor();
    return kids[desc.digest] ?? [];
  };
  await dispatch(handler, [d("root")], { limit: 2 });
  assert.deepEqual(seen.sort(), ["a", "a1", "a2", "a3", "b", "c", "d", "e", "root"]);
  assert.equal(peak, 2);
  peak = 0;
  seen.length = 0;
  await dispatch(handler, [d("root")]);
  assert.equal(seen.length, 9);
  assert.ok(peak > 2);
});

Deno.test("dispatch() rejects with the first error and starts no new handler after it", async () => {
  const d = (name: string): Descriptor => ({ mediaType: "x", digest: name, size: 1 });
  const seen: string[] = [];
  await assert.rejects(
    dispatch(
      (desc) => {
        seen.push(desc.digest);
        if (desc.digest === "bad") return Promise.reject(new InvalidArgument("bad one"));
        return Promise.resolve(desc.digest === "root" ? [d("bad"), d("later"), d("last")] : []);
      },
      [d("root")],
      { limit: 1 },
    ),
    (err) => err instanceof InvalidArgument && err.message === "bad one",
  );
  assert.deepEqual(seen, ["root", "bad"]);
});

Deno.test("filterPlatforms() and limitManifests() shape index children", async () => {
  const p = new MemoryProvider();
  const { index, amd64, armv7, arm64 } = multiArch(p);
  const base: Handler = (desc) => children(p, desc);
  const filtered = await filterPlatforms(base, onlyPlatform(ARM64))(index);
  assert.deepEqual(filtered.map((x) => x.digest), [armv7.manifest.digest, arm64.manifest.digest]);
  assert.equal((await filterPlatforms(base, undefined)(index)).length, 4);
  const limited = await limitManifests(
    filterPlatforms(base, onlyPlatform(ARM64)),
    onlyPlatform(ARM64),
    1,
  )(index);
  assert.deepEqual(limited.map((x) => x.digest), [arm64.manifest.digest]);
  const sortedAll = await limitManifests(base, onlyPlatform(AMD64), 0)(index);
  assert.equal(sortedAll[0]!.digest, amd64.manifest.digest);
  assert.equal(sortedAll.length, 4);
  // Non-index nodes pass through untouched.
  assert.equal((await limitManifests(base, onlyPlatform(AMD64), 1)(amd64.manifest)).length, 3);
  const empty = p.json(OCI_INDEX, { schemaVersion: 2, manifests: [] });
  await assert.rejects(
    limitManifests(base, onlyPlatform(AMD64), 1)(empty),
    isNotFoundWith(/no match for platform in manifest/),
  );
});

Deno.test("childGcLabels() names manifest children config and l.N", () => {
  const cfg: Descriptor = { mediaType: OCI_CONFIG, digest: "sha256:" + "c".repeat(64), size: 1 };
  const l = (n: number): Descriptor => ({
    mediaType: LAYER_GZIP,
    digest: "sha256:" + String(n).repeat(64),
    size: 1,
  });
  assert.deepEqual(childGcLabels([cfg, l(1), l(2), l(3)]), {
    "containerd.io/gc.ref.content.config": cfg.digest,
    "containerd.io/gc.ref.content.l.0": l(1).digest,
    "containerd.io/gc.ref.content.l.1": l(2).digest,
    "containerd.io/gc.ref.content.l.2": l(3).digest,
  });
  assert.deepEqual(childGcLabels([cfg, l(1)], { filterLayers: true }), {
    "containerd.io/gc.ref.content.config": cfg.digest,
  });
  const cfg2 = { ...cfg, mediaType: DOCKER_CONFIG, digest: "sha256:" + "d".repeat(64) };
  const checkpoint = {
    ...cfg,
    mediaType: "application/vnd.containerd.container.checkpoint.config.v1+proto",
    digest: "sha256:" + "e".repeat(64),
  };
  assert.deepEqual(childGcLabels([cfg, cfg2, checkpoint]), {
    "containerd.io/gc.ref.content.config": cfg.digest,
    "containerd.io/gc.ref.content.config1": cfg2.digest,
    "containerd.io/gc.ref.content.config2": checkpoint.digest,
  });
});

Deno.test("childGcLabels() names index children m.N and other content with counters", () => {
  const m = (n: number, mediaType = OCI_MANIFEST): Descriptor => ({
    mediaType,
    digest: "sha256:" + String(n).repeat(64),
    size: 1,
  });
  assert.deepEqual(
    childGcLabels([m(1), m(2, DOCKER_MANIFEST), m(3, OCI_INDEX), m(4, IN_TOTO), m(5)]),
    {
      "containerd.io/gc.ref.content.m.0": m(1).digest,
      "containerd.io/gc.ref.content.m.1": m(2).digest,
      "containerd.io/gc.ref.content.0": m(3).digest,
      "containerd.io/gc.ref.content.1": m(4).digest,
      "containerd.io/gc.ref.content.m.2": m(5).digest,
    },
  );
  assert.deepEqual(childGcLabels([]), {});
});

Deno.test("childGcLabels() names referrers by the first 12 hex characters of their digest", () => {
  const subject = { "io.containerd.manifest.subject": "sha256:" + "0".repeat(64) };
  const r1: Descriptor = {
    mediaType: OCI_MANIFEST,
    digest: "sha256:0123456789abcdef" + "0".repeat(48),
    size: 1,
    annotations: subject,
  };
  const r2: Descriptor = { ...r1, mediaType: OCI_INDEX, digest: "sha256:" + "f".repeat(64) };
  const dup: Descriptor = { ...r1, mediaType: LAYER_GZIP };
  assert.deepEqual(childGcLabels([r1, r2, dup]), {
    "containerd.io/gc.ref.content.referrer.sha256.0123456789ab": r1.digest,
    "containerd.io/gc.ref.content.referrer.sha256.ffffffffffff": r2.digest,
    "containerd.io/gc.ref.content.referrer.sha256.0123456789ab1": dup.digest,
  });
});
