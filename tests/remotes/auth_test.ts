import assert from "node:assert/strict";
import { join } from "node:path";
import { Authorizer, parseWwwAuthenticate } from "../../remotes/auth.ts";
import { type Credentials, credentialsFromDockerConfig } from "../../remotes/credentials.ts";
import { FailedPrecondition, InvalidArgument, NotImplemented } from "../../errors.ts";
import { makeTempDir, peerTest } from "../_peers.ts";
import { startRegistry, type TestRegistry } from "../_registry.ts";

// ---------------------------------------------------------------------------------------------
// parseWwwAuthenticate

const parseCases: [string, string, ReturnType<typeof parseWwwAuthenticate>][] = [
  ["basic", 'Basic realm="Registry Realm"', [{
    scheme: "basic",
    params: { realm: "Registry Realm" },
  }]],
  [
    "bearer with several params",
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
    [{
      scheme: "bearer",
      params: {
        realm: "https://auth.docker.io/token",
        service: "registry.docker.io",
        scope: "repository:library/alpine:pull",
      },
    }],
  ],
  ["scheme and keys are lower-cased", 'BEARER Realm="x", SERVICE=reg', [{
    scheme: "bearer",
    params: { realm: "x", service: "reg" },
  }]],
  ["escapes in quoted strings", 'Basic realm="a \\"b\\" \\\\ c, d"', [{
    scheme: "basic",
    params: { realm: 'a "b" \\ c, d' },
  }]],
  ["several challenges", 'Basic realm="r1", Bearer realm="https://a/t", service="s"', [
    { scheme: "basic", params: { realm: "r1" } },
    { scheme: "bearer", params: { realm: "https://a/t", service: "s" } },
  ]],
  ["empty list elements and spaces around =", ' , Bearer realm = "r" ,, error=invalid_token ,', [{
    scheme: "bearer",
    params: { realm: "r", error: "invalid_token" },
  }]],
  ["scheme without params", "Negotiate, Basic realm=r", [
    { scheme: "negotiate", params: {} },
    { scheme: "basic", params: { realm: "r" } },
  ]],
  ["token68 is dropped", "Negotiate abc/+d==, Basic realm=r", [
    { scheme: "negotiate", params: {} },
    { scheme: "basic", params: { realm: "r" } },
  ]],
];

for (const [name, header, expected] of parseCases) {
  Deno.test(`parseWwwAuthenticate() parses ${name}`, () => {
    assert.deepEqual(parseWwwAuthenticate(header), expected);
  });
}

const malformed: string[] = [
  "",
  " , ",
  'Basic realm="unterminated',
  'Basic realm="x" junk',
  "Basic realm=",
  'Basic realm="a", realm="b"',
  '"quoted" realm=x',
  "Basic realm=x; y",
];

for (const header of malformed) {
  Deno.test(`parseWwwAuthenticate() rejects ${JSON.stringify(header)}`, () => {
    assert.throws(() => parseWwwAuthenticate(header), InvalidArgument);
  });
}

// ---------------------------------------------------------------------------------------------
// credentialsFromDockerConfig

Deno.test("credentialsFromDockerConfig() reads auths entries by host", async () => {
  await using tmp = await makeTempDir();
  const path = join(tmp.path, "config.json");
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      auths: {
        "https://index.docker.io/v1/": { auth: btoa("hubuser:hub:pass") },
        "registry.example:5000": { auth: btoa("alice:wonder") },
        "https://other.example/v1/": { username: "bob", password: "builder" },
        "oauth.example": { auth: "", identitytoken: "refresh-me" },
      },
      credHelpers: { "helped.example": "secretservice" },
      credsStore: "desktop",
    }),
  );
  assert.deepEqual(await credentialsFromDockerConfig("docker.io", { path }), {
    username: "hubuser",
    password: "hub:pass",
  });
  assert.deepEqual(await credentialsFromDockerConfig("registry.example:5000", { path }), {
    username: "alice",
    password: "wonder",
  });
  assert.deepEqual(await credentialsFromDockerConfig("other.example", { path }), {
    username: "bob",
    password: "builder",
  });
  assert.deepEqual(await credentialsFromDockerConfig("oauth.example", { path }), {
    identityToken: "refresh-me",
  });
  assert.equal(await credentialsFromDockerConfig("helped.example", { path }), undefined);
  assert.equal(await credentialsFromDockerConfig("registry.example", { path }), undefined);
});

