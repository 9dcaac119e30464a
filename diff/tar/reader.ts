/**
 * Streaming tar reader: ustar, GNU, PAX, GNU sparse and v7 archives from any async source of
 * byte chunks, with file data handed out as views of the input chunks.
 *
 * @module
 */

import { FailedPrecondition, InvalidArgument } from "../../errors.ts";
import {
  BLOCK_SIZE,
  checksumMatches,
  fromUtf8,
  isZeroBlock,
  OFF,
  parseNumeric,
  parsePaxInteger,
  parsePaxRecords,
  parsePaxTime,
  type PaxRecord,
  readString,
  type TarEntryType,
  TarError,
  type TarFormat,
  type TarHeader,
  type TarSparse,
  type TarSparseSegment,
  type TarTime,
} from "./_header.ts";

/** One entry of an archive: its header and its data. */
export interface TarEntry {
  /** The parsed header. */
  header: TarHeader;
  /**
   * The entry's data, `header.size` bytes in total, as views (`subarray`s) of the source's chunks.
   * For sparse files only the stored segments, back to back. Iterate it before asking for the
   * next entry; an unread or partly read body is skipped when the reader moves on, and reading
   * it afterwards throws {@linkcode FailedPrecondition}.
   */
  body: AsyncIterable<Uint8Array>;
}

/** Options of {@linkcode readTar}. */
export interface ReadTarOptions {
  /**
   * Largest PAX extended header, GNU long name/link or sparse map accepted, in bytes; larger ones
   * are a {@linkcode TarError}. Default 1 MiB.
   */
  maxHeaderSize?: number;
  /**
   * When `true` (the default), the source is read to its end after the end-of-archive marker
   * (trailing padding and any other bytes are discarded). When `false` the source is left where
   * the marker ended, not closed, so the caller can go on reading it.
   */
  drain?: boolean;
}

const DEFAULT_MAX_HEADER_SIZE = 1 << 20;
const EMPTY = new Uint8Array(0);

/** Buffers an async source of chunks, hands out blocks in place and data as views. */
class ByteSource {
  #it: AsyncIterator<Uint8Array>;
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  #base = 0;
  #eof = false;
  #scratch = new Uint8Array(BLOCK_SIZE);
  /** Buffer holding the block returned by the last {@linkcode readBlock}. */
  blockBuf: Uint8Array = EMPTY;
  /** Offset of that block in `blockBuf`. */
  blockOff = 0;

  constructor(it: AsyncIterator<Uint8Array>) {
    this.#it = it;
  }

  /** Absolute offset of the next unread byte. */
  get offset(): number {
    return this.#base + this.#pos;
  }

