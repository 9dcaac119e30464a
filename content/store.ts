import { join } from "node:path";
import {
  AlreadyExists,
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  Unavailable,
} from "../errors.ts";
import { validateDigest } from "../images/digest.ts";
import type { MetadataDb } from "../metadata/db.ts";
import { parseFilters, recordAdaptor } from "../metadata/filters.ts";
import { blobPathOf, ingestDir, openIngestWriter, readIngestStatus, removeDir } from "./_ingest.ts";
import { acquireLock, releaseLock } from "./_lock.ts";
import { dropEmpty, getRecord, READ_CHUNK, rowToInfo, validateLabels } from "./_records.ts";
import type { ContentInfo, IngestStatus, Provider } from "./types.ts";
import type { ContentWriter, ExpectedContent } from "./writer.ts";

/** Options for {@linkcode ContentStore.update}. */
export interface UpdateOptions {
  /**
   * The fields to change: `labels` replaces every label, `labels.<key>` sets one label (an empty or
   * missing value removes it). Absent or empty: replace every label.
   */
  fieldpaths?: string[];
}

/** The byte range read by {@linkcode ContentStore.readRange}. */
export interface ReadRangeOptions {
  /** The first byte to read. */
  offset: number;
  /** How many bytes to read; fewer are returned when the blob ends first. */
  length: number;
}

/** Options for {@linkcode ContentStore.stream}. */
export interface StreamOptions {
  /** The first byte to read (default 0). */
  offset?: number;
  /** The size of each chunk, in bytes (default 1 MiB). */
  chunkSize?: number;
  /**
   * Reads every chunk into the same buffer, and reads nothing ahead: a chunk is only valid until
   * the next one is requested. For consumers that are done with a chunk before they ask for the
   * next (`applyLayer`, `decompress`, `readTar`, a loop that writes or hashes each chunk): a
   * long blob then costs one buffer instead of one garbage buffer per chunk. Default `false`.
   */
  reuseBuffer?: boolean;
}

/** Options for {@linkcode ContentStore.writer}. */
export interface WriterOptions {
  /** The ingest's reference key: a writer with the same ref resumes the same ingest. */
  ref: string;
  /** The expected digest and size, when known. */
  expected?: ExpectedContent;
}

/** Options for {@linkcode ContentStore.writeBlob}. */
export interface WriteBlobOptions {
  /** The expected digest and size, when known. */
  expected?: ExpectedContent;
  /** Initial labels of the blob (not applied when the blob exists already). */
  labels?: Record<string, string>;
  /**
   * How long to keep retrying while another writer holds the ref, in milliseconds (default
   * 30000; 0 fails at once).
   */
  lockTimeoutMs?: number;
}

/** Total size and number of the committed blobs. */
export interface ContentUsage {
  /** Sum of the blob sizes, in bytes. */
  size: number;
  /** Number of blobs. */
  count: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function checkRange(value: number, name: string, action: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgument(`${action}: invalid ${name} ${value}`);
  }
}

function infoAdaptor(info: ContentInfo) {
  return recordAdaptor({ digest: info.digest, size: `${info.size}` }, { labels: info.labels });
}

/**
 * The local content store of a Strata root: committed blobs under `blobs/<algorithm>/<hex>`
 * (read-only once committed), resumable ingests under `ingest/<sha256 of ref>/`, and one record per
 * blob (size, times, labels) in the metadata database. A blob is visible once it is recorded.
 *
 * Several processes may share a root: writers of one ref exclude each other with a lock file, and
 * the database serialises records.
 *
 * @example Store a blob and read it back
 * ```ts
 * import { ContentStore } from "@strata/strata/content";
 * import { MetadataDb } from "@strata/strata/metadata";
 *
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * const store = new ContentStore(`${root}/content`, db);
 * const info = await store.writeBlob("config", new TextEncoder().encode("{}"), {});
 * const bytes = await store.readBlob(info.digest);
 * console.log(info.digest, bytes.length);
 * db.close();
 * ```
 */
