/**
 * Shared harness for registry tests: a throwaway Debian `docker-registry` (optionally behind
 * htpasswd Basic auth), an in-process fault-injecting proxy in front of it, small OCI layouts made
 * in memory, TLS files made with `openssl`, and `skopeo copy` into a registry.
 *
 * Every service and directory here has an async `stop()` and is `AsyncDisposable`; use
 * `await using` so a failing test leaks nothing. Ports are free ports of 127.0.0.1, so test files
 * can run in parallel.
 *
 * @example Push a small image and count the requests a client makes through a proxy
 * ```ts
 * import { makeOciLayout, pushToRegistry, startFaultProxy, startRegistry } from "./_registry.ts";
 * import { makeTempDir } from "./_peers.ts";
 *
 * await using tmp = await makeTempDir();
 * await using registry = await startRegistry();
 * const image = await makeOciLayout(tmp.path);
 * await pushToRegistry(image.ref, `${registry.host}/test/app:1`);
 * await using proxy = await startFaultProxy(registry.host, { failFirst: { count: 2 } });
 * console.log(proxy.count("/manifests/"));
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { ContentStore } from "../content/store.ts";
import { createTar } from "../diff/tar/writer.ts";
import { FailedPrecondition, Unavailable } from "../errors.ts";
import type { Descriptor, Platform } from "../images/types.ts";
import { MetadataDb } from "../metadata/db.ts";
import { makeTempDir, runOk, type TempDir } from "./_peers.ts";

// ---------------------------------------------------------------------------------------------
// docker-registry

/** A throwaway registry on 127.0.0.1 over plain HTTP. */
export interface TestRegistry extends AsyncDisposable {
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  /** `http://127.0.0.1:PORT` (`https://` when started with `tls`). */
  readonly url: string;
  /** Its temporary directory (config, storage, htpasswd, log). */
  readonly dir: string;
  /**
   * Reads the registry's log so far.
   *
   * @returns The log text.
   */
  readLog(): Promise<string>;
  /** Stops the registry and removes its directory. */
  stop(): Promise<void>;
}

/** Options for {@linkcode startRegistry}. */
export interface StartRegistryOptions {
  /** Require HTTP Basic auth with this user (htpasswd, bcrypt made with perl's `crypt`). */
  htpasswd?: { user: string; password: string };
  /**
   * Serve https with these PEM files; with `clientCaFiles` the registry requires a client
   * certificate signed by one of those CAs (`http.tls.clientcas`).
   */
  tls?: { certFile: string; keyFile: string; clientCaFiles?: string[] };
}

/**
 * Finds a free TCP port of 127.0.0.1 (nothing listens on it when this returns).
 *
 * @returns `127.0.0.1:PORT`.
 */
export function closedPort(): string {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const host = `127.0.0.1:${listener.addr.port}`;
  listener.close();
  return host;
}

const BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/**
 * Hashes a password with bcrypt (cost 5) through perl's `crypt` (libxcrypt), for htpasswd files.
 *
 * @param password The password.
 * @returns The `$2a$05$...` hash.
 */
export async function bcryptHash(password: string): Promise<string> {
  const random = crypto.getRandomValues(new Uint8Array(22));
  const salt = Array.from(random, (b) => BCRYPT_ALPHABET[b % 64]).join("");
  const { stdout } = await runOk([
    "perl",
    "-e",
    "print crypt($ARGV[0], $ARGV[1])",
    password,
    `$2a$05$${salt}`,
  ]);
  if (!stdout.startsWith("$2a$05$") || stdout.length !== 60) {
    throw new FailedPrecondition("Cannot hash a password with bcrypt: perl's crypt lacks bcrypt");
  }
  return stdout;
}

/**
 * Starts Debian's `docker-registry` on a free port of 127.0.0.1 with storage in a temp dir,
 * optionally requiring Basic auth.
 *
 * @param options The htpasswd user.
 * @returns The running registry, answering `GET /v2/`.
 * @throws {Unavailable} When it exits or does not answer in time.
 *
 * @example
 * ```ts
 * import { startRegistry } from "./_registry.ts";
 * await using registry = await startRegistry({ htpasswd: { user: "u", password: "p" } });
 * console.log(registry.url);
 * ```
 */
