// Helpers shared by the layer-apply tests: building layers (with the tar writer or as raw
// blocks when the writer refuses malformed input), applying them, reading ns metadata, and
// read-only overlay mounts to look at the merged view.

import { createHash } from "node:crypto";
import * as zlib from "node:zlib";
import { applyLayer, type ApplyOptions, type ApplyResult } from "../../diff/apply.ts";
import { createTar, type TarInput, type TarWriterOptions } from "../../diff/tar/mod.ts";
import * as sys from "../../sys/mod.ts";

/** UTF-8 bytes of `text`. */
export function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  return concatList(parts);
}

/** Concatenates a list of byte arrays (any length of list). */
export function concatList(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Yields `data` in chunks of `size` bytes. */
export async function* chunks(
  data: Uint8Array,
  size = 1 << 20,
): AsyncGenerator<Uint8Array, void, undefined> {
  for (let pos = 0; pos < data.length; pos += size) yield data.subarray(pos, pos + size);
}

/** Reads a file in 1 MiB chunks. */
export async function* readFileChunks(path: string): AsyncGenerator<Uint8Array, void, undefined> {
  using file = await Deno.open(path);
  for (;;) {
    const buf = new Uint8Array(1 << 20);
    const n = await file.read(buf);
    if (n === null) return;
    yield buf.subarray(0, n);
  }
}

/** A whole layer from entries (a body given as a string is UTF-8). */
export function layer(
  entries: (Omit<TarInput, "body"> & { body?: Uint8Array | string })[],
  options: TarWriterOptions = {},
): Promise<Uint8Array> {
  return createTar(
    entries.map((e) => ({
      header: e.header,
      ...(e.body === undefined
        ? {}
        : { body: typeof e.body === "string" ? bytes(e.body) : e.body }),
    })),
    options,
  );
}

/** Applies a layer held in memory. */
export function apply(
  data: Uint8Array,
  root: string,
  options: ApplyOptions = {},
): Promise<ApplyResult> {
  return applyLayer(chunks(data, 64 * 1024), root, options);
}

/** `sha256:<hex>` of bytes. */
export function sha256(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** gzip of bytes. */
export function gzip(data: Uint8Array): Uint8Array {
  return new Uint8Array(zlib.gzipSync(data));
}

/** zstd of bytes. */
export function zstd(data: Uint8Array): Uint8Array {
  return new Uint8Array(zlib.zstdCompressSync(data));
}

/** Fields of a raw ustar header. */
export interface RawHeader {
  name: string | Uint8Array;
  typeflag?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  mtime?: number;
  linkname?: string | Uint8Array;
  /** A number (octal) or the raw 8 bytes of the field (base-256, negative, ...). */
  devmajor?: number | Uint8Array;
  devminor?: number | Uint8Array;
  prefix?: string;
}

function put(block: Uint8Array, off: number, len: number, value: string | Uint8Array): void {
  const b = typeof value === "string" ? bytes(value) : value;
  block.set(b.subarray(0, len), off);
}

function octal(block: Uint8Array, off: number, len: number, value: number): void {
  put(block, off, len, value.toString(8).padStart(len - 1, "0") + "\0");
}

/** One ustar header block, checksummed, with exactly the given fields (no validation). */
export function rawHeader(h: RawHeader): Uint8Array {
  const block = new Uint8Array(512);
  put(block, 0, 100, h.name);
  octal(block, 100, 8, h.mode ?? 0o644);
  octal(block, 108, 8, h.uid ?? 0);
  octal(block, 116, 8, h.gid ?? 0);
  octal(block, 124, 12, h.size ?? 0);
  octal(block, 136, 12, h.mtime ?? 0);
  put(block, 156, 1, h.typeflag ?? "0");
  put(block, 157, 100, h.linkname ?? "");
  put(block, 257, 8, "ustar\u000000");
  for (const [off, value] of [[329, h.devmajor], [337, h.devminor]] as const) {
    if (value instanceof Uint8Array) put(block, off, 8, value);
    else octal(block, off, 8, value ?? 0);
  }
  put(block, 345, 155, h.prefix ?? "");
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  put(block, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return block;
}

/** A raw entry: its header and its data padded to blocks. */
export function rawEntry(h: RawHeader, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const padded = new Uint8Array(Math.ceil(data.length / 512) * 512);
  padded.set(data);
  return concat(rawHeader({ ...h, size: h.size ?? data.length }), padded);
}

/** A PAX extended header entry (`x` local, `g` global) with the given records. */
export function paxEntry(
  records: Record<string, string> | [string, string][],
  options: { global?: boolean; name?: string } = {},
): Uint8Array {
  const pairs = Array.isArray(records) ? records : Object.entries(records);
  const lines = pairs.map(([key, value]) => {
    const body = ` ${key}=${value}\n`;
    const bodyLength = bytes(body).length;
    let length = bodyLength + 1;
    while (String(length).length + bodyLength !== length) length++;
    return `${length}${body}`;
  });
  return rawEntry(
    { name: options.name ?? "PaxHeader", typeflag: options.global ? "g" : "x" },
    bytes(lines.join("")),
  );
}

/** An archive made by the writer without its end-of-archive marker, to splice raw entries in. */
export function withoutEnd(archive: Uint8Array): Uint8Array {
  return archive.subarray(0, archive.length - 1024);
}

/** Raw entries followed by the end-of-archive marker. */
export function rawTar(...entries: Uint8Array[]): Uint8Array {
  return rawTarList(entries);
}

/** A list of raw entries followed by the end-of-archive marker. */
export function rawTarList(entries: Uint8Array[]): Uint8Array {
  return concatList([...entries, new Uint8Array(1024)]);
}

/** `lstat` with nanosecond times. */
export function lstat(path: string): sys.Stat {
  return sys.lstat(path);
}

/** Whether a path exists (without following a final symlink). */
export function exists(path: string): boolean {
  try {
    sys.lstat(path);
    return true;
  } catch (err) {
    if (sys.isErrno(err, "ENOENT", "ENOTDIR")) return false;
    throw err;
  }
}

/** An xattr of a path (not following a symlink), as text, or `undefined`. */
export function xattr(path: string, name: string): string | undefined {
  try {
    return new TextDecoder().decode(sys.lgetxattr(path, name));
  } catch (err) {
    if (sys.isErrno(err, "ENODATA")) return undefined;
    throw err;
  }
}

/**
 * Mounts `layers` (upper first) as a read-only overlay on a fresh directory under `dir`, calls
 * `fn` with it and unmounts. With `userxattr`, overlayfs reads `user.overlay.*`.
 */
export async function withMerged<T>(
  dir: string,
  layers: string[],
  fn: (merged: string) => T | Promise<T>,
  options: { userxattr?: boolean } = {},
): Promise<T> {
  const target = await Deno.makeTempDir({ dir, prefix: "merged-" });
  const data = [`lowerdir=${layers.join(":")}`, ...(options.userxattr ? ["userxattr"] : [])];
  sys.mount("overlay", target, "overlay", sys.MS_RDONLY, data.join(","));
  try {
    return await fn(target);
  } finally {
    sys.umount2(target, 0);
    await Deno.remove(target);
  }
}

/** Runs a command and returns its stdout; throws with stderr when it fails. */
export async function sh(cmd: string[], options: { cwd?: string } = {}): Promise<string> {
  const out = await new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdout: "piped",
    stderr: "piped",
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `Command ${JSON.stringify(cmd)} failed (${out.code}): ${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
  return text;
}