  async #pull(): Promise<boolean> {
    while (!this.#eof) {
      const r = await this.#it.next();
      if (r.done) {
        this.#eof = true;
        break;
      }
      const c = r.value;
      if (!(c instanceof Uint8Array)) {
        throw new InvalidArgument(
          `Cannot read tar archive: the source yielded a ${typeof c}, not a Uint8Array`,
        );
      }
      if (c.length === 0) continue;
      this.#base += this.#chunk.length;
      this.#chunk = c;
      this.#pos = 0;
      return true;
    }
    return false;
  }

  /** Reads one block into `blockBuf`/`blockOff`; returns the number of bytes got (512 unless EOF). */
  async readBlock(): Promise<number> {
    if (this.#chunk.length - this.#pos >= BLOCK_SIZE) {
      this.blockBuf = this.#chunk;
      this.blockOff = this.#pos;
      this.#pos += BLOCK_SIZE;
      return BLOCK_SIZE;
    }
    let n = 0;
    const s = this.#scratch;
    while (n < BLOCK_SIZE) {
      if (this.#pos === this.#chunk.length) {
        if (!(await this.#pull())) break;
        if (n === 0 && this.#chunk.length >= BLOCK_SIZE) {
          this.blockBuf = this.#chunk;
          this.blockOff = 0;
          this.#pos = BLOCK_SIZE;
          return BLOCK_SIZE;
        }
      }
      const take = Math.min(BLOCK_SIZE - n, this.#chunk.length - this.#pos);
      s.set(this.#chunk.subarray(this.#pos, this.#pos + take), n);
      n += take;
      this.#pos += take;
    }
    this.blockBuf = s;
    this.blockOff = 0;
    return n;
  }

  /** Returns a view of at most `max` (> 0) bytes, or `null` at the end of the source. */
  async take(max: number): Promise<Uint8Array | null> {
    if (this.#pos === this.#chunk.length && !(await this.#pull())) return null;
    const end = Math.min(this.#chunk.length, this.#pos + max);
    const view = this.#chunk.subarray(this.#pos, end);
    this.#pos = end;
    return view;
  }

  /** Reads `n` bytes as one contiguous array (a view when they lie in one chunk); shorter at EOF. */
  async readExact(n: number): Promise<Uint8Array> {
    if (this.#chunk.length - this.#pos >= n) {
      const view = this.#chunk.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      return view;
    }
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const part = await this.take(n - got);
      if (part === null) return out.subarray(0, got);
      out.set(part, got);
      got += part.length;
    }
    return out;
  }

  /** Skips `n` bytes; returns how many were skipped (fewer at EOF). */
  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      const avail = this.#chunk.length - this.#pos;
      if (avail === 0) {
        if (!(await this.#pull())) break;
        continue;
      }
      const step = Math.min(avail, left);
      this.#pos += step;
      left -= step;
    }
    return n - left;
  }

  /** Reads and discards the rest of the source. */
  async drain(): Promise<void> {
    this.#pos = this.#chunk.length;
    while (await this.#pull()) this.#pos = this.#chunk.length;
  }

  /** Tells the source that no more data is wanted. */
  async close(): Promise<void> {
    try {
      await this.#it.return?.();
    } catch {
      // The source's own clean-up error must not hide the error that ended the read.
    }
  }
}

const TYPES: Record<string, TarEntryType> = {
  "0": "file",
  "\0": "file",
  "7": "file",
  "S": "file",
  "1": "hardlink",
  "2": "symlink",
  "3": "char",
  "4": "block",
  "5": "directory",
  "6": "fifo",
};

const HEADER_ONLY = new Set<TarEntryType>([
  "hardlink",
  "symlink",
  "char",
  "block",
  "directory",
  "fifo",
]);

/** State shared by the entry generator and the body iterators. */
class Reader {
  readonly src: ByteSource;
  readonly maxHeaderSize: number;
  /** Serial number of the current entry; a body only reads while it matches. */
  entryId = 0;
  /** Data bytes of the current entry not read yet. */
  remaining = 0;
  /** Padding after the current entry's data. */
  padding = 0;
  /** Header offset and name of the current entry, for errors. */
  entryOffset = 0;
  entryName = "";

  constructor(src: ByteSource, maxHeaderSize: number) {
    this.src = src;
    this.maxHeaderSize = maxHeaderSize;
  }

  error(message: string, offset: number, entry?: string): TarError {
    const where = entry === undefined
      ? `Cannot read tar header at offset ${offset}`
      : `Cannot read tar entry "${entry}" at offset ${offset}`;
    return new TarError(`${where}: ${message}`, { offset, entry });
  }

  truncatedData(): TarError {
    return this.error(
      `the archive ends inside the entry's data (${this.remaining} bytes missing)`,
      this.entryOffset,
      this.entryName,
    );
  }

  /** Skips what is left of the current entry's data and padding. */
  async finishEntry(): Promise<void> {
    const n = this.remaining + this.padding;
    if (n === 0) return;
    const skipped = await this.src.skip(n);
    if (skipped < this.remaining) {
      this.remaining -= skipped;
      throw this.truncatedData();
    }
    if (skipped < n) {
      throw this.error(
        "the archive ends inside the padding after the entry's data",
        this.entryOffset,
        this.entryName,
      );
    }
    this.remaining = 0;
    this.padding = 0;
  }

  /** Reads the data of an extended header (PAX, GNU long name, sparse map) of `size` bytes. */
  async readExtension(size: number, kind: string, offset: number): Promise<Uint8Array> {
    if (size > this.maxHeaderSize) {
      throw this.error(
        `${kind} of ${size} bytes exceeds the limit of ${this.maxHeaderSize} bytes`,
        offset,
      );
    }
    // A copy: skipping the padding may read the next chunk, which can free or reuse this one.
    const data = new Uint8Array(await this.src.readExact(size));
    if (data.length < size) throw this.error(`the archive ends inside the ${kind}`, offset);
    const pad = (BLOCK_SIZE - (size % BLOCK_SIZE)) % BLOCK_SIZE;
    if ((await this.src.skip(pad)) < pad) {
      throw this.error(`the archive ends inside the ${kind}`, offset);
    }
    return data;
  }

  /** Reads headers up to the next real entry; `null` at the end of the archive. */
  async nextHeader(): Promise<TarHeader | null> {
    await this.finishEntry();
    const src = this.src;
    let pax: PaxRecord[] | null = null;
    let longName: string | undefined;
    let longLink: string | undefined;
    let offset = src.offset;
    for (;;) {
      offset = src.offset;
      const got = await src.readBlock();
      const pending = pax !== null || longName !== undefined || longLink !== undefined;
      if (got === 0) {
        if (pending) throw this.error("the archive ends after an extended header", offset);
        return null;
      }
      if (got < BLOCK_SIZE) {
        throw this.error(`the archive ends inside a header block (${got} of 512 bytes)`, offset);
      }
      const buf = src.blockBuf;
      const off = src.blockOff;
      if (isZeroBlock(buf, off)) {
        if (pending) throw this.error("an extended header is followed by a zero block", offset);
        const second = await src.readBlock();
        if (second === 0) return null;
        if (second < BLOCK_SIZE || !isZeroBlock(src.blockBuf, src.blockOff)) {
          throw this.error(
            "a zero block is followed by data that is not a zero block",
            offset + BLOCK_SIZE,
          );
        }
        return null;
      }
      if (!checksumMatches(buf, off)) {
        const stored = readString(buf, off + OFF.chksum, 8).trim();
        throw this.error(
          `bad header checksum (stored "${stored}") for "${readString(buf, off, 100)}"`,
          offset,
        );
      }
      const flag = buf[off + OFF.typeflag]!;
      // x, g: PAX extended headers; L, K: GNU long name and long link name.
      if (flag === 0x78 || flag === 0x67 || flag === 0x4c || flag === 0x4b) {
        const size = parseNumeric(buf, off + OFF.size, 12);
        if (!(size >= 0)) throw this.error("bad size field in an extended header", offset);
        const kind = flag === 0x78 || flag === 0x67 ? "PAX extended header" : "GNU long name";
        const data = await this.readExtension(size, kind, offset);
        if (flag === 0x4c || flag === 0x4b) {
          let end = data.indexOf(0);
          if (end < 0) end = data.length;
          const text = fromUtf8(data.subarray(0, end));
          if (flag === 0x4c) longName = text;
          else longLink = text;
          continue;
        }
        const records = parsePaxRecords(data);
        if (typeof records === "string") {
          throw this.error(`malformed PAX extended header: ${records}`, offset);
        }
        if (flag === 0x78) {
          // Values view `data`, a copy owned by this header: they outlive the input chunks.
          pax = pax === null ? records : pax.concat(records);
        }
        continue;
      }
      // A regular header: every field is parsed before any further read can reuse the block.
      return await this.#buildHeader(buf, off, offset, pax, longName, longLink);
    }
  }

  async #buildHeader(
    buf: Uint8Array,
    off: number,
    offset: number,
    paxRecords: PaxRecord[] | null,
    longName: string | undefined,
    longLink: string | undefined,
  ): Promise<TarHeader> {
    let name = readString(buf, off + OFF.name, 100);
    const num = (field: string, at: number, len: number): number => {
      const v = parseNumeric(buf, off + at, len);
      if (Number.isNaN(v)) {
        const raw = readString(buf, off + at, len);
        throw this.error(`bad ${field} field "${raw}"`, offset, longName ?? name);
      }
      return v;
    };
    const mode = num("mode", OFF.mode, 8);
    let uid = num("uid", OFF.uid, 8);
    let gid = num("gid", OFF.gid, 8);
    let size = num("size", OFF.size, 12);
    let mtime: TarTime = { sec: num("mtime", OFF.mtime, 12), nsec: 0 };
    let atime: TarTime | undefined;
    let ctime: TarTime | undefined;
    const flagByte = buf[off + OFF.typeflag]!;
    const typeflag = String.fromCharCode(flagByte);
    let linkname = readString(buf, off + OFF.linkname, 100);
    let uname = "";
    let gname = "";
    let devmajor = 0;
    let devminor = 0;
    let format: TarFormat = "v7";
    const m = off + OFF.magic;
    const isUstar = buf[m] === 0x75 && buf[m + 1] === 0x73 && buf[m + 2] === 0x74 &&
      buf[m + 3] === 0x61 && buf[m + 4] === 0x72;
    let sparse: TarSparse | undefined;
    let gnuExtended = false;
    if (isUstar && buf[m + 5] === 0) format = "ustar";
    else if (isUstar && buf[m + 5] === 0x20 && buf[m + 6] === 0x20 && buf[m + 7] === 0) {
      format = "gnu";
    }
    if (format !== "v7") {
      uname = readString(buf, off + OFF.uname, 32);
      gname = readString(buf, off + OFF.gname, 32);
      devmajor = num("devmajor", OFF.devmajor, 8);
      devminor = num("devminor", OFF.devminor, 8);
    }
    let prefixLen = 0;
    if (format === "ustar") {
      // The star format keeps a 131-byte prefix followed by atime and ctime.
      const t = off + 508;
      const star = buf[t] === 0x74 && buf[t + 1] === 0x61 && buf[t + 2] === 0x72 &&
        buf[t + 3] === 0;
      prefixLen = star ? 131 : 155;
    } else if (format === "gnu") {
      const a = parseNumeric(buf, off + OFF.gnuAtime, 12);
      const c = parseNumeric(buf, off + OFF.gnuCtime, 12);
      if (Number.isNaN(a) || Number.isNaN(c)) {
        // Old Go writers put a ustar prefix into GNU headers; read it as such.
        prefixLen = 155;
      } else {
        if (buf[off + OFF.gnuAtime] !== 0) atime = { sec: a, nsec: 0 };
        if (buf[off + OFF.gnuCtime] !== 0) ctime = { sec: c, nsec: 0 };
      }
      if (flagByte === 0x53) {
        const segments: TarSparseSegment[] = [];
        const ok = readSparseEntries(buf, off + OFF.gnuSparse, 4, segments);
        if (!ok) throw this.error("bad sparse map in the GNU header", offset, longName ?? name);
        const realSize = num("realsize", OFF.gnuRealSize, 12);
        sparse = { realSize, segments };
        gnuExtended = buf[off + OFF.gnuIsExtended] !== 0;
      }
    }
    if (prefixLen > 0) {
      const prefix = readString(buf, off + OFF.prefix, prefixLen);
      if (prefix !== "") name = `${prefix}/${name}`;
    }
    if (longName !== undefined) name = longName;
    if (longLink !== undefined) linkname = longLink;
    // The header block may be overwritten from here on.

    const entryName = (): string => name;
    if (gnuExtended && sparse) {
      let blocks = 0;
      for (;;) {
        if (++blocks * BLOCK_SIZE > this.maxHeaderSize) {
          throw this.error(
            `the sparse map exceeds the limit of ${this.maxHeaderSize} bytes`,
            offset,
            entryName(),
          );
        }
        const got = await this.src.readBlock();
        if (got < BLOCK_SIZE) {
          throw this.error("the archive ends inside the sparse map", offset, entryName());
        }
        const b = this.src.blockBuf;
        const o = this.src.blockOff;
        if (!readSparseEntries(b, o, 21, sparse.segments)) {
          throw this.error("bad sparse map in an extension block", offset, entryName());
        }
        if (b[o + 504] === 0) break;
      }
    }

    const pax: Record<string, string> = {};
    const xattrs: Record<string, Uint8Array> = {};
    if (paxRecords !== null) {
      format = "pax";
      const sparseOffsets: number[] = [];
      const sparseLengths: number[] = [];
      for (const { key, value } of paxRecords) {
        if (key.startsWith("SCHILY.xattr.")) {
          xattrs[key.slice(13)] = value;
          continue;
        }
        if (key.startsWith("LIBARCHIVE.xattr.")) {
          const xname = safeDecodeUri(key.slice(17));
          const bytes = decodeBase64(fromUtf8(value));
          if (xname === undefined || bytes === undefined) {
            throw this.error(`bad PAX record "${key}"`, offset, name);
          }
          if (!(xname in xattrs)) xattrs[xname] = bytes;
          continue;
        }
        const text = fromUtf8(value);
        pax[key] = text;
        if (key === "GNU.sparse.offset" || key === "GNU.sparse.numbytes") {
          const n = parsePaxInteger(text);
          if (n === undefined) throw this.error(`bad PAX record "${key}=${text}"`, offset, name);
          (key === "GNU.sparse.offset" ? sparseOffsets : sparseLengths).push(n);
        }
      }
      const int = (key: string): number | undefined => {
        const text = pax[key];
        if (text === undefined || text === "") return undefined;
        const n = parsePaxInteger(text);
        if (n === undefined) throw this.error(`bad PAX record "${key}=${text}"`, offset, name);
        return n;
      };
      const time = (key: string): TarTime | undefined => {
        const text = pax[key];
        if (text === undefined || text === "") return undefined;
        const t = parsePaxTime(text);
        if (t === undefined) throw this.error(`bad PAX record "${key}=${text}"`, offset, name);
        return t;
      };
      if (pax.path) name = pax.path;
      if (pax.linkpath) linkname = pax.linkpath;
      if (pax.uname) uname = pax.uname;
      if (pax.gname) gname = pax.gname;
      size = int("size") ?? size;
      uid = int("uid") ?? uid;
      gid = int("gid") ?? gid;
      mtime = time("mtime") ?? mtime;
      atime = time("atime") ?? atime;
      ctime = time("ctime") ?? ctime;

      // GNU sparse files in PAX archives (formats 0.0, 0.1 and 1.0).
      const major = pax["GNU.sparse.major"];
      const minor = pax["GNU.sparse.minor"];
      const realSize = int("GNU.sparse.realsize") ?? int("GNU.sparse.size");
      if (major === "1" && minor === "0") {
        sparse = { realSize: realSize ?? 0, segments: [] };
        const used = await this.#readSparseMap(sparse.segments, size, offset, name);
        size -= used;
      } else if (pax["GNU.sparse.map"] !== undefined) {
        const parts = pax["GNU.sparse.map"] === "" ? [] : pax["GNU.sparse.map"].split(",");
        if (parts.length % 2 !== 0) {
          throw this.error('bad PAX record "GNU.sparse.map": odd number of values', offset, name);
        }
        const segments: TarSparseSegment[] = [];
        for (let i = 0; i < parts.length; i += 2) {
          const o = parsePaxInteger(parts[i]!);
          const l = parsePaxInteger(parts[i + 1]!);
          if (o === undefined || l === undefined) {
            throw this.error('bad PAX record "GNU.sparse.map"', offset, name);
          }
          segments.push({ offset: o, length: l });
        }
        sparse = { realSize: realSize ?? 0, segments };
      } else if (sparseOffsets.length > 0 || pax["GNU.sparse.numblocks"] !== undefined) {
        if (sparseOffsets.length !== sparseLengths.length) {
          throw this.error("bad PAX sparse map: offsets and sizes do not pair up", offset, name);
        }
        sparse = {
          realSize: realSize ?? 0,
          segments: sparseOffsets.map((o, i) => ({ offset: o, length: sparseLengths[i]! })),
        };
      }
      if (sparse !== undefined && pax["GNU.sparse.name"]) name = pax["GNU.sparse.name"];
    }

    let type = TYPES[typeflag] ?? "unknown";
    // Old (v7) archives mark directories with a trailing slash on a regular-file entry.
    if (flagByte === 0 && name.endsWith("/")) type = "directory";
    if (type === "directory") {
      let end = name.length;
      while (end > 1 && name.charCodeAt(end - 1) === 0x2f) end--;
      name = name.slice(0, end);
    }
    if (HEADER_ONLY.has(type)) size = 0;
    if (sparse !== undefined) {
      this.#checkSparse(sparse, size, offset, name);
      if (type !== "file") sparse = undefined;
    }

    const header: TarHeader = {
      name,
      type,
      typeflag,
      mode,
      uid,
      gid,
      uname,
      gname,
      size,
      mtime,
      linkname,
      devmajor,
      devminor,
      xattrs,
      pax,
      format,
    };
    if (atime !== undefined) header.atime = atime;
    if (ctime !== undefined) header.ctime = ctime;
    if (sparse !== undefined) header.sparse = sparse;
    this.entryOffset = offset;
    this.entryName = name;
    this.remaining = size;
    this.padding = (BLOCK_SIZE - (size % BLOCK_SIZE)) % BLOCK_SIZE;
    this.entryId++;
    return header;
  }

  /** Reads a PAX sparse 1.0 map from the start of the data; returns the bytes it used. */
  async #readSparseMap(
    segments: TarSparseSegment[],
    size: number,
    offset: number,
    name: string,
  ): Promise<number> {
    const numbers: number[] = [];
    let wanted = -1;
    let current = 0;
    let digits = 0;
    let used = 0;
    while (wanted < 0 || numbers.length < wanted) {
      if (used + BLOCK_SIZE > size) {
        throw this.error("the PAX sparse map is longer than the entry", offset, name);
      }
      if (used + BLOCK_SIZE > this.maxHeaderSize) {
        throw this.error(
          `the sparse map exceeds the limit of ${this.maxHeaderSize} bytes`,
          offset,
          name,
        );
      }
      const got = await this.src.readBlock();
      if (got < BLOCK_SIZE) {
        throw this.error("the archive ends inside the sparse map", offset, name);
      }
      used += BLOCK_SIZE;
      const b = this.src.blockBuf;
      const o = this.src.blockOff;
      for (let i = o; i < o + BLOCK_SIZE; i++) {
        const c = b[i]!;
        if (c === 0x0a) {
          if (digits === 0) throw this.error("bad PAX sparse map: empty number", offset, name);
          if (wanted < 0) wanted = current * 2;
          else numbers.push(current);
          current = 0;
          digits = 0;
          if (wanted >= 0 && numbers.length === wanted) break;
          continue;
        }
        const d = c - 0x30;
        if (d < 0 || d > 9) throw this.error("bad PAX sparse map: not a number", offset, name);
        current = current * 10 + d;
        digits++;
        if (current > Number.MAX_SAFE_INTEGER) {
          throw this.error("bad PAX sparse map: number too large", offset, name);
        }
      }
    }
    for (let i = 0; i < numbers.length; i += 2) {
      segments.push({ offset: numbers[i]!, length: numbers[i + 1]! });
    }
    return used;
  }

  #checkSparse(sparse: TarSparse, size: number, offset: number, name: string): void {
    let end = 0;
    let total = 0;
    for (const s of sparse.segments) {
      if (s.offset < end || s.offset + s.length > sparse.realSize) {
        throw this.error(
          `bad sparse map: segment ${s.offset}+${s.length} overlaps another or ends past the real size ${sparse.realSize}`,
          offset,
          name,
        );
      }
      end = s.offset + s.length;
      total += s.length;
    }
    if (total !== size) {
      throw this.error(
        `bad sparse map: its segments hold ${total} bytes but the entry stores ${size}`,
        offset,
        name,
      );
    }
  }
}

/** Reads `count` old-GNU sparse entries (24 bytes each); returns false on a malformed number. */
function readSparseEntries(
  buf: Uint8Array,
  off: number,
  count: number,
  out: TarSparseSegment[],
): boolean {
  for (let i = 0; i < count; i++) {
    const at = off + i * 24;
    if (buf[at] === 0) break;
    const o = parseNumeric(buf, at, 12);
    const l = parseNumeric(buf, at + 12, 12);
    if (!(o >= 0) || !(l >= 0)) return false;
    out.push({ offset: o, length: l });
  }
  return true;
}

function safeDecodeUri(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

function decodeBase64(text: string): Uint8Array | undefined {
  try {
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return undefined;
  }
}

async function* entryBody(r: Reader, id: number, size: number): AsyncGenerator<Uint8Array> {
  let got = 0;
  while (got < size) {
    if (r.entryId !== id) {
      throw new FailedPrecondition(
        `Cannot read the data of tar entry "${r.entryName}": the reader has moved to a later entry`,
      );
    }
    const chunk = await r.src.take(r.remaining);
    if (chunk === null) throw r.truncatedData();
    r.remaining -= chunk.length;
    got += chunk.length;
    yield chunk;
  }
}

/**
 * Reads a tar archive entry by entry from a stream of byte chunks (a file's `readable`, the
 * output of `node:zlib`, ...).
 *
 * Headers are parsed in place in the input chunks (copied only when a block straddles two
 * chunks) and file data is yielded as views of the input, so large chunks make reading cheap.
 * PAX global headers are validated and otherwise ignored; GNU `L`/`K` records and PAX `x` records
 * are merged into the following entry. The archive ends at two zero blocks, at one zero block
 * followed by the end of the source, or at the end of the source on a block boundary.
 * Malformed or truncated input throws {@linkcode TarError}.
 *
 * Nothing is kept from a chunk once the next one is requested (PAX values are copied), so a
 * source may reuse its buffer as long as the consumer is done with the body views it was given.
 *
 * @example List an archive
 * ```ts
 * import { createTar, readTar } from "@strata/strata/tar";
 *
 * const archive = await createTar([
 *   { header: { name: "hello.txt", type: "file" }, body: new TextEncoder().encode("hi\n") },
 * ]);
 * for await (const entry of readTar([archive])) {
 *   console.log(entry.header.name, entry.header.size);
 * }
 * ```
 *
 * @param source The archive's bytes, in chunks of any size.
 * @param options Header size limit and what to do with bytes after the end of the archive.
 * @returns The entries, in archive order.
 */
export async function* readTar(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: ReadTarOptions = {},
): AsyncGenerator<TarEntry, void, undefined> {
  const maxHeaderSize = options.maxHeaderSize ?? DEFAULT_MAX_HEADER_SIZE;
  if (!(maxHeaderSize >= BLOCK_SIZE)) {
    throw new InvalidArgument(
      `Cannot read tar archive: maxHeaderSize ${maxHeaderSize} is smaller than one block`,
    );
  }
  const it = Symbol.asyncIterator in source
    ? source[Symbol.asyncIterator]()
    : syncToAsync(source[Symbol.iterator]());
  const src = new ByteSource(it);
  const reader = new Reader(src, maxHeaderSize);
  let completed = false;
  try {
    for (;;) {
      const header = await reader.nextHeader();
      if (header === null) break;
      yield { header, body: entryBody(reader, reader.entryId, header.size) };
    }
    completed = true;
  } finally {
    reader.entryId++;
    if (!completed) await src.close();
  }
  if (options.drain ?? true) await src.drain();
}

function syncToAsync(it: Iterator<Uint8Array>): AsyncIterator<Uint8Array> {
  return {
    next: () => Promise.resolve(it.next()),
    return: () => Promise.resolve(it.return?.() ?? { done: true, value: undefined }),
  };
}