export async function startRegistry(options: StartRegistryOptions = {}): Promise<TestRegistry> {
  const tmp = await makeTempDir({ prefix: "strata-registry-" });
  const dir = tmp.path;
  const host = closedPort();
  const lines = [
    "version: 0.1",
    "log:",
    "  level: warn",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${JSON.stringify(join(dir, "data"))}`,
    "  delete:",
    "    enabled: true",
    "http:",
    `  addr: ${JSON.stringify(host)}`,
  ];
  if (options.htpasswd !== undefined) {
    const { user, password } = options.htpasswd;
    await Deno.writeTextFile(join(dir, "htpasswd"), `${user}:${await bcryptHash(password)}\n`);
    lines.push(
      "auth:",
      "  htpasswd:",
      "    realm: strata-test",
      `    path: ${JSON.stringify(join(dir, "htpasswd"))}`,
    );
  }
  if (options.tls !== undefined) {
    const tls = options.tls;
    lines.push(
      "  tls:",
      `    certificate: ${JSON.stringify(tls.certFile)}`,
      `    key: ${JSON.stringify(tls.keyFile)}`,
    );
    if (tls.clientCaFiles !== undefined && tls.clientCaFiles.length > 0) {
      lines.push("    clientcas:", ...tls.clientCaFiles.map((f) => `      - ${JSON.stringify(f)}`));
    }
  }
  const config = join(dir, "config.yml");
  await Deno.writeTextFile(config, lines.join("\n") + "\n");
  const log = join(dir, "log");
  const logFile = await Deno.open(log, { write: true, create: true, truncate: true });
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("docker-registry", {
      args: ["serve", config],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    logFile.close();
    await tmp.stop();
    throw err;
  }
  let exited: Deno.CommandStatus | undefined;
  const status = child.status.then((s) => {
    exited = s;
    return s;
  });
  const writer = logFile.writable.getWriter();
  const pump = async (stream: ReadableStream<Uint8Array>): Promise<void> => {
    for await (const chunk of stream) await writer.write(chunk);
  };
  const logDone = Promise.all([pump(child.stdout), pump(child.stderr)]).then(
    () => writer.close(),
    () => writer.close(),
  ).catch(() => undefined);
  const readLog = async (): Promise<string> => {
    try {
      return await Deno.readTextFile(log);
    } catch {
      return "";
    }
  };
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      if (exited === undefined) {
        try {
          child.kill("SIGTERM");
        } catch {
          // Already gone.
        }
      }
      await status;
      await logDone;
      await tmp.stop();
    })();
    return stopped;
  };
  try {
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (exited !== undefined) {
        throw new Unavailable(
          `Cannot start docker-registry: it exited with code ${exited.code}: ${await readLog()}`,
        );
      }
      try {
        if (options.tls !== undefined) {
          // A TLS registry may want a client certificate: listening is enough.
          const [hostname, port] = host.split(":") as [string, string];
          (await Deno.connect({ hostname, port: Number(port) })).close();
          break;
        }
        const response = await fetch(`http://${host}/v2/`);
        await response.body?.cancel();
        if (response.status === 200 || response.status === 401) break;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) {
        throw new Unavailable(`Cannot start docker-registry: no answer on "${host}" in 20 s`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  const scheme = options.tls === undefined ? "http" : "https";
  return { host, url: `${scheme}://${host}`, dir, readLog, stop, [Symbol.asyncDispose]: stop };
}

// ---------------------------------------------------------------------------------------------
// Fault proxy

/** Faults a {@linkcode FaultProxy} injects; change `proxy.faults` at any time. */
export interface Faults {
  /** Answer the first `count` matching requests with `status` (default 503) instead of forwarding. */
  failFirst?: {
    count: number;
    status?: number;
    /** `Retry-After` seconds to send. */
    retryAfter?: number;
    /** Only requests whose path contains this text. */
    path?: string;
    /** Only requests with this method. */
    method?: string;
  };
  /** Answer `405 Method Not Allowed` to every `HEAD` request. */
  headNotAllowed?: boolean;
  /** Remove `Docker-Content-Digest` from every response. */
  dropDigestHeader?: boolean;
  /**
   * Close the connection after `afterBytes` bytes of a `GET` of blob (or manifest) `digest`: for
   * the first answer, the first `times` answers, or every answer (`always`).
   */
  dropBlob?: { digest: string; afterBytes: number; times?: number; always?: boolean };
  /** Flip a byte in the middle of every `GET` of blob (or manifest) `digest`. */
  corruptBlob?: { digest: string };
  /** Drop `Range` headers: answer every `GET` with the whole body. */
  ignoreRange?: boolean;
  /**
   * Send the first `afterBytes` bytes of every `GET` of blob `digest`, then hold the rest until
   * `until` settles (a slow download the test controls).
   */
  holdBlob?: { digest: string; afterBytes: number; until: Promise<void> };
}

/** One request the proxy saw. */
export interface ProxyRecord {
  /** The method. */
  method: string;
  /** Path and query. */
  path: string;
  /** The `Range` header, when sent. */
  range: string | null;
  /** The `Authorization` scheme sent (`basic`, `bearer`), or `null`. */
  auth: string | null;
  /** The status answered. */
  status: number;
}

/** An HTTP(S) proxy in front of a registry that injects {@linkcode Faults}. */
export interface FaultProxy extends AsyncDisposable {
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  /** `http://` or `https://` `127.0.0.1:PORT`. */
  readonly url: string;
  /** The faults in force; replace or change them at any time. */
  faults: Faults;
  /** Every request seen, in order. */
  readonly requests: ProxyRecord[];
  /**
   * Counts the requests whose path contains `path` (and with `method`, when given).
   *
   * @param path Text the path must contain.
   * @param method The method, e.g. `GET`.
   * @returns The number of requests.
   */
  count(path: string, method?: string): number;
  /** Stops the proxy. */
  stop(): Promise<void>;
}

/** Options for {@linkcode startFaultProxy}. */
export interface FaultProxyOptions {
  /** Serve https with this PEM certificate and key. */
  tls?: { cert: string; key: string };
}

/**
 * Starts an in-process proxy on a free port in front of `upstream` (a plain-HTTP registry) that
 * records requests and injects faults. Upload `Location` headers are rewritten to the proxy.
 *
 * @param upstream The registry, `host:port`.
 * @param faults The initial faults.
 * @param options TLS certificate and key to serve https.
 * @returns The running proxy.
 *
 * @example
 * ```ts
 * import { startFaultProxy, startRegistry } from "./_registry.ts";
 * await using registry = await startRegistry();
 * await using proxy = await startFaultProxy(registry.host, { headNotAllowed: true });
 * console.log(proxy.url);
 * ```
 */
export function startFaultProxy(
  upstream: string,
  faults: Faults = {},
  options: FaultProxyOptions = {},
): Promise<FaultProxy> {
  const requests: ProxyRecord[] = [];
  const failed = new WeakMap<object, number>();
  const dropped = new WeakMap<object, number>();
  const scheme = options.tls === undefined ? "http" : "https";
  let host = "";
  const state: { faults: Faults } = { faults };

  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const path = url.pathname + url.search;
    const current = state.faults;
    const record: ProxyRecord = {
      method: req.method,
      path,
      range: req.headers.get("range"),
      auth: req.headers.get("authorization")?.split(" ")[0]?.toLowerCase() ?? null,
      status: 0,
    };
    requests.push(record);
    const answer = (response: Response): Response => {
      record.status = response.status;
      return response;
    };
    const fail = current.failFirst;
    if (
      fail !== undefined && (fail.path === undefined || path.includes(fail.path)) &&
      (fail.method === undefined || fail.method === req.method)
    ) {
      const n = failed.get(fail) ?? 0;
      if (n < fail.count) {
        failed.set(fail, n + 1);
        await req.body?.cancel();
        const headers = new Headers({ "content-type": "application/json" });
        if (fail.retryAfter !== undefined) headers.set("retry-after", String(fail.retryAfter));
        const status = fail.status ?? 503;
        const body = req.method === "HEAD" ? null : JSON.stringify({
          errors: [{ code: "UNAVAILABLE", message: `injected ${status}` }],
        });
        return answer(new Response(body, { status, headers }));
      }
    }
    if (current.headNotAllowed === true && req.method === "HEAD") {
      await req.body?.cancel();
      return answer(new Response(null, { status: 405 }));
    }
    const target = new URL(path, `http://${upstream}`);
    const headers = new Headers(req.headers);
    headers.delete("host");
    if (current.ignoreRange === true) headers.delete("range");
    const init: RequestInit = { method: req.method, headers, redirect: "manual" };
    if (req.body !== null) init.body = req.body;
    let response: Response;
    try {
      response = await fetch(target, init);
    } catch (err) {
      return answer(new Response(`proxy: ${(err as Error).message}`, { status: 502 }));
    }
    const out = new Headers(response.headers);
    const location = out.get("location");
    if (location !== null) {
      const abs = new URL(location, target);
      if (abs.host === upstream) {
        out.set("location", `${scheme}://${host}${abs.pathname}${abs.search}`);
      }
    }
    if (current.dropDigestHeader === true) out.delete("docker-content-digest");
    let body: ReadableStream<Uint8Array> | null = response.body;
    const isGetOf = (digest: string): boolean =>
      req.method === "GET" && response.ok && url.pathname.endsWith(`/${digest}`);
    const corrupt = current.corruptBlob;
    if (corrupt !== undefined && isGetOf(corrupt.digest)) {
      const bytes = new Uint8Array(await response.arrayBuffer());
      if (bytes.length > 0) {
        const i = Math.floor(bytes.length / 2);
        bytes[i] = (bytes[i] ?? 0) ^ 0xff;
      }
      body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(bytes);
          controller.close();
        },
      });
    }
    const hold = current.holdBlob;
    if (hold !== undefined && isGetOf(hold.digest) && body !== null) {
      body = cutAt(body, hold.afterBytes, hold.until);
    }
    const drop = current.dropBlob;
    if (drop !== undefined && isGetOf(drop.digest) && body !== null) {
      const done = dropped.get(drop) ?? 0;
      if (drop.always === true || done < (drop.times ?? 1)) {
        dropped.set(drop, done + 1);
        body = cutAt(body, drop.afterBytes);
      }
    }
    return answer(
      new Response(body, {
        status: response.status,
        statusText: response.statusText,
        headers: out,
      }),
    );
  };

  const serveOptions: Deno.ServeTcpOptions & Partial<Deno.TlsCertifiedKeyPem> = {
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
  };
  if (options.tls !== undefined) {
    serveOptions.cert = options.tls.cert;
    serveOptions.key = options.tls.key;
  }
  const server = Deno.serve(serveOptions as Deno.ServeTcpOptions, handler);
  host = `127.0.0.1:${server.addr.port}`;
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= server.shutdown().catch(() => undefined);
    return stopped;
  };
  const proxy: FaultProxy = {
    host,
    url: `${scheme}://${host}`,
    get faults(): Faults {
      return state.faults;
    },
    set faults(value: Faults) {
      state.faults = value;
    },
    requests,
    count(text: string, method?: string): number {
      return requests.filter((r) =>
        r.path.includes(text) && (method === undefined || r.method === method)
      ).length;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
  return Promise.resolve(proxy);
}

/**
 * Passes the first `limit` bytes of `source`; then ends early, so the server drops the
 * connection, or with `resume`, waits for it and passes the rest.
 */
function cutAt(
  source: ReadableStream<Uint8Array>,
  limit: number,
  resume?: Promise<void>,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let sent = 0;
  // The part of a chunk beyond `limit`, sent once resumed.
  let rest: Uint8Array | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent >= limit) {
        if (resume === undefined) {
          await reader.cancel();
          controller.close();
          return;
        }
        await resume;
      }
      if (rest !== undefined) {
        controller.enqueue(rest);
        sent += rest.length;
        rest = undefined;
        return;
      }
      const { done, value } = await reader.read();
      if (done) {
        controller.close();
        return;
      }
      let part = value;
      if (sent < limit && value.length > limit - sent) {
        part = value.subarray(0, limit - sent);
        rest = value.subarray(limit - sent);
      }
      sent += part.length;
      controller.enqueue(part);
    },
    async cancel() {
      await reader.cancel();
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Images

/** One platform's image in a layout made by {@linkcode makeOciLayout}. */
export interface TestManifest {
  /** The manifest's descriptor (with `platform` for multi-platform layouts). */
  descriptor: Descriptor;
  /** The platform. */
  platform: Platform;
  /** The config's descriptor. */
  config: Descriptor;
  /** The layers' descriptors. */
  layers: Descriptor[];
}

/** An OCI image layout made by {@linkcode makeOciLayout}. */
export interface TestImage {
  /** The layout directory. */
  layout: string;
  /** The tag in the layout. */
  tag: string;
  /** `oci:<layout>:<tag>`, for skopeo. */
  ref: string;
  /** The root: an index for several platforms, else the manifest. */
  root: Descriptor;
  /** One entry per platform. */
  manifests: TestManifest[];
  /** Every blob by digest. */
  blobs: Map<string, Uint8Array>;
}

/** Options for {@linkcode makeOciLayout}. */
export interface OciLayoutOptions {
  /** The tag (default `latest`). */
  tag?: string;
  /** The platforms; more than one makes an index (default `linux/amd64`). */
  platforms?: Platform[];
  /** Random bytes per layer (default 64 KiB; gzip keeps them about that size). */
  layerSize?: number;
}

function sha256Of(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/**
 * Builds a small OCI image layout in `DIR/layout`: per platform one gzip layer (a random file and
 * a text file), a config and a manifest; an index when there are several platforms.
 *
 * @param dir The directory to build in.
 * @param options Tag, platforms, layer size.
 * @returns The layout, its root descriptor and every blob.
 *
 * @example
 * ```ts
 * import { makeOciLayout } from "./_registry.ts";
 * const image = await makeOciLayout(await Deno.makeTempDir(), { platforms: [
 * { os: "linux", architecture: "amd64" },
 * { os: "linux", architecture: "arm64", variant: "v8" },
 * ] });
 * console.log(image.root.mediaType);
 * ```
 */
export async function makeOciLayout(
  dir: string,
  options: OciLayoutOptions = {},
): Promise<TestImage> {
  const tag = options.tag ?? "latest";
  const platforms = options.platforms ?? [{ os: "linux", architecture: "amd64" }];
  const layout = join(dir, "layout");
  const blobDir = join(layout, "blobs", "sha256");
  await Deno.mkdir(blobDir, { recursive: true });
  const blobs = new Map<string, Uint8Array>();
  const put = async (mediaType: string, data: Uint8Array): Promise<Descriptor> => {
    const digest = sha256Of(data);
    blobs.set(digest, data);
    await Deno.writeFile(join(blobDir, digest.slice("sha256:".length)), data);
    return { mediaType, digest, size: data.length };
  };
  const json = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value));
  const manifests: TestManifest[] = [];
  for (const platform of platforms) {
    const tar = await createTar([
      {
        header: { name: "data.bin", type: "file", mode: 0o644 },
        body: randomBytes(options.layerSize ?? 65536),
      },
      {
        header: { name: "platform.txt", type: "file", mode: 0o644 },
        body: new TextEncoder().encode(`${platform.os}/${platform.architecture}\n`),
      },
    ]);
    const layer = await put(
      "application/vnd.oci.image.layer.v1.tar+gzip",
      new Uint8Array(gzipSync(tar)),
    );
    const config = await put(
      "application/vnd.oci.image.config.v1+json",
      json({
        architecture: platform.architecture,
        os: platform.os,
        ...(platform.variant === undefined ? {} : { variant: platform.variant }),
        config: { Env: ["STRATA_TEST=1"] },
        rootfs: { type: "layers", diff_ids: [sha256Of(tar)] },
      }),
    );
    const descriptor = await put(
      "application/vnd.oci.image.manifest.v1+json",
      json({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config,
        layers: [layer],
      }),
    );
    if (platforms.length > 1) descriptor.platform = platform;
    manifests.push({ descriptor, platform, config, layers: [layer] });
  }
  let root: Descriptor;
  if (manifests.length === 1) {
    root = { ...(manifests[0] as TestManifest).descriptor };
  } else {
    root = await put(
      "application/vnd.oci.image.index.v1+json",
      json({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.index.v1+json",
        manifests: manifests.map((m) => m.descriptor),
      }),
    );
  }
  await Deno.writeTextFile(
    join(layout, "oci-layout"),
    JSON.stringify({ imageLayoutVersion: "1.0.0" }),
  );
  await Deno.writeTextFile(
    join(layout, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{ ...root, annotations: { "org.opencontainers.image.ref.name": tag } }],
    }),
  );
  return { layout, tag, ref: `oci:${layout}:${tag}`, root, manifests, blobs };
}