Deno.test("credentialsFromDockerConfig() uses $DOCKER_CONFIG and tolerates a missing file", async () => {
  await using tmp = await makeTempDir();
  const previous = Deno.env.get("DOCKER_CONFIG");
  try {
    Deno.env.set("DOCKER_CONFIG", tmp.path);
    assert.equal(await credentialsFromDockerConfig("registry.example"), undefined);
    await Deno.writeTextFile(
      join(tmp.path, "config.json"),
      JSON.stringify({ auths: { "registry.example": { auth: btoa("u:p") } } }),
    );
    assert.deepEqual(await credentialsFromDockerConfig("registry.example"), {
      username: "u",
      password: "p",
    });
  } finally {
    if (previous === undefined) Deno.env.delete("DOCKER_CONFIG");
    else Deno.env.set("DOCKER_CONFIG", previous);
  }
});

Deno.test("credentialsFromDockerConfig() rejects malformed files", async () => {
  await using tmp = await makeTempDir();
  const path = join(tmp.path, "config.json");
  await Deno.writeTextFile(path, "{not json");
  await assert.rejects(credentialsFromDockerConfig("h", { path }), InvalidArgument);
  await Deno.writeTextFile(path, JSON.stringify({ auths: { h: { auth: btoa("nocolon") } } }));
  await assert.rejects(credentialsFromDockerConfig("h", { path }), InvalidArgument);
});

// ---------------------------------------------------------------------------------------------
// Authorizer against a real docker-registry with htpasswd Basic auth

const USER = "strata";
const PASSWORD = "s3cret-Pa55";

function startAuthRegistry(): Promise<TestRegistry> {
  return startRegistry({ htpasswd: { user: USER, password: PASSWORD } });
}

async function getV2(
  authorizer: Authorizer,
  host: string,
): Promise<{ first: number; final: number }> {
  const url = `http://${host}/v2/`;
  const first = await fetch(url);
  await first.body?.cancel();
  if (first.status !== 401) return { first: first.status, final: first.status };
  if (!await authorizer.handleChallenge(host, first, [])) {
    return { first: first.status, final: first.status };
  }
  const request = new Request(url);
  await authorizer.authorize(host, request);
  const second = await fetch(request);
  await second.body?.cancel();
  if (second.status === 401) await authorizer.handleChallenge(host, second, []);
  return { first: first.status, final: second.status };
}

peerTest(
  "Authorizer answers docker-registry's Basic challenge",
  { tools: ["docker-registry"] },
  async () => {
    await using registry = await startAuthRegistry();
    const { host } = registry;

    const anonymous = await fetch(`http://${host}/v2/`);
    await anonymous.body?.cancel();
    assert.equal(anonymous.status, 401);
    const [challenge] = parseWwwAuthenticate(anonymous.headers.get("www-authenticate") ?? "");
    assert.equal(challenge?.scheme, "basic");
    assert.equal(challenge?.params["realm"], "strata-test");

    // No credentials: the challenge cannot be answered.
    assert.deepEqual(await getV2(new Authorizer(), host), { first: 401, final: 401 });

    const good = new Authorizer({
      credentials: (h) =>
        Promise.resolve(h === host ? { username: USER, password: PASSWORD } : undefined),
    });
    assert.deepEqual(await getV2(good, host), { first: 401, final: 200 });

    const wrong = "wrong-" + PASSWORD;
    const bad = new Authorizer({
      credentials: () => Promise.resolve({ username: USER, password: wrong }),
    });
    const err = await getV2(bad, host).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof FailedPrecondition, `expected FailedPrecondition, got ${err}`);
    assert.equal(
      err.message,
      `Cannot authenticate to "${host}": the registry rejected the credentials`,
    );
    assert.ok(!String(err.stack).includes(wrong));
    assert.ok(!String(err.stack).includes(btoa(`${USER}:${wrong}`)));
  },
);

