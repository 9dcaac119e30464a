import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  InvalidArgument,
  NotFound,
  NotImplemented,
  PermissionDenied,
  Unavailable,
} from "../../errors.ts";
import { MAX_MANIFEST_SIZE, Resolver } from "../../remotes/mod.ts";
import { makeTempDir, peerTest, runOk } from "../_peers.ts";
import {
  closedPort,
  makeOciLayout,
  pushToRegistry,
  startFaultProxy,
  startRegistry,
  writeHostsToml,
} from "../_registry.ts";

const PEERS = { tools: ["docker-registry", "skopeo"] };
const TWO_PLATFORMS = [
  { os: "linux", architecture: "amd64" },
  { os: "linux", architecture: "arm64", variant: "v8" },
];

function sha256(text: string): string {
  return `sha256:${createHash("sha256").update(text).digest("hex")}`;
}

/** The raw manifest skopeo reads from the registry. */
async function rawManifest(ref: string): Promise<string> {
  const { stdout } = await runOk(["skopeo", "inspect", "--raw", "--tls-verify=false", ref]);
  return stdout;
}

/** A fake registry answering every manifest request with `answer`. */
function fakeRegistry(
  answer: (req: Request) => Response,
): { host: string; stop(): Promise<void>; [Symbol.asyncDispose](): Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, answer);
  const stop = (): Promise<void> => server.shutdown();
  return { host: `127.0.0.1:${server.addr.port}`, stop, [Symbol.asyncDispose]: stop };
}

peerTest(
  "Resolver.resolve() resolves OCI tags and digests, single and multi-platform",
  PEERS,
  async () => {
    await using tmp = await makeTempDir();
    await using registry = await startRegistry();
    const single = await makeOciLayout(`${tmp.path}/single`);
    const multi = await makeOciLayout(`${tmp.path}/multi`, { platforms: TWO_PLATFORMS });
    await pushToRegistry(single.ref, `${registry.host}/test/single:1`, { format: "oci" });
    await pushToRegistry(multi.ref, `${registry.host}/test/multi:1`, { format: "oci", all: true });
    using resolver = new Resolver();

    const ref = `${registry.host}/test/single:1`;
    const byTag = await resolver.resolve(ref);
    assert.equal(byTag.name, ref);
    assert.deepEqual(byTag.descriptor, {
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: single.root.digest,
      size: single.root.size,
    });
    const pinned = `${registry.host}/test/single@${single.root.digest}`;
    assert.deepEqual((await resolver.resolve(pinned)).descriptor, byTag.descriptor);
    // A tag with a digest: the digest wins.
    const both = `${registry.host}/test/single:other@${single.root.digest}`;
    assert.deepEqual((await resolver.resolve(both)).descriptor, byTag.descriptor);

    const index = await resolver.resolve(`${registry.host}/test/multi:1`);
    assert.deepEqual(index.descriptor, {
      mediaType: "application/vnd.oci.image.index.v1+json",
      digest: multi.root.digest,
      size: multi.root.size,
    });
    const fetcher = await resolver.fetcher(index.name);
    const body = await new Response(await fetcher.fetch(index.descriptor)).json();
    assert.deepEqual(
      body.manifests.map((m: { platform: unknown }) => m.platform),
      TWO_PLATFORMS,
    );
  },
);

peerTest("Resolver.resolve() resolves Docker schema 2 manifests and lists", PEERS, async () => {
  await using tmp = await makeTempDir();
  await using registry = await startRegistry();
  const single = await makeOciLayout(`${tmp.path}/single`);
  const multi = await makeOciLayout(`${tmp.path}/multi`, { platforms: TWO_PLATFORMS });
  await pushToRegistry(single.ref, `${registry.host}/test/docker:1`, { format: "v2s2" });
  await pushToRegistry(multi.ref, `${registry.host}/test/docker:list`, {
    format: "v2s2",
    all: true,
  });
  using resolver = new Resolver();

  const manifest = await rawManifest(`docker://${registry.host}/test/docker:1`);
  const resolved = await resolver.resolve(`${registry.host}/test/docker:1`);
  assert.deepEqual(resolved.descriptor, {
    mediaType: "application/vnd.docker.distribution.manifest.v2+json",
    digest: sha256(manifest),
    size: new TextEncoder().encode(manifest).length,
  });

  const list = await rawManifest(`docker://${registry.host}/test/docker:list`);
  const resolvedList = await resolver.resolve(`${registry.host}/test/docker:list`);
  assert.equal(
    resolvedList.descriptor.mediaType,
    "application/vnd.docker.distribution.manifest.list.v2+json",
  );
  assert.equal(resolvedList.descriptor.digest, sha256(list));
});