/** Options for {@linkcode pushToRegistry}. */
export interface PushToRegistryOptions {
  /** `user:password` for the registry. */
  creds?: string;
  /** The manifest format skopeo writes (default: as the source). */
  format?: "oci" | "v2s2";
  /** Copy every platform of an index (`--all`). */
  all?: boolean;
}

/**
 * Copies an image into a registry with `skopeo copy --dest-tls-verify=false`.
 *
 * @param src The source, e.g. `oci:/path/layout:tag`.
 * @param dest The destination `host/repo:tag` (or `docker://...`).
 * @param options Credentials, manifest format and `--all`.
 * @returns When the copy is done.
 *
 * @example
 * ```ts
 * import { pushToRegistry } from "./_registry.ts";
 * await pushToRegistry("oci:/tmp/layout:latest", "127.0.0.1:5000/test/app:1", { format: "v2s2" });
 * ```
 */
export async function pushToRegistry(
  src: string,
  dest: string,
  options: PushToRegistryOptions = {},
): Promise<void> {
  const args = ["skopeo", "copy", "--insecure-policy", "--quiet", "--dest-tls-verify=false"];
  if (options.creds !== undefined) args.push("--dest-creds", options.creds);
  if (options.format !== undefined) args.push("--format", options.format);
  if (options.all === true) args.push("--all");
  args.push(src, dest.startsWith("docker://") ? dest : `docker://${dest}`);
  await runOk(args);
}

