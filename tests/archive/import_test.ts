import assert from "node:assert/strict";
import { join } from "node:path";
import { FailedPrecondition, InvalidArgument, NotFound } from "../../errors.ts";
import { importArchive } from "../../images/archive/import.ts";
import { resolveManifest } from "../../images/manifest.ts";
import {
  MEDIA_TYPE_DOCKER_LAYER,
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_OCI_INDEX,
} from "../../images/media_types.ts";
import { peerTest, runOk } from "../_peers.ts";
import { skopeoLayers, testRoot, umociImage } from "./_fixtures.ts";

const SKOPEO = { tools: ["skopeo", "umoci"], root: true };

peerTest("importArchive() imports what skopeo writes as an oci: directory", SKOPEO, async () => {
  await using r = await testRoot();
  const src = await umociImage(r.dir);
  const dir = join(r.dir, "copy");
  await runOk(["skopeo", "copy", "--insecure-policy", `oci:${src}`, `oci:${dir}:mytag`]);
  const result = await importArchive(r.client, dir);
  assert.equal(result.format, "oci-layout");
  assert.equal(result.images.length, 1);
  assert.match(result.images[0]!.name, /^import-\d{4}-\d\d-\d\d:mytag$/);
  const { manifest } = await resolveManifest(r.client.content, result.images[0]!.target);
  assert.deepEqual(manifest.layers.map((l) => l.digest), await skopeoLayers(`oci:${dir}:mytag`));
  for (const l of manifest.layers) {
    const info = await r.client.content.info(l.digest);
    assert.equal(info.size, l.size);
  }
  // The manifest is labelled with GC references to its config and layers.
  const labels = (await r.client.content.info(result.images[0]!.target.digest)).labels;
  assert.equal(labels["containerd.io/gc.ref.content.config"], manifest.config.digest);
  assert.equal(labels["containerd.io/gc.ref.content.l.0"], manifest.layers[0]!.digest);
});

peerTest("importArchive() imports oci-archive and a --base-name names it", SKOPEO, async () => {
  await using r = await testRoot();
  const src = await umociImage(r.dir);
  const tar = join(r.dir, "image.tar");
  await runOk(["skopeo", "copy", "--insecure-policy", `oci:${src}`, `oci-archive:${tar}:1.0`]);
  const result = await importArchive(r.client, tar, { baseName: "example.com/app" });
  assert.deepEqual(result.images.map((i) => i.name), ["example.com/app:1.0"]);
  assert.deepEqual(
    (await resolveManifest(r.client.content, result.images[0]!.target)).manifest.layers.map((l) =>
      l.digest
    ),
    await skopeoLayers(`oci-archive:${tar}:1.0`),
  );
});

peerTest("importArchive() imports a docker-archive with its tags", SKOPEO, async () => {
  await using r = await testRoot();
  const src = await umociImage(r.dir);
  const tar = join(r.dir, "docker.tar");
  await runOk([
    "skopeo",
    "copy",
    "--insecure-policy",
    "--additional-tag",
    "example.com/team/app:extra",
    `oci:${src}`,
    `docker-archive:${tar}:example.com/team/app:1.0`,
  ]);
  const result = await importArchive(r.client, tar);
  assert.equal(result.format, "docker-archive");
  assert.equal(result.index.mediaType, MEDIA_TYPE_OCI_INDEX);
  assert.deepEqual(
    result.images.map((i) => i.name).sort(),
    ["example.com/team/app:1.0", "example.com/team/app:extra"],
  );
  const image = r.client.getImage("example.com/team/app:1.0");
  assert.equal(image.target.mediaType, MEDIA_TYPE_DOCKER_MANIFEST);
  const { manifest } = await resolveManifest(r.client.content, image.target);
  // skopeo writes uncompressed layers into docker archives: the layer digests are the diff IDs.
  assert.deepEqual(manifest.layers.map((l) => l.mediaType), [
    MEDIA_TYPE_DOCKER_LAYER,
    MEDIA_TYPE_DOCKER_LAYER,
  ]);
  assert.deepEqual(manifest.layers.map((l) => l.digest), await image.rootFS());
  const cfg = await image.spec();
  assert.deepEqual(cfg.config?.Entrypoint, ["/bin/sh"]);
});