peerTest("Resolver.resolve() falls back to GET when HEAD is not allowed", PEERS, async () => {
  await using tmp = await makeTempDir();
  await using registry = await startRegistry();
  const image = await makeOciLayout(tmp.path);
  await pushToRegistry(image.ref, `${registry.host}/test/app:1`);
  await using proxy = await startFaultProxy(registry.host, { headNotAllowed: true });
  using resolver = new Resolver();
  const { descriptor } = await resolver.resolve(`${proxy.host}/test/app:1`);
  assert.equal(descriptor.digest, image.root.digest);
  assert.equal(descriptor.size, image.root.size);
  assert.deepEqual(
    proxy.requests.filter((r) => r.path.includes("/manifests/")).map((r) =>
      `${r.method} ${r.status}`
    ),
    ["HEAD 405", "GET 200"],
  );
});

peerTest(
  "Resolver.resolve() hashes the manifest when Docker-Content-Digest is missing",
  PEERS,
  async () => {
    await using tmp = await makeTempDir();
    await using registry = await startRegistry();
    const image = await makeOciLayout(tmp.path);
    await pushToRegistry(image.ref, `${registry.host}/test/app:1`);
    await using proxy = await startFaultProxy(registry.host, { dropDigestHeader: true });
    using resolver = new Resolver();
    const { descriptor } = await resolver.resolve(`${proxy.host}/test/app:1`);
    assert.equal(descriptor.digest, image.root.digest);
    assert.equal(descriptor.size, image.root.size);
    assert.equal(proxy.count("/manifests/1", "HEAD"), 1);
    assert.equal(proxy.count("/manifests/1", "GET"), 1);
  },
);

peerTest(
  "Resolver.resolve() finds a digest through the blobs endpoint after a 404",
  PEERS,
  async () => {
    await using tmp = await makeTempDir();
    await using registry = await startRegistry();
    const image = await makeOciLayout(tmp.path);
    await pushToRegistry(image.ref, `${registry.host}/test/app:1`);
    // docker-registry answers 500 to a manifest request for a blob that is no manifest (which,
    // as in containerd, stops the search), so the proxy answers 404 there.
    await using proxy = await startFaultProxy(registry.host, {
      failFirst: { count: Infinity, status: 404, path: "/manifests/" },
    });
    using resolver = new Resolver();
    const config = image.manifests[0]!.config;
    const { descriptor } = await resolver.resolve(`${proxy.host}/test/app@${config.digest}`);
    assert.deepEqual(descriptor, {
      mediaType: "application/octet-stream",
      digest: config.digest,
      size: config.size,
    });
    assert.deepEqual(
      proxy.requests.map((r) => `${r.method} ${r.path.split("/").at(-2)} ${r.status}`),
      [
        "HEAD manifests 404",
        "HEAD blobs 200",
      ],
    );
  },
);

peerTest(
  "Resolver.resolve() reports a missing tag or digest as NotFound naming it",
  PEERS,
  async () => {
    await using registry = await startRegistry();
    using resolver = new Resolver();
    const ref = `${registry.host}/test/none:missing`;
    await assert.rejects(resolver.resolve(ref), (err: Error) => {
      assert.ok(err instanceof NotFound, String(err));
      assert.match(
        err.message,
        /^Cannot resolve "127\.0\.0\.1:\d+\/test\/none:missing": not found/,
      );
      return true;
    });
    const digest = `sha256:${"0".repeat(64)}`;
    await assert.rejects(resolver.resolve(`${registry.host}/test/none@${digest}`), (err: Error) => {
      assert.ok(err instanceof NotFound, String(err));
      assert.ok(err.message.includes(digest));
      return true;
    });
  },
);

Deno.test("Resolver.resolve() rejects references without tag or digest, or with a bad digest", async () => {
  using resolver = new Resolver();
  await assert.rejects(resolver.resolve("127.0.0.1:1/repo"), InvalidArgument);
  await assert.rejects(resolver.resolve("127.0.0.1:1"), InvalidArgument);
  await assert.rejects(resolver.resolve("127.0.0.1:1/repo@sha256:abc"), InvalidArgument);
  await assert.rejects(resolver.resolve("http://127.0.0.1:1/repo:1"), InvalidArgument);
});

Deno.test("Resolver.resolve() refuses Docker schema 1 manifests", async () => {
  for (const type of ["application/vnd.docker.distribution.manifest.v1+prettyjws", "text/plain"]) {
    await using fake = fakeRegistry(() =>
      new Response("{}", {
        headers: {
          "content-type": `${type}; charset=utf-8`,
          "docker-content-digest": sha256("{}"),
        },
      })
    );
    using resolver = new Resolver({ plainHttp: true });
    await assert.rejects(resolver.resolve(`${fake.host}/old/image:1`), (err: Error) => {
      assert.ok(err instanceof NotImplemented, String(err));
      assert.match(err.message, /schema 1/);
      return true;
    });
  }
});