// ---------------------------------------------------------------------------------------------
// TLS and content store

/** PEM files made by {@linkcode makeTlsFiles}. */
export interface TlsFiles {
  /** Path of the CA certificate. */
  caFile: string;
  /** The CA certificate (PEM). */
  ca: string;
  /** The server certificate for `127.0.0.1` and `localhost`, signed by the CA (PEM). */
  cert: string;
  /** The server key (PEM). */
  key: string;
}

/**
 * Makes a CA and a server certificate for `127.0.0.1`/`localhost` signed by it, with `openssl`.
 *
 * @param dir The directory to write `ca.pem`, `ca.key`, `server.pem`, `server.key` into.
 * @returns The paths and PEM texts.
 *
 * @example
 * ```ts
 * import { makeTlsFiles } from "./_registry.ts";
 * const tls = await makeTlsFiles(await Deno.makeTempDir());
 * console.log(tls.caFile);
 * ```
 */
export async function makeTlsFiles(dir: string): Promise<TlsFiles> {
  const at = (name: string): string => join(dir, name);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await runOk([
    "openssl",
    "req",
    "-x509",
    ...ec,
    "-keyout",
    at("ca.key"),
    "-out",
    at("ca.pem"),
    "-days",
    "2",
    "-subj",
    "/CN=Strata Test CA",
  ]);
  await runOk([
    "openssl",
    "req",
    ...ec,
    "-keyout",
    at("server.key"),
    "-out",
    at("server.csr"),
    "-subj",
    "/CN=localhost",
  ]);
  await Deno.writeTextFile(
    at("ext.cnf"),
    [
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
      "basicConstraints=CA:FALSE",
      "keyUsage=digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth",
      "",
    ].join("\n"),
  );
  await runOk([
    "openssl",
    "x509",
    "-req",
    "-in",
    at("server.csr"),
    "-CA",
    at("ca.pem"),
    "-CAkey",
    at("ca.key"),
    "-CAcreateserial",
    "-out",
    at("server.pem"),
    "-days",
    "2",
    "-extfile",
    at("ext.cnf"),
  ]);
  return {
    caFile: at("ca.pem"),
    ca: await Deno.readTextFile(at("ca.pem")),
    cert: await Deno.readTextFile(at("server.pem")),
    key: await Deno.readTextFile(at("server.key")),
  };
}

