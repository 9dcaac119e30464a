/**
 * Layer compression: detection by magic bytes and streaming gzip and zstd through `node:zlib`,
 * as containerd's `compression.DecompressStream` does it (the declared media type never picks the
 * decompressor; the first bytes do).
 *
 * @example Compress a stream with zstd and decompress it again, detecting the algorithm
 * ```ts
 * import { compress, decompress } from "@strata/strata/diff";
 *
 * async function* text() {
 *   yield new TextEncoder().encode("hello ".repeat(1000));
 * }
 * let size = 0;
 * for await (const chunk of decompress(compress(text(), "zstd"))) size += chunk.length;
 * console.log(size);
 * ```
 *
 * @module
 */

import * as zlib from "node:zlib";
import { InvalidArgument, NotImplemented } from "../errors.ts";

/** A layer compression: gzip, zstd, or none (a plain tar). */
export type Compression = "gzip" | "zstd" | "none";

/** Output chunk size of the decompressors: 1 MiB, the fastest measured in Deno (see the design). */
const CHUNK_SIZE = 1 << 20;
/** Bytes looked at to detect the compression (containerd peeks at up to 10). */
const HEAD_SIZE = 10;

/**
 * Tells the compression of a stream from its first bytes: gzip starts with `1f 8b 08`; zstd with
 * `28 b5 2f fd`, or with a skippable frame (a little-endian magic `0x184d2a5?`, which needs 8
 * bytes); anything else, including a short or empty head, is `"none"`.
 *
 * @example
 * ```ts
 * import { detectCompression } from "@strata/strata/diff";
 * console.log(detectCompression(new Uint8Array([0x1f, 0x8b, 0x08, 0])));
 * ```
 *
 * @param head The first bytes of the stream (10 are enough).
 * @returns The compression.
 */
export function detectCompression(head: Uint8Array): Compression {
  if (head.length >= 3 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) return "gzip";
  if (
    head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f &&
    head[3] === 0xfd
  ) {
    return "zstd";
  }
  if (head.length >= 8) {
    const magic = (head[0]! | (head[1]! << 8) | (head[2]! << 16) | (head[3]! << 24)) >>> 0;
    if (((magic & 0xfffffff0) >>> 0) === 0x184d2a50) return "zstd";
  }
  return "none";
}

/** Options of {@linkcode decompress}. */
export interface DecompressOptions {
  /** The compression of the source; detected from its first bytes when not given. */
  compression?: Compression;
  /**
   * Frees the memory of each decompressed chunk as soon as the next one is requested (its
   * `ArrayBuffer` is detached, so any view of it reads as empty from then on), instead of leaving
   * it for the garbage collector: a long stream then holds a few MiB, not the tens of MiB of
   * garbage buffers V8 lets pile up before it collects. Only for consumers that are done with a
   * chunk, and every view of it, before they ask for the next one ({@linkcode readTar} is). Has
   * no effect on a plain stream, whose chunks are the source's. Default `false`.
   */
  releaseChunks?: boolean;
}

/**
 * Decompresses a stream with `node:zlib` (1 MiB output chunks), or passes a plain stream through.
 * Without `options.compression` the algorithm is detected with {@linkcode detectCompression}.
 * Multi-member gzip streams are read to the end. Stopping early (leaving a `for await` loop)
 * closes the source. Each input chunk is consumed entirely before the next one is requested, so
 * a source may read every chunk into the same buffer (as long as the consumer of a plain stream
 * is also done with a chunk before asking for the next).
 *
 * @example Decompress a gzip file
 * ```ts
 * import { decompress } from "@strata/strata/diff";
 *
 * const path = await Deno.makeTempFile();
 * await using file = await Deno.open(path);
 * let size = 0;
 * for await (const chunk of decompress(file.readable)) size += chunk.length;
 * console.log(size);
 * ```
 *
 * @param source The compressed bytes.
 * @param options The compression, when it is known.
 * @returns The decompressed bytes.
 * @throws {InvalidArgument} While iterating: corrupt or truncated compressed data.
 * @throws {NotImplemented} While iterating: zstd without zstd support in `node:zlib`.
 */
