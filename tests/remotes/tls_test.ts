import assert from "node:assert/strict";
import { Unavailable } from "../../errors.ts";
import { fetchToContent, Resolver } from "../../remotes/mod.ts";
import { makeTempDir, peerTest, type TempDir } from "../_peers.ts";
import {
  type FaultProxy,
  makeOciLayout,
  makeTlsFiles,
  openContent,
  pushToRegistry,
  startFaultProxy,
  startRegistry,
  type TestImage,
  type TestRegistry,
  type TlsFiles,
  writeHostsToml,
} from "../_registry.ts";

const PEERS = { tools: ["docker-registry", "skopeo", "openssl"] };

interface TlsSetup extends AsyncDisposable {
  tmp: TempDir;
  registry: TestRegistry;
  /** An https proxy in front of the registry, with a certificate signed by `tls.caFile`. */
  proxy: FaultProxy;
  tls: TlsFiles;
  image: TestImage;
}

async function setup(): Promise<TlsSetup> {
  const tmp = await makeTempDir();
  const registry = await startRegistry();
  const tls = await makeTlsFiles(tmp.path);
  const image = await makeOciLayout(tmp.path);
  await pushToRegistry(image.ref, `${registry.host}/test/app:1`);
  const proxy = await startFaultProxy(registry.host, {}, { tls: { cert: tls.cert, key: tls.key } });
  return {
    tmp,
    registry,
    proxy,
    tls,
    image,
    async [Symbol.asyncDispose]() {
      await proxy.stop();
      await registry.stop();
      await tmp.stop();
    },
  };
}

peerTest("Resolver trusts a registry's certificate through the host's CA file", PEERS, async () => {
  await using s = await setup();
  const hostsDir = `${s.tmp.path}/certs.d`;
  await writeHostsToml(
    hostsDir,
    s.proxy.host,
    `server = "https://${s.proxy.host}"\nca = "${s.tls.caFile}"\n`,
  );
  using resolver = new Resolver({ hostsDir });
  const ref = `${s.proxy.host}/test/app:1`;
  const { descriptor } = await resolver.resolve(ref);
  assert.equal(descriptor.digest, s.image.root.digest);
  await using content = await openContent();
  const layer = s.image.manifests[0]!.layers[0]!;
  assert.equal(
    (await fetchToContent(content.store, await resolver.fetcher(ref), layer)).digest,
    layer.digest,
  );
  assert.ok(s.proxy.count(layer.digest, "GET") === 1);

  // Without the CA the certificate is refused at once, without retries.
  const untrusted = `${s.tmp.path}/untrusted`;
  await writeHostsToml(untrusted, s.proxy.host, `server = "https://${s.proxy.host}"\n`);
  using strict = new Resolver({ hostsDir: untrusted, retryDelayMs: 5 });
  const before = s.proxy.requests.length;
  await assert.rejects(strict.resolve(ref), (err: Error) => {
    assert.ok(err instanceof Unavailable, String(err));
    assert.match(err.message, /certificate/i);
    assert.doesNotMatch(err.message, /attempts/);
    return true;
  });
  assert.equal(s.proxy.requests.length, before);
});

peerTest("Resolver skips certificate verification when skip_verify is set", PEERS, async () => {
  await using s = await setup();
  const hostsDir = `${s.tmp.path}/certs.d`;
  await writeHostsToml(
    hostsDir,
    s.proxy.host,
    `server = "https://${s.proxy.host}"\nskip_verify = true\n`,
  );
  using resolver = new Resolver({ hostsDir });
  const ref = `${s.proxy.host}/test/app:1`;
  assert.equal((await resolver.resolve(ref)).descriptor.digest, s.image.root.digest);

  // Downloads and streamed uploads go through the same unverified TLS connection.
  await using content = await openContent();
  const layer = s.image.manifests[0]!.layers[0]!;
  assert.equal(
    (await fetchToContent(content.store, await resolver.fetcher(ref), layer)).digest,
    layer.digest,
  );
  const pusher = await resolver.pusher(`${s.proxy.host}/test/copy:1`);
  const data = s.image.blobs.get(layer.digest)!;
  await pusher.push(layer, () => new Blob([new Uint8Array(data)]).stream());
  assert.equal(await pusher.exists(layer), true);
  assert.equal(s.proxy.count("/test/copy/blobs/uploads/", "PUT"), 1);
});

peerTest(
  "Resolver tries https first for a loopback registry and keeps it when it works",
  PEERS,
  async () => {
    await using s = await setup();
    // No hosts.toml: 127.0.0.1:PORT defaults to http with an https attempt that skips
    // verification (containerd's rule for loopback hosts).
    using resolver = new Resolver();
    const { descriptor } = await resolver.resolve(`${s.proxy.host}/test/app:1`);
    assert.equal(descriptor.digest, s.image.root.digest);
    assert.equal(s.proxy.count("/manifests/1"), 1);
  },
);

peerTest(
  "Resolver falls back to http for a host with TLS settings and an http URL",
  PEERS,
  async () => {
    await using s = await setup();
    const hostsDir = `${s.tmp.path}/certs.d`;
    // The plain-HTTP registry with a CA configured: https is tried first, then http.
    await writeHostsToml(
      hostsDir,
      s.registry.host,
      `server = "http://${s.registry.host}"\nca = "${s.tls.caFile}"\n`,
    );
    using resolver = new Resolver({ hostsDir });
    const ref = `${s.registry.host}/test/app:1`;
    assert.equal((await resolver.resolve(ref)).descriptor.digest, s.image.root.digest);
    const fetcher = await resolver.fetcher(ref);
    const bytes = await new Response(await fetcher.fetch(s.image.root)).arrayBuffer();
    assert.equal(bytes.byteLength, s.image.root.size);
  },
);

peerTest("Resolver loads a client certificate and key from hosts.toml", PEERS, async () => {
  await using s = await setup();
  const hostsDir = `${s.tmp.path}/certs.d`;
  // The test server does not ask for a client certificate; this checks the files are read and
  // handed to the TLS client without breaking the connection.
  await writeHostsToml(
    hostsDir,
    s.proxy.host,
    [
      `server = "https://${s.proxy.host}"`,
      `ca = "${s.tls.caFile}"`,
      `client = [["${s.tmp.path}/server.pem", "${s.tmp.path}/server.key"]]`,
      "",
    ].join("\n"),
  );
  using resolver = new Resolver({ hostsDir });
  assert.equal(
    (await resolver.resolve(`${s.proxy.host}/test/app:1`)).descriptor.digest,
    s.image.root.digest,
  );

  await writeHostsToml(
    hostsDir,
    s.proxy.host,
    `server = "https://${s.proxy.host}"\nca = "${s.tmp.path}/missing.pem"\n`,
  );
  using broken = new Resolver({ hostsDir });
  await assert.rejects(broken.resolve(`${s.proxy.host}/test/app:1`), /missing\.pem/);
});