/** A content store on a temporary root. */
export interface TestContent extends AsyncDisposable {
  /** The store. */
  readonly store: ContentStore;
  /** The temporary root. */
  readonly dir: string;
  /** Closes the database and removes the root. */
  stop(): Promise<void>;
}

/**
 * Opens a content store (and its metadata database) on a new temporary root.
 *
 * @returns The store; dispose it to close and remove it.
 *
 * @example
 * ```ts
 * import { openContent } from "./_registry.ts";
 * await using content = await openContent();
 * console.log((await content.store.usage()).count);
 * ```
 */
export async function openContent(): Promise<TestContent> {
  const tmp: TempDir = await makeTempDir({ prefix: "strata-remotes-content-" });
  const db = MetadataDb.open(tmp.path);
  const store = new ContentStore(join(tmp.path, "content"), db);
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      db.close();
      await tmp.stop();
    })();
    return stopped;
  };
  return { store, dir: tmp.path, stop, [Symbol.asyncDispose]: stop };
}

/**
 * Writes `<hostsDir>/<host_port_>/hosts.toml` (containerd's `certs.d` layout) for a registry host.
 *
 * @param hostsDir The hosts directory.
 * @param host The registry host of the references, `name[:port]`.
 * @param toml The file's text.
 * @returns The path written.
 *
 * @example
 * ```ts
 * import { writeHostsToml } from "./_registry.ts";
 * await writeHostsToml(await Deno.makeTempDir(), "127.0.0.1:5000", 'server = "http://127.0.0.1:5000"\n');
 * ```
 */