// ---------------------------------------------------------------------------------------------
// Authorizer against a token server (Bearer)

interface TokenServer extends AsyncDisposable {
  host: string;
  tokenRequests: { method: string; scope: string[]; grant?: string }[];
  /** What the fake /v2/ endpoint answers for a valid token it has seen an `error=` for. */
  invalidate: Set<string>;
}

function startTokenServer(
  options: { expiresIn?: number; postSupported?: boolean; user?: string; password?: string } = {},
): TokenServer {
  const user = options.user ?? "alice";
  const password = options.password ?? "wonderland";
  const tokenRequests: TokenServer["tokenRequests"] = [];
  const invalidate = new Set<string>();
  const issued = new Map<string, string[]>();
  let next = 0;
  const abort = new AbortController();
  let host = "";
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: abort.signal, onListen: () => {} },
    async (request) => {
      const url = new URL(request.url);
      if (url.pathname === "/token") {
        let scope: string[];
        let authorized: boolean;
        let anonymous: boolean;
        let grant: string | undefined;
        if (request.method === "POST") {
          if (options.postSupported === false) return new Response("no", { status: 404 });
          const form = new URLSearchParams(await request.text());
          scope = (form.get("scope") ?? "").split(" ").filter((s) => s !== "");
          grant = form.get("grant_type") ?? undefined;
          anonymous = false;
          authorized = grant === "password"
            ? form.get("username") === user && form.get("password") === password
            : grant === "refresh_token" && form.get("refresh_token") === "refresh-" + password;
          if (form.get("service") !== "fake-registry") return new Response("", { status: 400 });
        } else {
          scope = url.searchParams.getAll("scope");
          if (url.searchParams.get("service") !== "fake-registry") {
            return new Response("", { status: 400 });
          }
          const auth = request.headers.get("authorization");
          anonymous = auth === null;
          authorized = auth === `Basic ${btoa(`${user}:${password}`)}`;
        }
        tokenRequests.push({ method: request.method, scope, ...(grant ? { grant } : {}) });
        if (!authorized && !anonymous) return new Response("denied", { status: 401 });
        const token = `token-${next++}`;
        // Anonymous users may only pull "public/*".
        issued.set(
          token,
          scope.filter((s) => authorized || s.startsWith("repository:public/")),
        );
        // OAuth2 POST answers "access_token"; the GET endpoint answers "token".
        const body: Record<string, unknown> = request.method === "POST"
          ? { access_token: token }
          : { token };
        if (options.expiresIn !== undefined) body["expires_in"] = options.expiresIn;
        return Response.json(body);
      }
      // The fake registry: /v2/<repo>/tags/list needs "repository:<repo>:pull".
      const match = /^\/v2\/(.+)\/tags\/list$/.exec(url.pathname);
      const needed = match ? `repository:${match[1]}:pull` : undefined;
      const auth = request.headers.get("authorization") ?? "";
      const token = auth.startsWith("Bearer ") ? auth.slice(7) : "";
      const granted = issued.get(token);
      let error = "";
      if (granted !== undefined && invalidate.has(token)) error = ',error="invalid_token"';
      else if (granted !== undefined && (needed === undefined || granted.includes(needed))) {
        return Response.json({ ok: true });
      } else if (granted !== undefined) error = ',error="insufficient_scope"';
      return new Response("unauthorized", {
        status: 401,
        headers: {
          "www-authenticate": `Bearer realm="http://${host}/token",service="fake-registry"${
            needed ? `,scope="${needed}"` : ""
          }${error}`,
        },
      });
    },
  );
  host = `127.0.0.1:${server.addr.port}`;
  return {
    host,
    tokenRequests,
    invalidate,
    async [Symbol.asyncDispose]() {
      abort.abort();
      await server.finished;
    },
  };
}