peerTest("importArchive() imports several images from one docker archive, gzipped", {
  ...SKOPEO,
  tools: [...SKOPEO.tools, "tar", "gzip"],
}, async () => {
  await using r = await testRoot();
  const src = await umociImage(r.dir);
  const one = join(r.dir, "one");
  const two = join(r.dir, "two");
  // Two different images: the umoci one, and the same with an extra config change.
  await runOk([
    "skopeo",
    "copy",
    "--insecure-policy",
    `oci:${src}`,
    `docker-archive:${one}.tar:a/one:1`,
  ]);
  await runOk(["umoci", "config", "--image", src, "--config.cmd=echo", "--tag", "v2"]);
  const src2 = src.replace(/:v1$/, ":v2");
  await runOk([
    "skopeo",
    "copy",
    "--insecure-policy",
    `oci:${src2}`,
    `docker-archive:${two}.tar:b/two:2`,
  ]);
  const merged = join(r.dir, "merged");
  await Deno.mkdir(merged);
  await runOk(["tar", "-xf", `${one}.tar`, "-C", merged]);
  const m1 = JSON.parse(await Deno.readTextFile(join(merged, "manifest.json")));
  await runOk(["tar", "-xf", `${two}.tar`, "-C", merged]);
  const m2 = JSON.parse(await Deno.readTextFile(join(merged, "manifest.json")));
  await Deno.writeTextFile(join(merged, "manifest.json"), JSON.stringify([...m1, ...m2]));
  await runOk(["sh", "-c", `tar -C ${merged} -cf - . | gzip > ${r.dir}/multi.tar.gz`]);
  const result = await importArchive(r.client, join(r.dir, "multi.tar.gz"));
  assert.deepEqual(result.images.map((i) => i.name).sort(), [
    "docker.io/a/one:1",
    "docker.io/b/two:2",
  ]);
  const a = await r.client.getImage("docker.io/a/one:1").spec();
  const b = await r.client.getImage("docker.io/b/two:2").spec();
  assert.deepEqual(b.config?.Cmd, ["echo"]);
  assert.notDeepEqual(a.config?.Cmd, ["echo"]);
});

peerTest(
  "importArchive() refuses a layout whose blob does not match its digest",
  SKOPEO,
  async () => {
    await using r = await testRoot();
    const src = await umociImage(r.dir);
    const dir = join(r.dir, "copy");
    await runOk(["skopeo", "copy", "--insecure-policy", `oci:${src}`, `oci:${dir}:t`]);
    const [layer] = await skopeoLayers(`oci:${dir}:t`);
    const path = join(dir, "blobs", "sha256", layer!.slice(7));
    const bytes = await Deno.readFile(path);
    bytes[bytes.length - 1]! ^= 0xff;
    await Deno.writeFile(path, bytes);
    await assert.rejects(importArchive(r.client, dir), FailedPrecondition);
    assert.deepEqual(r.client.images.list(), []);
    await assert.rejects(r.client.content.info(layer!), NotFound);
    assert.deepEqual(await r.client.content.listIngests(), []);
    // The same import works once the blob is repaired.
    bytes[bytes.length - 1]! ^= 0xff;
    await Deno.writeFile(path, bytes);
    assert.equal((await importArchive(r.client, dir)).images.length, 1);
  },
);

peerTest("importArchive() reports a blob missing from a layout", SKOPEO, async () => {
  await using r = await testRoot();
  const src = await umociImage(r.dir);
  const dir = join(r.dir, "copy");
  await runOk(["skopeo", "copy", "--insecure-policy", `oci:${src}`, `oci:${dir}:t`]);
  const layers = await skopeoLayers(`oci:${dir}:t`);
  await Deno.remove(join(dir, "blobs", "sha256", layers[1]!.slice(7)));
  await assert.rejects(importArchive(r.client, dir), (err: Error) => {
    assert.ok(err instanceof NotFound);
    assert.match(err.message, new RegExp(layers[1]!));
    return true;
  });
  assert.deepEqual(r.client.images.list(), []);
});

Deno.test("importArchive() rejects what is not an image archive", async () => {
  await using r = await testRoot();
  const empty = join(r.dir, "empty");
  await Deno.mkdir(empty);
  await assert.rejects(importArchive(r.client, empty), InvalidArgument);
  await assert.rejects(importArchive(r.client, join(r.dir, "missing.tar")), NotFound);
  const junk = join(r.dir, "junk.tar");
  await Deno.writeFile(junk, new Uint8Array(1024).fill(7));
  await assert.rejects(importArchive(r.client, junk), InvalidArgument);
});
