import assert from "node:assert/strict";
import {
  createTar,
  readTar,
  type TarEntryType,
  type TarHeader,
  type TarInput,
  type TarTime,
  type TarWriteHeader,
} from "../../diff/tar/mod.ts";
import { chunked, concat, Rng } from "./_helpers.ts";

const SEED = Number(Deno.env.get("TAR_SEED") ?? Math.floor(Math.random() * 2 ** 31));
const ROUNDS = 12;

const SEGMENT_CHARS = [
  ..."abcdefghijklmnopqrstuvwxyz0123456789-_.",
  "é",
  "ß",
  "日",
  "本",
  "🦕",
  " ",
  "Ω",
];

function randomSegment(rng: Rng, maxLen: number): string {
  let s = "";
  const n = rng.int(1, maxLen);
  for (let i = 0; i < n; i++) s += rng.pick(SEGMENT_CHARS);
  return s === "." || s === ".." ? "x" : s;
}

function randomPath(rng: Rng): string {
  const kind = rng.int(0, 9);
  const parts: string[] = [];
  if (kind < 5) {
    for (let i = rng.int(1, 3); i > 0; i--) parts.push(randomSegment(rng, 12));
  } else if (kind < 8) {
    for (let i = rng.int(5, 30); i > 0; i--) parts.push(randomSegment(rng, 20));
  } else if (kind === 8) {
    parts.push("a".repeat(rng.int(99, 101)));
  } else {
    parts.push("p".repeat(rng.int(150, 160)), "n".repeat(rng.int(95, 101)));
  }
  return parts.join("/");
}

function randomTime(rng: Rng, nanos: boolean): TarTime {
  const sec = rng.chance(0.8) ? rng.int(0, 2 ** 33) : rng.int(-(2 ** 40), 2 ** 40);
  return { sec, nsec: nanos && rng.chance(0.7) ? rng.int(0, 999_999_999) : 0 };
}

function randomId(rng: Rng): number {
  return rng.pick([0, rng.int(1, 65535), rng.int(0, 2 ** 21), rng.int(0, 2 ** 32)]);
}

function randomName(rng: Rng, pax: boolean): string {
  const k = rng.int(0, 3);
  if (k === 0) return "";
  if (k === 1) return "user" + rng.int(0, 99);
  if (k === 2) return randomSegment(rng, pax ? 40 : 7);
  return pax ? "名前" : "root";
}

interface Generated {
  input: TarInput;
  data: Uint8Array;
  expected: Omit<TarHeader, "format" | "pax"> & { pax: Record<string, string> };
}

