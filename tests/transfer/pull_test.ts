// Pull against a real registry (Debian's docker-registry, filled with skopeo): the unpacked tree
// equals an import of the same layout, platforms, Docker and OCI types, skipping what exists,
// mirrors, faults, credentials and concurrent pulls.

import assert from "node:assert/strict";
import { join } from "node:path";
import { Client } from "../../client.ts";
import { FailedPrecondition, NotFound, PermissionDenied } from "../../errors.ts";
import { importArchive } from "../../images/archive/mod.ts";
import { onlyPlatform } from "../../images/platforms.ts";
import { collectGarbage } from "../../gc/gc.ts";
import { pullImage } from "../../transfer/pull.ts";
import type { ProgressEvent } from "../../transfer/progress.ts";
import { makeTempDir, makeUmociImage, peerTest, run, startContainerd } from "../_peers.ts";
import { pushToRegistry, startFaultProxy, startRegistry } from "../_registry.ts";
import {
  assertSameTree,
  containerdTree,
  ctrSnapshotNames,
  OVERLAY_KEEPS_IMPLIED_PARENT_TIME,
  strataTree,
} from "../_unpack_trees.ts";
import { hostPlatform, type TestLayout, writeTestLayout } from "./_images.ts";

const NEEDS = { tools: ["docker-registry", "skopeo"], root: true };
const SN = "overlayfs";
const OTHER = { os: "linux", architecture: "arm64", variant: "v8" };

async function singleLayout(dir: string, seed = 7): Promise<TestLayout> {
  return await writeTestLayout(join(dir, `layout-${seed}`), {
    tag: "v1",
    platforms: [{ platform: hostPlatform(), seed }],
  });
}

/** The tree an import of `layout` unpacks to, in a root of its own. */
async function importedTree(dir: string, layout: TestLayout, snapshotter = SN) {
  using client = Client.open({ root: join(dir, `imported-${snapshotter}`) });
  const result = await importArchive(client, layout.layout, { baseName: "example.com/app" });
  const image = client.getImage(result.images[0]!.name);
  const unpacked = await image.unpack(snapshotter);
  return await strataTree(client, snapshotter, unpacked.chainId);
}

async function committedAndActive(client: Client): Promise<{ committed: number; active: number }> {
  const sn = await client.snapshotter(SN);
  let committed = 0;
  let active = 0;
  await sn.walk((info) => {
    if (info.kind === "committed") committed++;
    if (info.kind === "active") active++;
  });
  return { committed, active };
}

