// Push against a real registry: skopeo sees what Strata pushed, a second push sends only the
// tagged manifest, a partly pulled index needs --platform, and pushed images pull back equal.

import assert from "node:assert/strict";
import { join } from "node:path";
import { Client } from "../../client.ts";
import { FailedPrecondition } from "../../errors.ts";
import { importArchive } from "../../images/archive/mod.ts";
import { onlyPlatform } from "../../images/platforms.ts";
import { Resolver } from "../../remotes/resolver.ts";
import { pullImage } from "../../transfer/pull.ts";
import { pushImage } from "../../transfer/push.ts";
import { makeTempDir, peerTest, runOk } from "../_peers.ts";
import { pushToRegistry, startRegistry } from "../_registry.ts";
import { assertSameTree, strataTree } from "../_unpack_trees.ts";
import { hostPlatform, writeTestLayout } from "./_images.ts";

const NEEDS = { tools: ["docker-registry", "skopeo"], root: true };
const SN = "overlayfs";

peerTest(
  "pushImage() sends an image that skopeo inspects and Strata pulls back",
  NEEDS,
  async () => {
    await using tmp = await makeTempDir({ prefix: "strata-push-" });
    const layout = await writeTestLayout(join(tmp.path, "layout"), {
      tag: "v1",
      platforms: [{ platform: hostPlatform(), seed: 101 }],
    });
    await using registry = await startRegistry();
    using client = Client.open({ root: join(tmp.path, "root") });
    const imported = await importArchive(client, layout.layout, { baseName: "example.com/app" });
    const name = imported.images[0]!.name;
    const remote = `${registry.host}/pushed/app:v1`;
    const result = await pushImage(client, name, { remote });
    assert.equal(result.ref, remote);
    assert.equal(result.target.digest, layout.digest);
    assert.equal(result.uploaded, 5); // three layers, the config, the manifest
    assert.equal(result.existed, 0);

    const inspected = JSON.parse(
      (await runOk(["skopeo", "inspect", "--tls-verify=false", `docker://${remote}`])).stdout,
    ) as { Digest: string; Layers: string[] };
    assert.equal(inspected.Digest, layout.digest);
    assert.deepEqual(inspected.Layers, layout.manifests[0]!.layers);
    using resolver = new Resolver();
    assert.equal((await resolver.resolve(remote)).descriptor.digest, layout.digest);

    // A second push finds every blob there and only puts the tagged manifest again.
    const again = await pushImage(client, name, { remote });
    assert.equal(again.uploaded, 1);
    assert.equal(again.existed, 4);

    // Pulled back into another root, the tree is the imported one.
    using other = Client.open({ root: join(tmp.path, "other") });
    const pulled = await pullImage(other, remote, { snapshotter: SN });
    const original = await client.getImage(name).unpack(SN);
    assertSameTree(
      await strataTree(client, SN, original.chainId),
      await strataTree(other, SN, pulled.unpack!.chainId),
      "pushed and pulled back",
      { minEntries: 50 },
    );
  },
);

peerTest("pushImage() of a partly pulled index needs a platform", NEEDS, async () => {
  await using tmp = await makeTempDir({ prefix: "strata-push-" });
  const other = { os: "linux", architecture: "arm64", variant: "v8" };
  const layout = await writeTestLayout(join(tmp.path, "multi"), {
    tag: "v1",
    platforms: [{ platform: hostPlatform(), seed: 111 }, { platform: other, seed: 112 }],
  });
  await using registry = await startRegistry();
  await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/multi:v1`, {
    all: true,
  });
  using client = Client.open({ root: join(tmp.path, "root") });
  const pulled = await pullImage(client, `${registry.host}/multi:v1`, { unpack: false });
  await assert.rejects(
    pushImage(client, pulled.image.name, { remote: `${registry.host}/copy:v1` }),
    (err) => err instanceof FailedPrecondition && /--platform/.test(err.message),
  );
  const one = await pushImage(client, pulled.image.name, {
    remote: `${registry.host}/copy:v1`,
    platform: onlyPlatform(hostPlatform()),
  });
  assert.equal(one.target.digest, layout.manifests[0]!.digest);
  const raw = JSON.parse(
    (await runOk([
      "skopeo",
      "inspect",
      "--raw",
      "--tls-verify=false",
      `docker://${registry.host}/copy:v1`,
    ])).stdout,
  ) as { mediaType: string };
  assert.equal(raw.mediaType, "application/vnd.oci.image.manifest.v1+json");
});

peerTest("pushImage() to an htpasswd registry needs the credentials", NEEDS, async () => {
  await using tmp = await makeTempDir({ prefix: "strata-push-" });
  const layout = await writeTestLayout(join(tmp.path, "layout"), {
    tag: "v1",
    platforms: [{ platform: hostPlatform(), seed: 121 }],
  });
  const user = "pusher";
  const password = "s3cret-Pa55";
  await using registry = await startRegistry({ htpasswd: { user, password } });
  using client = Client.open({ root: join(tmp.path, "root") });
  const imported = await importArchive(client, layout.layout, { baseName: "example.com/app" });
  const remote = `${registry.host}/private:v1`;
  await assert.rejects(
    pushImage(client, imported.images[0]!.name, { remote }),
    (err) => (err as Error).name === "PermissionDenied",
  );
  const result = await pushImage(client, imported.images[0]!.name, {
    remote,
    credentials: () => Promise.resolve({ username: user, password }),
  });
  assert.equal(result.target.digest, layout.digest);
  await runOk([
    "skopeo",
    "inspect",
    "--tls-verify=false",
    `--creds=${user}:${password}`,
    `docker://${remote}`,
  ]);
});
