import assert from "node:assert/strict";
import { join } from "node:path";
import { Unavailable } from "../../errors.ts";
import { fetchToContent, Resolver } from "../../remotes/mod.ts";
import { makeTempDir, peerTest } from "../_peers.ts";
import {
  makeClientCert,
  makeOciLayout,
  makeTlsFiles,
  openContent,
  pushToRegistry,
  startFaultProxy,
  startRegistry,
  startSilentListener,
  startTcpForwarder,
  type TlsFiles,
  writeHostsToml,
} from "../_registry.ts";

const PEERS = { tools: ["docker-registry", "skopeo", "openssl"] };
const USER = "tls-user";
const PASSWORD = "Tls-pa55-word";
const TOKEN = "tls-token-0123456789-secret";

/** Fails a test that would otherwise hang: aborts the resolver after `ms`. */
function guard(ms: number): { signal: AbortSignal } & Disposable {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`the test took over ${ms} ms`)), ms);
  return { signal: controller.signal, [Symbol.dispose]: () => clearTimeout(timer) };
}

interface TlsTokenFront extends AsyncDisposable {
  /** The registry front, `127.0.0.1:PORT`, over https. */
  host: string;
  /** Token requests seen by the token server (`METHOD`). */
  tokens: string[];
}

/**
 * An https registry front that wants a Bearer token from a separate https token server; both
 * use the certificate of `tls` (signed by the test CA).
 */
function startTlsTokenFront(upstream: string, tls: TlsFiles): TlsTokenFront {
  const tokens: string[] = [];
  const listen = { hostname: "127.0.0.1", port: 0, cert: tls.cert, key: tls.key, onListen() {} };
  const tokenServer = Deno.serve(listen, async (req) => {
    let user = "";
    let password = "";
    if (req.method === "POST") {
      const form = new URLSearchParams(await req.text());
      user = form.get("username") ?? "";
      password = form.get("password") ?? "";
    } else {
      const basic = req.headers.get("authorization")?.replace(/^Basic /, "");
      if (basic !== undefined) [user = "", password = ""] = atob(basic).split(":");
    }
    tokens.push(req.method);
    if (user !== USER || password !== PASSWORD) {
      return Response.json({ errors: [{ code: "UNAUTHORIZED" }] }, { status: 401 });
    }
    return Response.json({ token: TOKEN, access_token: TOKEN, expires_in: 300 });
  });
  const realm = `https://127.0.0.1:${tokenServer.addr.port}/token`;
  const front = Deno.serve(listen, async (req) => {
    const url = new URL(req.url);
    if (req.headers.get("authorization") !== `Bearer ${TOKEN}`) {
      await req.body?.cancel();
      return new Response(JSON.stringify({ errors: [{ code: "UNAUTHORIZED" }] }), {
        status: 401,
        headers: { "www-authenticate": `Bearer realm="${realm}",service="tls-front"` },
      });
    }
    const headers = new Headers(req.headers);
    headers.delete("authorization");
    headers.delete("host");
    const response = await fetch(new URL(url.pathname + url.search, `http://${upstream}`), {
      method: req.method,
      headers,
      redirect: "manual",
    });
    return new Response(response.body, { status: response.status, headers: response.headers });
  });
  return {
    host: `127.0.0.1:${front.addr.port}`,
    tokens,
    async [Symbol.asyncDispose]() {
      await front.shutdown();
      await tokenServer.shutdown();
    },
  };
}