peerTest(
  "pullImage() unpacks an OCI image exactly as an import of the same layout",
  NEEDS,
  async () => {
    await using tmp = await makeTempDir({ prefix: "strata-pull-" });
    const layout = await singleLayout(tmp.path);
    await using registry = await startRegistry();
    await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/app:v1`);
    using client = Client.open({ root: join(tmp.path, "root") });
    const events: ProgressEvent[] = [];
    const result = await pullImage(client, `${registry.host}/app:v1`, {
      snapshotter: SN,
      onProgress: (e) => events.push(e),
    });
    assert.equal(result.image.name, `${registry.host}/app:v1`);
    assert.equal(result.image.target.digest, layout.digest);
    assert.equal(result.image.target.mediaType, "application/vnd.oci.image.manifest.v1+json");
    // Manifest, config and three layers.
    assert.equal(result.downloaded.count, 5);
    const pulled = await strataTree(client, SN, result.unpack!.chainId);
    assertSameTree(await importedTree(tmp.path, layout), pulled, "pulled vs imported", {
      minEntries: 50,
    });
    // Progress: resolving first, saved last, every layer downloaded then extracted.
    assert.equal(events[0]?.status, "resolving");
    assert.equal(events.at(-1)?.status, "saved");
    for (const digest of layout.manifests[0]!.layers) {
      const states = events.filter((e) => e.id === digest).map((e) => e.status);
      assert.ok(states.indexOf("downloaded") >= 0, `${digest} downloaded: ${states}`);
      assert.ok(states.indexOf("extracted") > states.indexOf("downloaded"), `${states}`);
    }
    assert.deepEqual(await committedAndActive(client), { committed: 3, active: 0 });
    // The image is complete and protected: a garbage collection removes none of it.
    await collectGarbage(client);
    const image = client.getImage(result.image.name);
    assert.ok(await image.isUnpacked(SN));
    assert.equal((await image.config()).digest, (await image.config()).digest);

    // Pulling again downloads nothing and applies nothing.
    const again: ProgressEvent[] = [];
    const second = await pullImage(client, `${registry.host}/app:v1`, {
      snapshotter: SN,
      onProgress: (e) => again.push(e),
    });
    assert.equal(second.downloaded.count, 0);
    assert.ok(second.unpack!.layers.every((l) => !l.applied));
    assert.ok(!again.some((e) => e.status === "downloading" || e.status === "extracting"));
  },
);

peerTest("pullImage() pulls a Docker schema 2 image (skopeo --format v2s2)", NEEDS, async () => {
  await using tmp = await makeTempDir({ prefix: "strata-pull-" });
  const layout = await singleLayout(tmp.path, 11);
  await using registry = await startRegistry();
  await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/docker/app:v1`, {
    format: "v2s2",
  });
  using client = Client.open({ root: join(tmp.path, "root") });
  const result = await pullImage(client, `${registry.host}/docker/app:v1`, { snapshotter: SN });
  assert.equal(
    result.image.target.mediaType,
    "application/vnd.docker.distribution.manifest.v2+json",
  );
  const config = await client.getImage(result.image.name).config();
  assert.equal(config.mediaType, "application/vnd.docker.container.image.v1+json");
  assertSameTree(
    await importedTree(tmp.path, layout),
    await strataTree(client, SN, result.unpack!.chainId),
    "docker pull vs import",
    { minEntries: 50 },
  );
});

peerTest(
  "pullImage() of an index fetches one platform, or all with allPlatforms",
  NEEDS,
  async () => {
    await using tmp = await makeTempDir({ prefix: "strata-pull-" });
    const layout = await writeTestLayout(join(tmp.path, "multi"), {
      tag: "v1",
      platforms: [{ platform: OTHER, seed: 21 }, { platform: hostPlatform(), seed: 22 }],
    });
    await using registry = await startRegistry();
    await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/multi:v1`, {
      all: true,
    });
    const [other, host] = layout.manifests;
    const has = async (client: Client, digest: string) => {
      try {
        await client.content.info(digest);
        return true;
      } catch (err) {
        if (err instanceof NotFound) return false;
        throw err;
      }
    };

    using one = Client.open({ root: join(tmp.path, "one") });
    const r1 = await pullImage(one, `${registry.host}/multi:v1`, { snapshotter: SN });
    assert.equal(r1.image.target.digest, layout.digest);
    assert.equal(r1.image.target.mediaType, "application/vnd.oci.image.index.v1+json");
    for (const d of host!.layers) assert.ok(await has(one, d), `host layer ${d}`);
    assert.ok(!(await has(one, other!.digest)), "the other platform's manifest is not fetched");
    for (const d of other!.layers) assert.ok(!(await has(one, d)), `other layer ${d}`);
    // The index still references both manifests for GC (containerd labels every entry).
    const labels = (await one.content.info(layout.digest)).labels;
    assert.deepEqual(
      Object.values(labels).filter((v) => v.startsWith("sha256:")).sort(),
      [host!.digest, other!.digest].sort(),
    );

    using all = Client.open({ root: join(tmp.path, "all") });
    const r2 = await pullImage(all, `${registry.host}/multi:v1`, {
      snapshotter: SN,
      allPlatforms: true,
    });
    for (const d of [...host!.layers, ...other!.layers, other!.digest]) {
      assert.ok(await has(all, d), `blob ${d}`);
    }
    assert.equal(r2.unpack?.layers.length, 3);
    assert.equal(r2.downloaded.count, 1 + 2 * (1 + 1 + 3));

    // Another platform by name: overlayfs supports every Linux architecture.
    using arm = Client.open({ root: join(tmp.path, "arm") });
    const r3 = await pullImage(arm, `${registry.host}/multi:v1`, {
      snapshotter: SN,
      platform: onlyPlatform(OTHER),
    });
    for (const d of other!.layers) assert.ok(await has(arm, d));
    assert.notEqual(r3.unpack!.chainId, r1.unpack!.chainId);

    // A platform the index does not have.
    using none = Client.open({ root: join(tmp.path, "none") });
    await assert.rejects(
      pullImage(none, `${registry.host}/multi:v1`, {
        snapshotter: SN,
        platform: onlyPlatform({ os: "windows", architecture: "amd64" }),
      }),
      (err) => err instanceof NotFound && /no match for platform/.test(err.message),
    );
    assert.equal(none.images.list().length, 0);
  },
);

peerTest(
  "pullImage() with unpack: false fetches every layer and makes no snapshot",
  NEEDS,
  async () => {
    await using tmp = await makeTempDir({ prefix: "strata-pull-" });
    const layout = await singleLayout(tmp.path, 31);
    await using registry = await startRegistry();
    await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/app:v1`);
    using client = Client.open({ root: join(tmp.path, "root") });
    const result = await pullImage(client, `${registry.host}/app:v1`, { unpack: false });
    assert.equal(result.unpack, undefined);
    assert.equal(result.downloaded.count, 5);
    assert.deepEqual(await committedAndActive(client), { committed: 0, active: 0 });
    const check = await client.getImage(result.image.name).size();
    assert.ok(check > 0);
  },
);

