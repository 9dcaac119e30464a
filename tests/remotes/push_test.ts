import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { InvalidArgument, NotFound, PermissionDenied } from "../../errors.ts";
import type { Descriptor } from "../../images/types.ts";
import { type Pusher, Resolver } from "../../remotes/mod.ts";
import { makeTempDir, peerTest, runOk } from "../_peers.ts";
import {
  makeOciLayout,
  startFaultProxy,
  startRegistry,
  type TestImage,
  writeHostsToml,
} from "../_registry.ts";

const PEERS = { tools: ["docker-registry", "skopeo"] };

/** Pushes every blob and manifest of `image` (children first), the root under `tag`. */
async function pushImage(pusher: Pusher, image: TestImage, tag: string): Promise<void> {
  for (const m of image.manifests) {
    for (const desc of [...m.layers, m.config]) {
      if (!await pusher.exists(desc)) await pusher.push(desc, image.blobs.get(desc.digest)!);
    }
    if (m.descriptor.digest !== image.root.digest) {
      await pusher.push(m.descriptor, image.blobs.get(m.descriptor.digest)!);
    }
  }
  await pusher.push(image.root, image.blobs.get(image.root.digest)!, { tag });
}

async function skopeoDigest(ref: string): Promise<string> {
  const { stdout } = await runOk(["skopeo", "inspect", "--tls-verify=false", `docker://${ref}`]);
  return (JSON.parse(stdout) as { Digest: string }).Digest;
}

function chunked(data: Uint8Array, size: number): () => ReadableStream<Uint8Array> {
  return () =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < data.length; i += size) controller.enqueue(data.slice(i, i + size));
        controller.close();
      },
    });
}

peerTest(
  "Pusher pushes blobs and a manifest that skopeo and the resolver then see",
  PEERS,
  async () => {
    await using tmp = await makeTempDir();
    await using registry = await startRegistry();
    await using proxy = await startFaultProxy(registry.host);
    const image = await makeOciLayout(tmp.path);
    using resolver = new Resolver();
    const ref = `${proxy.host}/test/pushed:v1`;
    const pusher = await resolver.pusher(ref);
    const layer = image.manifests[0]!.layers[0]!;
    assert.equal(await pusher.exists(layer), false);
    assert.equal(await pusher.exists(image.root), false);

    await pushImage(pusher, image, "v1");
    assert.equal(await pusher.exists(layer), true);
    assert.equal(await pusher.exists(image.root), true);
    assert.equal(await skopeoDigest(`${registry.host}/test/pushed:v1`), image.root.digest);
    assert.deepEqual((await resolver.resolve(ref)).descriptor, {
      mediaType: image.root.mediaType,
      digest: image.root.digest,
      size: image.root.size,
    });
    // Blobs go through POST uploads then PUT ?digest=, keeping the registry's upload state.
    const put = proxy.requests.find((r) =>
      r.method === "PUT" && r.path.includes("/blobs/uploads/")
    );
    assert.ok(put !== undefined);
    assert.match(put.path, /[?&]_state=[^&]+/);
    assert.match(put.path, new RegExp(`[?&]digest=${encodeURIComponent(layer.digest)}`));
    assert.equal(proxy.count("/manifests/v1", "PUT"), 1);
  },
);

peerTest("Pusher streams a blob with its length and reports progress", PEERS, async () => {
  await using tmp = await makeTempDir();
  await using registry = await startRegistry();
  const image = await makeOciLayout(tmp.path, { layerSize: 300_000 });
  using resolver = new Resolver();
  const pusher = await resolver.pusher(`${registry.host}/test/streamed:1`);
  const layer = image.manifests[0]!.layers[0]!;
  const progress: number[] = [];
  await pusher.push(layer, chunked(image.blobs.get(layer.digest)!, 65536), {
    onProgress: (sent) => progress.push(sent),
  });
  assert.equal(progress.at(-1), layer.size);
  assert.ok(progress.length > 1);
  assert.equal(await pusher.exists(layer), true);
  const fetcher = await resolver.fetcher(`${registry.host}/test/streamed:1`);
  const back = new Uint8Array(await new Response(await fetcher.fetch(layer)).arrayBuffer());
  assert.deepEqual(back, image.blobs.get(layer.digest));

  // A stream shorter than the descriptor is refused.
  const config = image.manifests[0]!.config;
  const data = image.blobs.get(config.digest)!;
  await assert.rejects(
    pusher.push(config, chunked(data.subarray(0, data.length - 1), 10)),
    InvalidArgument,
  );
  assert.equal(await pusher.exists(config), false);
});