Deno.test("Resolver.resolve() refuses manifests larger than the limit", async () => {
  await using fake = fakeRegistry((req) =>
    new Response(req.method === "HEAD" ? null : "{}", {
      headers: {
        "content-type": "application/vnd.oci.image.manifest.v1+json",
        "content-length": String(MAX_MANIFEST_SIZE + 1),
      },
    })
  );
  using resolver = new Resolver({ plainHttp: true });
  await assert.rejects(resolver.resolve(`${fake.host}/big/image:1`), (err: Error) => {
    assert.ok(err instanceof NotFound, String(err));
    assert.match(err.message, /larger than/);
    return true;
  });
});

peerTest("Resolver.resolve() retries 503 and 429 answers", PEERS, async () => {
  await using tmp = await makeTempDir();
  await using registry = await startRegistry();
  const image = await makeOciLayout(tmp.path);
  await pushToRegistry(image.ref, `${registry.host}/test/app:1`);
  await using proxy = await startFaultProxy(registry.host, {
    failFirst: { count: 2, path: "/manifests/" },
  });
  using resolver = new Resolver({ retryDelayMs: 5 });
  assert.equal(
    (await resolver.resolve(`${proxy.host}/test/app:1`)).descriptor.digest,
    image.root.digest,
  );
  assert.deepEqual(
    proxy.requests.filter((r) => r.path.includes("/manifests/")).map((r) => r.status),
    [503, 503, 200],
  );

  proxy.faults = { failFirst: { count: 1, status: 429, retryAfter: 0, path: "/manifests/" } };
  assert.equal(
    (await resolver.resolve(`${proxy.host}/test/app:1`)).descriptor.digest,
    image.root.digest,
  );
  assert.deepEqual(
    proxy.requests.filter((r) => r.path.includes("/manifests/")).slice(3).map((r) => r.status),
    [429, 200],
  );
});

peerTest("Resolver.resolve() gives up on a registry that always answers 503", PEERS, async () => {
  await using registry = await startRegistry();
  await using proxy = await startFaultProxy(registry.host, {
    failFirst: { count: Infinity, retryAfter: 0 },
  });
  using resolver = new Resolver({ retryDelayMs: 5, maxAttempts: 3 });
  await assert.rejects(resolver.resolve(`${proxy.host}/test/app:1`), (err: Error) => {
    assert.ok(err instanceof Unavailable, String(err));
    assert.match(err.message, /answered 503 Service Unavailable/);
    assert.match(err.message, /after 3 attempts/);
    return true;
  });
  assert.equal(proxy.count("/manifests/"), 3);
});

peerTest(
  "Resolver.resolve() falls back from a mirror that is down to the upstream",
  PEERS,
  async () => {
    await using tmp = await makeTempDir();
    await using registry = await startRegistry();
    const image = await makeOciLayout(`${tmp.path}/image`);
    await pushToRegistry(image.ref, `${registry.host}/test/app:1`);
    await using proxy = await startFaultProxy(registry.host);
    const down = closedPort();
    const hostsDir = `${tmp.path}/certs.d`;
    // The proxy is the upstream of the reference; the first mirror does not listen.
    await writeHostsToml(
      hostsDir,
      proxy.host,
      [
        `[host."http://${down}"]`,
        `  capabilities = ["pull", "resolve"]`,
        "",
      ].join("\n"),
    );
    using resolver = new Resolver({ hostsDir, retryDelayMs: 5, maxAttempts: 2 });
    const { descriptor } = await resolver.resolve(`${proxy.host}/test/app:1`);
    assert.equal(descriptor.digest, image.root.digest);
    assert.equal(proxy.count("/manifests/1"), 1);

    // Only unreachable hosts: the connection error is reported.
    await writeHostsToml(hostsDir, "127.0.0.1:1", `server = "http://${down}"\n`);
    await assert.rejects(resolver.resolve("127.0.0.1:1/test/app:1"), (err: Error) => {
      assert.ok(err instanceof Unavailable, String(err));
      assert.match(err.message, /cannot reach .*connection refused \(2 attempts\)/);
      return true;
    });
  },
);

