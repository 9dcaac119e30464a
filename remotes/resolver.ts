/**
 * The registry client: {@linkcode Resolver} resolves references to descriptors and hands out
 * fetchers and pushers for a repository, with containerd's host order (mirrors, then the
 * upstream), capabilities, authorization, retries and download limiting.
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  NotImplemented,
  StrataError,
  Unavailable,
} from "../errors.ts";
import { parseDigest, validateDigest } from "../images/digest.ts";
import {
  isIndexType,
  isManifestType,
  isSchema1,
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_DOCKER_MANIFEST_LIST,
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_MANIFEST,
} from "../images/media_types.ts";
import { parseRemoteReference, remoteDigest, remoteHostname } from "../images/reference.ts";
import type { Descriptor } from "../images/types.ts";
import {
  backoffDelay,
  errorPriority,
  markTooLarge,
  redactUrl,
  type RequestResult,
  type RequestSpec,
  Session,
  sleep,
  statusError,
} from "./_http.ts";
import {
  filterCapabilities,
  type HostCapability,
  type RegistryHost,
  registryHosts,
} from "./hosts.ts";
import type {
  Fetcher,
  FetchOptions,
  Pusher,
  PushOptions,
  Resolved,
  ResolverOptions,
} from "./types.ts";

/**
 * The largest manifest or index accepted when resolving, in bytes (containerd's
 * `MaxManifestSize`, 4 × 1048 × 1048).
 */
export const MAX_MANIFEST_SIZE = 4 * 1048 * 1048;

const MANIFEST_ACCEPT = [
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_DOCKER_MANIFEST_LIST,
  MEDIA_TYPE_OCI_MANIFEST,
  MEDIA_TYPE_OCI_INDEX,
  "*/*",
].join(", ");

const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const MAX_RECONNECTS_WITHOUT_PROGRESS = 3;
/** The chunk size of a blob stream read by a default reader (a BYOB reader brings its views). */
const FETCH_CHUNK = 64 * 1024;

/** Errors that end a resolve or fetch at once instead of trying the next host. */
const FATAL = new WeakSet<Error>();

function fatal<E extends Error>(err: E): E {
  FATAL.add(err);
  return err;
}

function isFatal(err: unknown, signal: AbortSignal | undefined): boolean {
  if (signal?.aborted) return true;
  return !(err instanceof StrataError) || FATAL.has(err);
}

interface ParsedRef {
  ref: string;
  hostname: string;
  repository: string;
  tag: string;
  digest: string;
}

function parseRef(ref: string, verb: string): ParsedRef {
  const remote = parseRemoteReference(ref);
  const hostname = remoteHostname(remote);
  const repository = remote.locator.slice(hostname.length + 1);
  if (repository === "") {
    throw new InvalidArgument(`Cannot ${verb} "${ref}": the reference has no repository`);
  }
  const digest = remoteDigest(remote);
  const at = remote.object.indexOf("@");
  const tag = at < 0 ? remote.object : remote.object.slice(0, at);
  if (digest !== "") validateDigest(digest);
  if (tag !== "" && !TAG_RE.test(tag)) {
    throw new InvalidArgument(`Cannot ${verb} "${ref}": invalid tag "${tag}"`);
  }
  return { ref, hostname, repository, tag, digest };
}

function pullScope(parsed: ParsedRef): string {
  return `repository:${parsed.repository}:pull`;
}

/** The URL of `<repository>/<kind>/<object>` on a host, with `ns=` when the host is a mirror. */
function endpointUrl(
  host: RegistryHost,
  parsed: ParsedRef,
  kind: "manifests" | "blobs",
  object: string,
  withNamespace: boolean,
): URL {
  const url = new URL(
    `${host.scheme}://${host.host}${host.path}/${parsed.repository}/${kind}/${object}`,
  );
  const upstream = host.host === parsed.hostname ||
    (parsed.hostname === "docker.io" && host.host === "registry-1.docker.io");
  if (withNamespace && !upstream) url.searchParams.set("ns", parsed.hostname);
  return url;
}