peerTest(
  "Resolver fetches Bearer tokens with the TLS settings of the challenged host",
  PEERS,
  async () => {
    await using tmp = await makeTempDir();
    await using registry = await startRegistry();
    const tls = await makeTlsFiles(tmp.path);
    const image = await makeOciLayout(tmp.path);
    await pushToRegistry(image.ref, `${registry.host}/test/private:1`);
    await using front = startTlsTokenFront(registry.host, tls);
    const ref = `${front.host}/test/private:1`;
    const credentials = () => Promise.resolve({ username: USER, password: PASSWORD });
    const layer = image.manifests[0]!.layers[0]!;

    // The token server's certificate is trusted only through the host's `ca`.
    const withCa = join(tmp.path, "with-ca");
    await writeHostsToml(
      withCa,
      front.host,
      `server = "https://${front.host}"\nca = "${tls.caFile}"\n`,
    );
    {
      using resolver = new Resolver({ hostsDir: withCa, credentials, retryDelayMs: 5 });
      assert.equal((await resolver.resolve(ref)).descriptor.digest, image.root.digest);
      await using content = await openContent();
      const fetched = await fetchToContent(content.store, await resolver.fetcher(ref), layer);
      assert.equal(fetched.digest, layer.digest);
      assert.deepEqual(front.tokens, ["POST"]);
    }

    // skip_verify covers the token server too.
    const skip = join(tmp.path, "skip");
    await writeHostsToml(
      skip,
      front.host,
      `server = "https://${front.host}"\nskip_verify = true\n`,
    );
    {
      using resolver = new Resolver({ hostsDir: skip, credentials, retryDelayMs: 5 });
      assert.equal((await resolver.resolve(ref)).descriptor.digest, image.root.digest);
      assert.deepEqual(front.tokens, ["POST", "POST"]);
    }
  },
);

peerTest(
  "Resolver bounds a hanging host by dial_timeout and moves on to the next host",
  PEERS,
  async () => {
    await using tmp = await makeTempDir();
    await using registry = await startRegistry();
    await using silent = await startSilentListener();
    const image = await makeOciLayout(tmp.path);
    await pushToRegistry(image.ref, `${registry.host}/test/app:1`);
    using limit = guard(30_000);

    // A mirror that accepts the connection and never answers, then the upstream.
    const hostsDir = join(tmp.path, "certs.d");
    await writeHostsToml(
      hostsDir,
      registry.host,
      [
        `server = "http://${registry.host}"`,
        `[host."http://${silent.host}"]`,
        `  capabilities = ["pull", "resolve"]`,
        `  dial_timeout = "200ms"`,
        "",
      ].join("\n"),
    );
    {
      using resolver = new Resolver({
        hostsDir,
        maxAttempts: 2,
        retryDelayMs: 5,
        signal: limit.signal,
      });
      const ref = `${registry.host}/test/app:1`;
      assert.equal((await resolver.resolve(ref)).descriptor.digest, image.root.digest);
      // Tried as often as the retry policy allows, then left for the upstream.
      assert.equal(silent.connections, 2);
      await using content = await openContent();
      const layer = image.manifests[0]!.layers[0]!;
      const fetched = await fetchToContent(content.store, await resolver.fetcher(ref), layer);
      assert.equal(fetched.digest, layer.digest);
      assert.equal(silent.connections, 4);
    }

    // Alone, the hanging host fails with Unavailable naming it, over http and https (where the
    // TLS handshake hangs), for requests without a body and for uploads.
    for (const scheme of ["http", "https"]) {
      const alone = join(tmp.path, `alone-${scheme}`);
      await writeHostsToml(
        alone,
        silent.host,
        `server = "${scheme}://${silent.host}"\nskip_verify = true\ndial_timeout = "150ms"\n`,
      );
      using resolver = new Resolver({
        hostsDir: alone,
        maxAttempts: 2,
        retryDelayMs: 5,
        signal: limit.signal,
      });
      const check = (err: Error): boolean => {
        assert.ok(err instanceof Unavailable, String(err));
        assert.ok(err.message.includes(`cannot reach "${silent.host}"`), err.message);
        assert.match(err.message, /timed out after 150 ms \(dial_timeout\) \(2 attempts\)/);
        return true;
      };
      await assert.rejects(resolver.resolve(`${silent.host}/test/app:1`), check);
      if (scheme === "https") {
        // A manifest upload has a body: the timeout bounds the connection and TLS handshake.
        const manifest = image.manifests[0]!.descriptor;
        const pusher = await resolver.pusher(`${silent.host}/test/app:1`);
        await assert.rejects(pusher.push(manifest, image.blobs.get(manifest.digest)!), check);
      }
    }
  },
);

