/**
 * Downloading into the content store: containerd's `remotes.Fetch` with resumable ingests keyed by
 * {@linkcode makeRefKey}.
 *
 * @module
 */

import type { ContentStore } from "../content/store.ts";
import type { ContentInfo } from "../content/types.ts";
import type { ContentWriter } from "../content/writer.ts";
import { AlreadyExists, FailedPrecondition, InvalidArgument, Unavailable } from "../errors.ts";
import {
  isConfigType,
  isIndexType,
  isKnownConfigType,
  isLayerType,
  isManifestType,
  MEDIA_TYPE_IN_TOTO,
} from "../images/media_types.ts";
import type { Descriptor } from "../images/types.ts";
import type { Fetcher } from "./types.ts";
import { sleep } from "./_http.ts";

/** Options for {@linkcode fetchToContent}. */
export interface FetchToContentOptions {
  /** The ingest ref (default: {@linkcode makeRefKey} of the descriptor). */
  ref?: string;
  /** Labels of the committed blob. */
  labels?: Record<string, string>;
  /** Called as bytes arrive with the ingest's offset and the descriptor's size. */
  onProgress?: (offset: number, total: number) => void;
  /**
   * Called once the ingest is open for this download and its file holds only bytes of the blob
   * (a resumed prefix, or nothing), before anything is written: from then on the file
   * (`ContentStore.ingestPath(ref)`) grows until the commit renames it into the blob store.
   */
  onOpen?: (ref: string) => void;
  /** Cancels the download (the partial ingest is kept for a later resume). */
  signal?: AbortSignal;
}

const ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name";
/** How long to wait for an ingest ref locked by another writer (containerd waits 5 minutes). */
const LOCK_TIMEOUT_MS = 5 * 60_000;
/** Reopenings of a stream that failed after making progress. */
const MAX_REOPENS = 5;
/** The buffer a byte stream is read into, reused for the whole download. */
const READ_BUFFER = 256 * 1024;

/**
 * The content-store ingest ref for a descriptor, as containerd's `remotes.MakeRefKey`:
 * `manifest-`, `index-`, `layer-`, `config-`, `attestation-` or `unknown-`, then the digest
 * (prefixed by `<org.opencontainers.image.ref.name>@` when that annotation is set).
 *
 * @param desc The descriptor.
 * @returns The ref key, e.g. `layer-sha256:...`.
 *
 * @example
 * ```ts
 * import { makeRefKey } from "@strata/strata/remotes";
 *
 * console.log(makeRefKey({
 * mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
 * digest: "sha256:" + "a".repeat(64),
 * size: 10,
 * }));
 * ```
 */
export function makeRefKey(desc: Descriptor): string {
  const name = desc.annotations?.[ANNOTATION_REF_NAME];
  const key = name === undefined ? desc.digest : `${name}@${desc.digest}`;
  const type = desc.mediaType;
  if (isManifestType(type)) return `manifest-${key}`;
  if (isIndexType(type)) return `index-${key}`;
  if (isLayerType(type)) return `layer-${key}`;
  if (isConfigType(type) || isKnownConfigType(type)) return `config-${key}`;
  if (type === MEDIA_TYPE_IN_TOTO) return `attestation-${key}`;
  return `unknown-${key}`;
}

/**
 * Downloads a descriptor's content into the content store and commits it with the expected digest
 * and size (containerd's `remotes.Fetch`). The ingest is keyed by {@linkcode makeRefKey}, so an
 * interrupted download resumes from the bytes a previous run left behind (the fetcher is asked for
 * a range). A stream that fails after making progress is reopened at the new offset (up to 5
 * times). A download that fails or is aborted before its first byte leaves no ingest behind (there
 * is nothing to resume; containerd keeps the empty ingest). Embedded `data` of the descriptor is
 * used instead of the network when complete.
 *
 * @param content The content store.
 * @param fetcher Reads the content (e.g. from {@linkcode Resolver.fetcher}).
 * @param desc The descriptor: digest, size and media type.
 * @param options The ingest ref, labels, progress callback and signal.
 * @returns The committed blob's info (the existing info when the blob is already in the store).
 * @throws {InvalidArgument} When the descriptor's size is 0 or invalid.
 * @throws {FailedPrecondition} When the bytes do not match the digest or size; nothing is committed
 *   and the ingest is discarded.
 * @throws {Unavailable} When the ingest stays locked by another writer for 5 minutes.
 *
 * @example
 * ```ts
 * import { fetchToContent, Resolver } from "@strata/strata/remotes";
 * import { ContentStore } from "@strata/strata/content";
 * import { MetadataDb } from "@strata/strata/metadata";
 *
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * const content = new ContentStore(`${root}/content`, db);
 * using resolver = new Resolver();
 * const { name, descriptor } = await resolver.resolve("docker.io/library/alpine:3.20");
 * const info = await fetchToContent(content, await resolver.fetcher(name), descriptor);
 * console.log(info.digest, info.size);
 * db.close();
 * ```
 */
