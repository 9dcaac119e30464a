// File names as JavaScript strings without losing bytes. Linux names are bytes and need not be
// UTF-8 (a layer made on a Latin-1 system has names such as "caf\xe9"), while every Strata API
// takes and returns strings. Names are decoded as UTF-8 and each byte that is not part of a valid
// sequence becomes the lone surrogate U+DC00 + byte (U+DC80-U+DCFF), as Python's
// "surrogateescape" does; encoding turns those back into their bytes. Valid UTF-8 decodes to the
// same string as TextDecoder gives, and bytes -> string -> bytes is the identity for every input.

/** Decodes valid UTF-8 and throws on the rest; a leading U+FEFF is kept, as a name's first byte. */
const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
/** For ASCII, where it is exact: three times faster than the strict decoder in Deno 2.9. */
const ascii = new TextDecoder();
const encoder = new TextEncoder();

/**
 * Decodes a name: UTF-8, with the bytes of invalid sequences kept as U+DC80-U+DCFF.
 *
 * @param bytes The name's bytes.
 * @returns The name as a string.
 */
export function decodeName(bytes: Uint8Array): string {
  let plain = true;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i]! >= 0x80) {
      plain = false;
      break;
    }
  }
  if (plain) return ascii.decode(bytes);
  try {
    return strict.decode(bytes);
  } catch {
    return decodeEscaping(bytes);
  }
}

/**
 * Encodes a name into `buf` (which must hold `3 * name.length` bytes): UTF-8, with U+DC80-U+DCFF
 * written as the byte they stand for. Other unpaired surrogates become U+FFFD, as TextEncoder
 * writes them.
 *
 * @param name The name.
 * @param buf Where to write it.
 * @returns The number of bytes written.
 */
export function encodeNameInto(name: string, buf: Uint8Array): number {
  if (name.isWellFormed()) return encoder.encodeInto(name, buf).written;
  return encodeEscaping(name, buf);
}

/**
 * Encodes a name as {@linkcode encodeNameInto} does, into a new array.
 *
 * @param name The name.
 * @returns Its bytes.
 */
export function encodeName(name: string): Uint8Array {
  if (name.isWellFormed()) return encoder.encode(name);
  const buf = new Uint8Array(name.length * 3);
  return buf.slice(0, encodeEscaping(name, buf));
}

/**
 * The number of bytes of {@linkcode encodeName}'s result, without encoding.
 *
 * @param name The name.
 * @returns Its length in bytes.
 */
export function nameByteLength(name: string): number {
  let n = 0;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && isLow(name.charCodeAt(i + 1))) {
      n += 4;
      i++;
    } else if (c >= 0xdc80 && c <= 0xdcff) n += 1;
    else n += 3;
  }
  return n;
}

function isLow(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

/** The escape of a byte that is not part of a valid sequence. */
function escape(byte: number): string {
  return String.fromCharCode(0xdc00 + byte);
}

function decodeEscaping(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    if (b < 0x80) {
      out += String.fromCharCode(b);
      i++;
      continue;
    }
    const n = sequenceLength(bytes, i);
    if (n === 0) {
      out += escape(b);
      i++;
      continue;
    }
    let cp = b & (0xff >> (n + 1));
    for (let k = 1; k < n; k++) cp = (cp << 6) | (bytes[i + k]! & 0x3f);
    out += String.fromCodePoint(cp);
    i += n;
  }
  return out;
}

/**
 * The length of the valid UTF-8 sequence (2-4 bytes) that starts at `bytes[i]` (not ASCII), or 0
 * when there is none: the ranges of RFC 3629, which exclude overlong forms, surrogates and code
 * points above U+10FFFF.
 */
function sequenceLength(bytes: Uint8Array, i: number): number {
  const b = bytes[i]!;
  let n: number;
  let lo = 0x80;
  let hi = 0xbf;
  if (b >= 0xc2 && b <= 0xdf) n = 2;
  else if (b >= 0xe0 && b <= 0xef) {
    n = 3;
    if (b === 0xe0) lo = 0xa0;
    else if (b === 0xed) hi = 0x9f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    n = 4;
    if (b === 0xf0) lo = 0x90;
    else if (b === 0xf4) hi = 0x8f;
  } else return 0;
  if (i + n > bytes.length) return 0;
  const second = bytes[i + 1]!;
  if (second < lo || second > hi) return 0;
  for (let k = 2; k < n; k++) {
    const c = bytes[i + k]!;
    if (c < 0x80 || c > 0xbf) return 0;
  }
  return n;
}

function encodeEscaping(name: string, buf: Uint8Array): number {
  let w = 0;
  for (let i = 0; i < name.length; i++) {
    let c = name.charCodeAt(i);
    if (c < 0x80) {
      buf[w++] = c;
      continue;
    }
    if (c >= 0xdc80 && c <= 0xdcff) {
      buf[w++] = c - 0xdc00;
      continue;
    }
    if (c >= 0xd800 && c <= 0xdbff && isLow(name.charCodeAt(i + 1))) {
      c = 0x10000 + ((c - 0xd800) << 10) + (name.charCodeAt(++i) - 0xdc00);
      buf[w++] = 0xf0 | (c >> 18);
      buf[w++] = 0x80 | ((c >> 12) & 0x3f);
      buf[w++] = 0x80 | ((c >> 6) & 0x3f);
      buf[w++] = 0x80 | (c & 0x3f);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    if (c < 0x800) {
      buf[w++] = 0xc0 | (c >> 6);
      buf[w++] = 0x80 | (c & 0x3f);
    } else {
      buf[w++] = 0xe0 | (c >> 12);
      buf[w++] = 0x80 | ((c >> 6) & 0x3f);
      buf[w++] = 0x80 | (c & 0x3f);
    }
  }
  return w;
}

/**
 * A name made safe for a terminal line, as GNU tar prints names: a byte that is not UTF-8 (kept as
 * U+DC80-U+DCFF, see {@linkcode decodeName}) and a control character become `\xNN`, a backslash `\\`.
 * Without it the terminal would show U+FFFD, and a newline in a name would split the line.
 */
export function printableName(name: string): string {
  // deno-lint-ignore no-control-regex
  return name.replace(/[\\\x00-\x1f\x7f\udc80-\udcff]/gu, (c) => {
    if (c === "\\") return "\\\\";
    const code = c.charCodeAt(0);
    return `\\x${(code >= 0xdc80 ? code - 0xdc00 : code).toString(16).padStart(2, "0")}`;
  });
}