peerTest(
  "Resolver tries the client certificates of hosts.toml in order until the registry takes one",
  PEERS,
  async () => {
    await using tmp = await makeTempDir();
    const dirA = join(tmp.path, "a");
    const dirB = join(tmp.path, "b");
    await Deno.mkdir(dirA);
    await Deno.mkdir(dirB);
    const tls = await makeTlsFiles(dirA);
    await makeTlsFiles(dirB);
    const good = await makeClientCert(dirA, "client");
    const other = await makeClientCert(dirB, "client");
    await using registry = await startRegistry({
      tls: {
        certFile: join(dirA, "server.pem"),
        keyFile: join(dirA, "server.key"),
        clientCaFiles: [tls.caFile],
      },
    });
    const image = await makeOciLayout(tmp.path);
    const pair = (c: { certFile: string; keyFile: string }): string =>
      `["${c.certFile}", "${c.keyFile}"]`;

    // The first certificate is signed by a CA the registry does not know: the second is used.
    const hostsDir = join(tmp.path, "certs.d");
    await writeHostsToml(
      hostsDir,
      registry.host,
      [
        `server = "https://${registry.host}"`,
        `ca = "${tls.caFile}"`,
        `client = [${pair(other)}, ${pair(good)}]`,
        "",
      ].join("\n"),
    );
    {
      using resolver = new Resolver({ hostsDir, retryDelayMs: 5 });
      const ref = `${registry.host}/test/mtls:1`;
      const pusher = await resolver.pusher(ref);
      const manifest = image.manifests[0]!;
      const config = manifest.config;
      const layer = manifest.layers[0]!;
      await pusher.push(config, image.blobs.get(config.digest)!);
      // A streamed upload goes through node:https with the chosen certificate.
      const data = image.blobs.get(layer.digest)!;
      await pusher.push(layer, () => new Blob([new Uint8Array(data)]).stream());
      await pusher.push(manifest.descriptor, image.blobs.get(manifest.descriptor.digest)!, {
        tag: "1",
      });
      assert.equal((await resolver.resolve(ref)).descriptor.digest, manifest.descriptor.digest);
      await using content = await openContent();
      const fetched = await fetchToContent(content.store, await resolver.fetcher(ref), layer);
      assert.equal(fetched.digest, layer.digest);
    }

    // Only certificates the registry refuses: one clear error, without retries.
    const refused = join(tmp.path, "refused");
    await writeHostsToml(
      refused,
      registry.host,
      `server = "https://${registry.host}"\nca = "${tls.caFile}"\nclient = [${pair(other)}]\n`,
    );
    using resolver = new Resolver({ hostsDir: refused, retryDelayMs: 5 });
    await assert.rejects(resolver.resolve(`${registry.host}/test/mtls:1`), (err: Error) => {
      assert.ok(err instanceof Unavailable, String(err));
      assert.ok(
        err.message.includes(`the server refused the client certificate "${other.certFile}"`),
        err.message,
      );
      assert.doesNotMatch(err.message, /attempts/);
      return true;
    });
  },
);

peerTest(
  "Resolver keeps node:https connections alive per host and closes them with the resolver",
  PEERS,
  async () => {
    await using tmp = await makeTempDir();
    await using registry = await startRegistry();
    const tls = await makeTlsFiles(tmp.path);
    const image = await makeOciLayout(tmp.path);
    await pushToRegistry(image.ref, `${registry.host}/test/app:1`);
    await using proxy = await startFaultProxy(registry.host, {}, {
      tls: { cert: tls.cert, key: tls.key },
    });
    await using counter = await startTcpForwarder(proxy.host);
    const hostsDir = join(tmp.path, "certs.d");
    // skip_verify sends every request through node:https.
    await writeHostsToml(
      hostsDir,
      counter.host,
      `server = "https://${counter.host}"\nskip_verify = true\n`,
    );
    using resolver = new Resolver({ hostsDir });
    const ref = `${counter.host}/test/app:1`;
    assert.equal((await resolver.resolve(ref)).descriptor.digest, image.root.digest);
    await using content = await openContent();
    const fetcher = await resolver.fetcher(ref);
    const manifest = image.manifests[0]!;
    for (const desc of [manifest.config, ...manifest.layers]) {
      assert.equal((await fetchToContent(content.store, fetcher, desc)).digest, desc.digest);
    }
    const pusher = await resolver.pusher(`${counter.host}/test/app:2`);
    assert.equal(await pusher.exists(manifest.config), true);
    assert.ok(proxy.requests.length >= 4, String(proxy.requests.length));
    assert.equal(counter.connections, 1);
    assert.equal(counter.open, 1);
    // Closing the resolver closes the kept connection.
    resolver.close();
    for (let i = 0; i < 250 && counter.open > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(counter.open, 0);
  },
);