/** GETs the tag list of `repo`, answering one challenge; returns the final status. */
async function tags(authorizer: Authorizer, host: string, repo: string): Promise<number> {
  const url = `http://${host}/v2/${repo}/tags/list`;
  const scope = [`repository:${repo}:pull`];
  for (let attempt = 0; attempt < 3; attempt++) {
    const request = new Request(url);
    await authorizer.authorize(host, request, { scope });
    const response = await fetch(request);
    await response.body?.cancel();
    if (response.status !== 401) return response.status;
    if (!await authorizer.handleChallenge(host, response, scope, { request: `GET ${url}` })) {
      return response.status;
    }
  }
  return 401;
}

Deno.test("Authorizer gets Bearer tokens with a password and caches them per scope set", async () => {
  await using server = startTokenServer();
  const authorizer = new Authorizer({
    credentials: () => Promise.resolve({ username: "alice", password: "wonderland" }),
  });
  assert.equal(await tags(authorizer, server.host, "team/app"), 200);
  assert.equal(await tags(authorizer, server.host, "team/app"), 200);
  assert.equal(server.tokenRequests.length, 1);
  assert.deepEqual(server.tokenRequests[0], {
    method: "POST",
    scope: ["repository:team/app:pull"],
    grant: "password",
  });
  // Another scope set: a new token, then cached too.
  assert.equal(await tags(authorizer, server.host, "team/other"), 200);
  assert.equal(await tags(authorizer, server.host, "team/other"), 200);
  assert.equal(server.tokenRequests.length, 2);
  assert.deepEqual(server.tokenRequests[1]?.scope, ["repository:team/other:pull"]);
  // The cache key is the sorted, de-duplicated scope set.
  const request = new Request(`http://${server.host}/v2/`);
  await authorizer.authorize(server.host, request, {
    scope: ["repository:team/other:pull", "repository:team/other:pull"],
  });
  assert.equal(request.headers.get("authorization"), "Bearer token-1");
  assert.equal(server.tokenRequests.length, 2);
});

Deno.test("Authorizer falls back to GET with Basic credentials when POST is unsupported", async () => {
  await using server = startTokenServer({ postSupported: false });
  const authorizer = new Authorizer({
    credentials: () => Promise.resolve({ username: "alice", password: "wonderland" }),
  });
  assert.equal(await tags(authorizer, server.host, "team/app"), 200);
  assert.deepEqual(server.tokenRequests, [{ method: "GET", scope: ["repository:team/app:pull"] }]);
});

Deno.test("Authorizer fetches anonymous tokens with GET", async () => {
  await using server = startTokenServer();
  const authorizer = new Authorizer();
  assert.equal(await tags(authorizer, server.host, "public/app"), 200);
  assert.deepEqual(server.tokenRequests, [{
    method: "GET",
    scope: ["repository:public/app:pull"],
  }]);
  // An anonymous token does not grant a private repository.
  assert.equal(await tags(authorizer, server.host, "team/app"), 401);
});

Deno.test("Authorizer uses an identity token as a refresh token", async () => {
  await using server = startTokenServer();
  const creds: Credentials = { identityToken: "refresh-wonderland" };
  const authorizer = new Authorizer({ credentials: () => Promise.resolve(creds) });
  assert.equal(await tags(authorizer, server.host, "team/app"), 200);
  assert.deepEqual(server.tokenRequests, [{
    method: "POST",
    scope: ["repository:team/app:pull"],
    grant: "refresh_token",
  }]);
});

