// Ingest directories (`<root>/ingest/<sha256 of ref>/`) and the writer that fills them.
import { createHash, type Hash } from "node:crypto";
import { join } from "node:path";
import { AlreadyExists, FailedPrecondition, InvalidArgument, NotFound } from "../errors.ts";
import { parseDigest } from "../images/digest.ts";
import type { MetadataDb } from "../metadata/db.ts";
import { acquireLock, releaseLock } from "./_lock.ts";
import { digestFile, getRecord, hashFileInto, insertRecord, validateLabels } from "./_records.ts";
import type { ContentInfo, IngestStatus } from "./types.ts";
import type { CommitOptions, ContentWriter, ExpectedContent } from "./writer.ts";

/** The content root and the database a writer records committed blobs in. */
export interface StoreContext {
  root: string;
  db: MetadataDb;
}

export function ingestDir(root: string, ref: string): string {
  return join(root, "ingest", createHash("sha256").update(ref).digest("hex"));
}

export function blobPathOf(root: string, digest: string): string {
  const { algorithm, encoded } = parseDigest(digest);
  return join(root, "blobs", algorithm, encoded);
}

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

/** Writes a small metadata file atomically (temporary file, then rename). */
function writeMeta(dir: string, name: string, text: string): void {
  const tmp = join(dir, `${name}.tmp`);
  Deno.writeTextFileSync(tmp, text);
  Deno.renameSync(tmp, join(dir, name));
}

