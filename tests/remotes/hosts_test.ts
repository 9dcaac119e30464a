import assert from "node:assert/strict";
import { join } from "node:path";
import { InvalidArgument } from "../../errors.ts";
import {
  ALL_CAPABILITIES,
  filterCapabilities,
  hostsDirName,
  hostsDirNames,
  isLocalhost,
  type RegistryHost,
  registryHosts,
} from "../../remotes/mod.ts";

/** Writes `files` (relative path → content) under a fresh temp dir and returns the dir. */
async function tree(files: Record<string, string>): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "strata-hosts-" });
  for (const [rel, content] of Object.entries(files)) {
    const path = join(root, rel);
    await Deno.mkdir(join(path, ".."), { recursive: true });
    await Deno.writeTextFile(path, content);
  }
  return root;
}

function urls(hosts: RegistryHost[]): string[] {
  return hosts.map((h) => `${h.scheme}://${h.host}${h.path}`);
}

async function withTree(
  files: Record<string, string>,
  fn: (root: string) => Promise<void>,
): Promise<void> {
  const root = await tree(files);
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("registryHosts() defaults without a config path", async () => {
  const [hub, ...rest] = await registryHosts("docker.io");
  assert.equal(rest.length, 0);
  assert.deepEqual(hub, {
    host: "registry-1.docker.io",
    scheme: "https",
    path: "/v2",
    capabilities: [...ALL_CAPABILITIES],
    skipVerify: false,
    caFiles: [],
    clientCerts: [],
    headers: {},
    overridePath: false,
    httpFallback: false,
  });
  assert.deepEqual(urls(await registryHosts("ghcr.io")), ["https://ghcr.io/v2"]);
  assert.deepEqual(urls(await registryHosts("example.com:8443")), ["https://example.com:8443/v2"]);
});

Deno.test("registryHosts() uses http for every implicit host when plainHttp is set", async () => {
  assert.deepEqual(urls(await registryHosts("example.com", { plainHttp: true })), [
    "http://example.com/v2",
  ]);
  const [local] = await registryHosts("localhost:5000", { plainHttp: true });
  assert.equal(local?.scheme, "http");
  assert.equal(local?.skipVerify, false);
  assert.equal(local?.httpFallback, false);
  // docker.io is always https.
  assert.deepEqual(urls(await registryHosts("docker.io", { plainHttp: true })), [
    "https://registry-1.docker.io/v2",
  ]);
});

Deno.test("registryHosts() applies containerd's loopback rules", async () => {
  const table: [string, "http" | "https", boolean, boolean][] = [
    // host, scheme, skipVerify, httpFallback
    ["localhost", "https", true, false],
    ["localhost:443", "https", true, false],
    ["localhost:5000", "http", true, true],
    ["localhost:80", "http", false, false],
    ["127.0.0.1:5000", "http", true, true],
    ["127.1.2.3:5000", "http", true, true],
    ["[::1]:5000", "http", true, true],
    ["::1", "https", true, false],
  ];
  for (const [host, scheme, skipVerify, httpFallback] of table) {
    const [h, ...rest] = await registryHosts(host);
    assert.equal(rest.length, 0, host);
    assert.equal(h?.host, host, host);
    assert.equal(h?.scheme, scheme, host);
    assert.equal(h?.skipVerify, skipVerify, host);
    assert.equal(h?.httpFallback, httpFallback, host);
  }
  const [remote] = await registryHosts("registry.local:5000");
  assert.equal(remote?.scheme, "https");
  assert.equal(remote?.skipVerify, false);
});

Deno.test("isLocalhost() recognises loopback names and addresses only", () => {
  for (const h of ["localhost", "localhost:1", "127.0.0.1", "127.255.0.9:80", "::1", "[::1]:5"]) {
    assert.equal(isLocalhost(h), true, h);
  }
  for (const h of ["example.com", "128.0.0.1", "127.0.0.256", "::2", "[::2]:5", "localhost.com"]) {
    assert.equal(isLocalhost(h), false, h);
  }
});

Deno.test("hostsDirName() and hostsDirNames() escape the port as containerd does", () => {
  assert.equal(hostsDirName("docker.io"), "docker.io");
  assert.equal(hostsDirName("localhost:5000"), "localhost_5000_");
  assert.deepEqual(hostsDirNames("docker.io"), ["docker.io", "_default"]);
  assert.deepEqual(hostsDirNames("localhost:5000"), [
    "localhost_5000_",
    "localhost:5000",
    "_default",
  ]);
});

Deno.test("registryHosts() lists [host] tables in file order, then the server", async () => {
  await withTree({
    "docker.io/hosts.toml": `
server = "https://upstream.example.com"

[host."https://zeta.example.com"]
  capabilities = ["pull"]

[host."https://alpha.example.com"]
  capabilities = ["pull", "resolve"]

[host."https://zeta.example.com".header]
  x-late = "declared after alpha"
`,
  }, async (root) => {
    const hosts = await registryHosts("docker.io", { configPath: root });
    assert.deepEqual(urls(hosts), [
      "https://zeta.example.com/v2",
      "https://alpha.example.com/v2",
      "https://upstream.example.com/v2",
    ]);
    assert.deepEqual(hosts[0]?.headers, { "x-late": ["declared after alpha"] });
    // The explicit server replaces the docker.io remap.
    assert.ok(!hosts.some((h) => h.host === "registry-1.docker.io"));
  });
});

Deno.test("registryHosts() appends the implicit upstream when server is absent", async () => {
  await withTree({
    "docker.io/hosts.toml": `[host."https://mirror.example.com"]\ncapabilities = ["pull"]\n`,
    "quay.io/hosts.toml": `[host."http://mirror.internal:5000"]\n`,
  }, async (root) => {
    assert.deepEqual(urls(await registryHosts("docker.io", { configPath: root })), [
      "https://mirror.example.com/v2",
      "https://registry-1.docker.io/v2",
    ]);
    const quay = await registryHosts("quay.io", { configPath: root });
    assert.deepEqual(urls(quay), ["http://mirror.internal:5000/v2", "https://quay.io/v2"]);
    assert.deepEqual(quay[1]?.capabilities, [...ALL_CAPABILITIES]);
    // Unconfigured hosts still get the default.
    assert.deepEqual(urls(await registryHosts("ghcr.io", { configPath: root })), [
      "https://ghcr.io/v2",
    ]);
  });
});

Deno.test("registryHosts() picks host_port_, then host:port, then _default", async () => {
  await withTree({
    "localhost_5000_/hosts.toml": `server = "http://escaped:5000"`,
    "localhost:5000/hosts.toml": `server = "http://literal:5000"`,
    "localhost:6000/hosts.toml": `server = "http://literal:6000"`,
    "_default/hosts.toml": `server = "https://fallback.example.com"`,
  }, async (root) => {
    const first = async (host: string) => urls(await registryHosts(host, { configPath: root }))[0];
    assert.equal(await first("localhost:5000"), "http://escaped:5000/v2");
    assert.equal(await first("localhost:6000"), "http://literal:6000/v2");
    assert.equal(await first("example.com"), "https://fallback.example.com/v2");
    assert.equal(await first("docker.io"), "https://fallback.example.com/v2");
  });
});

Deno.test("registryHosts() handles API paths and override_path", async () => {
  await withTree({
    "example.com/hosts.toml": `
[host."https://a.example.com"]
[host."https://b.example.com/"]
[host."https://c.example.com/prefix/./x/../"]
[host."https://d.example.com/v2"]
[host."https://e.example.com/custom/api"]
  override_path = true
[host."https://f.example.com"]
  override_path = true
[host."g.example.com:8080/sub"]
[host."https://h.example.com:443"]
`,
  }, async (root) => {
    const hosts = await registryHosts("example.com", { configPath: root });
    assert.deepEqual(urls(hosts), [
      "https://a.example.com/v2",
      "https://b.example.com/v2",
      "https://c.example.com/prefix/v2",
      "https://d.example.com/v2",
      "https://e.example.com/custom/api",
      "https://f.example.com",
      "https://g.example.com:8080/sub/v2",
      "https://h.example.com:443/v2",
      "https://example.com/v2",
    ]);
    assert.equal(hosts[4]?.overridePath, true);
    assert.equal(hosts[0]?.overridePath, false);
  });
});

Deno.test("registryHosts() reads every per-host key", async () => {
  await withTree({
    "registry.example.com/hosts.toml": `
server = "https://registry.example.com"
capabilities = ["pull", "resolve"]
ca = "root.pem"
skip_verify = false
dial_timeout = "1m30s"

[header]
  authorization-hint = "top"

[host."https://mirror.example.com"]
  capabilities = ["pull", "referrers"]
  skip_verify = true
  ca = ["/etc/ssl/a.pem", "rel/b.pem"]
  client = [["client.cert", "client.key"], ["only-cert.pem"]]
  dial_timeout = "250ms"
  unknown_key = "ignored"
  [host."https://mirror.example.com".header]
    x-single = "one"
    x-multi = ["a", "b"]

[host."https://other.example.com"]
  client = "/abs/client.pem"

[host."https://third.example.com"]
  client = ["c1.pem", "c2.pem"]
`,
  }, async (root) => {
    const dir = join(root, "registry.example.com");
    const [mirror, other, third, server] = await registryHosts("registry.example.com", {
      configPath: root,
    });
    assert.deepEqual(mirror, {
      host: "mirror.example.com",
      scheme: "https",
      path: "/v2",
      capabilities: ["pull", "referrers"],
      skipVerify: true,
      caFiles: ["/etc/ssl/a.pem", join(dir, "rel/b.pem")],
      clientCerts: [
        { cert: join(dir, "client.cert"), key: join(dir, "client.key") },
        { cert: join(dir, "only-cert.pem") },
      ],
      headers: { "x-single": ["one"], "x-multi": ["a", "b"] },
      overridePath: false,
      dialTimeoutMs: 250,
      httpFallback: false,
    });
    assert.deepEqual(other?.clientCerts, [{ cert: "/abs/client.pem" }]);
    assert.deepEqual(other?.capabilities, [...ALL_CAPABILITIES]);
    assert.deepEqual(third?.clientCerts, [
      { cert: join(dir, "c1.pem") },
      { cert: join(dir, "c2.pem") },
    ]);
    assert.deepEqual(server, {
      host: "registry.example.com",
      scheme: "https",
      path: "/v2",
      capabilities: ["pull", "resolve"],
      skipVerify: false,
      caFiles: [join(dir, "root.pem")],
      clientCerts: [],
      headers: { "authorization-hint": ["top"] },
      overridePath: false,
      dialTimeoutMs: 90_000,
      httpFallback: false,
    });
  });
});

Deno.test("registryHosts() keeps top-level TLS settings on the implicit upstream", async () => {
  await withTree({
    "localhost:5000/hosts.toml": `ca = "/ca.pem"\n[header]\nx = "y"\n`,
  }, async (root) => {
    const [h, ...rest] = await registryHosts("localhost:5000", { configPath: root });
    assert.equal(rest.length, 0);
    assert.equal(h?.scheme, "http");
    assert.deepEqual(h?.caFiles, ["/ca.pem"]);
    assert.deepEqual(h?.headers, { x: ["y"] });
    assert.equal(h?.httpFallback, true);
  });
});

Deno.test("registryHosts() marks http hosts with TLS settings for https fallback", async () => {
  await withTree({
    "example.com/hosts.toml": `
[host."http://tls.example.com:5000"]
  skip_verify = true
[host."http://port80.example.com:80"]
  skip_verify = true
[host."http://plain.example.com:5000"]
`,
  }, async (root) => {
    const hosts = await registryHosts("example.com", { configPath: root });
    assert.deepEqual(hosts.map((h) => h.httpFallback), [true, false, false, false]);
  });
});

Deno.test("registryHosts() falls back to Docker cert files without hosts.toml", async () => {
  await withTree({
    "example.com/ca.crt": "",
    "example.com/b-ca.crt": "",
    "example.com/client.cert": "",
    "example.com/client.key": "",
    "example.com/lonely.cert": "",
    "example.com/readme.txt": "",
  }, async (root) => {
    const dir = join(root, "example.com");
    const [h, ...rest] = await registryHosts("example.com", { configPath: root });
    assert.equal(rest.length, 0);
    assert.equal(h?.host, "example.com");
    assert.deepEqual(h?.caFiles, [join(dir, "b-ca.crt"), join(dir, "ca.crt")]);
    assert.deepEqual(h?.clientCerts, [
      { cert: join(dir, "client.cert"), key: join(dir, "client.key") },
      { cert: join(dir, "lonely.cert") },
    ]);
  });
});

Deno.test("filterCapabilities() keeps hosts with every requested capability", async () => {
  await withTree({
    "docker.io/hosts.toml": `
[host."https://pull-only"]
  capabilities = ["pull"]
[host."https://resolver"]
  capabilities = ["pull", "resolve"]
[host."https://resolve-only"]
  capabilities = ["resolve"]
[host."https://pusher"]
  capabilities = ["push"]
[host."https://none"]
  capabilities = []
`,
  }, async (root) => {
    const hosts = await registryHosts("docker.io", { configPath: root });
    const names = (caps: Parameters<typeof filterCapabilities>[1]) =>
      filterCapabilities(hosts, caps).map((h) => h.host);
    assert.deepEqual(names("pull"), ["pull-only", "resolver", "registry-1.docker.io"]);
    assert.deepEqual(names(["pull", "resolve"]), ["resolver", "registry-1.docker.io"]);
    assert.deepEqual(names("resolve"), ["resolver", "resolve-only", "registry-1.docker.io"]);
    assert.deepEqual(names("push"), ["pusher", "registry-1.docker.io"]);
    assert.deepEqual(names([]), hosts.map((h) => h.host));
  });
});

Deno.test("registryHosts() rejects malformed hosts.toml naming the file and line", async () => {
  await withTree({
    "docker.io/hosts.toml": `server = "https://ok"\n\n[host."https://m"\ncapabilities = ["pull"]\n`,
  }, async (root) => {
    const file = join(root, "docker.io", "hosts.toml");
    await assert.rejects(registryHosts("docker.io", { configPath: root }), (err: unknown) => {
      assert.ok(err instanceof InvalidArgument);
      assert.match(err.message, /^Cannot parse hosts file "/);
      assert.ok(err.message.includes(`"${file}"`), err.message);
      assert.match(err.message, /line 3\b/);
      return true;
    });
  });
});

Deno.test("registryHosts() rejects invalid values with InvalidArgument", async () => {
  const bad = [
    `capabilities = ["pull", "fly"]`,
    `capabilities = "pull"`,
    `skip_verify = "yes"`,
    `ca = 3`,
    `ca = ["a", 1]`,
    `client = [["a", "b", "c"]]`,
    `client = 7`,
    `header = "x"`,
    `[header]\nx = 1`,
    `override_path = 1`,
    `dial_timeout = "10"`,
    `dial_timeout = 10`,
    `server = 5`,
    `server = "ftp://x"`,
    `host = "x"`,
    `[host."https://m"]\nskip_verify = 1`,
  ];
  for (const content of bad) {
    await withTree({ "example.com/hosts.toml": content }, async (root) => {
      await assert.rejects(
        registryHosts("example.com", { configPath: root }),
        InvalidArgument,
        content,
      );
    });
  }
});

Deno.test("registryHosts() rejects hostnames that would escape the config dir", async () => {
  for (const host of ["", ".", "..", "../etc", "a/b", "a b"]) {
    await assert.rejects(registryHosts(host, { configPath: "/nonexistent" }), InvalidArgument);
  }
});