Deno.test("Authorizer refetches a token once expires_in has elapsed", async () => {
  await using server = startTokenServer({ expiresIn: 30 });
  let now = 1_000_000;
  const authorizer = new Authorizer({
    credentials: () => Promise.resolve({ username: "alice", password: "wonderland" }),
    now: () => now,
  });
  assert.equal(await tags(authorizer, server.host, "team/app"), 200);
  now += 29_000;
  assert.equal(await tags(authorizer, server.host, "team/app"), 200);
  assert.equal(server.tokenRequests.length, 1);
  now += 2_000;
  assert.equal(await tags(authorizer, server.host, "team/app"), 200);
  assert.equal(server.tokenRequests.length, 2);
});

Deno.test("Authorizer caches tokens for 60 s when expires_in is absent", async () => {
  await using server = startTokenServer();
  let now = 0;
  const authorizer = new Authorizer({
    credentials: () => Promise.resolve({ username: "alice", password: "wonderland" }),
    now: () => now,
  });
  assert.equal(await tags(authorizer, server.host, "team/app"), 200);
  now += 59_000;
  assert.equal(await tags(authorizer, server.host, "team/app"), 200);
  assert.equal(server.tokenRequests.length, 1);
  now += 2_000;
  assert.equal(await tags(authorizer, server.host, "team/app"), 200);
  assert.equal(server.tokenRequests.length, 2);
});

Deno.test("Authorizer retries once after an error= challenge and then gives up", async () => {
  await using server = startTokenServer();
  const authorizer = new Authorizer({
    credentials: () => Promise.resolve({ username: "alice", password: "wonderland" }),
  });
  assert.equal(await tags(authorizer, server.host, "team/app"), 200);
  // The server now rejects every token it issues as invalid.
  server.invalidate.add("token-0");
  const url = `http://${server.host}/v2/team/app/tags/list`;
  const scope = ["repository:team/app:pull"];
  const send = async (): Promise<Response> => {
    const request = new Request(url);
    await authorizer.authorize(server.host, request, { scope });
    const response = await fetch(request);
    await response.body?.cancel();
    return response;
  };
  const first = await send();
  assert.equal(first.status, 401);
  assert.equal(await authorizer.handleChallenge(server.host, first, scope, { request: url }), true);
  assert.equal(server.tokenRequests.length, 2);
  server.invalidate.add("token-1");
  const second = await send();
  assert.equal(second.status, 401);
  assert.equal(
    await authorizer.handleChallenge(server.host, second, scope, { request: url }),
    false,
  );
  assert.equal(server.tokenRequests.length, 2);
});

Deno.test("Authorizer reports rejected Bearer credentials without leaking them", async () => {
  await using server = startTokenServer();
  const secret = "not-the-Password-42";
  const authorizer = new Authorizer({
    credentials: () => Promise.resolve({ username: "alice", password: secret }),
  });
  const err = await tags(authorizer, server.host, "team/app").then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof FailedPrecondition, `expected FailedPrecondition, got ${err}`);
  assert.equal(
    err.message,
    `Cannot authenticate to "${server.host}": the registry rejected the credentials`,
  );
  assert.ok(!String(err.stack).includes(secret));
  // POST was rejected with 401, so the GET fallback was tried too.
  assert.deepEqual(server.tokenRequests.map((r) => r.method), ["POST", "GET"]);
});

Deno.test("Authorizer.handleChallenge() rejects malformed and unsupported challenges", async () => {
  const authorizer = new Authorizer();
  const challenge = (value: string): Response =>
    new Response(null, { status: 401, headers: { "www-authenticate": value } });
  await assert.rejects(
    authorizer.handleChallenge("h", challenge('Bearer service="s"'), []),
    InvalidArgument,
  );
  await assert.rejects(
    authorizer.handleChallenge("h", challenge('Bearer realm="not a url"'), []),
    InvalidArgument,
  );
  await assert.rejects(
    authorizer.handleChallenge("h", challenge('Bearer realm="x'), []),
    InvalidArgument,
  );
  await assert.rejects(
    authorizer.handleChallenge("h", challenge('Digest realm="r", nonce="n"'), []),
    NotImplemented,
  );
  assert.equal(
    await authorizer.handleChallenge("h", new Response(null, { status: 401 }), []),
    false,
  );
  // Basic without credentials cannot be answered.
  assert.equal(await authorizer.handleChallenge("h", challenge('Basic realm="r"'), []), false);
});