peerTest(
  "Resolver.resolve() skips a pull-only mirror and tags mirror requests with ns",
  PEERS,
  async () => {
    await using tmp = await makeTempDir();
    await using registry = await startRegistry();
    const image = await makeOciLayout(`${tmp.path}/image`);
    await pushToRegistry(image.ref, `${registry.host}/test/app:1`);
    await using pullOnly = await startFaultProxy(registry.host);
    await using resolving = await startFaultProxy(registry.host);
    const hostsDir = `${tmp.path}/certs.d`;
    await writeHostsToml(
      hostsDir,
      registry.host,
      [
        `[host."http://${pullOnly.host}"]`,
        `  capabilities = ["pull"]`,
        `[host."http://${resolving.host}"]`,
        `  capabilities = ["pull", "resolve"]`,
        "",
      ].join("\n"),
    );
    using resolver = new Resolver({ hostsDir });
    const ref = `${registry.host}/test/app:1`;
    const { descriptor } = await resolver.resolve(ref);
    assert.equal(descriptor.digest, image.root.digest);
    assert.equal(pullOnly.requests.length, 0);
    assert.deepEqual(resolving.requests.map((r) => `${r.method} ${r.path}`), [
      `HEAD /v2/test/app/manifests/1?ns=${encodeURIComponent(registry.host)}`,
    ]);

    // Fetching by digest uses the pull-only mirror first.
    const fetcher = await resolver.fetcher(ref);
    const bytes = new Uint8Array(await new Response(await fetcher.fetch(descriptor)).arrayBuffer());
    assert.equal(bytes.length, descriptor.size);
    assert.deepEqual(pullOnly.requests.map((r) => `${r.method} ${r.path}`), [
      `GET /v2/test/app/manifests/${descriptor.digest}?ns=${encodeURIComponent(registry.host)}`,
    ]);
  },
);

peerTest("Resolver.resolve() finds no host when none may resolve", PEERS, async () => {
  await using tmp = await makeTempDir();
  await writeHostsToml(
    tmp.path,
    "127.0.0.1:1",
    `server = "http://127.0.0.1:1"\ncapabilities = ["pull"]\n`,
  );
  using resolver = new Resolver({ hostsDir: tmp.path });
  await assert.rejects(resolver.resolve("127.0.0.1:1/test/app:1"), (err: Error) => {
    assert.ok(err instanceof NotFound, String(err));
    assert.match(err.message, /no hosts with the pull and resolve capability/);
    return true;
  });
});

Deno.test("Resolver sends host headers, resolver headers and the User-Agent", async () => {
  const seen: Headers[] = [];
  await using fake = fakeRegistry((req) => {
    seen.push(req.headers);
    return new Response(null, { status: 404 });
  });
  await using tmp = await makeTempDir();
  await writeHostsToml(
    tmp.path,
    fake.host,
    `server = "http://${fake.host}"\n[header]\n  X-Host = ["a", "b"]\n`,
  );
  using resolver = new Resolver({ hostsDir: tmp.path, headers: { "X-Extra": "1" } });
  await assert.rejects(resolver.resolve(`${fake.host}/test/app:1`), NotFound);
  const headers = seen[0]!;
  assert.equal(headers.get("x-host"), "a, b");
  assert.equal(headers.get("x-extra"), "1");
  assert.equal(headers.get("user-agent"), "strata/0.1");
  assert.match(headers.get("accept") ?? "", /application\/vnd\.oci\.image\.index\.v1\+json/);
});

peerTest(
  "Resolver authenticates to an htpasswd registry",
  { tools: [...PEERS.tools, "perl"] },
  async () => {
    const user = "strata";
    const password = "pa55-Word-for-resolve";
    await using tmp = await makeTempDir();
    await using registry = await startRegistry({ htpasswd: { user, password } });
    const image = await makeOciLayout(tmp.path);
    await pushToRegistry(image.ref, `${registry.host}/test/app:1`, {
      creds: `${user}:${password}`,
    });
    const ref = `${registry.host}/test/app:1`;

    const asked: string[] = [];
    using good = new Resolver({
      credentials: (host) => {
        asked.push(host);
        return Promise.resolve({ username: user, password });
      },
    });
    assert.equal((await good.resolve(ref)).descriptor.digest, image.root.digest);
    assert.deepEqual(asked, [registry.host]);

    using wrong = new Resolver({
      credentials: () => Promise.resolve({ username: user, password: `not-${password}` }),
    });
    await assert.rejects(wrong.resolve(ref), (err: Error) => {
      assert.ok(err instanceof PermissionDenied, String(err));
      assert.match(
        err.message,
        /^Cannot resolve ".*": authorization failed \(.*rejected the credentials/,
      );
      assert.ok(!err.message.includes(password), err.message);
      assert.ok(!err.message.includes(btoa(`${user}:not-${password}`)), err.message);
      return true;
    });

    using anonymous = new Resolver();
    await assert.rejects(anonymous.resolve(ref), (err: Error) => {
      assert.ok(err instanceof PermissionDenied, String(err));
      assert.match(err.message, /authorization failed/);
      return true;
    });
  },
);