function mediaTypeOf(response: Response): string {
  const value = response.headers.get("content-type") ?? "";
  return value.split(";")[0]?.trim().toLowerCase() ?? "";
}

function contentLength(response: Response): number | undefined {
  const value = response.headers.get("content-length");
  return value !== null && /^\d+$/.test(value.trim()) ? Number(value.trim()) : undefined;
}

function isManifestLike(mediaType: string): boolean {
  return isManifestType(mediaType) || isIndexType(mediaType) || isSchema1(mediaType);
}

/** Reads a body of at most `limit` bytes; `undefined` when it is longer. */
async function readLimited(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
): Promise<Uint8Array | undefined> {
  if (body === null) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > limit) {
        await reader.cancel();
        return undefined;
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  const out = new Uint8Array(size);
  let pos = 0;
  for (const chunk of chunks) {
    out.set(chunk, pos);
    pos += chunk.length;
  }
  return out;
}

function sha256(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** Remembers the highest-priority error of the hosts tried (the first one on ties). */
class BestError {
  #err: Error | undefined;
  #priority = 0;

  get priority(): number {
    return this.#priority;
  }

  get error(): Error | undefined {
    return this.#err;
  }

  add(err: Error): void {
    const priority = errorPriority(err);
    if (this.#err === undefined || priority > this.#priority) {
      this.#err = err;
      this.#priority = priority;
    }
  }
}

/**
 * Resolves references against registries and opens fetchers and pushers for their repositories
 * (containerd's docker resolver). Hosts come from {@linkcode registryHosts} (`hostsDir`,
 * `plainHttp`): mirrors in order, then the upstream. One authorizer, one download limiter and the
 * HTTP clients of the hosts are shared by everything the resolver hands out; close it when done.
 *
 * @example Resolve a tag and fetch its manifest
 * ```ts
 * import { Resolver } from "@strata/strata/remotes";
 *
 * using resolver = new Resolver();
 * const { name, descriptor } = await resolver.resolve("docker.io/library/alpine:latest");
 * const fetcher = await resolver.fetcher(name);
 * const stream = await fetcher.fetch(descriptor);
 * const manifest = await new Response(stream).json();
 * console.log(descriptor.mediaType, manifest.mediaType);
 * ```
 */
export class Resolver implements Disposable, AsyncDisposable {
  #session: Session;
  #hosts = new Map<string, Promise<RegistryHost[]>>();

  /**
   * Makes a resolver; nothing is contacted until a method is called.
   *
   * @param options Hosts directory, plain HTTP, credentials, headers, retries and limits.
   */
  constructor(options: ResolverOptions = {}) {
    this.#session = new Session(options);
  }

  /**
   * Resolves a reference (`host/repo:tag`, `host/repo@digest` or `host/repo:tag@digest`) to the
   * descriptor of its manifest or index: `HEAD manifests/<tag or digest>` on each host with the
   * needed capabilities (`pull` and `resolve` for a tag, `pull` for a digest, which also tries
   * `blobs/<digest>`), falling back to `GET` when the digest or size is not in the headers.
   *
   * @param ref The reference, fully qualified.
   * @returns The reference as given and the descriptor.
   * @throws {InvalidArgument} When the reference is malformed or has no tag or digest.
   * @throws {NotFound} When no host has it (or no host may resolve it).
   * @throws {NotImplemented} For Docker schema 1 manifests.
   * @throws {PermissionDenied} When the registry refuses the credentials or the access.
   * @throws {Unavailable} When the hosts cannot be reached or keep failing.
   *
   * @example
   * ```ts
   * import { Resolver } from "@strata/strata/remotes";
   *
   * using resolver = new Resolver();
   * const { descriptor } = await resolver.resolve("docker.io/library/alpine:3.20");
   * console.log(descriptor.digest);
   * ```
   */
  async resolve(ref: string): Promise<Resolved> {
    const parsed = parseRef(ref, "resolve");
    const action = `Cannot resolve "${ref}"`;
    if (parsed.tag === "" && parsed.digest === "") {
      throw new InvalidArgument(`${action}: the reference has no tag or digest`);
    }
    const byDigest = parsed.digest !== "";
    const needed: HostCapability[] = byDigest ? ["pull"] : ["pull", "resolve"];
    const hosts = filterCapabilities(await this.#hostsFor(parsed.hostname), needed);
    if (hosts.length === 0) {
      throw new NotFound(`${action}: no hosts with the ${needed.join(" and ")} capability`);
    }
    const signal = this.#session.signal();
    const kinds: ("manifests" | "blobs")[] = byDigest ? ["manifests", "blobs"] : ["manifests"];
    const best = new BestError();
    for (const kind of kinds) {
      // Like containerd, the blobs endpoint is only worth trying when nothing worse than a 404
      // happened on the manifests endpoint.
      if (kind === "blobs" && best.priority > 2) break;
      for (const host of hosts) {
        try {
          const descriptor = await this.#resolveOn(host, parsed, kind, action, signal);
          return { name: ref, descriptor };
        } catch (err) {
          if (isFatal(err, signal)) throw err;
          best.add(err as Error);
        }
      }
    }
    throw best.error ?? new NotFound(`${action}: not found`);
  }

  /**
   * Opens a fetcher for the repository of a reference (its tag or digest is ignored).
   *
   * @param ref The reference, fully qualified.
   * @returns A fetcher reading blobs and manifests by descriptor from the pull-capable hosts.
   * @throws {InvalidArgument} When the reference is malformed.
   *
   * @example
   * ```ts
   * import { Resolver } from "@strata/strata/remotes";
   *
   * using resolver = new Resolver();
   * const { name, descriptor } = await resolver.resolve("docker.io/library/alpine:3.20");
   * const fetcher = await resolver.fetcher(name);
   * console.log(await new Response(await fetcher.fetch(descriptor)).text());
   * ```
   */
  async fetcher(ref: string): Promise<Fetcher> {
    const parsed = parseRef(ref, "fetch from");
    const hosts = filterCapabilities(await this.#hostsFor(parsed.hostname), "pull");
    return new RegistryFetcher(this.#session, parsed, hosts);
  }

  /**
   * Opens a pusher for the repository of a reference, on the first push-capable host.
   *
   * @param ref The reference, fully qualified.
   * @returns A pusher writing blobs and manifests.
   * @throws {InvalidArgument} When the reference is malformed.
   * @throws {NotFound} When no host has the `push` capability.
   *
   * @example
   * ```ts
   * import { Resolver } from "@strata/strata/remotes";
   *
   * using resolver = new Resolver();
   * const pusher = await resolver.pusher("registry.example/app:1");
   * const blob = new TextEncoder().encode("{}");
   * const desc = {
   * mediaType: "application/vnd.oci.image.config.v1+json",
   * digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
   * size: 2,
   * };
   * if (!await pusher.exists(desc)) await pusher.push(desc, blob);
   * ```
   */
  async pusher(ref: string): Promise<Pusher> {
    const parsed = parseRef(ref, "push to");
    const host = filterCapabilities(await this.#hostsFor(parsed.hostname), "push")[0];
    if (host === undefined) {
      throw new NotFound(`Cannot push to "${ref}": no hosts with the push capability`);
    }
    return new RegistryPusher(this.#session, parsed, host);
  }

  /** Closes the HTTP clients; requests made afterwards fail. */
  close(): void {
    this.#session.close();
  }

  /** Closes the resolver, as {@linkcode Resolver.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Closes the resolver, as {@linkcode Resolver.close}.
   *
   * @returns When closed.
   */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  #hostsFor(hostname: string): Promise<RegistryHost[]> {
    let hosts = this.#hosts.get(hostname);
    if (hosts === undefined) {
      const options: { configPath?: string; plainHttp?: boolean } = {};
      const { hostsDir, plainHttp } = this.#session.options;
      if (hostsDir !== undefined) options.configPath = hostsDir;
      if (plainHttp !== undefined) options.plainHttp = plainHttp;
      hosts = registryHosts(hostname, options);
      this.#hosts.set(hostname, hosts);
      hosts.catch(() => this.#hosts.delete(hostname));
    }
    return hosts;
  }

  async #resolveOn(
    host: RegistryHost,
    parsed: ParsedRef,
    kind: "manifests" | "blobs",
    action: string,
    signal: AbortSignal | undefined,
  ): Promise<Descriptor> {
    const object = parsed.digest !== "" ? parsed.digest : parsed.tag;
    const spec: RequestSpec = {
      host,
      url: endpointUrl(host, parsed, kind, object, true),
      method: "HEAD",
      headers: { Accept: MANIFEST_ACCEPT },
      scope: [pullScope(parsed)],
      action,
      headToGet: true,
    };
    if (signal !== undefined) spec.signal = signal;
    let result = await this.#session.request(spec);
    let response = result.response;
    if (!response.ok) await this.#fail(spec, result);
    const mediaType = mediaTypeOf(response) || "application/octet-stream";
    if (isSchema1(mediaType) || mediaType === "text/plain") {
      await response.body?.cancel();
      throw fatal(
        new NotImplemented(`${action}: Docker schema 1 manifests are not supported`),
      );
    }
    let digest = parsed.digest;
    const size = contentLength(response);
    if (digest === "") {
      const header = response.headers.get("docker-content-digest")?.trim();
      if (header !== undefined && header !== "" && size !== undefined) {
        try {
          digest = validateDigest(header);
        } catch {
          await response.body?.cancel();
          throw new FailedPrecondition(
            `${action}: "${host.host}" sent an invalid Docker-Content-Digest "${header}"`,
          );
        }
      }
    }
    const tooLarge = (): NotFound =>
      markTooLarge(
        new NotFound(
          `${action}: the manifest at "${host.host}" is larger than ${MAX_MANIFEST_SIZE} bytes`,
        ),
      );
    if (size !== undefined && size > MAX_MANIFEST_SIZE) {
      await response.body?.cancel();
      throw tooLarge();
    }
    if (digest !== "" && size !== undefined) {
      await response.body?.cancel();
      return { mediaType, digest, size };
    }
    if (result.method === "HEAD") {
      await response.body?.cancel();
      result = await this.#session.request({ ...spec, method: "GET", headToGet: false });
      response = result.response;
      if (!response.ok) await this.#fail(spec, result);
    }
    const body = await readLimited(response.body, MAX_MANIFEST_SIZE);
    if (body === undefined) throw tooLarge();
    if (digest === "") {
      digest = sha256(body);
    } else if (parseDigest(digest).algorithm === "sha256" && sha256(body) !== digest) {
      throw new FailedPrecondition(
        `${action}: the content at "${host.host}" does not match digest "${digest}"`,
      );
    }
    return { mediaType, digest, size: body.length };
  }

  async #fail(spec: RequestSpec, result: RequestResult): Promise<never> {
    const status = result.response.status;
    if (status >= 300 && status < 400) {
      await result.response.body?.cancel();
      throw fatal(
        new FailedPrecondition(
          `${spec.action}: "${spec.host.host}" answered ${status} without a usable redirect`,
        ),
      );
    }
    throw await statusError(spec, result);
  }
}

interface Opened {
  body: ReadableStream<Uint8Array>;
  /** Bytes to drop first (a 200 answer to a range request without `Content-Range`). */
  skip: number;
}

/** A synthetic endpoint for a descriptor URL: no capabilities, headers or TLS settings. */
function urlHost(url: URL): RegistryHost {
  return {
    host: url.host,
    scheme: url.protocol === "http:" ? "http" : "https",
    path: "",
    capabilities: [],
    skipVerify: false,
    caFiles: [],
    clientCerts: [],
    headers: {},
    overridePath: true,
    httpFallback: false,
  };
}

class RegistryFetcher implements Fetcher {
  #session: Session;
  #parsed: ParsedRef;
  #hosts: RegistryHost[];

  constructor(session: Session, parsed: ParsedRef, hosts: RegistryHost[]) {
    this.#session = session;
    this.#parsed = parsed;
    this.#hosts = hosts;
  }

  async fetch(desc: Descriptor, options: FetchOptions = {}): Promise<ReadableStream<Uint8Array>> {
    const action = `Cannot fetch "${desc.digest}" from "${this.#parsed.ref}"`;
    try {
      validateDigest(desc.digest);
    } catch (err) {
      throw new InvalidArgument(`${action}: ${(err as Error).message}`);
    }
    const size = desc.size;
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new InvalidArgument(`${action}: invalid size ${size}`);
    }
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0 || (size > 0 && offset > size)) {
      throw new InvalidArgument(`${action}: invalid offset ${offset} for size ${size}`);
    }
    if (size > 0 && offset === size) {
      return new ReadableStream<Uint8Array>({
        start(controller) {
          controller.close();
        },
      });
    }
    const signal = this.#session.signal(options.signal);
    const release = await this.#session.limiter.acquire(signal);
    let opened: Opened;
    try {
      opened = await this.#open(desc, offset, action, signal);
    } catch (err) {
      release();
      throw err;
    }
    return this.#stream(desc, offset, opened, { action, release, signal });
  }

  async #open(
    desc: Descriptor,
    offset: number,
    action: string,
    signal: AbortSignal | undefined,
  ): Promise<Opened> {
    const best = new BestError();
    const tried: string[] = [];
    for (const text of desc.urls ?? []) {
      let url: URL;
      try {
        url = new URL(text);
      } catch {
        continue;
      }
      if (url.protocol !== "http:" && url.protocol !== "https:") continue;
      tried.push(redactUrl(url));
      try {
        return await this.#openAt(urlHost(url), url, desc, offset, action, signal);
      } catch (err) {
        if (isFatal(err, signal)) throw err;
        best.add(err as Error);
      }
    }
    const kind = isManifestLike(desc.mediaType) ? "manifests" : "blobs";
    for (const host of this.#hosts) {
      tried.push(host.host);
      const url = endpointUrl(host, this.#parsed, kind, desc.digest, true);
      try {
        return await this.#openAt(host, url, desc, offset, action, signal);
      } catch (err) {
        if (isFatal(err, signal)) throw err;
        best.add(err as Error);
      }
    }
    if (tried.length === 0) throw new NotFound(`${action}: no hosts with the pull capability`);
    const err = best.error;
    if (err === undefined || err instanceof NotFound) {
      throw new NotFound(
        `Cannot fetch content descriptor "${desc.digest}" (${desc.mediaType}) of "${this.#parsed.ref}": not found at ${
          tried.map((t) => `"${t}"`).join(", ")
        }`,
      );
    }
    throw err;
  }

  async #openAt(
    host: RegistryHost,
    url: URL,
    desc: Descriptor,
    offset: number,
    action: string,
    signal: AbortSignal | undefined,
  ): Promise<Opened> {
    const headers: Record<string, string> = {
      Accept: desc.mediaType === "" ? "*/*" : `${desc.mediaType}, */*`,
      "Accept-Encoding": "identity",
    };
    if (offset > 0) headers["Range"] = `bytes=${offset}-`;
    const spec: RequestSpec = {
      host,
      url,
      method: "GET",
      headers,
      scope: [pullScope(this.#parsed)],
      action,
    };
    if (signal !== undefined) spec.signal = signal;
    const result = await this.#session.request(spec);
    const response = result.response;
    if (!response.ok) throw await statusError(spec, result);
    let skip = 0;
    if (offset > 0) {
      const range = response.headers.get("content-range");
      if (range !== null) {
        if (!range.trim().startsWith(`bytes ${offset}-`)) {
          await response.body?.cancel();
          throw new FailedPrecondition(
            `${action}: "${host.host}" answered range "${range}" to a request from byte ${offset}`,
          );
        }
      } else if (response.status === 206) {
        await response.body?.cancel();
        throw new FailedPrecondition(
          `${action}: "${host.host}" answered 206 without a Content-Range`,
        );
      } else {
        // The server ignored the range: read from the start and drop what is already there.
        skip = offset;
      }
    }
    const body = response.body ??
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.close();
        },
      });
    return { body, skip };
  }

  #stream(
    desc: Descriptor,
    start: number,
    first: Opened,
    ctx: { action: string; release: () => void; signal: AbortSignal | undefined },
  ): ReadableStream<Uint8Array> {
    const { action, release, signal } = ctx;
    const size = desc.size;
    let offset = start;
    let reader = new BodyReader(first.body);
    let skip = first.skip;
    let sinceOpen = 0;
    let failures = 0;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      release();
    };
    const reconnect = async (why: string): Promise<void> => {
      reader.cancel().catch(() => undefined);
      failures = sinceOpen > 0 ? 0 : failures + 1;
      if (failures > MAX_RECONNECTS_WITHOUT_PROGRESS) {
        throw new Unavailable(
          `${action}: ${why} at byte ${offset} of ${size} (${MAX_RECONNECTS_WITHOUT_PROGRESS} reconnections without progress)`,
        );
      }
      if (failures > 0) await sleep(backoffDelay(failures, this.#session.retryDelayMs), signal);
      const opened = await this.#open(desc, offset, action, signal);
      reader = new BodyReader(opened.body, reader);
      skip = opened.skip;
      sinceOpen = 0;
    };
    // A byte stream: a BYOB reader's views are filled in place, so a consumer that reuses one
    // buffer (fetchToContent) downloads a blob without a new buffer per network read.
    return new ReadableStream({
      type: "bytes",
      autoAllocateChunkSize: FETCH_CHUNK,
      pull: async (controller) => {
        const request = controller.byobRequest;
        const view = request?.view ?? null;
        try {
          for (;;) {
            let value: Uint8Array | null;
            try {
              value = await reader.read(view === null ? FETCH_CHUNK : view.byteLength);
            } catch (err) {
              if (signal?.aborted) throw signal.reason;
              await reconnect(`the connection failed (${describeReadError(err)})`);
              continue;
            }
            if (value === null) {
              if (size > 0 && offset < size) {
                await reconnect("the connection ended early");
                continue;
              }
              finish();
              controller.close();
              request?.respond(0);
              return;
            }
            if (skip > 0) {
              const drop = Math.min(skip, value.length);
              skip -= drop;
              value = value.subarray(drop);
              if (value.length === 0) continue;
            }
            if (size > 0 && offset + value.length > size) {
              reader.cancel().catch(() => undefined);
              throw new FailedPrecondition(
                `${action}: the server sent more than the ${size} bytes of the descriptor`,
              );
            }
            offset += value.length;
            sinceOpen += value.length;
            if (request !== null && view !== null && value.length <= view.byteLength) {
              view.set(value);
              request.respond(value.length);
            } else {
              controller.enqueue(reader.owned ? value : value.slice());
            }
            return;
          }
        } catch (err) {
          finish();
          throw err;
        }
      },
      cancel: async (reason) => {
        finish();
        await reader.cancel(reason).catch(() => undefined);
      },
    }, { highWaterMark: 0 });
  }
}