export class ContentStore implements Provider {
  #root: string;
  #db: MetadataDb;

  /**
   * Opens the content store kept in `root` (created on demand), recording blobs in `db`.
   *
   * @param root The content directory, for example `<strata root>/content`.
   * @param db The root's metadata database.
   */
  constructor(root: string, db: MetadataDb) {
    this.#root = root;
    this.#db = db;
  }

  /** The content directory. */
  get root(): string {
    return this.#root;
  }

  #record(digest: string, action: string): ContentInfo {
    validateDigest(digest);
    const info = getRecord(this.#db, digest);
    if (info === undefined) throw new NotFound(`${action} "${digest}": not found`);
    return info;
  }

  /**
   * Returns what the store knows about a committed blob.
   *
   * @param digest The blob's digest.
   * @returns The blob's info.
   * @throws {NotFound} When the blob is not in the store.
   * @throws {InvalidArgument} When the digest is malformed or of an unsupported algorithm.
   */
  info(digest: string): Promise<ContentInfo> {
    return Promise.resolve().then(() => this.#record(digest, "Cannot find blob"));
  }

  /**
   * Changes a blob's labels.
   *
   * @param digest The blob's digest.
   * @param labels The new labels (all of them, or the ones named by `fieldpaths`).
   * @param options Which labels to change.
   * @returns The blob's updated info.
   * @throws {NotFound} When the blob is not in the store.
   * @throws {InvalidArgument} For a malformed digest, a field path other than `labels` or
   *   `labels.<key>`, or a label longer than 4096 bytes (key and value).
   */
  update(
    digest: string,
    labels: Record<string, string>,
    options: UpdateOptions = {},
  ): Promise<ContentInfo> {
    return Promise.resolve().then(() => {
      const action = `Cannot update blob "${digest}"`;
      validateDigest(digest);
      const fieldpaths = options.fieldpaths ?? [];
      return this.#db.transaction(() => {
        const current = this.#record(digest, "Cannot update blob");
        let next: Record<string, string>;
        if (fieldpaths.length === 0) {
          next = dropEmpty(labels);
        } else {
          next = { ...current.labels };
          for (const path of fieldpaths) {
            if (path === "labels") {
              next = dropEmpty(labels);
            } else if (path.startsWith("labels.") && path.length > "labels.".length) {
              const key = path.slice("labels.".length);
              const value = Object.hasOwn(labels, key) ? labels[key] : undefined;
              if (value === undefined || value === "") delete next[key];
              else next[key] = value;
            } else {
              throw new InvalidArgument(`${action}: field "${path}" cannot be updated`);
            }
          }
        }
        validateLabels(next, action);
        const now = new Date().toISOString();
        this.#db.run(
          "UPDATE content SET labels = ?, updated_at = ? WHERE digest = ?",
          JSON.stringify(next),
          now,
          digest,
        );
        return { ...current, labels: next, updatedAt: new Date(now) };
      });
    });
  }

  /**
   * Lists committed blobs, optionally filtered (containerd filter syntax on `digest`, `size` and
   * `labels.<key>`; several filters are alternatives).
   *
   * @param filters The filters; none lists every blob.
   * @returns The matching blobs' info, ordered by digest.
   * @throws {InvalidArgument} When a filter cannot be parsed.
   */
  list(filters: string[] = []): Promise<ContentInfo[]> {
    return Promise.resolve().then(() => {
      const filter = parseFilters(filters);
      return this.#db.all("SELECT * FROM content ORDER BY digest")
        .map(rowToInfo)
        .filter((info) => filter.match(infoAdaptor(info)));
    });
  }

  /**
   * Calls `fn` for every committed blob that matches `filters`, one at a time.
   *
   * @param fn Called with each blob's info; may be async.
   * @param filters The filters, as for {@linkcode ContentStore.list}.
   * @returns A promise that resolves once every blob was visited.
   */
  async walk(
    fn: (info: ContentInfo) => void | Promise<void>,
    filters: string[] = [],
  ): Promise<void> {
    for (const info of await this.list(filters)) await fn(info);
  }

  /**
   * Removes a committed blob: its record, then its file.
   *
   * @param digest The blob's digest.
   * @returns A promise that resolves once the blob is gone.
   * @throws {NotFound} When the blob is not in the store.
   */
  delete(digest: string): Promise<void> {
    return Promise.resolve().then(() => {
      validateDigest(digest);
      const changed = this.#db.run("DELETE FROM content WHERE digest = ?", digest);
      if (changed === 0) throw new NotFound(`Cannot delete blob "${digest}": not found`);
      removeDir(blobPathOf(this.#root, digest));
    });
  }

  /**
   * Reads a whole committed blob. Meant for small documents (manifests, configs).
   *
   * @param digest The blob's digest.
   * @returns The blob's bytes.
   * @throws {NotFound} When the blob is not in the store.
   */
  async readBlob(digest: string): Promise<Uint8Array> {
    this.#record(digest, "Cannot read blob");
    try {
      return await Deno.readFile(this.blobPath(digest));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new NotFound(`Cannot read blob "${digest}": its file is missing`);
      }
      throw err;
    }
  }

  /**
   * Reads part of a committed blob.
   *
   * @param digest The blob's digest.
   * @param options The range to read.
   * @returns The bytes, fewer than `length` when the blob ends first.
   * @throws {NotFound} When the blob is not in the store.
   * @throws {InvalidArgument} When the range is negative or starts past the end of the blob.
   */
  async readRange(digest: string, options: ReadRangeOptions): Promise<Uint8Array> {
    const action = `Cannot read blob "${digest}"`;
    const info = this.#record(digest, "Cannot read blob");
    const { offset, length } = options;
    checkRange(offset, "offset", action);
    checkRange(length, "length", action);
    if (offset > info.size) {
      throw new InvalidArgument(`${action}: offset ${offset} is past its size ${info.size}`);
    }
    const want = Math.min(length, info.size - offset);
    const out = new Uint8Array(want);
    using file = await this.#openBlob(digest);
    await file.seek(offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < want) {
      const n = await file.read(out.subarray(done));
      if (n === null) {
        throw new FailedPrecondition(`${action}: its file is shorter than its size ${info.size}`);
      }
      done += n;
    }
    return out;
  }

  async #openBlob(digest: string): Promise<Deno.FsFile> {
    try {
      return await Deno.open(this.blobPath(digest));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new NotFound(`Cannot read blob "${digest}": its file is missing`);
      }
      throw err;
    }
  }

  /**
   * Streams a committed blob in large chunks (each a new buffer, unless `options.reuseBuffer`).
   *
   * @param digest The blob's digest.
   * @param options Where to start and the chunk size.
   * @returns A stream of the blob's bytes from `offset` to the end.
   * @throws {NotFound} When the blob is not in the store.
   * @throws {InvalidArgument} When the digest is malformed or the offset or chunk size is invalid.
   */
  stream(digest: string, options: StreamOptions = {}): ReadableStream<Uint8Array> {
    const action = `Cannot stream blob "${digest}"`;
    const info = this.#record(digest, "Cannot stream blob");
    const offset = options.offset ?? 0;
    const chunkSize = options.chunkSize ?? READ_CHUNK;
    checkRange(offset, "offset", action);
    checkRange(chunkSize, "chunk size", action);
    if (chunkSize === 0) throw new InvalidArgument(`${action}: invalid chunk size 0`);
    if (offset > info.size) {
      throw new InvalidArgument(`${action}: offset ${offset} is past its size ${info.size}`);
    }
    const reuse = options.reuseBuffer ?? false;
    let shared: Uint8Array | undefined;
    let file: Deno.FsFile | undefined;
    let position = offset;
    const finish = () => {
      file?.close();
      file = undefined;
    };
    return new ReadableStream<Uint8Array>({
      start: async () => {
        file = await this.#openBlob(digest);
        await file.seek(offset, Deno.SeekMode.Start);
      },
      pull: async (controller) => {
        if (file === undefined) return;
        const want = Math.min(chunkSize, info.size - position);
        if (want === 0) {
          finish();
          controller.close();
          return;
        }
        const buf = reuse
          ? (shared ??= new Uint8Array(Math.min(chunkSize, info.size - offset))).subarray(0, want)
          : new Uint8Array(want);
        let done = 0;
        while (done < want) {
          const n = await file.read(buf.subarray(done));
          if (n === null) {
            finish();
            controller.error(
              new FailedPrecondition(`${action}: its file is shorter than its size ${info.size}`),
            );
            return;
          }
          done += n;
        }
        position += want;
        controller.enqueue(buf);
      },
      cancel: finish,
    }, reuse ? { highWaterMark: 0 } : undefined);
  }

  /**
   * The path of a committed blob's file, for fast reads; the file may be absent when the blob is not
   * in the store.
   *
   * @param digest The blob's digest.
   * @returns The path `<root>/blobs/<algorithm>/<hex>`.
   * @throws {InvalidArgument} When the digest is malformed or of an unsupported algorithm.
   */
  blobPath(digest: string): string {
    return blobPathOf(this.#root, digest);
  }

  /**
   * The path of the file an ingest writes its bytes to, for reading a blob while it is written
   * (a layer applied as it downloads). The commit renames that file into the blob store, so a
   * reader should open it once and keep the descriptor; the file is absent when there is no such
   * ingest.
   *
   * @param ref The ingest's reference key.
   * @returns The path `<root>/ingest/<sha256 of ref>/data`.
   */
  ingestPath(ref: string): string {
    return join(ingestDir(this.#root, ref), "data");
  }

  /**
   * Sums the sizes of the committed blobs.
   *
   * @returns The total size and the number of blobs.
   */
  usage(): Promise<ContentUsage> {
    return Promise.resolve().then(() => {
      const row = this.#db.get(
        "SELECT COALESCE(SUM(size), 0) AS size, COUNT(*) AS count FROM content",
      );
      return { size: Number(row?.size ?? 0), count: Number(row?.count ?? 0) };
    });
  }

  /**
   * Opens a writer for the ingest `ref`, resuming it when it exists on disk.
   *
   * @param options The ref and the expected digest and size.
   * @returns The writer; close or commit it.
   * @throws {InvalidArgument} When the ref is empty or the expected digest is malformed.
   * @throws {AlreadyExists} When the expected digest is already in the store.
   * @throws {Unavailable} When another writer (in any process) holds the ref.
   * @throws {FailedPrecondition} When the existing ingest was started with another size or digest.
   */
  writer(options: WriterOptions): Promise<ContentWriter> {
    return openIngestWriter({ root: this.#root, db: this.#db }, options.ref, options.expected);
  }

  /**
   * Returns the status of an ingest in progress (or left behind by a closed or killed writer).
   *
   * @param ref The ingest's reference key.
   * @returns The ingest's status.
   * @throws {NotFound} When there is no such ingest.
   */
  status(ref: string): Promise<IngestStatus> {
    return Promise.resolve().then(() => {
      const status = readIngestStatus(ingestDir(this.#root, ref), ref);
      if (status === undefined) throw new NotFound(`Cannot find ingest "${ref}"`);
      return status;
    });
  }

  /**
   * Lists ingests in progress, optionally filtered on `ref` or `expected`.
   *
   * @param filters The filters (containerd filter syntax); none lists every ingest.
   * @returns The ingests' status.
   * @throws {InvalidArgument} When a filter cannot be parsed.
   */
  async listIngests(filters: string[] = []): Promise<IngestStatus[]> {
    const filter = parseFilters(filters);
    const base = join(this.#root, "ingest");
    const out: IngestStatus[] = [];
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(base));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return out;
      throw err;
    }
    for (const entry of entries) {
      if (!entry.isDirectory) continue;
      let status: IngestStatus | undefined;
      try {
        status = readIngestStatus(join(base, entry.name));
      } catch {
        continue; // Vanished or unreadable meanwhile.
      }
      if (status === undefined) continue;
      const adaptor = recordAdaptor({ ref: status.ref, expected: status.expected });
      if (filter.match(adaptor)) out.push(status);
    }
    return out.sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
  }

  /**
   * Discards an ingest and its bytes.
   *
   * @param ref The ingest's reference key.
   * @returns A promise that resolves once the ingest is gone.
   * @throws {NotFound} When there is no such ingest.
   * @throws {Unavailable} When a writer (in any process) holds the ingest.
   */
  abort(ref: string): Promise<void> {
    return Promise.resolve().then(() => {
      const dir = ingestDir(this.#root, ref);
      try {
        Deno.statSync(dir);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) {
          throw new NotFound(`Cannot abort ingest "${ref}": not found`);
        }
        throw err;
      }
      try {
        acquireLock(dir, ref);
      } catch (err) {
        if (err instanceof Unavailable) {
          throw new Unavailable(err.message.replace("Cannot open ingest", "Cannot abort ingest"));
        }
        throw err;
      }
      try {
        removeDir(dir);
      } finally {
        releaseLock(dir);
      }
    });
  }

  /**
   * Writes a whole blob through an ingest and commits it, retrying while another writer holds the
   * ref. A blob that exists already is success: its info is returned (and `labels` are not applied).
   *
   * @param ref The ingest's reference key.
   * @param data The bytes, whole or as chunks.
   * @param options The expected digest and size, initial labels, and the lock timeout.
   * @returns The blob's info.
   * @throws {FailedPrecondition} When the bytes do not match the expected size or digest.
   * @throws {Unavailable} When the ref stays locked for longer than the lock timeout.
   */
  async writeBlob(
    ref: string,
    data: Uint8Array | AsyncIterable<Uint8Array>,
    options: WriteBlobOptions = {},
  ): Promise<ContentInfo> {
    const expected = options.expected ?? {};
    let writer: ContentWriter;
    try {
      writer = await this.#openWriter(ref, expected, options.lockTimeoutMs ?? 30_000);
    } catch (err) {
      if (err instanceof AlreadyExists && expected.digest !== undefined) {
        return await this.info(expected.digest);
      }
      throw err;
    }
    try {
      // Resuming is safe only when the result is verified against an expected digest.
      if (writer.offset > 0 && expected.digest === undefined) await writer.truncate(0);
      let skip = writer.offset;
      if (data instanceof Uint8Array) {
        if (skip > data.length) {
          await writer.truncate(0);
          skip = 0;
        }
        await writer.write(skip === 0 ? data : data.subarray(skip));
      } else {
        for await (const chunk of data) {
          if (skip >= chunk.length) {
            skip -= chunk.length;
            continue;
          }
          await writer.write(skip === 0 ? chunk : chunk.subarray(skip));
          skip = 0;
        }
      }
      const commit: { size?: number; expected?: string; labels?: Record<string, string> } = {};
      if (expected.size !== undefined) commit.size = expected.size;
      if (expected.digest !== undefined) commit.expected = expected.digest;
      if (options.labels !== undefined) commit.labels = options.labels;
      return await writer.commit(commit);
    } catch (err) {
      if (err instanceof AlreadyExists) return await this.info(expected.digest ?? writer.digest());
      throw err;
    } finally {
      await writer.close();
    }
  }

  /** Opens a writer, retrying with a growing random back-off while the ref is locked. */
  async #openWriter(
    ref: string,
    expected: ExpectedContent,
    timeoutMs: number,
  ): Promise<ContentWriter> {
    const deadline = Date.now() + timeoutMs;
    let retry = 16;
    for (;;) {
      try {
        return await this.writer({ ref, expected });
      } catch (err) {
        if (!(err instanceof Unavailable) || Date.now() >= deadline) throw err;
      }
      await sleep(Math.min(Math.random() * retry, Math.max(0, deadline - Date.now())));
      retry = Math.min(retry * 2, 2048);
    }
  }
}