export async function writeHostsToml(
  hostsDir: string,
  host: string,
  toml: string,
): Promise<string> {
  const idx = host.lastIndexOf(":");
  const name = idx > 0 ? `${host.slice(0, idx)}_${host.slice(idx + 1)}_` : host;
  await Deno.mkdir(join(hostsDir, name), { recursive: true });
  const path = join(hostsDir, name, "hosts.toml");
  await Deno.writeTextFile(path, toml);
  return path;
}

/** A client certificate made by {@linkcode makeClientCert}. */
export interface ClientCertFiles {
  /** Path of the PEM certificate. */
  certFile: string;
  /** Path of the PEM key. */
  keyFile: string;
}

/**
 * Makes a TLS client certificate signed by the CA that {@linkcode makeTlsFiles} wrote to `dir`.
 *
 * @param dir The directory holding `ca.pem` and `ca.key`; the files are written there too.
 * @param name The file name stem and common name, e.g. `client`.
 * @returns The paths of `<name>.pem` and `<name>.key`.
 *
 * @example
 * ```ts
 * import { makeClientCert, makeTlsFiles } from "./_registry.ts";
 * const dir = await Deno.makeTempDir();
 * await makeTlsFiles(dir);
 * console.log((await makeClientCert(dir, "client")).certFile);
 * ```
 */
