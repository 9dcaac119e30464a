/**
 * Tar writer: ustar headers when every field fits, PAX records (or GNU long names and base-256
 * numbers in the GNU format) when one does not.
 *
 * @module
 */

import { FailedPrecondition, InvalidArgument } from "../../errors.ts";
import {
  BLOCK_SIZE,
  computeChecksum,
  formatPaxRecord,
  formatPaxTime,
  isAscii,
  MAX_OCTAL_12,
  MAX_OCTAL_8,
  OFF,
  type TarEntryType,
  type TarHeader,
  type TarSparse,
  type TarTime,
  utf8,
  writeBase256,
  writeOctal,
} from "./_header.ts";

/** Receives the archive's bytes in order. A chunk handed over is never modified afterwards. */
export type TarSink = (chunk: Uint8Array) => Promise<void> | void;

/**
 * The header of an entry to write: `name` and `type` are required, everything else has a
 * default (mode `0o755` for directories, `0o777` for symlinks, `0o644` otherwise; ids 0; empty
 * names; mtime 0; no xattrs).
 *
 * `size` defaults to the body's length when the body is a `Uint8Array`; for sparse files it is the
 * packed size (the sum of the segment lengths). `typeflag` is used only by `"unknown"` entries,
 * `format` is ignored. `pax` holds extra records to write; records for the fields the writer
 * manages (`path`, `size`, `mtime`, `GNU.sparse.*`, xattrs, ...) are ignored there.
 */
export type TarWriteHeader = Partial<Omit<TarHeader, "name" | "type">> & {
  /**
   * Path of the entry. A directory gets a trailing slash in the archive. Names (and link targets)
   * are written as UTF-8, except that U+DC80-U+DCFF stand for the bytes 0x80-0xFF, as
   * {@linkcode readTar} hands out the bytes of names that are not UTF-8.
   */
  name: string;
  /** Kind of entry. */
  type: TarEntryType;
};

/** A body: all bytes at once or a stream of chunks. */
export type TarBody = Uint8Array | AsyncIterable<Uint8Array>;

/** Options of {@linkcode TarWriter}. */
export interface TarWriterOptions {
  /**
   * `"pax"` (default): ustar headers, plus a PAX extended header for any entry with a field that
   * ustar cannot hold (long or non-ASCII names, big ids or sizes, negative or sub-second times,
   * atime/ctime, xattrs, sparse maps in the PAX 1.0 sparse format).
   * `"gnu"`: GNU headers with `L`/`K` long names and base-256 numbers and old GNU sparse
   * entries; sub-second times, xattrs and extra PAX records are refused.
   */
  format?: "pax" | "gnu";
}

/** One entry for {@linkcode createTar}. */
export interface TarInput {
  /** The entry's header. */
  header: TarWriteHeader;
  /** The entry's data, if it has any. */
  body?: TarBody;
}

const FLAGS: Record<Exclude<TarEntryType, "unknown">, number> = {
  file: 0x30,
  hardlink: 0x31,
  symlink: 0x32,
  char: 0x33,
  block: 0x34,
  directory: 0x35,
  fifo: 0x36,
};
const RESERVED_FLAGS = "01234567xgLKS\0";
const OUT_SIZE = 64 * 1024;
const DIRECT_WRITE = 16 * 1024;
const ZEROS = new Uint8Array(2 * BLOCK_SIZE);

function isManagedKey(key: string): boolean {
  return key === "path" || key === "linkpath" || key === "size" || key === "uid" ||
    key === "gid" || key === "uname" || key === "gname" || key === "mtime" || key === "atime" ||
    key === "ctime" || key.startsWith("GNU.sparse.") || key.startsWith("SCHILY.xattr.") ||
    key.startsWith("LIBARCHIVE.xattr.");
}

