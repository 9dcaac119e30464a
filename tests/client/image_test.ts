import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { Client } from "../../client.ts";
import { FailedPrecondition } from "../../errors.ts";
import { importArchive } from "../../images/archive/import.ts";
import { chainId } from "../../images/manifest.ts";
import { buildSample } from "../../sample/build.ts";
import { makeTempDir } from "../_peers.ts";

Deno.test("Image exposes containerd's client surface for an imported image", async () => {
  await using tmp = await makeTempDir();
  const sample = await buildSample(join(tmp.path, "layout"));
  const client = Client.open({ root: join(tmp.path, "root") });
  try {
    await importArchive(client, sample.layout);
    const image = client.getImage(sample.name);
    assert.equal(image.name, sample.name);
    assert.equal(image.target.digest, sample.manifest.digest);
    assert.deepEqual(image.labels, {});
    assert.equal(image.metadata.name, sample.name);
    assert.equal(image.contentStore, client.content);
    assert.equal(image.platform, client.platform);
    assert.deepEqual(await image.rootFS(), sample.diffIds);
    const config = await image.config();
    assert.equal((await image.spec()).rootfs.diff_ids.length, 2);
    assert.equal(config.mediaType, "application/vnd.oci.image.config.v1+json");
    assert.equal((await image.configPlatform()).os, "linux");
    // size: declared sizes of manifest, config and layers.
    const manifestBytes = await client.content.readBlob(sample.manifest.digest);
    const m = JSON.parse(new TextDecoder().decode(manifestBytes));
    const declared = sample.manifest.size + m.config.size +
      m.layers.reduce((n: number, l: { size: number }) => n + l.size, 0);
    assert.equal(await image.size(), declared);
    assert.equal(await image.usage(), declared);
    assert.equal(await image.usage({ manifestLimit: 1 }), declared);
    assert.equal(await image.usage({ manifestOnly: true }), declared);

    assert.equal(await image.isUnpacked("native"), false);
    const result = await image.unpack("native", { syncFs: false });
    assert.equal(result.chainId, chainId(sample.diffIds));
    assert.equal(await image.isUnpacked("native"), true);
    const withSnapshots = await image.usage({ snapshots: true });
    assert.ok(withSnapshots > declared, "snapshot usage adds the chain's top snapshot");
  } finally {
    client.close();
  }
});

Deno.test("Image.unpack() refuses an image whose layers and diff IDs do not match", async () => {
  await using tmp = await makeTempDir();
  const sample = await buildSample(join(tmp.path, "layout"));
  // Give the config one diff ID too many, then re-point manifest and index at it.
  const blobs = join(sample.layout, "blobs", "sha256");
  const manifest = JSON.parse(
    await Deno.readTextFile(join(blobs, sample.manifest.digest.slice(7))),
  );
  const config = JSON.parse(await Deno.readTextFile(join(blobs, manifest.config.digest.slice(7))));
  config.rootfs.diff_ids.push("sha256:" + "0".repeat(64));
  const put = async (value: unknown) => {
    const bytes = new TextEncoder().encode(JSON.stringify(value));
    const hex = createHash("sha256").update(bytes).digest("hex");
    await Deno.writeFile(join(blobs, hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };
  manifest.config = { ...manifest.config, ...(await put(config)) };
  const m = await put(manifest);
  const index = JSON.parse(await Deno.readTextFile(join(sample.layout, "index.json")));
  index.manifests[0] = { ...index.manifests[0], ...m };
  await Deno.writeTextFile(join(sample.layout, "index.json"), JSON.stringify(index));
  const client = Client.open({ root: join(tmp.path, "root") });
  try {
    await importArchive(client, sample.layout);
    const image = client.getImage(sample.name);
    await assert.rejects(image.unpack("native"), (err: Error) => {
      assert.ok(err instanceof FailedPrecondition);
      assert.match(err.message, /mismatched image rootfs and manifest layers/);
      return true;
    });
    const sn = await client.snapshotter("native");
    assert.deepEqual(await sn.list(), [], "nothing was unpacked");
  } finally {
    client.close();
  }
});
