// Blob records in the metadata database, label rules and file hashing shared by the store and the
// ingest writer.
import { createHash, type Hash } from "node:crypto";
import type { MetadataDb, Row } from "../metadata/db.ts";
import { checkLabels } from "../metadata/labels.ts";
import type { ContentInfo } from "./types.ts";

export { MAX_LABEL_BYTES } from "../metadata/labels.ts";

/** Size of the buffer used to read blob and ingest files. */
export const READ_CHUNK = 1 << 20;

export function validateLabels(labels: Record<string, string>, action: string): void {
  checkLabels(labels, action);
}

/** Returns a copy of `labels` without empty values (empty values are never stored). */
export function dropEmpty(labels: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(labels)) {
    if (value !== "") out[key] = value;
  }
  return out;
}

export function rowToInfo(row: Row): ContentInfo {
  let labels: Record<string, string> = {};
  try {
    const parsed: unknown = JSON.parse(String(row.labels ?? "{}"));
    if (parsed !== null && typeof parsed === "object") labels = parsed as Record<string, string>;
  } catch {
    // A corrupt labels column reads as no labels.
  }
  return {
    digest: String(row.digest),
    size: Number(row.size),
    createdAt: new Date(String(row.created_at)),
    updatedAt: new Date(String(row.updated_at)),
    labels,
  };
}

export function getRecord(db: MetadataDb, digest: string): ContentInfo | undefined {
  const row = db.get("SELECT * FROM content WHERE digest = ?", digest);
  return row === undefined ? undefined : rowToInfo(row);
}

/**
 * Records a committed blob. Returns `undefined` when a record for the digest exists already (another
 * writer got there first).
 */
export function insertRecord(
  db: MetadataDb,
  digest: string,
  size: number,
  labels: Record<string, string>,
): ContentInfo | undefined {
  const now = new Date().toISOString();
  const changed = db.run(
    "INSERT OR IGNORE INTO content (digest, size, created_at, updated_at, labels) VALUES (?, ?, ?, ?, ?)",
    digest,
    size,
    now,
    now,
    JSON.stringify(dropEmpty(labels)),
  );
  if (changed === 0) return undefined;
  return {
    digest,
    size,
    createdAt: new Date(now),
    updatedAt: new Date(now),
    labels: dropEmpty(labels),
  };
}

/** Feeds a file's bytes into `hash`, reading large chunks; returns the number of bytes read. */
export async function hashFileInto(path: string, hash: Hash): Promise<number> {
  using file = await Deno.open(path);
  const buf = new Uint8Array(READ_CHUNK);
  let total = 0;
  for (;;) {
    const n = await file.read(buf);
    if (n === null) return total;
    hash.update(buf.subarray(0, n));
    total += n;
  }
}

/** Computes a file's digest with `algorithm` (`sha256`, `sha384` or `sha512`). */
export async function digestFile(
  path: string,
  algorithm: string,
): Promise<{ digest: string; size: number }> {
  const hash = createHash(algorithm);
  const size = await hashFileInto(path, hash);
  return { digest: `${algorithm}:${hash.digest("hex")}`, size };
}