/**
 * Reads a response body a piece at a time: into one buffer of its own with a BYOB reader when the
 * body is a byte stream (Deno's are), so that no read allocates; otherwise chunk by chunk.
 */
class BodyReader {
  #byob: ReadableStreamBYOBReader | null = null;
  #plain: ReadableStreamDefaultReader<Uint8Array> | null = null;
  #scratch: Uint8Array;

  /**
   * @param body The body.
   * @param previous The reader of an earlier body of the same stream, whose buffer is taken over.
   */
  constructor(body: ReadableStream<Uint8Array>, previous?: BodyReader) {
    this.#scratch = previous === undefined ? new Uint8Array(0) : previous.#scratch;
    try {
      this.#byob = body.getReader({ mode: "byob" });
    } catch {
      this.#plain = body.getReader();
    }
  }

  /** Whether {@linkcode read}'s chunks belong to the caller (they are not the reader's buffer). */
  get owned(): boolean {
    return this.#plain !== null;
  }

  /**
   * The next bytes, or `null` at the end: at most `max` of them, in the reader's buffer (valid
   * until the next read), or a chunk of any size from a body that is not a byte stream.
   */
  async read(max: number): Promise<Uint8Array | null> {
    if (this.#plain !== null) {
      const r = await this.#plain.read();
      return r.done ? null : r.value;
    }
    if (this.#scratch.byteLength < max) this.#scratch = new Uint8Array(max);
    const r = await this.#byob!.read(this.#scratch.subarray(0, max));
    // The read took the buffer over (it is transferred); what it returns views the same memory.
    if (r.value !== undefined) this.#scratch = new Uint8Array(r.value.buffer);
    return r.done ? null : r.value;
  }

  /** Cancels the body. */
  cancel(reason?: unknown): Promise<void> {
    return (this.#byob ?? this.#plain)!.cancel(reason);
  }
}

function describeReadError(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/https?:\/\/\S+/g, "").slice(0, 120);
}

class RegistryPusher implements Pusher {
  #session: Session;
  #parsed: ParsedRef;
  #host: RegistryHost;