Deno.test("Authorizer.authorize() leaves requests to unknown hosts anonymous", async () => {
  const headers = new Headers();
  await new Authorizer().authorize("registry.example", headers);
  assert.equal(headers.get("authorization"), null);
});

Deno.test("Authorizer.authorize() reuses the scopes a challenge added to a request's scope set", async () => {
  await using server = startTokenServer();
  const authorizer = new Authorizer({
    credentials: () => Promise.resolve({ username: "alice", password: "wonderland" }),
  });
  const challenge = new Response(null, {
    status: 401,
    headers: {
      "www-authenticate":
        `Bearer realm="http://${server.host}/token",service="fake-registry",scope="repository:src:pull"`,
    },
  });
  assert.equal(
    await authorizer.handleChallenge(server.host, challenge, ["repository:dst:push"]),
    true,
  );
  const headers = new Headers();
  await authorizer.authorize(server.host, headers, { scope: ["repository:dst:push"] });
  assert.equal(headers.get("authorization"), "Bearer token-0");
  assert.deepEqual(server.tokenRequests.map((r) => r.scope), [[
    "repository:dst:push",
    "repository:src:pull",
  ]]);
  // A scope set that was never challenged gets its own token without the challenge's scopes.
  await authorizer.authorize(server.host, headers, { scope: ["repository:other:pull"] });
  assert.equal(headers.get("authorization"), "Bearer token-1");
  assert.deepEqual(server.tokenRequests[1]?.scope, ["repository:other:pull"]);
});

Deno.test("Authorizer retries a Basic challenge to a request sent before it had credentials", async () => {
  const auth = new Authorizer({
    credentials: () => Promise.resolve({ username: "u", password: "p" }),
  });
  const challenge = () =>
    new Response(null, { status: 401, headers: { "www-authenticate": 'Basic realm="r"' } });
  // Two requests sent at once, both anonymous, both challenged.
  assert.equal(await auth.handleChallenge("h", challenge(), [], { authorization: null }), true);
  assert.equal(await auth.handleChallenge("h", challenge(), [], { authorization: null }), true);
  const headers = new Headers();
  await auth.authorize("h", headers);
  const sent = headers.get("authorization");
  assert.ok(sent?.startsWith("Basic "));
  // The same credentials challenged again: rejected, without the password in the message.
  await assert.rejects(
    auth.handleChallenge("h", challenge(), [], { authorization: sent }),
    (err) => err instanceof FailedPrecondition && !err.message.includes('p"'),
  );
});

Deno.test("Authorizer sends token requests through the fetch given per call", async () => {
  await using server = startTokenServer();
  const calls: string[] = [];
  const counting = (label: string): typeof fetch => (input, init) => {
    calls.push(`${label} ${init?.method ?? "GET"}`);
    return fetch(input, init);
  };
  const authorizer = new Authorizer({
    credentials: () => Promise.resolve({ username: "alice", password: "wonderland" }),
    fetch: counting("default"),
  });
  const url = `http://${server.host}/v2/team/app/tags/list`;
  const scope = ["repository:team/app:pull"];
  const first = await fetch(url);
  await first.body?.cancel();
  assert.equal(first.status, 401);
  assert.equal(
    await authorizer.handleChallenge(server.host, first, scope, { fetch: counting("challenge") }),
    true,
  );
  // A new scope set needs a new token, fetched with the fetch of that call.
  const headers = new Headers();
  await authorizer.authorize(server.host, headers, {
    scope: ["repository:team/other:pull"],
    fetch: counting("authorize"),
  });
  assert.match(headers.get("authorization") ?? "", /^Bearer /);
  assert.deepEqual(calls, ["challenge POST", "authorize POST"]);
});
