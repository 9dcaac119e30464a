import assert from "node:assert/strict";
import { FailedPrecondition, InvalidArgument, NotFound, Unavailable } from "../../errors.ts";
import type { Descriptor } from "../../images/types.ts";
import { type Fetcher, fetchToContent, makeRefKey, Resolver } from "../../remotes/mod.ts";
import { makeTempDir, peerTest } from "../_peers.ts";
import {
  closedPort,
  makeOciLayout,
  openContent,
  pushToRegistry,
  startFaultProxy,
  startRegistry,
  type TestImage,
  writeHostsToml,
} from "../_registry.ts";

const PEERS = { tools: ["docker-registry", "skopeo"] };
const LAYER_SIZE = 256 * 1024;

interface Setup extends AsyncDisposable {
  image: TestImage;
  layer: Descriptor;
  /** The registry host (behind no proxy). */
  registry: string;
}

/** A registry holding a one-layer image as `test/app:1`. */
async function setup(): Promise<Setup> {
  const tmp = await makeTempDir();
  try {
    const registry = await startRegistry();
    try {
      const image = await makeOciLayout(tmp.path, { layerSize: LAYER_SIZE });
      await pushToRegistry(image.ref, `${registry.host}/test/app:1`);
      return {
        image,
        layer: image.manifests[0]!.layers[0]!,
        registry: registry.host,
        async [Symbol.asyncDispose]() {
          await registry.stop();
          await tmp.stop();
        },
      };
    } catch (err) {
      await registry.stop();
      throw err;
    }
  } catch (err) {
    await tmp.stop();
    throw err;
  }
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

peerTest(
  "fetchToContent() commits a layer and returns the existing blob afterwards",
  PEERS,
  async () => {
    await using s = await setup();
    await using content = await openContent();
    await using proxy = await startFaultProxy(s.registry);
    using resolver = new Resolver();
    const fetcher = await resolver.fetcher(`${proxy.host}/test/app:1`);
    const progress: number[] = [];
    const info = await fetchToContent(content.store, fetcher, s.layer, {
      labels: { "test.label": "yes" },
      onProgress: (offset, total) => {
        assert.equal(total, s.layer.size);
        progress.push(offset);
      },
    });
    assert.equal(info.digest, s.layer.digest);
    assert.equal(info.size, s.layer.size);
    assert.deepEqual(info.labels, { "test.label": "yes" });
    assert.equal(progress.at(-1), s.layer.size);
    assert.deepEqual(
      await content.store.readBlob(s.layer.digest),
      s.image.blobs.get(s.layer.digest),
    );
    const requests = proxy.requests.length;

    const again = await fetchToContent(content.store, fetcher, s.layer);
    assert.equal(again.digest, s.layer.digest);
    assert.equal(proxy.requests.length, requests);
    assert.deepEqual(await content.store.listIngests(), []);
  },
);

peerTest(
  "fetchToContent() survives a connection dropped in the middle of a blob",
  PEERS,
  async () => {
    await using s = await setup();
    await using content = await openContent();
    await using proxy = await startFaultProxy(s.registry, {
      dropBlob: { digest: s.layer.digest, afterBytes: 50_000 },
    });
    using resolver = new Resolver({ retryDelayMs: 5 });
    const fetcher = await resolver.fetcher(`${proxy.host}/test/app:1`);
    const info = await fetchToContent(content.store, fetcher, s.layer);
    assert.equal(info.digest, s.layer.digest);
    const gets = proxy.requests.filter((r) => r.path.endsWith(s.layer.digest));
    assert.equal(gets.length, 2);
    assert.equal(gets[0]?.range, null);
    assert.match(gets[1]?.range ?? "", /^bytes=\d+-$/);
    assert.ok(Number(/\d+/.exec(gets[1]?.range ?? "")?.[0]) > 0);
  },
);

peerTest(
  "Fetcher.fetch() keeps reconnecting while each connection makes progress",
  PEERS,
  async () => {
    await using s = await setup();
    await using proxy = await startFaultProxy(s.registry, {
      dropBlob: { digest: s.layer.digest, afterBytes: 40_000, always: true },
    });
    using resolver = new Resolver({ retryDelayMs: 5 });
    const fetcher = await resolver.fetcher(`${proxy.host}/test/app:1`);
    const bytes = await readAll(await fetcher.fetch(s.layer));
    assert.deepEqual(bytes, s.image.blobs.get(s.layer.digest));
    const ranges = proxy.requests.filter((r) => r.path.endsWith(s.layer.digest)).map((r) =>
      r.range
    );
    assert.ok(ranges.length >= Math.ceil(s.layer.size / 40_000), String(ranges));
    assert.equal(ranges[0], null);
  },
);

peerTest("Fetcher.fetch() gives up after three reconnections without progress", PEERS, async () => {
  await using s = await setup();
  // Ranges are ignored and every answer drops at the same byte: no progress after the first.
  await using proxy = await startFaultProxy(s.registry, {
    dropBlob: { digest: s.layer.digest, afterBytes: 40_000, always: true },
    ignoreRange: true,
  });
  using resolver = new Resolver({ retryDelayMs: 5 });
  const fetcher = await resolver.fetcher(`${proxy.host}/test/app:1`);
  await assert.rejects(readAll(await fetcher.fetch(s.layer)), (err: Error) => {
    assert.ok(err instanceof Unavailable, String(err));
    assert.match(err.message, /without progress/);
    return true;
  });
  // The first answer made progress; the next four did not, and the fourth failure ends it.
  assert.equal(proxy.count(s.layer.digest, "GET"), 5);
});

peerTest("Fetcher.fetch() drops the start of a 200 answer to a range request", PEERS, async () => {
  await using s = await setup();
  await using proxy = await startFaultProxy(s.registry, { ignoreRange: true });
  using resolver = new Resolver();
  const fetcher = await resolver.fetcher(`${proxy.host}/test/app:1`);
  const offset = 12345;
  const tail = await readAll(await fetcher.fetch(s.layer, { offset }));
  assert.deepEqual(tail, s.image.blobs.get(s.layer.digest)?.subarray(offset));
  assert.equal(proxy.requests.at(-1)?.range, `bytes=${offset}-`);
  // At the end: an empty stream without a request.
  const count = proxy.requests.length;
  assert.equal((await readAll(await fetcher.fetch(s.layer, { offset: s.layer.size }))).length, 0);
  assert.equal(proxy.requests.length, count);
  await assert.rejects(fetcher.fetch(s.layer, { offset: s.layer.size + 1 }), InvalidArgument);
});

peerTest("fetchToContent() resumes a partial ingest with a range request", PEERS, async () => {
  await using s = await setup();
  await using content = await openContent();
  const bytes = s.image.blobs.get(s.layer.digest)!;
  // A previous run wrote the first 100000 bytes and stopped.
  const partial = await content.store.writer({
    ref: makeRefKey(s.layer),
    expected: { digest: s.layer.digest, size: s.layer.size },
  });
  await partial.write(bytes.subarray(0, 100_000));
  await partial.close();

  await using proxy = await startFaultProxy(s.registry);
  using resolver = new Resolver();
  const fetcher = await resolver.fetcher(`${proxy.host}/test/app:1`);
  const info = await fetchToContent(content.store, fetcher, s.layer);
  assert.equal(info.digest, s.layer.digest);
  assert.deepEqual(
    proxy.requests.filter((r) => r.path.endsWith(s.layer.digest)).map((r) => r.range),
    ["bytes=100000-"],
  );
  assert.deepEqual(await content.store.listIngests(), []);
});

peerTest(
  "fetchToContent() tells when its ingest file is open; a descriptor opened then reads the blob",
  PEERS,
  async () => {
    await using s = await setup();
    await using content = await openContent();
    const bytes = s.image.blobs.get(s.layer.digest)!;
    const ref = makeRefKey(s.layer);
    // A previous run wrote the first 100000 bytes and stopped.
    const partial = await content.store.writer({
      ref,
      expected: { digest: s.layer.digest, size: s.layer.size },
    });
    await partial.write(bytes.subarray(0, 100_000));
    await partial.close();

    using resolver = new Resolver();
    const fetcher = await resolver.fetcher(`${s.registry}/test/app:1`);
    const opened: { ref: string; size: number; file: Deno.FsFile }[] = [];
    try {
      await fetchToContent(content.store, fetcher, s.layer, {
        onOpen(r) {
          const path = content.store.ingestPath(r);
          opened.push({ ref: r, size: Deno.statSync(path).size, file: Deno.openSync(path) });
        },
      });
      assert.deepEqual(opened.map((o) => [o.ref, o.size]), [[ref, 100_000]]);
      // The commit renamed the file into the blob store: the descriptor follows it.
      assert.throws(() => Deno.statSync(content.store.ingestPath(ref)), Deno.errors.NotFound);
      assert.deepEqual(await readAll(opened[0]!.file.readable), bytes);
    } finally {
      for (const o of opened) {
        try {
          o.file.close();
        } catch {
          // Closed by its readable.
        }
      }
    }
  },
);

peerTest(
  "fetchToContent() keeps the bytes of a stopped download, and no ingest without a byte",
  PEERS,
  async () => {
    await using s = await setup();
    await using content = await openContent();
    const ref = makeRefKey(s.layer);
    const never = Promise.withResolvers<void>();
    await using proxy = await startFaultProxy(s.registry, {
      holdBlob: { digest: s.layer.digest, afterBytes: 100_000, until: never.promise },
    });
    using resolver = new Resolver();
    const fetcher = await resolver.fetcher(`${proxy.host}/test/app:1`);

    // Content missing on the registry: no byte, no ingest.
    const missing = { ...s.layer, digest: `sha256:${"1".repeat(64)}` };
    await assert.rejects(fetchToContent(content.store, fetcher, missing), NotFound);
    assert.deepEqual(await content.store.listIngests(), []);

    // Aborted once the ingest is open, before its first byte: no ingest either.
    const early = new AbortController();
    await assert.rejects(
      fetchToContent(content.store, fetcher, s.layer, {
        signal: early.signal,
        onOpen: () => early.abort(new Error("stop before a byte")),
      }),
      /stop before a byte/,
    );
    assert.deepEqual(await content.store.listIngests(), []);

    // Aborted after 100000 bytes: they stay for the next download to resume.
    const late = new AbortController();
    await assert.rejects(
      fetchToContent(content.store, fetcher, s.layer, {
        signal: late.signal,
        onProgress: (current) => {
          if (current >= 100_000) late.abort(new Error("stop after some bytes"));
        },
      }),
      /stop after some bytes/,
    );
    assert.deepEqual(
      (await content.store.listIngests()).map((i) => [i.ref, i.offset]),
      [[ref, 100_000]],
    );
    never.resolve();
  },
);

peerTest("fetchToContent() commits nothing from a corrupted blob", PEERS, async () => {
  await using s = await setup();
  await using content = await openContent();
  await using proxy = await startFaultProxy(s.registry, {
    corruptBlob: { digest: s.layer.digest },
  });
  using resolver = new Resolver();
  const fetcher = await resolver.fetcher(`${proxy.host}/test/app:1`);
  await assert.rejects(fetchToContent(content.store, fetcher, s.layer), (err: Error) => {
    assert.ok(err instanceof FailedPrecondition, String(err));
    assert.ok(err.message.includes(s.layer.digest), err.message);
    return true;
  });
  await assert.rejects(content.store.info(s.layer.digest), NotFound);
  assert.deepEqual(await content.store.listIngests(), []);

  // Once the registry behaves, the same ref downloads cleanly.
  proxy.faults = {};
  assert.equal((await fetchToContent(content.store, fetcher, s.layer)).digest, s.layer.digest);
});

peerTest(
  "Fetcher.fetch() fails when the server sends more than the descriptor's size",
  PEERS,
  async () => {
    await using s = await setup();
    using resolver = new Resolver();
    const fetcher = await resolver.fetcher(`${s.registry}/test/app:1`);
    const short = { ...s.layer, size: s.layer.size - 10 };
    await assert.rejects(readAll(await fetcher.fetch(short)), (err: Error) => {
      assert.ok(err instanceof FailedPrecondition, String(err));
      assert.match(err.message, /more than/);
      return true;
    });
  },
);

peerTest("Fetcher.fetch() reports content missing on every host as NotFound", PEERS, async () => {
  await using s = await setup();
  using resolver = new Resolver();
  const fetcher = await resolver.fetcher(`${s.registry}/test/app:1`);
  const missing = { ...s.layer, digest: `sha256:${"1".repeat(64)}` };
  await assert.rejects(fetcher.fetch(missing), (err: Error) => {
    assert.ok(err instanceof NotFound, String(err));
    assert.match(err.message, /^Cannot fetch content descriptor "sha256:1{64}"/);
    return true;
  });
});

peerTest(
  "Fetcher.fetch() falls back from a failing or down mirror to the upstream",
  PEERS,
  async () => {
    await using s = await setup();
    await using tmp = await makeTempDir();
    await using failing = await startFaultProxy(s.registry, {
      failFirst: { count: Infinity, retryAfter: 0 },
    });
    const down = closedPort();
    await writeHostsToml(
      tmp.path,
      s.registry,
      `[host."http://${down}"]\n[host."http://${failing.host}"]\n`,
    );
    using resolver = new Resolver({ hostsDir: tmp.path, retryDelayMs: 5, maxAttempts: 2 });
    const fetcher = await resolver.fetcher(`${s.registry}/test/app:1`);
    const bytes = await readAll(await fetcher.fetch(s.layer));
    assert.deepEqual(bytes, s.image.blobs.get(s.layer.digest));
    assert.equal(failing.count(s.layer.digest, "GET"), 2);
    assert.ok(
      failing.requests.every((r) => r.path.includes(`ns=${encodeURIComponent(s.registry)}`)),
    );

    // When every host fails, the error names the status and the registry's message.
    await writeHostsToml(tmp.path, "127.0.0.1:1", `server = "http://${failing.host}"\n`);
    using only = new Resolver({ hostsDir: tmp.path, retryDelayMs: 5, maxAttempts: 2 });
    const broken = await only.fetcher("127.0.0.1:1/test/app:1");
    await assert.rejects(broken.fetch(s.layer), (err: Error) => {
      assert.ok(err instanceof Unavailable, String(err));
      assert.match(err.message, /answered 503 Service Unavailable \(UNAVAILABLE: injected 503\)/);
      assert.match(err.message, /after 2 attempts/);
      return true;
    });
  },
);

peerTest("Fetcher.fetch() tries the descriptor's urls first", PEERS, async () => {
  await using s = await setup();
  await using proxy = await startFaultProxy(s.registry);
  using resolver = new Resolver();
  const fetcher = await resolver.fetcher(`${s.registry}/test/app:1`);
  const missing = `${proxy.url}/v2/test/app/blobs/sha256:${"2".repeat(64)}`;
  const good = `${proxy.url}/v2/test/app/blobs/${s.layer.digest}`;
  const desc = { ...s.layer, urls: ["ftp://example/x", missing, good] };
  assert.deepEqual(await readAll(await fetcher.fetch(desc)), s.image.blobs.get(s.layer.digest));
  assert.deepEqual(proxy.requests.map((r) => `${r.method} ${r.status}`), ["GET 404", "GET 200"]);
});

peerTest("Fetcher.fetch() holds a download permit until the body is read", PEERS, async () => {
  await using s = await setup();
  using resolver = new Resolver({ maxConcurrentDownloads: 1 });
  const fetcher = await resolver.fetcher(`${s.registry}/test/app:1`);
  const config = s.image.manifests[0]!.config;
  const first = await fetcher.fetch(s.layer);
  let secondOpened = false;
  const second = fetcher.fetch(config).then((stream) => {
    secondOpened = true;
    return stream;
  });
  // Let any pending work run: the second fetch must still wait for the permit.
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(secondOpened, false);
  assert.deepEqual(await readAll(first), s.image.blobs.get(s.layer.digest));
  assert.deepEqual(await readAll(await second), s.image.blobs.get(config.digest));

  // A cancelled stream gives its permit back too.
  const third = await fetcher.fetch(s.layer);
  await third.cancel();
  assert.deepEqual(await readAll(await fetcher.fetch(config)), s.image.blobs.get(config.digest));
});

Deno.test("fetchToContent() refuses a descriptor of size 0", async () => {
  await using content = await openContent();
  const fetcher: Fetcher = {
    fetch: () => Promise.reject(new Error("must not fetch")),
  };
  const desc = {
    mediaType: "application/vnd.oci.image.layer.v1.tar",
    digest: `sha256:${"3".repeat(64)}`,
    size: 0,
  };
  await assert.rejects(fetchToContent(content.store, fetcher, desc), InvalidArgument);
});

Deno.test("fetchToContent() uses complete embedded data without fetching", async () => {
  await using content = await openContent();
  const data = new TextEncoder().encode('{"embedded":true}');
  const digest = `sha256:${
    Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", data)))
      .map((b) => b.toString(16).padStart(2, "0")).join("")
  }`;
  const fetcher: Fetcher = { fetch: () => Promise.reject(new Error("must not fetch")) };
  const desc = {
    mediaType: "application/vnd.oci.image.config.v1+json",
    digest,
    size: data.length,
    data: btoa(String.fromCharCode(...data)),
  };
  assert.equal((await fetchToContent(content.store, fetcher, desc)).digest, digest);
});

async function sha256Of(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return `sha256:${Array.from(hash).map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function blobOf(size: number): Uint8Array<ArrayBuffer> {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 7 + (i >> 11)) & 0xff;
  return data;
}

Deno.test("fetchToContent() reads a byte stream into one buffer of its own", async () => {
  await using content = await openContent();
  const data = blobOf(3_000_000);
  const desc = {
    mediaType: "application/vnd.oci.image.layer.v1.tar",
    digest: await sha256Of(data),
    size: data.length,
  };
  const buffers = new Set<number>();
  let defaultReads = 0;
  const fetcher: Fetcher = {
    fetch: () => {
      let pos = 0;
      return Promise.resolve(
        new ReadableStream({
          type: "bytes",
          pull(controller) {
            const request = controller.byobRequest;
            if (pos === data.length) {
              controller.close();
              request?.respond(0);
              return;
            }
            if (request === null) {
              defaultReads++;
              const n = Math.min(50_000, data.length - pos);
              controller.enqueue(data.slice(pos, pos + n));
              pos += n;
              return;
            }
            const view = request.view!;
            buffers.add(view.buffer.byteLength);
            // Less than asked for, as a network read gives what has arrived.
            const n = Math.min(view.byteLength, 70_000, data.length - pos);
            view.set(data.subarray(pos, pos + n));
            pos += n;
            request.respond(n);
          },
        }),
      );
    },
  };
  const info = await fetchToContent(content.store, fetcher, desc);
  assert.equal(info.digest, desc.digest);
  assert.deepEqual(await content.store.readBlob(desc.digest), data);
  assert.equal(defaultReads, 0, "every read went into the reader's buffer");
  assert.equal(buffers.size, 1, "one buffer size for the whole download");
});

Deno.test("fetchToContent() reads a stream that is not a byte stream chunk by chunk", async () => {
  await using content = await openContent();
  const data = blobOf(1_500_000);
  const desc = {
    mediaType: "application/vnd.oci.image.layer.v1.tar",
    digest: await sha256Of(data),
    size: data.length,
  };
  const fetcher: Fetcher = {
    fetch: () => {
      let pos = 0;
      return Promise.resolve(
        new ReadableStream<Uint8Array>({
          pull(controller) {
            if (pos === data.length) return controller.close();
            controller.enqueue(data.slice(pos, pos + 100_000));
            pos += 100_000;
          },
        }),
      );
    },
  };
  assert.equal((await fetchToContent(content.store, fetcher, desc)).digest, desc.digest);
  assert.deepEqual(await content.store.readBlob(desc.digest), data);
});

peerTest(
  "Fetcher.fetch() gives a byte stream: a BYOB reader's buffer is filled in place",
  PEERS,
  async () => {
    await using s = await setup();
    using resolver = new Resolver();
    const fetcher = await resolver.fetcher(`${s.registry}/test/app:1`);
    const reader = (await fetcher.fetch(s.layer)).getReader({ mode: "byob" });
    let buffer = new Uint8Array(10_000);
    const parts: Uint8Array<ArrayBuffer>[] = [];
    for (;;) {
      const r = await reader.read(buffer);
      if (r.done) break;
      assert.ok(r.value.length <= 10_000);
      assert.equal(r.value.buffer.byteLength, 10_000, "the reader's own buffer");
      parts.push(r.value.slice());
      buffer = new Uint8Array(r.value.buffer);
    }
    const got = new Uint8Array(await new Blob(parts).arrayBuffer());
    assert.deepEqual(got, s.image.blobs.get(s.layer.digest));
  },
);

Deno.test("makeRefKey() prefixes the digest by the kind of content", () => {
  const digest = `sha256:${"4".repeat(64)}`;
  const key = (mediaType: string, annotations?: Record<string, string>): string =>
    makeRefKey({ mediaType, digest, size: 1, ...(annotations ? { annotations } : {}) });
  assert.equal(key("application/vnd.oci.image.manifest.v1+json"), `manifest-${digest}`);
  assert.equal(key("application/vnd.docker.distribution.manifest.list.v2+json"), `index-${digest}`);
  assert.equal(key("application/vnd.docker.image.rootfs.diff.tar.gzip"), `layer-${digest}`);
  assert.equal(key("application/vnd.oci.image.config.v1+json"), `config-${digest}`);
  assert.equal(key("application/vnd.in-toto+json"), `attestation-${digest}`);
  assert.equal(key("application/octet-stream"), `unknown-${digest}`);
  assert.equal(
    key("application/vnd.oci.image.index.v1+json", { "org.opencontainers.image.ref.name": "v1" }),
    `index-v1@${digest}`,
  );
});

Deno.test("Fetcher.fetch() follows a redirect to storage without sending the credentials there", async () => {
  const data = new TextEncoder().encode("blob bytes stored elsewhere");
  const digest = `sha256:${
    Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", data)))
      .map((b) => b.toString(16).padStart(2, "0")).join("")
  }`;
  const storageSaw: (string | null)[] = [];
  const storage = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    storageSaw.push(req.headers.get("authorization"));
    return new Response(data);
  });
  const registrySaw: (string | null)[] = [];
  const registry = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    registrySaw.push(req.headers.get("authorization"));
    if (req.headers.get("authorization") === null) {
      return new Response(null, {
        status: 401,
        headers: { "www-authenticate": 'Basic realm="fake"' },
      });
    }
    return new Response(null, {
      status: 307,
      headers: { location: `http://127.0.0.1:${storage.addr.port}/data?sig=abc` },
    });
  });
  try {
    using resolver = new Resolver({
      plainHttp: true,
      credentials: () => Promise.resolve({ username: "u", password: "p" }),
    });
    const fetcher = await resolver.fetcher(`127.0.0.1:${registry.addr.port}/test/app:1`);
    const desc = { mediaType: "application/octet-stream", digest, size: data.length };
    assert.deepEqual(await readAll(await fetcher.fetch(desc)), data);
    assert.deepEqual(registrySaw, [null, `Basic ${btoa("u:p")}`]);
    assert.deepEqual(storageSaw, [null]);
  } finally {
    await registry.shutdown();
    await storage.shutdown();
  }
});