  constructor(session: Session, parsed: ParsedRef, host: RegistryHost) {
    this.#session = session;
    this.#parsed = parsed;
    this.#host = host;
  }

  get #scope(): string[] {
    return [`repository:${this.#parsed.repository}:pull,push`];
  }

  async exists(desc: Descriptor): Promise<boolean> {
    const action = `Cannot check "${desc.digest}" in "${this.#parsed.ref}"`;
    validateDigest(desc.digest);
    const kind = isManifestLike(desc.mediaType) ? "manifests" : "blobs";
    const spec: RequestSpec = {
      host: this.#host,
      url: endpointUrl(this.#host, this.#parsed, kind, desc.digest, false),
      method: "HEAD",
      headers: kind === "manifests" ? { Accept: `${desc.mediaType}, ${MANIFEST_ACCEPT}` } : {},
      scope: this.#scope,
      action,
    };
    const signal = this.#session.signal();
    if (signal !== undefined) spec.signal = signal;
    const result = await this.#session.request(spec);
    const response = result.response;
    await response.body?.cancel();
    if (response.status === 404) return false;
    if (!response.ok) throw await statusError(spec, result);
    const digest = response.headers.get("docker-content-digest")?.trim();
    return digest === undefined || digest === "" || digest === desc.digest;
  }

  async push(
    desc: Descriptor,
    data: Uint8Array | (() => ReadableStream<Uint8Array>),
    options: PushOptions = {},
  ): Promise<void> {
    const action = `Cannot push "${desc.digest}" to "${this.#parsed.ref}"`;
    try {
      validateDigest(desc.digest);
    } catch (err) {
      throw new InvalidArgument(`${action}: ${(err as Error).message}`);
    }
    if (!Number.isSafeInteger(desc.size) || desc.size < 0) {
      throw new InvalidArgument(`${action}: invalid size ${desc.size}`);
    }
    if (data instanceof Uint8Array && data.length !== desc.size) {
      throw new InvalidArgument(
        `${action}: the data has ${data.length} bytes, the descriptor says ${desc.size}`,
      );
    }
    const signal = this.#session.signal(options.signal);
    if (isManifestLike(desc.mediaType)) {
      await this.#pushManifest(desc, data, options, action, signal);
    } else {
      await this.#pushBlob(desc, data, options, action, signal);
    }
  }

  async #pushManifest(
    desc: Descriptor,
    data: Uint8Array | (() => ReadableStream<Uint8Array>),
    options: PushOptions,
    action: string,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const tag = options.tag;
    if (tag !== undefined && !TAG_RE.test(tag)) {
      throw new InvalidArgument(`${action}: invalid tag "${tag}"`);
    }
    const bytes = data instanceof Uint8Array
      ? data
      : await readLimited(data(), Math.max(desc.size, MAX_MANIFEST_SIZE));
    if (bytes === undefined || bytes.length !== desc.size) {
      throw new InvalidArgument(`${action}: the data does not have the ${desc.size} bytes`);
    }
    if (parseDigest(desc.digest).algorithm === "sha256" && sha256(bytes) !== desc.digest) {
      throw new InvalidArgument(`${action}: the data does not match the digest`);
    }
    const spec: RequestSpec = {
      host: this.#host,
      url: endpointUrl(this.#host, this.#parsed, "manifests", tag ?? desc.digest, false),
      method: "PUT",
      headers: { "Content-Type": desc.mediaType },
      body: () => bytes,
      scope: this.#scope,
      action,
    };
    if (signal !== undefined) spec.signal = signal;
    const result = await this.#session.request(spec);
    const response = result.response;
    if (!response.ok) throw await statusError(spec, result);
    await response.body?.cancel();
    const stored = response.headers.get("docker-content-digest")?.trim();
    if (stored !== undefined && stored !== "" && stored !== desc.digest) {
      throw new FailedPrecondition(
        `${action}: "${this.#host.host}" stored it as "${stored}"`,
      );
    }
    options.onProgress?.(bytes.length);
  }

  async #pushBlob(
    desc: Descriptor,
    data: Uint8Array | (() => ReadableStream<Uint8Array>),
    options: PushOptions,
    action: string,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const start: RequestSpec = {
      host: this.#host,
      url: new URL(
        `${this.#host.scheme}://${this.#host.host}${this.#host.path}/${this.#parsed.repository}/blobs/uploads/`,
      ),
      method: "POST",
      scope: this.#scope,
      action,
    };
    // A cross-repository mount: the registry links the blob it already has (201) or, when it
    // cannot, starts an ordinary upload (202).
    const from = options.mountFrom?.find((r) => r !== this.#parsed.repository && r !== "");
    if (from !== undefined) {
      start.url.searchParams.set("mount", desc.digest);
      start.url.searchParams.set("from", from);
      start.scope = [...this.#scope, `repository:${from}:pull`];
    }
    if (signal !== undefined) start.signal = signal;
    const started = await this.#session.request(start);
    if (!started.response.ok) throw await statusError(start, started);
    await started.response.body?.cancel();
    if (from !== undefined && started.response.status === 201) {
      options.onProgress?.(desc.size);
      return;
    }
    const location = started.response.headers.get("location");
    if (location === null || location === "") {
      throw new FailedPrecondition(
        `${action}: "${this.#host.host}" started an upload without a Location`,
      );
    }
    const target = new URL(location, started.url);
    target.searchParams.append("digest", desc.digest);
    const size = desc.size;
    const onProgress = options.onProgress;
    const body = data instanceof Uint8Array
      ? () => data
      : () => countedStream(data(), size, action, onProgress);
    const put: RequestSpec = {
      host: this.#host,
      url: target,
      method: "PUT",
      headers: { "Content-Type": "application/octet-stream" },
      body,
      scope: this.#scope,
      action,
    };
    if (!(data instanceof Uint8Array)) put.contentLength = size;
    if (signal !== undefined) put.signal = signal;
    const result = await this.#session.request(put);
    const response = result.response;
    if (!response.ok) throw await statusError(put, result);
    await response.body?.cancel();
    if (data instanceof Uint8Array) onProgress?.(size);
  }
}

/** Passes a stream through, reporting progress and failing unless it has exactly `size` bytes. */
function countedStream(
  source: ReadableStream<Uint8Array>,
  size: number,
  action: string,
  onProgress: ((sent: number) => void) | undefined,
): ReadableStream<Uint8Array> {
  let sent = 0;
  return source.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        sent += chunk.length;
        if (sent > size) {
          throw new InvalidArgument(`${action}: the data has more than the ${size} bytes`);
        }
        controller.enqueue(chunk);
        onProgress?.(sent);
      },
      flush() {
        if (sent !== size) {
          throw new InvalidArgument(`${action}: the data has ${sent} bytes, expected ${size}`);
        }
      },
    }),
  );
}