export function decompress(
  source: AsyncIterable<Uint8Array>,
  options: DecompressOptions = {},
): AsyncIterable<Uint8Array> {
  return decompressStream(source, options.compression, options.releaseChunks ?? false);
}

async function* decompressStream(
  source: AsyncIterable<Uint8Array>,
  compression: Compression | undefined,
  release: boolean,
): AsyncGenerator<Uint8Array, void, undefined> {
  const it = source[Symbol.asyncIterator]();
  const head: Uint8Array[] = [];
  if (compression === undefined) {
    let got = 0;
    try {
      while (got < HEAD_SIZE) {
        const r = await it.next();
        if (r.done) break;
        head.push(r.value);
        got += r.value.length;
      }
    } catch (err) {
      await closeQuietly(it);
      throw err;
    }
    compression = detectCompression(concatHead(head, HEAD_SIZE));
  }
  const rest = replay(head, it);
  if (compression === "none") {
    yield* rest;
    return;
  }
  if (compression === "zstd") {
    yield* zstdFrames(rest, release);
    return;
  }
  yield* throughZlib(rest, decompressor(compression), `decompress ${compression} stream`, release);
}

/** Options of {@linkcode compress}. */
export interface CompressOptions {
  /** Compression level: gzip 1-9 (default 6 as zlib), zstd 1-22 (default 3 as zstd). */
  level?: number;
}

/**
 * Compresses a stream with `node:zlib`; `"none"` passes it through.
 *
 * @example Write a gzip-compressed layer
 * ```ts
 * import { compress } from "@strata/strata/diff";
 *
 * async function* tar() {
 *   yield new Uint8Array(1024);
 * }
 * const path = await Deno.makeTempFile({ suffix: ".tar.gz" });
 * await using file = await Deno.open(path, { write: true });
 * for await (const chunk of compress(tar(), "gzip", { level: 9 })) await file.write(chunk);
 * ```
 *
 * @param source The bytes to compress.
 * @param compression The algorithm.
 * @param options The level.
 * @returns The compressed bytes.
 * @throws {InvalidArgument} For an unknown algorithm or a level out of range.
 * @throws {NotImplemented} For zstd without zstd support in `node:zlib`.
 */
export function compress(
  source: AsyncIterable<Uint8Array>,
  compression: Compression,
  options: CompressOptions = {},
): AsyncIterable<Uint8Array> {
  const level = options.level;
  if (compression === "none") return source;
  if (compression === "gzip") {
    if (level !== undefined && !(Number.isInteger(level) && level >= 0 && level <= 9)) {
      throw new InvalidArgument(`Cannot compress with gzip level ${level}: use 0 to 9`);
    }
    const z = zlib.createGzip({ chunkSize: CHUNK_SIZE, ...(level === undefined ? {} : { level }) });
    return throughZlib(source, z, "compress gzip stream");
  }
  if (compression === "zstd") {
    if (level !== undefined && !(Number.isInteger(level) && level >= -7 && level <= 22)) {
      throw new InvalidArgument(`Cannot compress with zstd level ${level}: use 1 to 22`);
    }
    const create = zstdFactory("createZstdCompress");
    const params = level === undefined ? {} : { [zlib.constants.ZSTD_c_compressionLevel]: level };
    return throughZlib(source, create({ chunkSize: CHUNK_SIZE, params }), "compress zstd stream");
  }
  throw new InvalidArgument(
    `Cannot compress with ${JSON.stringify(compression)}: use "gzip", "zstd" or "none"`,
  );
}

// ---------------------------------------------------------------------------------------------

type Transform = ReturnType<typeof zlib.createGunzip>;
type Factory = (options: { chunkSize: number; params?: Record<number, number> }) => Transform;

function zstdFactory(name: "createZstdCompress" | "createZstdDecompress"): Factory {
  const create = (zlib as unknown as Record<string, Factory | undefined>)[name];
  if (typeof create !== "function") {
    throw new NotImplemented(
      `Cannot use zstd: this Deno's node:zlib has no ${name} (Deno ${Deno.version.deno})`,
    );
  }
  return create;
}

function decompressor(compression: "gzip"): Transform {
  if (compression === "gzip") return zlib.createGunzip({ chunkSize: CHUNK_SIZE });
  throw new InvalidArgument(
    `Cannot decompress ${JSON.stringify(compression)}: use "gzip", "zstd" or "none"`,
  );
}

