import assert from "node:assert/strict";
import { PermissionDenied } from "../../errors.ts";
import { fetchToContent, Resolver } from "../../remotes/mod.ts";
import { makeTempDir, peerTest } from "../_peers.ts";
import { makeOciLayout, openContent, pushToRegistry, startRegistry } from "../_registry.ts";

const PEERS = { tools: ["docker-registry", "skopeo"] };
const USER = "bearer-user";
const PASSWORD = "Bearer-pa55";
const TOKEN = "tok-0123456789abcdef-secret";

interface TokenFront extends AsyncDisposable {
  host: string;
  /** Token requests: `METHOD scope`. */
  tokens: string[];
}

/**
 * A registry front that wants a Bearer token from its own token server (`/token`), which grants
 * one for USER:PASSWORD (form POST or Basic GET) and anonymously for pulls of `test/public`.
 */
function startTokenFront(upstream: string): TokenFront {
  const tokens: string[] = [];
  let host = "";
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/token") {
      let user = "";
      let password = "";
      let scope = url.searchParams.getAll("scope").join(" ");
      if (req.method === "POST") {
        const form = new URLSearchParams(await req.text());
        user = form.get("username") ?? "";
        password = form.get("password") ?? "";
        scope = form.get("scope") ?? "";
      } else {
        const basic = req.headers.get("authorization")?.replace(/^Basic /, "");
        if (basic !== undefined) [user = "", password = ""] = atob(basic).split(":");
      }
      tokens.push(`${req.method} ${scope}`);
      const anonymousPull = user === "" && /^repository:test\/public:pull$/.test(scope);
      if (!anonymousPull && (user !== USER || password !== PASSWORD)) {
        return Response.json({ errors: [{ code: "UNAUTHORIZED", message: "bad credentials" }] }, {
          status: 401,
        });
      }
      return Response.json({ token: TOKEN, access_token: TOKEN, expires_in: 300 });
    }
    if (req.headers.get("authorization") !== `Bearer ${TOKEN}`) {
      await req.body?.cancel();
      return new Response(
        JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }),
        {
          status: 401,
          headers: {
            "www-authenticate": `Bearer realm="http://${host}/token",service="front"`,
          },
        },
      );
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
  host = `127.0.0.1:${server.addr.port}`;
  return { host, tokens, [Symbol.asyncDispose]: () => server.shutdown() };
}

peerTest("Resolver gets, caches and uses Bearer tokens", PEERS, async () => {
  await using tmp = await makeTempDir();
  await using registry = await startRegistry();
  const image = await makeOciLayout(tmp.path);
  await pushToRegistry(image.ref, `${registry.host}/test/private:1`);
  await pushToRegistry(image.ref, `${registry.host}/test/public:1`);
  await using front = startTokenFront(registry.host);

  using resolver = new Resolver({
    credentials: () => Promise.resolve({ username: USER, password: PASSWORD }),
  });
  const ref = `${front.host}/test/private:1`;
  const { descriptor } = await resolver.resolve(ref);
  assert.equal(descriptor.digest, image.root.digest);
  await using content = await openContent();
  const fetcher = await resolver.fetcher(ref);
  const manifest = image.manifests[0]!;
  for (const desc of [descriptor, manifest.config, ...manifest.layers]) {
    assert.equal((await fetchToContent(content.store, fetcher, desc)).digest, desc.digest);
  }
  assert.deepEqual(front.tokens, ["POST repository:test/private:pull"]);

  using anonymous = new Resolver();
  assert.equal(
    (await anonymous.resolve(`${front.host}/test/public:1`)).descriptor.digest,
    image.root.digest,
  );
  assert.deepEqual(front.tokens.slice(1), ["GET repository:test/public:pull"]);
});

peerTest("Resolver reports refused Bearer credentials without leaking them", PEERS, async () => {
  await using registry = await startRegistry();
  await using front = startTokenFront(registry.host);
  const wrong = `${PASSWORD}-wrong`;
  using resolver = new Resolver({
    credentials: () => Promise.resolve({ username: USER, password: wrong }),
  });
  const check = (err: Error): boolean => {
    assert.ok(err instanceof PermissionDenied, String(err));
    assert.match(err.message, /authorization failed/);
    for (const secret of [wrong, TOKEN, btoa(`${USER}:${wrong}`)]) {
      assert.ok(!err.message.includes(secret), err.message);
      assert.ok(!String(err.stack).includes(secret), String(err.stack));
    }
    return true;
  };
  await assert.rejects(resolver.resolve(`${front.host}/test/private:1`), check);
  const fetcher = await resolver.fetcher(`${front.host}/test/private:1`);
  await assert.rejects(
    fetcher.fetch({
      mediaType: "application/octet-stream",
      digest: `sha256:${"5".repeat(64)}`,
      size: 1,
    }),
    check,
  );

  using anonymous = new Resolver();
  await assert.rejects(anonymous.resolve(`${front.host}/test/private:1`), check);
});