export async function makeClientCert(dir: string, name: string): Promise<ClientCertFiles> {
  const at = (file: string): string => join(dir, file);
  await runOk([
    "openssl",
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    at(`${name}.key`),
    "-out",
    at(`${name}.csr`),
    "-subj",
    `/CN=${name}`,
  ]);
  await Deno.writeTextFile(
    at(`${name}.ext`),
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
  );
  await runOk([
    "openssl",
    "x509",
    "-req",
    "-in",
    at(`${name}.csr`),
    "-CA",
    at("ca.pem"),
    "-CAkey",
    at("ca.key"),
    "-CAcreateserial",
    "-out",
    at(`${name}.pem`),
    "-days",
    "2",
    "-extfile",
    at(`${name}.ext`),
  ]);
  return { certFile: at(`${name}.pem`), keyFile: at(`${name}.key`) };
}

// ---------------------------------------------------------------------------------------------
// TCP listeners

/** A TCP listener on 127.0.0.1 that counts the connections it accepts. */
export interface TcpListener extends AsyncDisposable {
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  /** How many connections were accepted so far. */
  readonly connections: number;
  /** How many accepted connections the client has not closed yet (as far as the listener reads). */
  readonly open: number;
  /** Closes the listener and every connection. */
  stop(): Promise<void>;
}