/** Truncates UTF-8 bytes to at most `max` bytes without splitting a character. */
function truncateUtf8(bytes: Uint8Array, max: number): Uint8Array {
  if (bytes.length <= max) return bytes;
  let end = max;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

/** Splits a ustar path into prefix and name; `null` when it cannot be split. */
function splitUstarPath(bytes: Uint8Array): [Uint8Array, Uint8Array] | null {
  if (bytes.length <= 100) return [new Uint8Array(0), bytes];
  if (bytes.length > 256) return null;
  for (let i = Math.min(155, bytes.length - 2); i >= 0; i--) {
    if (bytes[i] === 0x2f) {
      const rest = bytes.length - i - 1;
      if (rest > 100) return null;
      if (rest > 0 && i > 0) return [bytes.subarray(0, i), bytes.subarray(i + 1)];
    }
  }
  return null;
}

function checkTime(t: TarTime, field: string, name: string): void {
  if (!Number.isSafeInteger(t.sec) || !Number.isInteger(t.nsec) || t.nsec < 0 || t.nsec >= 1e9) {
    throw new InvalidArgument(
      `Cannot write tar entry "${name}": ${field} {sec: ${t.sec}, nsec: ${t.nsec}} is not a valid time`,
    );
  }
}

function checkNumber(value: number, field: string, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgument(
      `Cannot write tar entry "${name}": ${field} ${value} is not a non-negative integer`,
    );
  }
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "" : path.slice(0, i + 1);
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/**
 * Writes a tar archive entry by entry into a sink.
 *
 * Small pieces (headers, padding, small chunks) are gathered into 64 KiB buffers; large body
 * chunks are passed to the sink as they are. Each body must have exactly `header.size` bytes:
 * a `Uint8Array` body of another length is refused before anything is written, a streamed body
 * that is too short or too long throws {@linkcode InvalidArgument} and leaves the writer broken
 * (every later call throws {@linkcode FailedPrecondition}).
 *
 * @example Write an archive to a file
 * ```ts
 * import { TarWriter } from "@strata/strata/tar";
 *
 * const path = await Deno.makeTempFile({ suffix: ".tar" });
 * using file = await Deno.open(path, { write: true });
 * const tar = new TarWriter(async (chunk) => {
 *   await file.write(chunk);
 * });
 * await tar.add({ name: "etc", type: "directory" });
 * await tar.add({ name: "etc/motd", type: "file", mode: 0o644 }, new TextEncoder().encode("hi\n"));
 * await tar.add({ name: "motd", type: "symlink", linkname: "etc/motd" });
 * await tar.finish();
 * ```
 */
export class TarWriter {
  #sink: TarSink;
  #gnu: boolean;
  #out = new Uint8Array(OUT_SIZE);
  #outLen = 0;
  #busy = false;
  #finished = false;
  #broken = false;
  #count = 0;

  /**
   * Creates a writer.
   *
   * @param sink Receives the archive's bytes in order; awaited before the next write.
   * @param options The format to write.
   */
  constructor(sink: TarSink, options: TarWriterOptions = {}) {
    const format = options.format ?? "pax";
    if (format !== "pax" && format !== "gnu") {
      throw new InvalidArgument(`Cannot create tar writer: unknown format "${format}"`);
    }
    this.#sink = sink;
    this.#gnu = format === "gnu";
  }

  async #flush(): Promise<void> {
    if (this.#outLen === 0) return;
    const chunk = this.#out.subarray(0, this.#outLen);
    this.#out = new Uint8Array(OUT_SIZE);
    this.#outLen = 0;
    await this.#sink(chunk);
  }

  async #write(bytes: Uint8Array): Promise<void> {
    if (bytes.length >= DIRECT_WRITE) {
      await this.#flush();
      await this.#sink(bytes);
      return;
    }
    let pos = 0;
    while (pos < bytes.length) {
      const n = Math.min(bytes.length - pos, OUT_SIZE - this.#outLen);
      this.#out.set(bytes.subarray(pos, pos + n), this.#outLen);
      this.#outLen += n;
      pos += n;
      if (this.#outLen === OUT_SIZE) await this.#flush();
    }
  }

  async #pad(size: number): Promise<void> {
    const pad = (BLOCK_SIZE - (size % BLOCK_SIZE)) % BLOCK_SIZE;
    if (pad > 0) await this.#write(ZEROS.subarray(0, pad));
  }

  #enter(action: string): void {
    if (this.#broken) {
      throw new FailedPrecondition(
        `Cannot ${action}: an earlier entry failed half-way and the archive is incomplete`,
      );
    }
    if (this.#finished) throw new FailedPrecondition(`Cannot ${action}: the archive is finished`);
    if (this.#busy) {
      throw new FailedPrecondition(`Cannot ${action}: another entry is being written`);
    }
  }

  /**
   * Writes one entry.
   *
   * @param header The entry's header; see {@linkcode TarWriteHeader} for defaults.
   * @param body The entry's data: required for files (and unknown types) with a non-zero size,
   *   absent or empty for other types.
   * @returns A promise that resolves when the entry has been handed to the sink.
   */
  async add(header: TarWriteHeader, body?: TarBody): Promise<void> {
    this.#enter(`add tar entry "${header.name}"`);
    this.#busy = true;
    try {
      const { blocks, size } = this.#encodeHeader(header, body);
      for (const b of blocks) await this.#write(b);
      if (size === 0) return;
      if (body instanceof Uint8Array) {
        await this.#write(body);
        await this.#pad(size);
        return;
      }
      let written = 0;
      try {
        for await (const chunk of body!) {
          if (written + chunk.length > size) {
            throw new InvalidArgument(
              `Cannot write tar entry "${header.name}": the body is longer than its size ${size}`,
            );
          }
          await this.#write(chunk);
          written += chunk.length;
        }
        if (written !== size) {
          throw new InvalidArgument(
            `Cannot write tar entry "${header.name}": the body has ${written} bytes, not its size ${size}`,
          );
        }
      } catch (err) {
        this.#broken = true;
        throw err;
      }
      await this.#pad(size);
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Writes the end-of-archive marker (two zero blocks) and flushes everything to the sink.
   *
   * @returns A promise that resolves when the last bytes have been handed to the sink.
   */
  async finish(): Promise<void> {
    this.#enter("finish tar archive");
    this.#busy = true;
    try {
      await this.#write(ZEROS);
      await this.#flush();
      this.#finished = true;
    } finally {
      this.#busy = false;
    }
  }

  /** Validates the header and encodes the blocks written before the body. */
  #encodeHeader(h: TarWriteHeader, body: TarBody | undefined): {
    blocks: Uint8Array[];
    size: number;
  } {
    const name = h.name;
    const fail = (why: string): never => {
      throw new InvalidArgument(`Cannot write tar entry "${name}": ${why}`);
    };
    if (typeof name !== "string" || name === "") fail("the name is empty");
    if (name.includes("\0")) fail("the name contains a NUL character");
    let flag: number;
    if (h.type === "unknown") {
      const t = h.typeflag;
      if (typeof t !== "string" || t.length !== 1 || t.charCodeAt(0) > 0x7f) {
        fail("an unknown entry needs a one-character ASCII typeflag");
      }
      if (RESERVED_FLAGS.includes(t!)) {
        fail(`typeflag "${t}" is not available for an unknown entry`);
      }
      flag = t!.charCodeAt(0);
    } else {
      const f = FLAGS[h.type];
      if (f === undefined) fail(`unknown type "${h.type}"`);
      flag = f!;
    }
    const hasData = h.type === "file" || h.type === "unknown";
    const bodyLen = body instanceof Uint8Array ? body.length : undefined;
    let size: number;
    if (hasData) {
      if (h.size !== undefined) size = h.size;
      else if (bodyLen !== undefined) size = bodyLen;
      else if (body === undefined) size = 0;
      else size = fail("a streamed body needs header.size");
      checkNumber(size, "size", name);
      if (bodyLen !== undefined && bodyLen !== size) {
        fail(`the body has ${bodyLen} bytes, not its size ${size}`);
      }
      if (body === undefined && size !== 0) fail(`it has size ${size} but no body`);
    } else {
      if ((h.size ?? 0) !== 0) fail(`a ${h.type} entry cannot have size ${h.size}`);
      if (body !== undefined && bodyLen !== 0) fail(`a ${h.type} entry cannot have a body`);
      size = 0;
    }
    let sparse = h.sparse;
    if (sparse !== undefined) {
      if (h.type !== "file") fail("only files can be sparse");
      checkSparse(sparse, size, fail);
      // GNU tar sizes an extracted sparse file by the end of its last segment, so maps end with
      // an empty segment at the real size, as GNU tar writes them.
      const last = sparse.segments.at(-1);
      if (last === undefined || last.offset + last.length < sparse.realSize) {
        sparse = {
          realSize: sparse.realSize,
          segments: [...sparse.segments, { offset: sparse.realSize, length: 0 }],
        };
      }
    }
    const mode = h.mode ??
      (h.type === "directory" ? 0o755 : h.type === "symlink" ? 0o777 : 0o644);
    const uid = h.uid ?? 0;
    const gid = h.gid ?? 0;
    const devmajor = h.devmajor ?? 0;
    const devminor = h.devminor ?? 0;
    checkNumber(mode, "mode", name);
    if (mode > MAX_OCTAL_8) fail(`mode ${mode.toString(8)} does not fit in the header`);
    checkNumber(uid, "uid", name);
    checkNumber(gid, "gid", name);
    checkNumber(devmajor, "devmajor", name);
    checkNumber(devminor, "devminor", name);
    const mtime = h.mtime ?? { sec: 0, nsec: 0 };
    checkTime(mtime, "mtime", name);
    if (h.atime) checkTime(h.atime, "atime", name);
    if (h.ctime) checkTime(h.ctime, "ctime", name);
    const linkname = h.linkname ?? "";
    if (linkname.includes("\0")) fail("the link name contains a NUL character");
    if ((h.type === "symlink" || h.type === "hardlink") && linkname === "") {
      fail("a link needs a link name");
    }
    const uname = h.uname ?? "";
    const gname = h.gname ?? "";
    const fullName = h.type === "directory" && !name.endsWith("/") ? `${name}/` : name;
    this.#count++;
    const fields: Fields = {
      flag,
      fullName,
      size,
      mode,
      uid,
      gid,
      mtime,
      linkname,
      uname,
      gname,
      sparse,
    };
    return this.#gnu ? this.#encodeGnu(h, fields, fail) : this.#encodePax(h, fields, fail);
  }

  #encodePax(
    h: TarWriteHeader,
    f: Fields,
    fail: (why: string) => never,
  ): { blocks: Uint8Array[]; size: number } {
    const { flag, fullName, size, mode, uid, gid, mtime, linkname, uname, gname, sparse } = f;
    const records: Uint8Array[] = [];
    const add = (key: string, value: string | Uint8Array): void => {
      records.push(formatPaxRecord(key, value));
    };
    const block = new Uint8Array(BLOCK_SIZE);
    let storedSize = size;
    let mapBytes: Uint8Array | undefined;
    let ustarName = fullName;
    if (sparse !== undefined) {
      // PAX sparse format 1.0: the map is text in front of the data.
      const s = sparse;
      add("GNU.sparse.major", "1");
      add("GNU.sparse.minor", "0");
      add("GNU.sparse.name", fullName);
      add("GNU.sparse.realsize", String(s.realSize));
      let text = `${s.segments.length}\n`;
      for (const seg of s.segments) text += `${seg.offset}\n${seg.length}\n`;
      const raw = utf8(text);
      mapBytes = new Uint8Array(Math.ceil(raw.length / BLOCK_SIZE) * BLOCK_SIZE);
      mapBytes.set(raw);
      storedSize = size + mapBytes.length;
      ustarName = `${dirname(fullName)}GNUSparseFile.0/${basename(fullName)}`;
    }
    const nameBytes = utf8(ustarName);
    const split = isAscii(ustarName) ? splitUstarPath(nameBytes) : null;
    if (split) {
      block.set(split[1], OFF.name);
      block.set(split[0], OFF.prefix);
    } else {
      if (sparse === undefined) add("path", fullName);
      block.set(truncateUtf8(nameBytes, 100), OFF.name);
    }
    const lb = utf8(linkname);
    if (isAscii(linkname) && lb.length <= 100) block.set(lb, OFF.linkname);
    else {
      add("linkpath", linkname);
      block.set(truncateUtf8(lb, 100), OFF.linkname);
    }
    writeOctal(block, OFF.mode, 8, mode);
    for (const [field, value, at] of [["uid", uid, OFF.uid], ["gid", gid, OFF.gid]] as const) {
      if (value <= MAX_OCTAL_8) writeOctal(block, at, 8, value);
      else {
        add(field, String(value));
        writeOctal(block, at, 8, 0);
      }
    }
    if (storedSize <= MAX_OCTAL_12) writeOctal(block, OFF.size, 12, storedSize);
    else {
      add("size", String(storedSize));
      writeOctal(block, OFF.size, 12, 0);
    }
    if (mtime.nsec === 0 && mtime.sec >= 0 && mtime.sec <= MAX_OCTAL_12) {
      writeOctal(block, OFF.mtime, 12, mtime.sec);
    } else {
      add("mtime", formatPaxTime(mtime));
      writeOctal(block, OFF.mtime, 12, Math.min(Math.max(mtime.sec, 0), MAX_OCTAL_12));
    }
    if (h.atime) add("atime", formatPaxTime(h.atime));
    if (h.ctime) add("ctime", formatPaxTime(h.ctime));
    for (
      const [field, value, at] of [["uname", uname, OFF.uname], [
        "gname",
        gname,
        OFF.gname,
      ]] as const
    ) {
      const b = utf8(value);
      if (isAscii(value) && b.length <= 31) block.set(b, at);
      else add(field, value);
    }
    for (
      const [field, value, at] of [
        ["devmajor", h.devmajor ?? 0, OFF.devmajor],
        ["devminor", h.devminor ?? 0, OFF.devminor],
      ] as const
    ) {
      if (value > MAX_OCTAL_8) fail(`${field} ${value} does not fit in a ustar header`);
      writeOctal(block, at, 8, value);
    }
    for (const [key, value] of Object.entries(h.xattrs ?? {})) {
      if (key === "" || key.includes("\0") || key.includes("=")) {
        fail(`bad xattr name "${key}"`);
      }
      if (!(value instanceof Uint8Array)) fail(`the value of xattr "${key}" is not a Uint8Array`);
      add(`SCHILY.xattr.${key}`, value);
    }
    for (const [key, value] of Object.entries(h.pax ?? {})) {
      if (isManagedKey(key)) continue;
      if (key === "" || key.includes("=") || key.includes("\0")) fail(`bad PAX key "${key}"`);
      add(key, value);
    }
    block[OFF.typeflag] = flag;
    block.set(USTAR_MAGIC, OFF.magic);
    finishBlock(block);

    const blocks: Uint8Array[] = [];
    if (records.length > 0) {
      let total = 0;
      for (const r of records) total += r.length;
      const data = new Uint8Array(Math.ceil(total / BLOCK_SIZE) * BLOCK_SIZE);
      let pos = 0;
      for (const r of records) {
        data.set(r, pos);
        pos += r.length;
      }
      const x = new Uint8Array(BLOCK_SIZE);
      const xname = utf8(`PaxHeaders.${this.#count}/${basename(fullName.replace(/\/+$/, ""))}`);
      x.set(truncateUtf8(asciiOnly(xname), 100), OFF.name);
      writeOctal(x, OFF.mode, 8, 0o644);
      writeOctal(x, OFF.uid, 8, 0);
      writeOctal(x, OFF.gid, 8, 0);
      writeOctal(x, OFF.size, 12, total);
      writeOctal(x, OFF.mtime, 12, Math.min(Math.max(mtime.sec, 0), MAX_OCTAL_12));
      x[OFF.typeflag] = 0x78;
      x.set(USTAR_MAGIC, OFF.magic);
      finishBlock(x);
      blocks.push(x, data);
    }
    blocks.push(block);
    if (mapBytes) blocks.push(mapBytes);
    return { blocks, size };
  }

  #encodeGnu(
    h: TarWriteHeader,
    f: Fields,
    fail: (why: string) => never,
  ): { blocks: Uint8Array[]; size: number } {
    const { flag, fullName, size, mode, uid, gid, mtime, linkname, uname, gname, sparse } = f;
    if (Object.keys(h.xattrs ?? {}).length > 0) fail("xattrs need the pax format");
    for (const key of Object.keys(h.pax ?? {})) {
      if (!isManagedKey(key)) fail(`PAX record "${key}" needs the pax format`);
    }
    for (const [field, t] of [["mtime", mtime], ["atime", h.atime], ["ctime", h.ctime]] as const) {
      if (t && t.nsec !== 0) fail(`${field} has nanoseconds, which need the pax format`);
    }
    const blocks: Uint8Array[] = [];
    const block = new Uint8Array(BLOCK_SIZE);
    const longRecord = (type: number, bytes: Uint8Array): void => {
      const hdr = new Uint8Array(BLOCK_SIZE);
      hdr.set(utf8("././@LongLink"), OFF.name);
      writeOctal(hdr, OFF.mode, 8, 0o644);
      writeOctal(hdr, OFF.uid, 8, 0);
      writeOctal(hdr, OFF.gid, 8, 0);
      writeOctal(hdr, OFF.size, 12, bytes.length + 1);
      writeOctal(hdr, OFF.mtime, 12, 0);
      hdr[OFF.typeflag] = type;
      hdr.set(GNU_MAGIC, OFF.magic);
      finishBlock(hdr);
      const data = new Uint8Array(Math.ceil((bytes.length + 1) / BLOCK_SIZE) * BLOCK_SIZE);
      data.set(bytes);
      blocks.push(hdr, data);
    };
    const nameBytes = utf8(fullName);
    if (nameBytes.length > 100) longRecord(0x4c, nameBytes);
    block.set(nameBytes.subarray(0, 100), OFF.name);
    const lb = utf8(linkname);
    if (lb.length > 100) longRecord(0x4b, lb);
    block.set(lb.subarray(0, 100), OFF.linkname);
    const num = (at: number, len: number, value: number): void => {
      const max = len === 8 ? MAX_OCTAL_8 : MAX_OCTAL_12;
      if (value >= 0 && value <= max) writeOctal(block, at, len, value);
      else writeBase256(block, at, len, value);
    };
    num(OFF.mode, 8, mode);
    num(OFF.uid, 8, uid);
    num(OFF.gid, 8, gid);
    num(OFF.size, 12, size);
    num(OFF.mtime, 12, mtime.sec);
    for (
      const [field, value, at] of [["uname", uname, OFF.uname], [
        "gname",
        gname,
        OFF.gname,
      ]] as const
    ) {
      const b = utf8(value);
      if (b.length > 31) fail(`${field} "${value}" is longer than 31 bytes`);
      block.set(b, at);
    }
    num(OFF.devmajor, 8, h.devmajor ?? 0);
    num(OFF.devminor, 8, h.devminor ?? 0);
    if (h.atime) num(OFF.gnuAtime, 12, h.atime.sec);
    if (h.ctime) num(OFF.gnuCtime, 12, h.ctime.sec);
    block[OFF.typeflag] = flag;
    block.set(GNU_MAGIC, OFF.magic);
    const ext: Uint8Array[] = [];
    if (sparse !== undefined) {
      block[OFF.typeflag] = 0x53;
      const segs = sparse.segments;
      const put = (buf: Uint8Array, at: number, o: number, l: number): void => {
        for (const [pos, v] of [[at, o], [at + 12, l]]) {
          if (v! <= MAX_OCTAL_12) writeOctal(buf, pos!, 12, v!);
          else writeBase256(buf, pos!, 12, v!);
        }
      };
      for (let i = 0; i < Math.min(4, segs.length); i++) {
        put(block, OFF.gnuSparse + i * 24, segs[i]!.offset, segs[i]!.length);
      }
      num(OFF.gnuRealSize, 12, sparse.realSize);
      for (let i = 4; i < segs.length; i += 21) {
        const e = new Uint8Array(BLOCK_SIZE);
        for (let j = 0; j < 21 && i + j < segs.length; j++) {
          put(e, j * 24, segs[i + j]!.offset, segs[i + j]!.length);
        }
        if (i + 21 < segs.length) e[504] = 1;
        ext.push(e);
      }
      if (ext.length > 0) block[OFF.gnuIsExtended] = 1;
    }
    finishBlock(block);
    blocks.push(block, ...ext);
    return { blocks, size };
  }
}

