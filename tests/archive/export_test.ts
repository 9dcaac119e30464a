import assert from "node:assert/strict";
import { join } from "node:path";
import { exportArchive } from "../../images/archive/export.ts";
import { importArchive } from "../../images/archive/import.ts";
import { resolveManifest } from "../../images/manifest.ts";
import { onlyPlatform, parsePlatform } from "../../images/platforms.ts";
import { NotFound } from "../../errors.ts";
import { buildSample } from "../../sample/build.ts";
import { peerTest, runOk, startContainerd } from "../_peers.ts";
import { skopeoLayers, testRoot, umociImage } from "./_fixtures.ts";
import type { Client } from "../../client.ts";

async function exportToFile(client: Client, names: string[], file: string, platform?: string) {
  const out = await Deno.open(file, { write: true, create: true, truncate: true });
  try {
    await exportArchive(
      client,
      names.map((n) => client.images.get(n)),
      async (chunk) => {
        let off = 0;
        while (off < chunk.length) off += await out.write(chunk.subarray(off));
      },
      platform ? { platform: onlyPlatform(parsePlatform(platform)) } : {},
    );
  } finally {
    out.close();
  }
}

Deno.test("exportArchive() then importArchive() round-trips the sample with digests unchanged", async () => {
  await using r = await testRoot();
  const sample = await buildSample(join(r.dir, "layout"));
  const imported = await importArchive(r.client, sample.layout);
  assert.deepEqual(imported.images.map((i) => i.name), [sample.name]);
  const file = join(r.dir, "out.tar");
  await exportToFile(r.client, [sample.name], file);
  // A second export of the same image is byte-identical.
  const again = join(r.dir, "again.tar");
  await exportToFile(r.client, [sample.name], again);
  assert.deepEqual(await Deno.readFile(file), await Deno.readFile(again));
  await using other = await testRoot();
  const back = await importArchive(other.client, file);
  assert.deepEqual(back.images.map((i) => i.name), [sample.name]);
  assert.deepEqual(back.images[0]!.target.digest, sample.manifest.digest);
  assert.deepEqual(await other.client.getImage(sample.name).rootFS(), sample.diffIds);
});

peerTest("exportArchive() output is accepted by skopeo inspect with digests unchanged", {
  tools: ["skopeo", "umoci", "tar"],
  root: true,
}, async () => {
  await using r = await testRoot();
  const src = await umociImage(r.dir);
  const dir = join(r.dir, "copy");
  await runOk(["skopeo", "copy", "--insecure-policy", `oci:${src}`, `oci:${dir}:t`]);
  const [image] = (await importArchive(r.client, dir, { baseName: "example.com/x" })).images;
  const file = join(r.dir, "out.tar");
  await exportToFile(r.client, [image!.name], file);
  assert.deepEqual(await skopeoLayers(`oci-archive:${file}`), await skopeoLayers(`oci:${dir}:t`));
  const inspected = JSON.parse(
    (await runOk(["skopeo", "inspect", `oci-archive:${file}`])).stdout,
  ) as { Digest: string };
  assert.equal(inspected.Digest, image!.target.digest);
  // The tar is an OCI layout plus a Docker manifest.json, sorted by name.
  const names = (await runOk(["tar", "-tf", file])).stdout.trim().split("\n");
  assert.deepEqual(names, [...names].sort());
  assert.ok(names.includes("oci-layout") && names.includes("index.json"));
  assert.ok(names.includes("manifest.json"));
  const manifestJson = JSON.parse((await runOk(["tar", "-xOf", file, "manifest.json"])).stdout);
  assert.deepEqual(manifestJson[0].RepoTags, ["example.com/x:t"]);
});

peerTest("ctr imports what Strata exports, and Strata imports what ctr exports", {
  tools: ["skopeo", "umoci", "containerd", "ctr"],
  root: true,
}, async () => {
  await using r = await testRoot();
  await using ctrd = await startContainerd();
  const src = await umociImage(r.dir);
  const dir = join(r.dir, "copy");
  await runOk(["skopeo", "copy", "--insecure-policy", `oci:${src}`, `oci:${dir}:t`]);
  const [image] = (await importArchive(r.client, dir, { baseName: "example.com/x" })).images;
  const file = join(r.dir, "strata.tar");
  await exportToFile(r.client, [image!.name], file);
  await ctrd.ctrOk(["images", "import", "--no-unpack", file]);
  const listed = (await ctrd.ctrOk(["images", "ls"])).stdout;
  const row = listed.split("\n").find((l) => l.startsWith("example.com/x:t "));
  assert.ok(row, listed);
  assert.ok(row.includes(image!.target.digest), row);

  const back = join(r.dir, "ctr.tar");
  await ctrd.ctrOk(["images", "export", back, "example.com/x:t"]);
  await using other = await testRoot();
  const imported = await importArchive(other.client, back);
  assert.deepEqual(imported.images.map((i) => [i.name, i.target.digest]), [[
    "example.com/x:t",
    image!.target.digest,
  ]]);
  const { manifest } = await resolveManifest(other.client.content, imported.images[0]!.target);
  for (const l of manifest.layers) await other.client.content.info(l.digest);
});

Deno.test("exportArchive() refuses an image whose platform is not there", async () => {
  await using r = await testRoot();
  const sample = await buildSample(join(r.dir, "layout"));
  await importArchive(r.client, sample.layout);
  // The sample's target is a manifest: exporting it needs no platform; an index entry does.
  const index = (await importArchive(r.client, sample.layout, { indexName: "whole-index" }))
    .index;
  assert.ok(index.digest.startsWith("sha256:"));
  const other = Deno.build.arch === "x86_64" ? "linux/s390x" : "linux/amd64";
  await assert.rejects(
    exportToFile(r.client, ["whole-index"], join(r.dir, "x.tar"), other),
    NotFound,
  );
});
