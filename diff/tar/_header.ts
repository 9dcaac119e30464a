// Shared types, the TarError class and the low-level field codecs of the tar reader and writer.

import { InvalidArgument } from "../../errors.ts";
import { decodeName, encodeName } from "../../sys/_names.ts";

/**
 * The kind of a tar entry.
 *
 * `"unknown"` is any type flag the reader does not interpret (GNU dumpdir `D`, volume label `V`,
 * Solaris ACL `A`, ...); {@linkcode TarHeader.typeflag} then holds the raw flag.
 */
export type TarEntryType =
  | "file"
  | "hardlink"
  | "symlink"
  | "char"
  | "block"
  | "directory"
  | "fifo"
  | "unknown";

/** A point in time with nanosecond precision: `sec` whole seconds since the Unix epoch (may be negative) plus `nsec` in `[0, 1e9)`. */
export interface TarTime {
  /** Whole seconds since the Unix epoch, rounded towards minus infinity. */
  sec: number;
  /** Nanoseconds added to `sec`, in `[0, 999999999]`. */
  nsec: number;
}

/** One run of data in a sparse file: `length` bytes of real data starting at `offset` of the file. */
export interface TarSparseSegment {
  /** Offset of the data in the real (expanded) file. */
  offset: number;
  /** Number of data bytes; may be 0 (GNU tar ends its maps with a 0-length segment at the real size). */
  length: number;
}

/** The sparse map of a GNU sparse file: everything not covered by a segment is a hole. */
export interface TarSparse {
  /** The size of the real (expanded) file. */
  realSize: number;
  /** Data segments in file order; the entry's body holds their bytes back to back. */
  segments: TarSparseSegment[];
}

/** The on-disk format a header was read in. */
export type TarFormat = "ustar" | "gnu" | "pax" | "v7";

/**
 * A parsed tar header, with PAX records, GNU long names and sparse maps already merged in.
 *
 * Directory names have their trailing slashes removed (`"a/b/"` becomes `"a/b"`); other names are
 * kept as stored. Strings are decoded as UTF-8; each byte that is not part of a valid sequence
 * becomes the unpaired surrogate U+DC00 + byte (U+DC80-U+DCFF), so a name that is not UTF-8 (a
 * Latin-1 `caf\xe9`) keeps its bytes: {@linkcode createTar} and Strata's file-system calls write
 * those surrogates back as the bytes they stand for.
 */
export interface TarHeader {
  /** Path of the entry (ustar prefix joined, PAX `path`, GNU `L` or `GNU.sparse.name` applied). */
  name: string;
  /** The kind of entry. */
  type: TarEntryType;
  /** The raw type flag character (`"0"`, `"\0"`, `"7"`, `"S"`, `"5"`, ...). */
  typeflag: string;
  /** Permission bits as stored (normally `0o7777` at most). */
  mode: number;
  /** Owner user id. */
  uid: number;
  /** Owner group id. */
  gid: number;
  /** Owner user name, `""` when absent. */
  uname: string;
  /** Owner group name, `""` when absent. */
  gname: string;
  /**
   * Number of bytes the entry's body yields: 0 for header-only types (links, directories,
   * devices, fifos); for sparse files the packed data size, the real size is in `sparse`.
   */
  size: number;
  /** Modification time. */
  mtime: TarTime;
  /** Access time, when the archive stores one (PAX `atime`, GNU incremental header). */
  atime?: TarTime;
  /** Status change time, when the archive stores one (PAX `ctime`, GNU incremental header). */
  ctime?: TarTime;
  /** Target of a symlink or hardlink, `""` otherwise. */
  linkname: string;
  /** Device major number (char and block devices). */
  devmajor: number;
  /** Device minor number (char and block devices). */
  devminor: number;
  /** Extended attributes from `SCHILY.xattr.*` (or `LIBARCHIVE.xattr.*`) PAX records, values as exact bytes. */
  xattrs: Record<string, Uint8Array>;
  /** Every PAX record of the entry except the xattr records, as UTF-8 text; global records are not included. */
  pax: Record<string, string>;
  /** The sparse map, for GNU sparse files (old GNU `S` or PAX `GNU.sparse.*`). */
  sparse?: TarSparse;
  /** The format the header was stored in (`"pax"` when any PAX record applied). */
  format: TarFormat;
}

/**
 * A malformed or truncated tar archive. It is an {@linkcode InvalidArgument}, so callers that
 * only branch on Strata's error kinds need nothing tar-specific.
 *
 * @example Report where an archive is broken
 * ```ts
 * import { readTar, TarError } from "@strata/strata/tar";
 *
 * async function* chunks() {
 *   yield new Uint8Array(700).fill(65);
 * }
 * try {
 *   for await (const _ of readTar(chunks())) { }
 * } catch (err) {
 *   if (err instanceof TarError) console.log(err.offset, err.entry);
 * }
 * ```
 */
