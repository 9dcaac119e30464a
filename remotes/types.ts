/**
 * The contracts of the registry client: a resolver turns a reference into a descriptor and hands
 * out fetchers and pushers for its repository (containerd's `remotes.Resolver`).
 *
 * @module
 */

import type { Descriptor } from "../images/types.ts";
import type { Credentials } from "./credentials.ts";

/** What {@linkcode Resolver.resolve} found. */
export interface Resolved {
  /** The reference as given (normalised: `docker.io/library/alpine:latest`). */
  name: string;
  /** The manifest or index: media type from `Content-Type`, digest, size. */
  descriptor: Descriptor;
}

/** Options for {@linkcode Fetcher.fetch}. */
export interface FetchOptions {
  /** The first byte wanted (sends `Range: bytes=<offset>-`); default 0. */
  offset?: number;
  /** Cancels the request and the body. */
  signal?: AbortSignal;
}

/** Reads blobs and manifests of one repository by digest. */
export interface Fetcher {
  /**
   * Opens the content of a descriptor, from `offset`. The stream reconnects by itself at the
   * current offset after a dropped connection (bounded retries without progress) and errors when
   * the server sends more bytes than `desc.size`. It does not verify the digest: the content
   * store's commit does.
   *
   * @param desc The blob or manifest (digest, size, media type; `urls` are tried first).
   * @param options The offset and a signal.
   * @returns The bytes from `offset` to the end.
   */
  fetch(desc: Descriptor, options?: FetchOptions): Promise<ReadableStream<Uint8Array>>;
}

/** Options for {@linkcode Pusher.push}. */
export interface PushOptions {
  /** The tag to put a manifest or index under (default: by digest only). */
  tag?: string;
  /** Called with the number of bytes sent so far. */
  onProgress?: (sent: number) => void;
  /**
   * Repositories of the same registry that hold the blob: the first is asked for a
   * cross-repository mount (`POST ...?mount=<digest>&from=<repo>`), so the bytes are not sent.
   */
  mountFrom?: string[];
  /** Cancels the upload. */
  signal?: AbortSignal;
}

/** Writes blobs and manifests to one repository. */
export interface Pusher {
  /**
   * Tells whether the repository already has a blob or manifest (`HEAD`).
   *
   * @param desc The descriptor.
   * @returns `true` when the registry has it with the same digest.
   */
  exists(desc: Descriptor): Promise<boolean>;
  /**
   * Uploads a blob (`POST` then `PUT ?digest=`) or a manifest (`PUT manifests/<tag or digest>`
   * with its media type as `Content-Type`), chosen by `desc.mediaType`.
   *
   * @param desc The descriptor of the bytes.
   * @param data The bytes, or a function opening them as a stream (called again on a retry).
   * @param options The tag, progress and a signal.
   * @returns When the registry has accepted the content.
   */
  push(
    desc: Descriptor,
    data: Uint8Array | (() => ReadableStream<Uint8Array>),
    options?: PushOptions,
  ): Promise<void>;
}

/** Options shared by every request of a resolver. */
export interface ResolverOptions {
  /** The `hosts.toml` tree (containerd's `certs.d` layout); none by default. */
  hostsDir?: string;
  /** Use plain http for the implicit upstream entry (ctr's `--plain-http`). */
  plainHttp?: boolean;
  /** Looks up credentials for a registry host (`host[:port]`); none: anonymous. */
  credentials?: (host: string) => Promise<Credentials | undefined>;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
  /** The `User-Agent` header (default `strata/<version>`). */
  userAgent?: string;
  /** Attempts per request on 408, 429, 5xx and connection errors (default 5). */
  maxAttempts?: number;
  /** The first retry's delay in milliseconds; doubled per attempt with jitter (default 200). */
  retryDelayMs?: number;
  /** How many blob downloads may run at once across the resolver (default 3). */
  maxConcurrentDownloads?: number;
  /** Cancels every request. */
  signal?: AbortSignal;
}