/** Header fields after validation and defaults. */
interface Fields {
  flag: number;
  fullName: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: TarTime;
  linkname: string;
  uname: string;
  gname: string;
  sparse: TarSparse | undefined;
}

const USTAR_MAGIC = utf8("ustar\x0000");
const GNU_MAGIC = utf8("ustar  \0");

function asciiOnly(bytes: Uint8Array): Uint8Array {
  return bytes.map((b) => (b < 0x80 ? b : 0x5f));
}

function finishBlock(block: Uint8Array): void {
  const sum = computeChecksum(block, 0);
  writeOctal(block, OFF.chksum, 7, sum);
  block[OFF.chksum + 7] = 0x20;
}

function checkSparse(sparse: TarSparse, size: number, fail: (why: string) => never): void {
  if (!Number.isSafeInteger(sparse.realSize) || sparse.realSize < 0) {
    fail(`sparse real size ${sparse.realSize} is not a non-negative integer`);
  }
  let end = 0;
  let total = 0;
  for (const s of sparse.segments) {
    if (!Number.isSafeInteger(s.offset) || !Number.isSafeInteger(s.length) || s.length < 0) {
      fail(`sparse segment ${s.offset}+${s.length} is not valid`);
    }
    if (s.offset < end || s.offset + s.length > sparse.realSize) {
      fail(`sparse segment ${s.offset}+${s.length} overlaps another or ends past the real size`);
    }
    end = s.offset + s.length;
    total += s.length;
  }
  if (total !== size) fail(`the sparse segments hold ${total} bytes, not its size ${size}`);
}

/**
 * Builds a whole archive in memory, for tests and small archives.
 *
 * @example Make an archive and read it back
 * ```ts
 * import { createTar, readTar } from "@strata/strata/tar";
 *
 * const archive = await createTar([
 *   { header: { name: "bin", type: "directory" } },
 *   { header: { name: "bin/sh", type: "file", mode: 0o755 }, body: new Uint8Array(10) },
 * ]);
 * for await (const { header } of readTar([archive])) console.log(header.name);
 * ```
 *
 * @param entries The entries, in order.
 * @param options The format to write.
 * @returns The archive, including the end-of-archive marker.
 */
export async function createTar(
  entries: Iterable<TarInput> | AsyncIterable<TarInput>,
  options: TarWriterOptions = {},
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const writer = new TarWriter((chunk) => {
    chunks.push(chunk);
    total += chunk.length;
  }, options);
  for await (const e of entries) await writer.add(e.header, e.body);
  await writer.finish();
  const out = new Uint8Array(total);
  let pos = 0;
  for (const c of chunks) {
    out.set(c, pos);
    pos += c.length;
  }
  return out;
}