export class TarError extends InvalidArgument {
  /** Always `"TarError"`. */
  override readonly name: string = "TarError";
  /** Byte offset in the archive of the header block of the entry that failed. */
  readonly offset: number;
  /** Name of the entry that failed, when its header could be read. */
  readonly entry: string | undefined;

  /**
   * Creates an error about the entry whose header starts at `offset`.
   *
   * @param message The message, in sentence case.
   * @param options Where the error happened.
   */
  constructor(message: string, options: { offset: number; entry?: string | undefined }) {
    super(message);
    this.offset = options.offset;
    this.entry = options.entry;
  }
}

/** Size of a tar block. */
export const BLOCK_SIZE = 512;
/** Largest value of an 8-byte octal field (7 digits and a terminator). */
export const MAX_OCTAL_8 = 0o7777777;
/** Largest value of a 12-byte octal field (11 digits and a terminator). */
export const MAX_OCTAL_12 = 0o77777777777;

/** Field offsets of the ustar header (GNU fields after `devminor`). */
export const OFF = {
  name: 0,
  mode: 100,
  uid: 108,
  gid: 116,
  size: 124,
  mtime: 136,
  chksum: 148,
  typeflag: 156,
  linkname: 157,
  magic: 257,
  version: 263,
  uname: 265,
  gname: 297,
  devmajor: 329,
  devminor: 337,
  prefix: 345,
  gnuAtime: 345,
  gnuCtime: 357,
  gnuSparse: 386,
  gnuIsExtended: 482,
  gnuRealSize: 483,
} as const;

/** Encodes a string as UTF-8, U+DC80-U+DCFF as the bytes they stand for (see `decodeName`). */
export function utf8(text: string): Uint8Array {
  return encodeName(text);
}

/** Decodes UTF-8 bytes, keeping the bytes of invalid sequences as U+DC80-U+DCFF. */
export function fromUtf8(bytes: Uint8Array): string {
  return decodeName(bytes);
}

/** Decodes a NUL-terminated (or field-filling) string field. */
export function readString(buf: Uint8Array, off: number, len: number): string {
  let end = off;
  const max = off + len;
  let ascii = true;
  while (end < max) {
    const c = buf[end]!;
    if (c === 0) break;
    if (c >= 0x80) ascii = false;
    end++;
  }
  if (end === off) return "";
  if (ascii && end - off <= 32) {
    let s = "";
    for (let i = off; i < end; i++) s += String.fromCharCode(buf[i]!);
    return s;
  }
  return decodeName(buf.subarray(off, end));
}

/** Reports whether the 512 bytes at `off` are all zero. */
export function isZeroBlock(buf: Uint8Array, off: number): boolean {
  if (buf[off] !== 0) return false;
  const end = off + BLOCK_SIZE;
  for (let i = off + 1; i < end; i++) if (buf[i] !== 0) return false;
  return true;
}

/**
 * Parses an octal or base-256 numeric field.
 *
 * @returns The value, or NaN when the field is malformed or out of the safe-integer range.
 */
export function parseNumeric(buf: Uint8Array, off: number, len: number): number {
  const first = buf[off]!;
  if (first & 0x80) {
    const inv = first & 0x40 ? 0xff : 0;
    let x = 0;
    for (let i = 0; i < len; i++) {
      let c = buf[off + i]! ^ inv;
      if (i === 0) c &= 0x7f;
      x = x * 256 + c;
      if (x > Number.MAX_SAFE_INTEGER) return NaN;
    }
    return inv ? -x - 1 : x;
  }
  let start = off;
  let end = off + len;
  while (start < end && (buf[start] === 0x20 || buf[start] === 0)) start++;
  while (end > start && (buf[end - 1] === 0x20 || buf[end - 1] === 0)) end--;
  let x = 0;
  for (let i = start; i < end; i++) {
    const d = buf[i]! - 0x30;
    if (d < 0 || d > 7) return NaN;
    x = x * 8 + d;
  }
  return x;
}

/** Checks the header checksum, accepting the unsigned sum or the (historic) signed sum. */
export function checksumMatches(buf: Uint8Array, off: number): boolean {
  const stored = parseNumeric(buf, off + OFF.chksum, 8);
  if (Number.isNaN(stored)) return false;
  let unsigned = 0;
  let signed = 0;
  const chk = off + OFF.chksum;
  for (let i = off; i < chk; i++) {
    const c = buf[i]!;
    unsigned += c;
    signed += c < 128 ? c : c - 256;
  }
  unsigned += 8 * 0x20;
  signed += 8 * 0x20;
  const end = off + BLOCK_SIZE;
  for (let i = chk + 8; i < end; i++) {
    const c = buf[i]!;
    unsigned += c;
    signed += c < 128 ? c : c - 256;
  }
  return stored === unsigned || stored === signed;
}

/** Computes the unsigned checksum of a header whose checksum field is still to be written. */
export function computeChecksum(buf: Uint8Array, off: number): number {
  let sum = 0;
  for (let i = 0; i < BLOCK_SIZE; i++) {
    sum += i >= OFF.chksum && i < OFF.chksum + 8 ? 0x20 : buf[off + i]!;
  }
  return sum;
}