const ZSTD_MAGIC = 0xfd2fb528;
const EMPTY = new Uint8Array(0);

/** Reads bytes from an async source: small copies for headers, views for payloads. */
class ByteReader {
  #it: AsyncIterator<Uint8Array>;
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  #done = false;

  constructor(it: AsyncIterator<Uint8Array>) {
    this.#it = it;
  }

  async #fill(): Promise<boolean> {
    while (this.#pos >= this.#chunk.length) {
      if (this.#done) return false;
      const r = await this.#it.next();
      if (r.done) {
        this.#done = true;
        return false;
      }
      this.#chunk = r.value;
      this.#pos = 0;
    }
    return true;
  }

  /** Whether the source has no more bytes. */
  async atEnd(): Promise<boolean> {
    return !(await this.#fill());
  }

  /** Exactly `n` bytes (copied); truncation is an error. */
  async read(n: number): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      if (!(await this.#fill())) {
        throw new InvalidArgument(`Cannot decompress zstd stream: it ends inside a frame`);
      }
      const take = Math.min(n - got, this.#chunk.length - this.#pos);
      out.set(this.#chunk.subarray(this.#pos, this.#pos + take), got);
      this.#pos += take;
      got += take;
    }
    return out;
  }

  /** The next `n` bytes as views of the source's chunks; truncation is an error. */
  async *pass(n: number): AsyncGenerator<Uint8Array, void, undefined> {
    while (n > 0) {
      if (!(await this.#fill())) {
        throw new InvalidArgument(`Cannot decompress zstd stream: it ends inside a frame`);
      }
      const take = Math.min(n, this.#chunk.length - this.#pos);
      const view = this.#chunk.subarray(this.#pos, this.#pos + take);
      this.#pos += take;
      n -= take;
      yield view;
    }
  }

  async close(): Promise<void> {
    if (!this.#done) await closeQuietly(this.#it);
  }
}

function u32le(b: Uint8Array): number {
  return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
}

/** The bytes of one zstd frame whose magic was read: header, blocks, checksum (RFC 8878). */
async function* zstdFrame(r: ByteReader, magic: Uint8Array): AsyncGenerator<Uint8Array> {
  yield magic;
  const descriptor = await r.read(1);
  yield descriptor;
  const d = descriptor[0]!;
  const single = (d >> 5) & 1;
  const headerSize = (single ? 0 : 1) + [0, 1, 2, 4][d & 3]! + [single, 2, 4, 8][d >> 6]!;
  if (headerSize > 0) yield await r.read(headerSize);
  for (;;) {
    const header = await r.read(3);
    yield header;
    const v = header[0]! | (header[1]! << 8) | (header[2]! << 16);
    const type = (v >> 1) & 3;
    if (type === 3) throw new InvalidArgument("Cannot decompress zstd stream: reserved block type");
    yield* r.pass(type === 1 ? 1 : v >>> 3);
    if ((v & 1) === 1) break;
  }
  if (((d >> 2) & 1) === 1) yield await r.read(4);
}

/**
 * Decompresses a zstd stream frame by frame: Deno's `node:zlib` zstd decoder stops after the
 * first frame (later frames would be dropped silently), so frames are split here and each one
 * goes through its own decoder. Skippable frames are skipped.
 */
async function* zstdFrames(
  source: AsyncIterable<Uint8Array>,
  release: boolean,
): AsyncGenerator<Uint8Array> {
  const create = zstdFactory("createZstdDecompress");
  const r = new ByteReader(source[Symbol.asyncIterator]());
  try {
    while (!(await r.atEnd())) {
      const magicBytes = await r.read(4);
      const magic = u32le(magicBytes);
      if (((magic & 0xfffffff0) >>> 0) === 0x184d2a50) {
        for await (const _ of r.pass(u32le(await r.read(4)))) { /* skipped */ }
        continue;
      }
      if (magic !== ZSTD_MAGIC) {
        throw new InvalidArgument(
          `Cannot decompress zstd stream: bad frame magic 0x${magic.toString(16).padStart(8, "0")}`,
        );
      }
      yield* throughZlib(
        zstdFrame(r, magicBytes),
        create({ chunkSize: CHUNK_SIZE }),
        "decompress zstd stream",
        release,
      );
    }
  } finally {
    await r.close();
  }
}

function concatHead(parts: Uint8Array[], max: number): Uint8Array {
  const out = new Uint8Array(Math.min(max, parts.reduce((n, p) => n + p.length, 0)));
  let pos = 0;
  for (const p of parts) {
    if (pos >= out.length) break;
    const take = p.subarray(0, out.length - pos);
    out.set(take, pos);
    pos += take.length;
  }
  return out;
}

/** Yields the chunks already read, then the rest of the iterator; closes it when stopped early. */
async function* replay(
  head: Uint8Array[],
  it: AsyncIterator<Uint8Array>,
): AsyncGenerator<Uint8Array, void, undefined> {
  let done = false;
  try {
    for (const chunk of head) yield chunk;
    for (;;) {
      const r = await it.next();
      if (r.done) {
        done = true;
        return;
      }
      yield r.value;
    }
  } finally {
    if (!done) await closeQuietly(it);
  }
}

async function closeQuietly(it: AsyncIterator<unknown>): Promise<void> {
  try {
    await it.return?.();
  } catch {
    // The source's clean-up error must not hide the error that stopped the read.
  }
}

/**
 * Frees a chunk that `node:zlib` produced once its consumer is done with it: when it is the last
 * slice of a full output buffer. The transform allocates a new buffer when one is full and never
 * touches the old one again; the earlier slices of it were handed out (and consumed) before.
 */
function releaseChunk(chunk: Uint8Array): void {
  const buffer = chunk.buffer;
  if (
    buffer instanceof ArrayBuffer && buffer.byteLength === CHUNK_SIZE &&
    chunk.byteOffset + chunk.byteLength === CHUNK_SIZE && !buffer.detached
  ) {
    buffer.transfer(0);
  }
}

/** Writes one chunk and settles once the transform has consumed all of it (or is destroyed). */
function writeChunk(z: Transform, chunk: Uint8Array): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      z.off("close", done);
      resolve();
    };
    z.on("close", done);
    // An error reaches the consumer through the readable side.
    z.write(chunk, () => done());
  });
}

/**
 * Pumps `source` into a zlib transform and yields its output. Each input chunk is consumed
 * entirely (the write's callback) before the next one is requested: the transform's own
 * back-pressure, and a source may reuse its buffer. With `release`, each output chunk is freed
 * when the next one is requested ({@linkcode releaseChunk}).
 * Errors of the transform become `InvalidArgument`; errors of the source pass through as they are.
 */
async function* throughZlib(
  source: AsyncIterable<Uint8Array>,
  z: Transform,
  what: string,
  release = false,
): AsyncGenerator<Uint8Array, void, undefined> {
  const it = source[Symbol.asyncIterator]();
  let sourceError: { error: unknown } | undefined;
  let stopped = false;
  const pump = (async (): Promise<void> => {
    try {
      for (;;) {
        if (stopped || z.destroyed) return;
        const r = await it.next();
        if (r.done) break;
        if (stopped || z.destroyed) return;
        await writeChunk(z, r.value);
      }
      if (!z.destroyed) z.end();
    } catch (err) {
      sourceError = { error: err };
      z.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  })();
  let finished = false;
  let last: Uint8Array | null = null;
  try {
    for await (const chunk of z) {
      if (last !== null) releaseChunk(last);
      last = release ? chunk as Uint8Array : null;
      yield chunk as Uint8Array;
    }
    if (last !== null) releaseChunk(last);
    finished = true;
  } catch (err) {
    if (sourceError !== undefined) throw sourceError.error;
    const message = err instanceof Error ? err.message : String(err);
    throw new InvalidArgument(`Cannot ${what}: ${message}`, { cause: err });
  } finally {
    stopped = true;
    if (!z.destroyed) z.destroy();
    if (finished) {
      await pump;
    } else {
      // The pump may be waiting for the source's next chunk: close the source once it is idle.
      pump.then(() => closeQuietly(it));
    }
  }
  if (sourceError !== undefined) throw sourceError.error;
}