peerTest("pullImage() skips layers whose chain another image already unpacked", NEEDS, async () => {
  await using tmp = await makeTempDir({ prefix: "strata-pull-" });
  const layout = await singleLayout(tmp.path, 41);
  await using registry = await startRegistry();
  await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/a:v1`);
  await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/b:v1`);
  using client = Client.open({ root: join(tmp.path, "root") });
  await pullImage(client, `${registry.host}/a:v1`, { snapshotter: SN });
  const events: ProgressEvent[] = [];
  const b = await pullImage(client, `${registry.host}/b:v1`, {
    snapshotter: SN,
    onProgress: (e) => events.push(e),
  });
  assert.equal(b.downloaded.count, 0);
  assert.equal(events.filter((e) => e.status === "unpacked").length, 3);
  assert.deepEqual(await committedAndActive(client), { committed: 3, active: 0 });
});

peerTest("pullImage() falls back to the next host when a mirror is down", NEEDS, async () => {
  await using tmp = await makeTempDir({ prefix: "strata-pull-" });
  const layout = await singleLayout(tmp.path, 51);
  await using registry = await startRegistry();
  await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/app:v1`);
  // A mirror on a port where nothing listens, tried first.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = listener.addr.port;
  listener.close();
  const hostsDir = join(tmp.path, "certs.d");
  const dir = join(hostsDir, registry.host.replace(":", "_") + "_");
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    join(dir, "hosts.toml"),
    [
      `server = "http://${registry.host}"`,
      "",
      `[host."http://127.0.0.1:${deadPort}"]`,
      `  capabilities = ["pull", "resolve"]`,
      "",
    ].join("\n"),
  );
  using client = Client.open({ root: join(tmp.path, "root") });
  const result = await pullImage(client, `${registry.host}/app:v1`, {
    snapshotter: SN,
    hostsDir,
    retryDelayMs: 10,
  });
  assert.equal(result.image.target.digest, layout.digest);
  assert.equal(result.unpack?.layers.length, 3);
});

peerTest("pullImage() survives a connection dropped in the middle of a layer", NEEDS, async () => {
  await using tmp = await makeTempDir({ prefix: "strata-pull-" });
  const layout = await singleLayout(tmp.path, 61);
  await using registry = await startRegistry();
  await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/app:v1`);
  const big = layout.manifests[0]!.layers[0]!;
  await using proxy = await startFaultProxy(registry.host, {
    dropBlob: { digest: big, afterBytes: 1000, times: 2 },
  });
  using client = Client.open({ root: join(tmp.path, "root") });
  const result = await pullImage(client, `${proxy.host}/app:v1`, {
    snapshotter: SN,
    retryDelayMs: 10,
  });
  assert.equal(result.unpack?.layers.length, 3);
  assertSameTree(
    await importedTree(tmp.path, layout),
    await strataTree(client, SN, result.unpack!.chainId),
    "pulled through drops vs import",
    { minEntries: 50 },
  );
  assert.ok(proxy.count(`/v2/app/blobs/${big}`) >= 2, "the layer was requested again");
});