/** One PAX record; `value` is a view into the parsed data. */
export interface PaxRecord {
  /** Record keyword. */
  key: string;
  /** Raw value bytes. */
  value: Uint8Array;
}

/**
 * Parses the records of a PAX extended header.
 *
 * @returns The records in order, or an error message describing the first malformed record.
 */
export function parsePaxRecords(data: Uint8Array): PaxRecord[] | string {
  const records: PaxRecord[] = [];
  let pos = 0;
  while (pos < data.length) {
    // Some writers pad the data with NULs; stop at the first one at a record boundary.
    if (data[pos] === 0) break;
    let len = 0;
    let i = pos;
    while (i < data.length && data[i] !== 0x20) {
      const d = data[i]! - 0x30;
      if (d < 0 || d > 9) return `bad record length at byte ${pos}`;
      len = len * 10 + d;
      if (len > data.length) return `record at byte ${pos} is longer than the header`;
      i++;
    }
    if (i === pos || i >= data.length) return `bad record length at byte ${pos}`;
    const end = pos + len;
    if (end > data.length || end <= i + 1) return `record at byte ${pos} is longer than the header`;
    if (data[end - 1] !== 0x0a) return `record at byte ${pos} does not end with a newline`;
    const keyStart = i + 1;
    let eq = keyStart;
    while (eq < end - 1 && data[eq] !== 0x3d) eq++;
    if (eq >= end - 1 || eq === keyStart) return `record at byte ${pos} has no keyword`;
    records.push({
      key: decodeName(data.subarray(keyStart, eq)),
      value: data.subarray(eq + 1, end - 1),
    });
    pos = end;
  }
  return records;
}

/** Formats one PAX record: `"<len> <key>=<value>\n"` with `len` counting itself. */
export function formatPaxRecord(key: string, value: Uint8Array | string): Uint8Array {
  const k = utf8(key);
  const v = typeof value === "string" ? utf8(value) : value;
  const base = k.length + v.length + 3;
  let len = base + String(base).length;
  if (String(len).length !== String(base).length) len = base + String(len).length;
  const out = new Uint8Array(len);
  const prefix = utf8(`${len} `);
  out.set(prefix, 0);
  out.set(k, prefix.length);
  out[prefix.length + k.length] = 0x3d;
  out.set(v, prefix.length + k.length + 1);
  out[len - 1] = 0x0a;
  return out;
}

/**
 * Parses a PAX decimal time such as `"1700000000.5"` or `"-1.25"`.
 *
 * @returns The time, or `undefined` when the text is malformed.
 */
export function parsePaxTime(text: string): TarTime | undefined {
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(text);
  if (!m) return undefined;
  const whole = Number(m[2]);
  if (!Number.isSafeInteger(whole)) return undefined;
  const frac = m[3] ?? "";
  const nsec = frac === "" ? 0 : Number(frac.slice(0, 9).padEnd(9, "0"));
  if (m[1] !== "-") return { sec: whole, nsec };
  if (nsec === 0) return { sec: whole === 0 ? 0 : -whole, nsec: 0 };
  return { sec: -whole - 1, nsec: 1e9 - nsec };
}

/** Formats a time as a PAX decimal number with as few fraction digits as needed. */
export function formatPaxTime(time: TarTime): string {
  if (time.nsec === 0) return String(time.sec);
  let sec = time.sec;
  let nsec = time.nsec;
  let sign = "";
  if (sec < 0) {
    sign = "-";
    sec = -sec - 1;
    nsec = 1e9 - nsec;
  }
  const frac = String(nsec).padStart(9, "0").replace(/0+$/, "");
  return `${sign}${sec}.${frac}`;
}

/** Parses a PAX decimal integer (size, uid, gid, sparse numbers). */
export function parsePaxInteger(text: string): number | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Writes `value` as zero-padded octal filling `len - 1` digits plus a NUL terminator. */
export function writeOctal(buf: Uint8Array, off: number, len: number, value: number): void {
  const digits = value.toString(8).padStart(len - 1, "0");
  for (let i = 0; i < len - 1; i++) buf[off + i] = digits.charCodeAt(i);
  buf[off + len - 1] = 0;
}

/** Writes `value` (possibly negative) in GNU base-256 filling the whole field. */
export function writeBase256(buf: Uint8Array, off: number, len: number, value: number): void {
  let v = BigInt(value);
  for (let i = len - 1; i >= 0; i--) {
    buf[off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  buf[off] = value < 0 ? buf[off]! | 0xc0 : 0x80;
}

/** Writes a string's bytes into a field (the caller checked that it fits). */
export function writeBytes(buf: Uint8Array, off: number, bytes: Uint8Array): void {
  buf.set(bytes, off);
}

/** Reports whether every character of `text` is ASCII. */
export function isAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) >= 0x80) return false;
  return true;
}