peerTest("Pusher pushes a multi-platform index the resolver resolves", PEERS, async () => {
  await using tmp = await makeTempDir();
  await using registry = await startRegistry();
  const image = await makeOciLayout(tmp.path, {
    platforms: [
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "arm64", variant: "v8" },
      { os: "linux", architecture: "s390x" },
    ],
  });
  using resolver = new Resolver();
  const ref = `${registry.host}/test/index:multi`;
  await pushImage(await resolver.pusher(ref), image, "multi");
  const { descriptor } = await resolver.resolve(ref);
  assert.equal(descriptor.mediaType, "application/vnd.oci.image.index.v1+json");
  assert.equal(descriptor.digest, image.root.digest);
  const fetcher = await resolver.fetcher(ref);
  const index = await new Response(await fetcher.fetch(descriptor)).json() as {
    manifests: Descriptor[];
  };
  assert.deepEqual(
    index.manifests.map((m) => m.platform?.architecture),
    ["amd64", "arm64", "s390x"],
  );
  for (const m of index.manifests) {
    const bytes = new Uint8Array(await new Response(await fetcher.fetch(m)).arrayBuffer());
    assert.equal(`sha256:${createHash("sha256").update(bytes).digest("hex")}`, m.digest);
  }
  const { stdout } = await runOk([
    "skopeo",
    "inspect",
    "--raw",
    "--tls-verify=false",
    `docker://${ref}`,
  ]);
  assert.equal(JSON.parse(stdout).manifests.length, 3);
});

peerTest("Pusher reports a manifest with missing blobs as InvalidArgument", PEERS, async () => {
  await using tmp = await makeTempDir();
  await using registry = await startRegistry();
  const image = await makeOciLayout(tmp.path);
  using resolver = new Resolver();
  const pusher = await resolver.pusher(`${registry.host}/test/broken:1`);
  await assert.rejects(
    pusher.push(image.root, image.blobs.get(image.root.digest)!, { tag: "1" }),
    (err: Error) => {
      assert.ok(err instanceof InvalidArgument, String(err));
      assert.match(err.message, /answered 400 Bad Request \(MANIFEST_BLOB_UNKNOWN/);
      return true;
    },
  );
  // Data that does not match the descriptor is refused before anything is sent.
  await assert.rejects(
    pusher.push(image.root, new Uint8Array(image.root.size), { tag: "1" }),
    InvalidArgument,
  );
  await assert.rejects(pusher.push(image.root, new Uint8Array(3)), InvalidArgument);
});

peerTest("Pusher authenticates with push scope to an htpasswd registry", {
  tools: [...PEERS.tools, "perl"],
}, async () => {
  const user = "pusher";
  const password = "Push-pa55word";
  await using tmp = await makeTempDir();
  await using registry = await startRegistry({ htpasswd: { user, password } });
  const image = await makeOciLayout(tmp.path);
  const ref = `${registry.host}/test/private:1`;

  using anonymous = new Resolver();
  const denied = await anonymous.pusher(ref);
  const layer = image.manifests[0]!.layers[0]!;
  await assert.rejects(denied.push(layer, image.blobs.get(layer.digest)!), (err: Error) => {
    assert.ok(err instanceof PermissionDenied, String(err));
    assert.match(err.message, /^Cannot push ".*": authorization failed/);
    return true;
  });

  using resolver = new Resolver({
    credentials: () => Promise.resolve({ username: user, password }),
  });
  await pushImage(await resolver.pusher(ref), image, "1");
  assert.equal((await resolver.resolve(ref)).descriptor.digest, image.root.digest);
  const { stdout } = await runOk([
    "skopeo",
    "inspect",
    "--tls-verify=false",
    "--creds",
    `${user}:${password}`,
    `docker://${ref}`,
  ]);
  assert.equal(JSON.parse(stdout).Digest, image.root.digest);
});

Deno.test("Resolver.pusher() needs a host with the push capability", async () => {
  await using tmp = await makeTempDir();
  await writeHostsToml(
    tmp.path,
    "127.0.0.1:1",
    `server = "http://127.0.0.1:1"\ncapabilities = ["pull", "resolve"]\n`,
  );
  using resolver = new Resolver({ hostsDir: tmp.path });
  await assert.rejects(resolver.pusher("127.0.0.1:1/test/app:1"), NotFound);
});