peerTest("Fetcher.fetch() stops on abort and gives the download permit back", PEERS, async () => {
  await using s = await setup();
  using resolver = new Resolver({ maxConcurrentDownloads: 1 });
  const fetcher = await resolver.fetcher(`${s.registry}/test/app:1`);
  const controller = new AbortController();
  const stream = await fetcher.fetch(s.layer, { signal: controller.signal });
  const reader = stream.getReader();
  assert.equal((await reader.read()).done, false);
  controller.abort(new Error("stop here"));
  await assert.rejects(
    (async () => {
      for (;;) if ((await reader.read()).done) break;
    })(),
    /stop here/,
  );
  const config = s.image.manifests[0]!.config;
  assert.deepEqual(await readAll(await fetcher.fetch(config)), s.image.blobs.get(config.digest));
  await assert.rejects(
    fetcher.fetch(config, { signal: AbortSignal.abort(new Error("already")) }),
    /already/,
  );
});

peerTest("fetchToContent() waits for another writer of the same ingest", PEERS, async () => {
  await using s = await setup();
  await using content = await openContent();
  const held = await content.store.writer({
    ref: makeRefKey(s.layer),
    expected: { digest: s.layer.digest, size: s.layer.size },
  });
  using resolver = new Resolver();
  const fetcher = await resolver.fetcher(`${s.registry}/test/app:1`);
  let settled = false;
  const pending = fetchToContent(content.store, fetcher, s.layer).finally(() => {
    settled = true;
  });
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(settled, false);
  await held.write(s.image.blobs.get(s.layer.digest)!.subarray(0, 1000));
  await held.close();
  assert.equal((await pending).digest, s.layer.digest);
});
