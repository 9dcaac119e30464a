// Helpers shared by the tar tests.

import { readTar, type ReadTarOptions, type TarHeader } from "../../diff/tar/mod.ts";

/** A read entry with its body gathered into one array. */
export interface ReadEntry {
  header: TarHeader;
  data: Uint8Array;
}

/** Concatenates byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Reads a whole archive, gathering each body. */
export async function readAll(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: ReadTarOptions = {},
): Promise<ReadEntry[]> {
  const out: ReadEntry[] = [];
  for await (const entry of readTar(source, options)) {
    const parts: Uint8Array[] = [];
    for await (const chunk of entry.body) parts.push(chunk.slice());
    out.push({ header: entry.header, data: concat(parts) });
  }
  return out;
}

/** Yields `bytes` in chunks whose sizes `nextSize` picks. */
export async function* chunked(
  bytes: Uint8Array,
  nextSize: () => number,
): AsyncGenerator<Uint8Array> {
  let pos = 0;
  while (pos < bytes.length) {
    const n = Math.max(1, nextSize());
    yield bytes.subarray(pos, pos + n);
    pos += n;
  }
}

/** A small seeded PRNG (mulberry32), so failures can be replayed from the printed seed. */
export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!;
  }

  /** Random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(0, 255);
    return out;
  }

  /** An integer in [1, max] with a log-uniform distribution. */
  logInt(max: number): number {
    return Math.max(1, Math.min(max, Math.floor(Math.exp(this.next() * Math.log(max + 1)))));
  }
}

/** Fields of a 512-byte header block for {@linkcode rawHeader}. */
export interface RawFields {
  name?: string;
  mode?: string;
  uid?: string;
  gid?: string;
  size?: string;
  mtime?: string;
  typeflag?: string;
  linkname?: string;
  magic?: string;
  uname?: string;
  gname?: string;
  devmajor?: string;
  devminor?: string;
  prefix?: string;
  /** Bytes to put at given offsets after the fields (before the checksum). */
  patches?: [number, Uint8Array][];
  /** A checksum to store instead of the computed one. */
  checksum?: string;
  /** Compute the checksum with signed bytes. */
  signed?: boolean;
}

const enc = new TextEncoder();

/** Builds a raw header block by hand, so tests can produce what the writer never writes. */
export function rawHeader(f: RawFields): Uint8Array {
  const b = new Uint8Array(512);
  const put = (off: number, s: string | undefined): void => {
    if (s !== undefined) b.set(enc.encode(s), off);
  };
  put(0, f.name ?? "file");
  put(100, f.mode ?? "0000644\0");
  put(108, f.uid ?? "0000000\0");
  put(116, f.gid ?? "0000000\0");
  put(124, f.size ?? "00000000000\0");
  put(136, f.mtime ?? "00000000000\0");
  put(156, f.typeflag ?? "0");
  put(157, f.linkname);
  put(257, f.magic ?? "ustar\x0000");
  put(265, f.uname);
  put(297, f.gname);
  put(329, f.devmajor);
  put(337, f.devminor);
  put(345, f.prefix);
  for (const [off, bytes] of f.patches ?? []) b.set(bytes, off);
  if (f.checksum !== undefined) {
    put(148, f.checksum);
    return b;
  }
  let sum = 0;
  for (let i = 0; i < 512; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i]!;
    sum += f.signed && c >= 128 ? c - 256 : c;
  }
  put(148, `${(sum >>> 0).toString(8).padStart(6, "0")}\0 `);
  return b;
}

/** The data blocks of a member: `data` padded to a multiple of 512. */
export function padded(data: Uint8Array | string): Uint8Array {
  const bytes = typeof data === "string" ? enc.encode(data) : data;
  const out = new Uint8Array(Math.ceil(bytes.length / 512) * 512);
  out.set(bytes);
  return out;
}

/** A PAX record with its length prefix. */
export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = enc.encode(body).length;
  let len = bodyLen + String(bodyLen).length;
  if (String(len).length !== String(bodyLen).length) len = bodyLen + String(len).length;
  return `${len}${body}`;
}

/** Two zero blocks. */
export const END = new Uint8Array(1024);

/** Whether tests needing root and GNU tar can run here; `STRATA_REQUIRE_ALL=1` turns a skip into a failure. */
export function gnuTarAvailable(): { ok: boolean; reason: string; required: boolean } {
  const required = Deno.env.get("STRATA_REQUIRE_ALL") === "1";
  if (Deno.uid() !== 0) return { ok: false, reason: "needs root", required };
  for (const tool of ["tar", "setfattr", "getfattr", "mkfifo", "mknod", "truncate"]) {
    try {
      const r = new Deno.Command(tool, { args: ["--version"], stdout: "null", stderr: "null" })
        .outputSync();
      if (!r.success) return { ok: false, reason: `"${tool}" does not run`, required };
    } catch {
      return { ok: false, reason: `"${tool}" is not installed`, required };
    }
  }
  return { ok: true, reason: "", required };
}

/** Runs a command, throwing with its stderr when it fails; returns stdout. */
export async function run(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<string> {
  const r = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    env: { TZ: "UTC", LC_ALL: "C.UTF-8", ...options.env },
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
  }).output();
  const out = new TextDecoder().decode(r.stdout);
  if (!r.success) {
    throw new Error(
      `Command "${cmd} ${args.join(" ")}" failed: ${new TextDecoder().decode(r.stderr)}`,
    );
  }
  return out;
}