for (const snapshotter of ["overlayfs", "native"]) {
  peerTest(
    `pullImage() applies the biggest layer while it downloads (${snapshotter})`,
    NEEDS,
    async () => {
      await using tmp = await makeTempDir({ prefix: "strata-pull-" });
      const layout = await singleLayout(tmp.path, 67);
      await using registry = await startRegistry();
      await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/app:v1`);
      const layers = layout.manifests[0]!.layers;
      const sizes = await Promise.all(
        layers.map(async (d) =>
          (await Deno.stat(join(layout.layout, "blobs", "sha256", d.slice(7)))).size
        ),
      );
      const biggest = layers[sizes.indexOf(Math.max(...sizes))]!;
      // Its download stops a quarter in until the pull says it is extracting it (or 60 s pass).
      const released = Promise.withResolvers<void>();
      const timeout = setTimeout(() => released.resolve(), 60_000);
      let extractingFirst = false;
      await using proxy = await startFaultProxy(registry.host, {
        holdBlob: {
          digest: biggest,
          afterBytes: Math.floor(Math.max(...sizes) / 4),
          until: released.promise,
        },
      });
      using client = Client.open({ root: join(tmp.path, "root") });
      const events: string[] = [];
      try {
        const result = await pullImage(client, `${proxy.host}/app:v1`, {
          snapshotter,
          onProgress: (e) => {
            if (e.id !== biggest || e.status === "downloading") return;
            events.push(e.status);
            if (e.status === "extracting") {
              extractingFirst = true;
              released.resolve();
            }
          },
        });
        assert.ok(extractingFirst, `extracting before the rest was sent: ${events.join(", ")}`);
        assert.deepEqual(events.slice(-2), ["downloaded", "extracted"]);
        assertSameTree(
          await importedTree(tmp.path, layout, snapshotter),
          await strataTree(client, snapshotter, result.unpack!.chainId),
          "applied while downloading vs import",
          { minEntries: 50 },
        );
      } finally {
        clearTimeout(timeout);
      }
    },
  );
}

peerTest("pullImage() rejects a corrupted layer and commits nothing of it", NEEDS, async () => {
  await using tmp = await makeTempDir({ prefix: "strata-pull-" });
  const layout = await singleLayout(tmp.path, 71);
  await using registry = await startRegistry();
  await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/app:v1`);
  const [l0, l1] = layout.manifests[0]!.layers;
  await using proxy = await startFaultProxy(registry.host, { corruptBlob: { digest: l1! } });
  using client = Client.open({ root: join(tmp.path, "root") });
  await assert.rejects(
    pullImage(client, `${proxy.host}/app:v1`, { snapshotter: SN, retryDelayMs: 10 }),
    (err) => err instanceof FailedPrecondition && err.message.includes(l1!),
  );
  // No image record, no bad blob, no active snapshot; the good bottom layer stays (its chain is
  // committed) so a retry does not fetch it again. No ingest of the bad blob; the download of the
  // top layer, stopped by the failure, may leave its first bytes to resume, never an empty ingest.
  assert.equal(client.images.list().length, 0);
  await assert.rejects(client.content.info(l1!), NotFound);
  for (const ingest of await client.content.listIngests()) {
    assert.equal(ingest.expected, layout.manifests[0]!.layers[2], ingest.ref);
    assert.ok(ingest.offset > 0, `${ingest.ref} holds no byte`);
  }
  const counts = await committedAndActive(client);
  assert.equal(counts.active, 0);
  assert.ok(counts.committed <= 1);
  await client.content.info(l0!);

  // Without the fault, the same root pulls the image.
  const result = await pullImage(client, `${registry.host}/app:v1`, { snapshotter: SN });
  assert.equal(result.unpack?.layers.length, 3);
});

