import type { ContentInfo, IngestStatus } from "./types.ts";

/** What an ingest is expected to produce; a size of 0 means unknown. */
export interface ExpectedContent {
  /** The digest the committed bytes must have. */
  digest?: string;
  /** The number of bytes the committed blob must have (0 or absent: unknown). */
  size?: number;
}

/** Options for {@linkcode ContentWriter.commit}. */
export interface CommitOptions {
  /**
   * The size the blob must have; 0 or absent falls back to the writer's expected size (if any).
   */
  size?: number;
  /** The digest the blob must have; absent falls back to the writer's expected digest (if any). */
  expected?: string;
  /** Initial labels of the blob record. */
  labels?: Record<string, string>;
}

/**
 * A writer for one ingest (a blob being written under a ref), as returned by
 * `ContentStore.writer`. Bytes are appended in order and hashed as they arrive; `commit` verifies
 * them and moves them into the store, `close` keeps them on disk so a later writer with the same ref
 * resumes where this one stopped.
 *
 * @example Write and commit a blob
 * ```ts
 * import { ContentStore } from "@strata/strata/content";
 * import { MetadataDb } from "@strata/strata/metadata";
 *
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * const store = new ContentStore(`${root}/content`, db);
 * const w = await store.writer({ ref: "example" });
 * await w.write(new TextEncoder().encode("hello"));
 * const info = await w.commit();
 * console.log(info.digest, info.size);
 * db.close();
 * ```
 */
export interface ContentWriter {
  /** The ingest's reference key. */
  readonly ref: string;
  /** The number of bytes written so far (including bytes restored on resume). */
  readonly offset: number;
  /**
   * The digest of the bytes written so far.
   *
   * @returns The digest in `algorithm:hex` form.
   */
  digest(): string;
  /**
   * Appends bytes to the ingest.
   *
   * @param chunk The bytes to append.
   * @returns A promise that resolves once the bytes are written.
   */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Discards everything written so far. Only a size of 0 is supported.
   *
   * @param size Must be 0.
   * @returns A promise that resolves once the data is truncated.
   */
  truncate(size: 0): Promise<void>;
  /**
   * Verifies the bytes and moves them into the store as a committed blob; always ends the writer.
   *
   * @param options Expected size and digest, initial labels.
   * @returns The new blob's info.
   */
  commit(options?: CommitOptions): Promise<ContentInfo>;
  /**
   * Flushes the bytes and releases the ingest, keeping it on disk for resumption. Idempotent.
   *
   * @returns A promise that resolves once the writer is closed.
   */
  close(): Promise<void>;
  /**
   * The writer's current status.
   *
   * @returns The ingest status as this writer sees it.
   */
  status(): IngestStatus;
}