function readTotal(dir: string): number {
  const n = Number(readText(join(dir, "total"))?.trim() ?? "0");
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

function readExpected(dir: string): string | undefined {
  const text = readText(join(dir, "expected"))?.trim();
  return text === undefined || text === "" ? undefined : text;
}

function readDate(dir: string, name: string): Date | undefined {
  const text = readText(join(dir, name))?.trim();
  if (text === undefined) return undefined;
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

export function removeDir(dir: string): void {
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** Reads an ingest's status from its directory; `undefined` when there is no such ingest. */
export function readIngestStatus(dir: string, ref?: string): IngestStatus | undefined {
  const stored = readText(join(dir, "ref"));
  if (stored === undefined || (ref !== undefined && stored !== ref)) return undefined;
  let offset = 0;
  let dataMtime: Date | null = null;
  try {
    const st = Deno.statSync(join(dir, "data"));
    offset = st.size;
    dataMtime = st.mtime;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const startedAt = readDate(dir, "startedat") ?? dataMtime ?? new Date(0);
  let updatedAt = readDate(dir, "updatedat") ?? startedAt;
  if (dataMtime !== null && dataMtime > updatedAt) updatedAt = dataMtime;
  const status: IngestStatus = { ref: stored, offset, total: readTotal(dir), startedAt, updatedAt };
  const expected = readExpected(dir);
  if (expected !== undefined) status.expected = expected;
  return status;
}

function checkSize(size: number | undefined, action: string): number {
  if (size === undefined) return 0;
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new InvalidArgument(`${action}: invalid size ${size}`);
  }
  return size;
}

/**
 * Registers a blob file that exists without a record (a crash between rename and record) when its
 * bytes match its name; removes it otherwise. Returns the new record, if one was made.
 */
async function adoptOrphan(ctx: StoreContext, digest: string): Promise<ContentInfo | undefined> {
  const path = blobPathOf(ctx.root, digest);
  let actual: { digest: string; size: number };
  try {
    actual = await digestFile(path, parseDigest(digest).algorithm);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
  if (actual.digest !== digest) {
    removeDir(path);
    return undefined;
  }
  return insertRecord(ctx.db, digest, actual.size, {}) ?? getRecord(ctx.db, digest);
}

/**
 * Opens (creating or resuming) the ingest of `ref`. Throws `AlreadyExists` when the expected blob is
 * committed, `Unavailable` when another writer holds the ref.
 */
export async function openIngestWriter(
  ctx: StoreContext,
  ref: string,
  expected: ExpectedContent = {},
): Promise<ContentWriter> {
  const action = `Cannot open ingest "${ref}"`;
  if (ref === "") throw new InvalidArgument("Cannot open ingest: the ref is empty");
  const total = checkSize(expected.size, action);
  const digest = expected.digest;
  let algorithm = "sha256";
  if (digest !== undefined) {
    algorithm = parseDigest(digest).algorithm;
    const exists = () => new AlreadyExists(`${action}: blob "${digest}" already exists`);
    if (getRecord(ctx.db, digest) !== undefined) throw exists();
    if ((await adoptOrphan(ctx, digest)) !== undefined) throw exists();
  }
  const dir = ingestDir(ctx.root, ref);
  acquireLock(dir, ref);
  let file: Deno.FsFile | undefined;
  try {
    if (digest !== undefined && getRecord(ctx.db, digest) !== undefined) {
      throw new AlreadyExists(`${action}: blob "${digest}" already exists`);
    }
    const dataPath = join(dir, "data");
    // A crash inside a commit can leave the data read-only.
    try {
      Deno.chmodSync(dataPath, 0o644);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    const stored = readText(join(dir, "ref"));
    if (stored !== undefined && stored !== ref) {
      throw new FailedPrecondition(`${action}: its directory belongs to ref "${stored}"`);
    }
    if (stored !== undefined) {
      const storedTotal = readTotal(dir);
      if (total > 0 && storedTotal > 0 && total !== storedTotal) {
        throw new FailedPrecondition(
          `${action}: expected size ${total} differs from the size ${storedTotal} it was started with`,
        );
      }
      const storedExpected = readExpected(dir);
      if (digest !== undefined && storedExpected !== undefined && digest !== storedExpected) {
        throw new FailedPrecondition(
          `${action}: expected digest "${digest}" differs from the digest "${storedExpected}" it was started with`,
        );
      }
      const wanted = digest ?? storedExpected;
      if (wanted !== undefined) algorithm = parseDigest(wanted).algorithm;
      file = Deno.openSync(dataPath, { write: true, create: true });
      const hash = createHash(algorithm);
      const offset = await hashFileInto(dataPath, hash);
      await file.seek(offset, Deno.SeekMode.Start);
      if (total > 0 && storedTotal === 0) writeMeta(dir, "total", `${total}`);
      if (digest !== undefined && storedExpected === undefined) writeMeta(dir, "expected", digest);
      const startedAt = readDate(dir, "startedat") ?? new Date();
      return new IngestWriter(ctx, dir, ref, file, {
        algorithm,
        hash,
        offset,
        total: total || storedTotal,
        expected: wanted,
        startedAt,
      });
    }
    file = Deno.openSync(dataPath, { write: true, create: true, truncate: true });
    const now = new Date();
    if (total > 0) writeMeta(dir, "total", `${total}`);
    else removeDir(join(dir, "total"));
    if (digest !== undefined) writeMeta(dir, "expected", digest);
    else removeDir(join(dir, "expected"));
    writeMeta(dir, "startedat", now.toISOString());
    writeMeta(dir, "updatedat", now.toISOString());
    // Written last: an ingest directory without `ref` is treated as not started.
    writeMeta(dir, "ref", ref);
    return new IngestWriter(ctx, dir, ref, file, {
      algorithm,
      hash: createHash(algorithm),
      offset: 0,
      total,
      expected: digest,
      startedAt: now,
    });
  } catch (err) {
    file?.close();
    releaseLock(dir);
    throw err;
  }
}

interface WriterState {
  algorithm: string;
  hash: Hash;
  offset: number;
  total: number;
  expected: string | undefined;
  startedAt: Date;
}

/** Syncs a directory so a rename inside it is durable. */
function syncDir(dir: string): void {
  const handle = Deno.openSync(dir);
  try {
    handle.syncSync();
  } finally {
    handle.close();
  }
}

function isDir(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

class IngestWriter implements ContentWriter {
  #ctx: StoreContext;
  #dir: string;
  #ref: string;
  #file: Deno.FsFile | undefined;
  #algorithm: string;
  #hash: Hash;
  #offset: number;
  #total: number;
  #expected: string | undefined;
  #startedAt: Date;
  #updatedAt: Date;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(ctx: StoreContext, dir: string, ref: string, file: Deno.FsFile, state: WriterState) {
    this.#ctx = ctx;
    this.#dir = dir;
    this.#ref = ref;
    this.#file = file;
    this.#algorithm = state.algorithm;
    this.#hash = state.hash;
    this.#offset = state.offset;
    this.#total = state.total;
    this.#expected = state.expected;
    this.#startedAt = state.startedAt;
    this.#updatedAt = new Date();
  }

  get ref(): string {
    return this.#ref;
  }

  get offset(): number {
    return this.#offset;
  }

  digest(): string {
    return `${this.#algorithm}:${this.#hash.copy().digest("hex")}`;
  }

  status(): IngestStatus {
    const status: IngestStatus = {
      ref: this.#ref,
      offset: this.#offset,
      total: this.#total,
      startedAt: this.#startedAt,
      updatedAt: this.#updatedAt,
    };
    if (this.#expected !== undefined) status.expected = this.#expected;
    return status;
  }

  /** Runs operations one after another, in call order. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  #open(action: string): Deno.FsFile {
    if (this.#file === undefined) {
      throw new FailedPrecondition(`${action} "${this.#ref}": the writer is closed`);
    }
    return this.#file;
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.#serial(async () => {
      const file = this.#open("Cannot write to ingest");
      if (this.#total > 0 && this.#offset + chunk.length > this.#total) {
        throw new FailedPrecondition(
          `Cannot write to ingest "${this.#ref}": ${chunk.length} bytes at offset ${this.#offset} exceed the expected size ${this.#total}`,
        );
      }
      try {
        let done = 0;
        while (done < chunk.length) done += await file.write(chunk.subarray(done));
      } catch (err) {
        // Drop a partial write so the file keeps matching the hash.
        await file.truncate(this.#offset).catch(() => {});
        await file.seek(this.#offset, Deno.SeekMode.Start).catch(() => {});
        throw err;
      }
      this.#hash.update(chunk);
      this.#offset += chunk.length;
      this.#updatedAt = new Date();
    });
  }

  truncate(size: 0): Promise<void> {
    return this.#serial(async () => {
      const file = this.#open("Cannot truncate ingest");
      if (size !== 0) {
        throw new InvalidArgument(
          `Cannot truncate ingest "${this.#ref}": unsupported size ${size}`,
        );
      }
      await file.truncate(0);
      await file.seek(0, Deno.SeekMode.Start);
      this.#hash = createHash(this.#algorithm);
      this.#offset = 0;
      this.#updatedAt = new Date();
    });
  }

  close(): Promise<void> {
    return this.#serial(async () => {
      const file = this.#file;
      if (file === undefined) return;
      this.#file = undefined;
      try {
        await file.sync();
        writeMeta(this.#dir, "updatedat", this.#updatedAt.toISOString());
      } catch (err) {
        // An aborted ingest has no directory left to update.
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      } finally {
        file.close();
        releaseLock(this.#dir);
      }
    });
  }

  commit(options: CommitOptions = {}): Promise<ContentInfo> {
    return this.#serial(() => this.#commit(options));
  }

  async #commit(options: CommitOptions): Promise<ContentInfo> {
    const action = `Cannot commit ingest "${this.#ref}"`;
    const file = this.#open("Cannot commit ingest");
    // Argument errors leave the writer open so the caller can retry with valid arguments.
    const labels = options.labels ?? {};
    validateLabels(labels, action);
    const size = checkSize(options.size, action) || this.#total;
    const expected = options.expected ?? this.#expected;
    const expectedAlgorithm = expected === undefined ? undefined : parseDigest(expected).algorithm;

    this.#file = undefined;
    let closed = false;
    const closeFile = () => {
      if (!closed) file.close();
      closed = true;
    };
    // Deliberate deviation from containerd: a mismatch discards the ingest (containerd keeps the bad
    // bytes until an abort or GC), so a retry with the same ref starts clean.
    const discard = (err: Error): Error => {
      closeFile();
      removeDir(this.#dir);
      return err;
    };
    try {
      if (size > 0 && size !== this.#offset) {
        throw discard(
          new FailedPrecondition(`${action}: unexpected size ${this.#offset}, expected ${size}`),
        );
      }
      const dataPath = join(this.#dir, "data");
      let actual = this.digest();
      if (expectedAlgorithm !== undefined && expectedAlgorithm !== this.#algorithm) {
        actual = (await digestFile(dataPath, expectedAlgorithm)).digest;
      }
      if (expected !== undefined && expected !== actual) {
        throw discard(
          new FailedPrecondition(
            `${action}: unexpected digest "${actual}", expected "${expected}"`,
          ),
        );
      }
      const digest = actual;
      const { db, root } = this.#ctx;
      const exists = () => new AlreadyExists(`${action}: blob "${digest}" already exists`);
      if (getRecord(db, digest) !== undefined) throw discard(exists());

      // One fsync covers the bytes and the read-only mode before the rename publishes them.
      Deno.chmodSync(dataPath, 0o444);
      await file.sync();
      closeFile();
      const blobPath = blobPathOf(root, digest);
      const blobDir = join(blobPath, "..");
      if (!isDir(blobDir)) {
        Deno.mkdirSync(blobDir, { recursive: true, mode: 0o755 });
        // First blob of this algorithm: make the new directories themselves durable.
        syncDir(join(blobDir, ".."));
        syncDir(root);
      }
      try {
        Deno.renameSync(dataPath, blobPath);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) {
          throw new NotFound(`${action}: its data is gone (was the ingest aborted?)`);
        }
        throw err;
      }
      syncDir(blobDir);
      const info = insertRecord(db, digest, this.#offset, labels);
      removeDir(this.#dir);
      if (info === undefined) throw exists();
      return info;
    } finally {
      closeFile();
      releaseLock(this.#dir);
    }
  }
}