peerTest(
  "pullImage() with htpasswd auth: right, wrong and missing credentials",
  NEEDS,
  async () => {
    await using tmp = await makeTempDir({ prefix: "strata-pull-" });
    const layout = await singleLayout(tmp.path, 81);
    const user = "puller";
    const password = "s3cret-Pa55";
    await using registry = await startRegistry({ htpasswd: { user, password } });
    await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/private:v1`, {
      creds: `${user}:${password}`,
    });
    using client = Client.open({ root: join(tmp.path, "root") });
    const ref = `${registry.host}/private:v1`;
    for (const creds of [undefined, { username: user, password: "wrong-Pa55" }]) {
      await assert.rejects(
        pullImage(client, ref, {
          snapshotter: SN,
          credentials: () => Promise.resolve(creds),
        }),
        (err) =>
          err instanceof PermissionDenied && !err.message.includes("wrong-Pa55") &&
          !err.message.includes(password),
      );
    }
    assert.equal(client.images.list().length, 0);
    const result = await pullImage(client, ref, {
      snapshotter: SN,
      credentials: () => Promise.resolve({ username: user, password }),
    });
    assert.equal(result.image.target.digest, layout.digest);
  },
);

peerTest("two strata processes pulling one image at once both succeed", NEEDS, async () => {
  await using tmp = await makeTempDir({ prefix: "strata-pull-" });
  const layout = await writeTestLayout(join(tmp.path, "big"), {
    tag: "v1",
    platforms: [{ platform: hostPlatform(), seed: 91 }],
    filesPerLayer: 400,
  });
  await using registry = await startRegistry();
  await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/app:v1`);
  const root = join(tmp.path, "root");
  const cli = join(import.meta.dirname!, "..", "..", "cli.ts");
  const pull = () =>
    run([
      Deno.execPath(),
      "run",
      "-A",
      cli,
      "--root",
      root,
      "pull",
      "--snapshotter",
      SN,
      "--progress",
      "plain",
      `${registry.host}/app:v1`,
    ]);
  const [a, b] = await Promise.all([pull(), pull()]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  using client = Client.open({ root });
  assert.deepEqual(await committedAndActive(client), { committed: 3, active: 0 });
  assert.deepEqual(await client.content.listIngests(), []);
  assert.equal(client.images.get(`${registry.host}/app:v1`).target.digest, layout.digest);
});

peerTest(
  "pullImage() makes the snapshots `ctr images pull` makes from the same registry",
  { ...NEEDS, tools: [...NEEDS.tools, "containerd", "ctr"] },
  async () => {
    await using tmp = await makeTempDir({ prefix: "strata-pull-" });
    // An image umoci made from real directories (the seeded layers hold a whiteout next to a
    // file of the same name, which containerd refuses: "failed to convert whiteout file").
    const { layout } = await makeUmociImage(join(tmp.path, "umoci"), { tag: "v1" });
    await using registry = await startRegistry();
    await pushToRegistry(`oci:${layout}:v1`, `docker://${registry.host}/app:v1`);
    const ref = `${registry.host}/app:v1`;
    using client = Client.open({ root: join(tmp.path, "root") });
    const ours = await pullImage(client, ref, { snapshotter: SN });
    await using ctrd = await startContainerd();
    await ctrd.ctrOk(["images", "pull", "--plain-http", "--snapshotter", SN, ref]);
    const chain = ours.unpack!.layers.map((l) => l.chainId);
    assert.deepEqual(await ctrSnapshotNames(ctrd, SN), [...chain].sort());
    assertSameTree(
      await strataTree(client, SN, ours.unpack!.chainId),
      await containerdTree(ctrd, SN, ours.unpack!.chainId),
      "strata pull vs ctr pull",
      { minEntries: 10, unpackTimeInB: OVERLAY_KEEPS_IMPLIED_PARENT_TIME },
    );
    // Both label the layer blobs with their uncompressed digests.
    const bottom = (await client.getImage(ref).rootFS())[0];
    assert.equal(bottom, ours.unpack!.layers[0]!.diffId);
    const manifest = JSON.parse(
      new TextDecoder().decode(await client.content.readBlob(ours.image.target.digest)),
    ) as { layers: { digest: string }[] };
    const info = await client.content.info(manifest.layers[0]!.digest);
    assert.equal(info.labels["containerd.io/uncompressed"], ours.unpack!.layers[0]!.diffId);
    assert.equal(
      info.labels[`containerd.io/distribution.source.127.0.0.1`],
      "app",
    );
  },
);