function generate(rng: Rng, format: "pax" | "gnu", index: number): Generated {
  const pax = format === "pax";
  const type = rng.pick<TarEntryType>([
    "file",
    "file",
    "file",
    "directory",
    "symlink",
    "hardlink",
    "char",
    "block",
    "fifo",
    "unknown",
  ]);
  const name = `${index}-${randomPath(rng)}`;
  let data: Uint8Array = new Uint8Array(0);
  let sparse: TarHeader["sparse"];
  if (type === "file" || type === "unknown") {
    const size = rng.pick([0, 1, 511, 512, 513, rng.int(0, 4000), rng.int(0, 200_000)]);
    data = rng.bytes(size);
    if (type === "file" && rng.chance(0.2)) {
      // Cut the data into segments spread over a larger file.
      const segments: { offset: number; length: number }[] = [];
      let pos = 0;
      let offset = rng.int(0, 10_000);
      while (pos < size || segments.length === 0) {
        const length = Math.min(size - pos, rng.int(0, 5000));
        segments.push({ offset, length });
        pos += length;
        offset += length + rng.int(1, 1_000_000);
      }
      const count = rng.chance(0.1) ? rng.int(25, 60) : 0;
      for (let i = 0; i < count; i++) {
        segments.push({ offset, length: 0 });
        offset += rng.int(1, 4096);
      }
      sparse = { realSize: offset + rng.int(0, 1000), segments };
    }
  }
  const mtime = randomTime(rng, pax);
  const linkname = type === "symlink" || type === "hardlink" ? randomPath(rng) : "";
  const xattrs: Record<string, Uint8Array> = {};
  if (pax && rng.chance(0.4)) {
    for (let i = rng.int(1, 4); i > 0; i--) {
      xattrs[`user.${randomSegment(rng, 10)}`] = rng.bytes(rng.pick([0, 1, 20, 300]));
    }
  }
  const extra: Record<string, string> = {};
  if (pax && rng.chance(0.2)) extra[`VENDOR.${rng.int(0, 9)}`] = randomSegment(rng, 30);
  const dev = type === "char" || type === "block";
  const header: TarWriteHeader = {
    name,
    type,
    mode: rng.int(0, 0o7777),
    uid: randomId(rng),
    gid: randomId(rng),
    uname: randomName(rng, pax),
    gname: randomName(rng, pax),
    mtime,
    linkname,
    devmajor: dev ? rng.int(0, pax ? 0o7777777 : 2 ** 32) : 0,
    devminor: dev ? rng.int(0, pax ? 0o7777777 : 2 ** 32) : 0,
    xattrs,
    pax: extra,
  };
  if (type === "unknown") header.typeflag = rng.pick(["D", "V", "A", "N", "M", "I"]);
  if (rng.chance(0.3)) header.atime = randomTime(rng, pax);
  if (rng.chance(0.3)) header.ctime = randomTime(rng, pax);
  if (sparse) header.sparse = sparse;
  const expected: Generated["expected"] = {
    name,
    type,
    typeflag: type === "unknown" ? header.typeflag! : sparse && !pax ? "S" : String(
      type === "file" ? 0 : "0123456".charAt(
        ["file", "hardlink", "symlink", "char", "block", "directory", "fifo"].indexOf(type),
      ),
    ),
    mode: header.mode!,
    uid: header.uid!,
    gid: header.gid!,
    uname: header.uname!,
    gname: header.gname!,
    size: data.length,
    mtime,
    linkname,
    devmajor: header.devmajor!,
    devminor: header.devminor!,
    xattrs,
    pax: extra,
  };
  if (header.atime) expected.atime = header.atime;
  if (header.ctime) expected.ctime = header.ctime;
  if (sparse) {
    // The writer ends every map with an empty segment at the real size, as GNU tar does.
    const last = sparse.segments.at(-1)!;
    expected.sparse = last.offset + last.length < sparse.realSize
      ? { ...sparse, segments: [...sparse.segments, { offset: sparse.realSize, length: 0 }] }
      : sparse;
  }
  return { input: { header, body: data }, data, expected };
}

/** What the reader returned, with PAX records the writer manages removed. */
function comparable(h: TarHeader): Generated["expected"] {
  const { format: _format, pax, ...rest } = h;
  const own: Record<string, string> = {};
  for (const [k, v] of Object.entries(pax)) if (k.startsWith("VENDOR.")) own[k] = v;
  return { ...rest, pax: own };
}

async function check(
  archive: Uint8Array,
  generated: Generated[],
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  label: string,
  rng: Rng,
): Promise<void> {
  let i = 0;
  for await (const entry of readTar(source)) {
    const g = generated[i];
    assert.ok(g, `${label}: more entries than written`);
    assert.deepEqual(comparable(entry.header), g.expected, `${label}: header ${i}`);
    // Read most bodies, skip some, read some only in part.
    const mode = rng.int(0, 9);
    if (mode < 8) {
      const parts: Uint8Array[] = [];
      for await (const chunk of entry.body) parts.push(chunk.slice());
      assert.deepEqual(concat(parts), g.data, `${label}: body ${i}`);
    } else if (mode === 8) {
      for await (const _ of entry.body) break;
    }
    i++;
  }
  assert.equal(i, generated.length, `${label}: entry count`);
  assert.ok(archive.length % 512 === 0);
}

for (const format of ["pax", "gnu"] as const) {
  Deno.test(`readTar() reads back random ${format} archives made by TarWriter, in any chunking`, async () => {
    const rng = new Rng(SEED + (format === "gnu" ? 1 : 0));
    for (let round = 0; round < ROUNDS; round++) {
      const label = `seed ${SEED} (TAR_SEED=${SEED} replays it), format ${format}, round ${round}`;
      const generated = Array.from({ length: rng.int(1, 40) }, (_, i) => generate(rng, format, i));
      const archive = await createTar(generated.map((g) => g.input), { format });
      await check(archive, generated, [archive], `${label}, one chunk`, rng);
      await check(
        archive,
        generated,
        chunked(archive, () => rng.logInt(1 << 20)),
        `${label}, log-uniform chunks`,
        rng,
      );
      await check(
        archive,
        generated,
        chunked(archive, () => rng.int(1, 1100)),
        `${label}, small chunks`,
        rng,
      );
      if (archive.length < 300_000) {
        await check(archive, generated, chunked(archive, () => 1), `${label}, 1-byte chunks`, rng);
      }
    }
  });
}