/**
 * Starts a TCP listener that forwards every connection to `upstream` byte for byte (TLS passes
 * through) and counts the connections, to see whether a client reuses them.
 *
 * @param upstream `host:port` to forward to.
 * @returns The listener.
 *
 * @example
 * ```ts
 * import { startTcpForwarder } from "./_registry.ts";
 * await using counter = await startTcpForwarder("127.0.0.1:5000");
 * console.log(counter.host, counter.connections);
 * ```
 */
export function startTcpForwarder(upstream: string): Promise<TcpListener> {
  const [upHost, upPort] = upstream.split(":") as [string, string];
  return startTcpListener(async (conn, track, clientClosed) => {
    let up: Deno.TcpConn;
    try {
      up = await Deno.connect({ hostname: upHost, port: Number(upPort) });
    } catch {
      return;
    }
    track(up);
    const pipe = (from: Deno.Conn, to: Deno.Conn): Promise<void> =>
      from.readable.pipeTo(to.writable).catch(() => undefined);
    await Promise.all([pipe(conn, up).finally(clientClosed), pipe(up, conn)]);
  });
}

/**
 * Starts a TCP listener that accepts connections and never answers (no TLS handshake, no HTTP
 * response), holding them until stopped: a host that hangs after the TCP connection.
 *
 * @returns The listener.
 *
 * @example
 * ```ts
 * import { startSilentListener } from "./_registry.ts";
 * await using silent = await startSilentListener();
 * console.log(silent.host);
 * ```
 */
export function startSilentListener(): Promise<TcpListener> {
  // Reads (until the client or stop() closes the connection) and never writes.
  return startTcpListener((conn) => conn.readable.pipeTo(new WritableStream()).catch(() => {}));
}

function startTcpListener(
  serve: (
    conn: Deno.TcpConn,
    track: (c: Deno.TcpConn) => void,
    clientClosed: () => void,
  ) => Promise<void>,
): Promise<TcpListener> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.TcpConn>();
  const served: Promise<void>[] = [];
  let connections = 0;
  let active = 0;
  const track = (c: Deno.TcpConn): void => {
    open.add(c);
  };
  const accepting = (async () => {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      connections++;
      active++;
      track(conn);
      let counted = true;
      const clientClosed = (): void => {
        if (counted) active--;
        counted = false;
      };
      served.push(serve(conn, track, clientClosed).catch(() => undefined).finally(clientClosed));
    }
  })();
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      listener.close();
      await accepting;
      for (const c of open) {
        try {
          c.close();
        } catch {
          // Closed by a finished pipe already.
        }
      }
      await Promise.all(served);
    })();
    return stopped;
  };
  return Promise.resolve({
    host: `127.0.0.1:${listener.addr.port}`,
    get connections(): number {
      return connections;
    },
    get open(): number {
      return active;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  });
}
