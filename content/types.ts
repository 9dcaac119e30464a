/** What the content store knows about a committed blob. */
export interface ContentInfo {
  /** The blob's digest. */
  digest: string;
  /** The blob's size in bytes. */
  size: number;
  /** When the blob was committed. */
  createdAt: Date;
  /** When the blob's record last changed. */
  updatedAt: Date;
  /** Labels (GC references, uncompressed digest, ...). */
  labels: Record<string, string>;
}

/** The state of an ingest in progress. */
export interface IngestStatus {
  /** The ingest's reference key. */
  ref: string;
  /** Bytes written so far. */
  offset: number;
  /** Expected total size; 0 when unknown. */
  total: number;
  /** Expected digest, when one was given. */
  expected?: string;
  /** When the ingest started. */
  startedAt: Date;
  /** When the ingest last received data. */
  updatedAt: Date;
}

/** Anything blobs can be read from by digest (the content store, or an archive being imported). */
export interface Provider {
  /**
   * Reads a whole blob. Meant for small documents (manifests, configs).
   *
   * @param digest The blob's digest.
   */
  readBlob(digest: string): Promise<Uint8Array>;
}