export async function fetchToContent(
  content: ContentStore,
  fetcher: Fetcher,
  desc: Descriptor,
  options: FetchToContentOptions = {},
): Promise<ContentInfo> {
  const action = `Cannot fetch "${desc.digest}"`;
  if (!Number.isSafeInteger(desc.size) || desc.size < 0) {
    throw new InvalidArgument(`${action}: invalid size ${desc.size}`);
  }
  const ref = options.ref ?? makeRefKey(desc);
  const signal = options.signal;
  signal?.throwIfAborted();
  let writer: ContentWriter;
  try {
    writer = await openWriter(content, ref, desc, signal);
  } catch (err) {
    if (err instanceof AlreadyExists) return await content.info(desc.digest);
    throw err;
  }
  try {
    if (desc.size === 0) {
      throw new InvalidArgument(`${action}: the descriptor has size 0`);
    }
    if (writer.offset > desc.size) await writer.truncate(0);
    options.onOpen?.(ref);
    const embedded = embeddedData(desc);
    if (embedded !== undefined && writer.offset < desc.size) {
      await writer.write(embedded.subarray(writer.offset));
      options.onProgress?.(writer.offset, desc.size);
    }
    let reopens = 0;
    while (writer.offset < desc.size) {
      signal?.throwIfAborted();
      const before = writer.offset;
      const fetchOptions: { offset: number; signal?: AbortSignal } = { offset: before };
      if (signal !== undefined) fetchOptions.signal = signal;
      const stream = await fetcher.fetch(desc, fetchOptions);
      try {
        for await (const chunk of readChunks(stream)) {
          if (writer.offset + chunk.length > desc.size) {
            throw new FailedPrecondition(
              `${action}: received more than the ${desc.size} bytes of the descriptor`,
            );
          }
          await writer.write(chunk);
          options.onProgress?.(writer.offset, desc.size);
        }
      } catch (err) {
        if (signal?.aborted || err instanceof FailedPrecondition) throw err;
        if (writer.offset === before || reopens >= MAX_REOPENS) throw err;
        reopens++;
        continue;
      }
      if (writer.offset === before) break;
    }
    const commit: { size: number; expected: string; labels?: Record<string, string> } = {
      size: desc.size,
      expected: desc.digest,
    };
    if (options.labels !== undefined) commit.labels = options.labels;
    try {
      return await writer.commit(commit);
    } catch (err) {
      if (err instanceof AlreadyExists) return await content.info(desc.digest);
      if (err instanceof FailedPrecondition) {
        throw new FailedPrecondition(`${action}: ${err.message}`);
      }
      throw err;
    }
  } catch (err) {
    await writer.close();
    if (writer.offset === 0) await discardEmptyIngest(content, ref);
    throw err;
  } finally {
    await writer.close(); // After the catch's, it does nothing.
  }
}

/**
 * Removes an ingest a failed download left without a byte. Another writer may have taken it
 * meanwhile: then it is theirs (`Unavailable`, or it holds bytes now), or already committed
 * (`NotFound`).
 */
async function discardEmptyIngest(content: ContentStore, ref: string): Promise<void> {
  try {
    if ((await content.status(ref)).offset === 0) await content.abort(ref);
  } catch {
    // Best effort: an empty ingest is resumed or overwritten by the next pull.
  }
}

/**
 * The chunks of a stream. A byte stream (the resolver's) is read with a BYOB reader into one
 * buffer, so each chunk is only valid until the next is requested and a download allocates no
 * buffer per network read; other streams are read as they are. Stopping early cancels the stream.
 */
async function* readChunks(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<Uint8Array, void, undefined> {
  let reader: ReadableStreamBYOBReader;
  try {
    reader = stream.getReader({ mode: "byob" });
  } catch {
    yield* stream;
    return;
  }
  let done = false;
  try {
    let buffer = new Uint8Array(READ_BUFFER);
    for (;;) {
      const r = await reader.read(buffer);
      if (r.done) {
        done = true;
        return;
      }
      yield r.value;
      // The read took the buffer over; the chunk views the same memory.
      buffer = new Uint8Array(r.value.buffer);
    }
  } finally {
    if (!done) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

function embeddedData(desc: Descriptor): Uint8Array | undefined {
  if (desc.data === undefined) return undefined;
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.from(atob(desc.data), (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
  return bytes.length === desc.size ? bytes : undefined;
}

/** Opens the ingest writer, retrying with a growing random back-off while another writer holds it. */
async function openWriter(
  content: ContentStore,
  ref: string,
  desc: Descriptor,
  signal: AbortSignal | undefined,
): Promise<ContentWriter> {
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  let retry = 16;
  for (;;) {
    try {
      return await content.writer({ ref, expected: { digest: desc.digest, size: desc.size } });
    } catch (err) {
      if (!(err instanceof Unavailable) || Date.now() >= deadline) throw err;
    }
    await sleep(Math.min(Math.random() * retry, Math.max(0, deadline - Date.now())), signal);
    retry = Math.min(retry * 2, 2048);
  }
}