peerTest("pullImage() names the digest of a manifest that does not match it", NEEDS, async () => {
  await using tmp = await makeTempDir({ prefix: "strata-pull-" });
  const layout = await singleLayout(tmp.path, 141);
  await using registry = await startRegistry();
  await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/app:v1`);
  await using proxy = await startFaultProxy(registry.host, {
    corruptBlob: { digest: layout.digest },
  });
  using client = Client.open({ root: join(tmp.path, "root") });
  await assert.rejects(
    pullImage(client, `${proxy.host}/app:v1`, { snapshotter: SN }),
    (err) => err instanceof FailedPrecondition && err.message.includes(layout.digest),
  );
  assert.equal(client.images.list().length, 0);
  await assert.rejects(client.content.info(layout.digest), NotFound);
  assert.deepEqual(await client.content.listIngests(), []);
});

peerTest(
  "pullImage() reports a registry's 403 as permission denied, not retried",
  NEEDS,
  async () => {
    await using tmp = await makeTempDir({ prefix: "strata-pull-" });
    const layout = await singleLayout(tmp.path, 151);
    await using registry = await startRegistry();
    await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/app:v1`);
    await using proxy = await startFaultProxy(registry.host, {
      failFirst: { count: 1000, status: 403, path: "/manifests/" },
    });
    using client = Client.open({ root: join(tmp.path, "root") });
    await assert.rejects(
      pullImage(client, `${proxy.host}/app:v1`, { snapshotter: SN }),
      (err) => err instanceof PermissionDenied && err.message.includes(`${proxy.host}/app:v1`),
    );
    assert.ok(proxy.count("/manifests/") <= 2, `${proxy.count("/manifests/")} manifest requests`);
  },
);

peerTest(
  "Client.pull() returns the unpacked image and Client.push() sends it back",
  NEEDS,
  async () => {
    await using tmp = await makeTempDir({ prefix: "strata-pull-" });
    const layout = await singleLayout(tmp.path, 161);
    await using registry = await startRegistry();
    await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/app:v1`);
    using client = Client.open({ root: join(tmp.path, "root") });
    const image = await client.pull(`${registry.host}/app:v1`, { snapshotter: "native" });
    assert.equal(image.target.digest, layout.digest);
    assert.ok(await image.isUnpacked("native"));
    assert.ok(!(await image.isUnpacked(SN)));
    // Pushed to another repository of the same registry, the layers and the config are mounted
    // from the repository they were pulled from, not sent again.
    await using proxy = await startFaultProxy(registry.host, {});
    const pushed = await client.push(image.name, { remote: `${proxy.host}/copy:v2` });
    assert.equal(pushed.target.digest, layout.digest);
    assert.equal(pushed.uploaded, 5);
    assert.equal(proxy.count("/v2/copy/blobs/uploads/", "PUT"), 0);
    assert.equal(proxy.count("mount=", "POST"), 4);
  },
);
