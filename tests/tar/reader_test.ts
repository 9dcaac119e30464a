import assert from "node:assert/strict";
import { FailedPrecondition, InvalidArgument } from "../../errors.ts";
import { createTar, readTar, TarError } from "../../diff/tar/mod.ts";
import { chunked, concat, END, padded, paxRecord, rawHeader, readAll } from "./_helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function expectTarError(
  archive: Uint8Array,
  pattern: RegExp,
  options: { maxHeaderSize?: number } = {},
): Promise<TarError> {
  let caught: unknown;
  try {
    await readAll([archive], options);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof TarError, `expected a TarError, got ${caught}`);
  assert.ok(caught instanceof InvalidArgument);
  assert.match(caught.message, pattern);
  return caught;
}

Deno.test("readTar() joins the ustar prefix with the name", async () => {
  const archive = concat([
    rawHeader({ name: "file.txt", prefix: "a/b/c", size: "00000000003\0" }),
    padded("abc"),
    END,
  ]);
  const [e] = await readAll([archive]);
  assert.equal(e!.header.name, "a/b/c/file.txt");
  assert.equal(e!.header.format, "ustar");
  assert.equal(dec.decode(e!.data), "abc");
});

Deno.test("readTar() ignores the prefix field in GNU headers", async () => {
  const archive = concat([
    rawHeader({ name: "f", magic: "ustar  \0", typeflag: "0" }),
    END,
  ]);
  const [e] = await readAll([archive]);
  assert.equal(e!.header.name, "f");
  assert.equal(e!.header.format, "gnu");
  assert.equal(e!.header.atime, undefined);
});

Deno.test("readTar() applies GNU long names and long link names", async () => {
  const long = "d/".repeat(80) + "file";
  const target = "t/".repeat(70) + "target";
  const archive = concat([
    rawHeader({
      name: "././@LongLink",
      typeflag: "L",
      magic: "ustar  \0",
      size: `${(long.length + 1).toString(8).padStart(11, "0")}\0`,
    }),
    padded(long + "\0"),
    rawHeader({
      name: "././@LongLink",
      typeflag: "K",
      magic: "ustar  \0",
      size: `${(target.length + 1).toString(8).padStart(11, "0")}\0`,
    }),
    padded(target + "\0"),
    rawHeader({ name: long.slice(0, 100), typeflag: "2", magic: "ustar  \0" }),
    END,
  ]);
  const entries = await readAll([archive]);
  assert.equal(entries.length, 1);
  assert.equal(entries[0]!.header.name, long);
  assert.equal(entries[0]!.header.linkname, target);
  assert.equal(entries[0]!.header.type, "symlink");
});

Deno.test("readTar() reads base-256 numbers, positive and negative", async () => {
  const uid = new Uint8Array(8);
  uid[0] = 0x80;
  new DataView(uid.buffer).setUint32(4, 3_000_000_000);
  const size = new Uint8Array(12);
  size[0] = 0x80;
  size[11] = 5;
  const mtime = new Uint8Array(12).fill(0xff); // -1
  const archive = concat([
    rawHeader({ magic: "ustar  \0", patches: [[108, uid], [124, size], [136, mtime]] }),
    padded("12345"),
    END,
  ]);
  const [e] = await readAll([archive]);
  assert.equal(e!.header.uid, 3_000_000_000);
  assert.equal(e!.header.size, 5);
  assert.deepEqual(e!.header.mtime, { sec: -1, nsec: 0 });
  assert.equal(dec.decode(e!.data), "12345");
});

Deno.test("readTar() merges PAX records and ignores global headers", async () => {
  const global = paxRecord("path", "global-name") + paxRecord("comment", "g");
  const local = paxRecord("path", "π/long/" + "x".repeat(200)) +
    paxRecord("linkpath", "target") + paxRecord("uid", "4294967296") +
    paxRecord("gid", "7") + paxRecord("uname", "üser") + paxRecord("gname", "grp") +
    paxRecord("mtime", "1700000000.123456789") + paxRecord("atime", "-1.25") +
    paxRecord("ctime", "5") + paxRecord("SCHILY.xattr.user.bin", "a\nb=c") +
    paxRecord("custom", "v");
  const archive = concat([
    rawHeader({
      name: "pax_global_header",
      typeflag: "g",
      size: `${global.length.toString(8).padStart(11, "0")}\0`,
    }),
    padded(global),
    rawHeader({
      name: "PaxHeaders/x",
      typeflag: "x",
      size: `${enc.encode(local).length.toString(8).padStart(11, "0")}\0`,
    }),
    padded(local),
    rawHeader({ name: "short", typeflag: "1" }),
    rawHeader({ name: "next", typeflag: "0" }),
    END,
  ]);
  const entries = await readAll([archive]);
  assert.equal(entries.length, 2);
  const h = entries[0]!.header;
  assert.equal(h.name, "π/long/" + "x".repeat(200));
  assert.equal(h.type, "hardlink");
  assert.equal(h.linkname, "target");
  assert.equal(h.uid, 4294967296);
  assert.equal(h.gid, 7);
  assert.equal(h.uname, "üser");
  assert.equal(h.gname, "grp");
  assert.deepEqual(h.mtime, { sec: 1700000000, nsec: 123456789 });
  assert.deepEqual(h.atime, { sec: -2, nsec: 750000000 });
  assert.deepEqual(h.ctime, { sec: 5, nsec: 0 });
  assert.deepEqual(h.xattrs, { "user.bin": enc.encode("a\nb=c") });
  assert.equal(h.pax.custom, "v");
  assert.equal(h.pax.comment, undefined);
  assert.equal(h.format, "pax");
  // Local records apply to one entry only.
  assert.equal(entries[1]!.header.name, "next");
  assert.equal(entries[1]!.header.uid, 0);
  assert.deepEqual(entries[1]!.header.pax, {});
});

Deno.test("readTar() reads LIBARCHIVE.xattr records", async () => {
  const local = paxRecord("LIBARCHIVE.xattr.user.a%3Db", btoa("\0\xff"));
  const archive = concat([
    rawHeader({ typeflag: "x", size: `${local.length.toString(8).padStart(11, "0")}\0` }),
    padded(local),
    rawHeader({ name: "f" }),
    END,
  ]);
  const [e] = await readAll([archive]);
  assert.deepEqual(e!.header.xattrs, { "user.a=b": new Uint8Array([0, 255]) });
});

Deno.test("readTar() reports types and strips trailing slashes from directories only", async () => {
  const archive = concat([
    rawHeader({ name: "dir//", typeflag: "5" }),
    rawHeader({ name: "old-dir/", typeflag: "\0", magic: "\0\0\0\0\0\0" }),
    rawHeader({ name: "v7file", typeflag: "\0", magic: "\0\0\0\0\0\0" }),
    rawHeader({ name: "contig", typeflag: "7" }),
    rawHeader({ name: "dev", typeflag: "3", devmajor: "0000001\0", devminor: "0000003\0" }),
    rawHeader({ name: "blk", typeflag: "4", devmajor: "0000007\0", devminor: "0000000\0" }),
    rawHeader({ name: "fifo", typeflag: "6" }),
    rawHeader({ name: "dump", typeflag: "D", size: "00000000004\0" }),
    padded("a\0b\0"),
    END,
  ]);
  const entries = await readAll([archive]);
  assert.deepEqual(
    entries.map((e) => [e.header.name, e.header.type, e.header.typeflag, e.header.format]),
    [
      ["dir", "directory", "5", "ustar"],
      ["old-dir", "directory", "\0", "v7"],
      ["v7file", "file", "\0", "v7"],
      ["contig", "file", "7", "ustar"],
      ["dev", "char", "3", "ustar"],
      ["blk", "block", "4", "ustar"],
      ["fifo", "fifo", "6", "ustar"],
      ["dump", "unknown", "D", "ustar"],
    ],
  );
  assert.deepEqual([entries[4]!.header.devmajor, entries[4]!.header.devminor], [1, 3]);
  assert.deepEqual([entries[5]!.header.devmajor, entries[5]!.header.devminor], [7, 0]);
  assert.equal(dec.decode(entries[7]!.data), "a\0b\0");
});

Deno.test("readTar() treats header-only types as having no data", async () => {
  const archive = concat([
    rawHeader({ name: "link", typeflag: "2", linkname: "t", size: "00000001000\0" }),
    rawHeader({ name: "after" }),
    END,
  ]);
  const entries = await readAll([archive]);
  assert.deepEqual(entries.map((e) => [e.header.name, e.header.size]), [["link", 0], ["after", 0]]);
});

Deno.test("readTar() accepts a checksum computed with signed bytes", async () => {
  const archive = concat([rawHeader({ name: "é", signed: true }), END]);
  const [e] = await readAll([archive]);
  assert.equal(e!.header.name, "é");
});

Deno.test("readTar() yields file data as views of the input chunks", async () => {
  const data = new Uint8Array(100_000).map((_, i) => i % 251);
  const archive = await createTar([{ header: { name: "big", type: "file" }, body: data }]);
  const views: Uint8Array[] = [];
  for await (const e of readTar([archive])) for await (const c of e.body) views.push(c);
  assert.equal(views.length, 1);
  assert.equal(views[0]!.buffer, archive.buffer);
  assert.equal(views[0]!.byteOffset, 512);
  assert.deepEqual(views[0], data);
});

Deno.test("readTar() parses headers that straddle chunks", async () => {
  const archive = await createTar([
    { header: { name: "a", type: "file" }, body: enc.encode("x".repeat(700)) },
    { header: { name: "b".repeat(150), type: "file", uid: 5_000_000 }, body: enc.encode("yy") },
  ]);
  for (const size of [1, 3, 100, 511, 513, 1000]) {
    const entries = await readAll(chunked(archive, () => size));
    assert.deepEqual(entries.map((e) => [e.header.name, e.header.uid, e.data.length]), [
      ["a", 0, 700],
      ["b".repeat(150), 5_000_000, 2],
    ]);
  }
});

Deno.test("readTar() skips bodies that are not read, or read only in part", async () => {
  const archive = await createTar([
    { header: { name: "a", type: "file" }, body: new Uint8Array(5000).fill(1) },
    { header: { name: "b", type: "file" }, body: new Uint8Array(3000).fill(2) },
    { header: { name: "c", type: "file" }, body: enc.encode("end") },
  ]);
  const names: string[] = [];
  let last = "";
  for await (const e of readTar(chunked(archive, () => 1000))) {
    names.push(e.header.name);
    if (e.header.name === "b") {
      for await (const _ of e.body) break;
    }
    if (e.header.name === "c") { for await (const c of e.body) last += dec.decode(c); }
  }
  assert.deepEqual(names, ["a", "b", "c"]);
  assert.equal(last, "end");
});

Deno.test("readTar() refuses to read a body after moving to a later entry", async () => {
  const archive = await createTar([
    { header: { name: "a", type: "file" }, body: new Uint8Array(10) },
    { header: { name: "b", type: "file" }, body: new Uint8Array(10) },
  ]);
  const bodies: AsyncIterable<Uint8Array>[] = [];
  for await (const e of readTar([archive])) bodies.push(e.body);
  await assert.rejects(async () => {
    for await (const _ of bodies[0]!) { /* nothing */ }
  }, FailedPrecondition);
});

Deno.test("readTar() ends at EOF on a block boundary and after a single zero block", async () => {
  const one = rawHeader({ name: "only" });
  assert.equal((await readAll([one])).length, 1);
  assert.equal((await readAll([concat([one, new Uint8Array(512)])])).length, 1);
  assert.equal((await readAll([new Uint8Array(0)])).length, 0);
  assert.equal((await readAll([concat([one, END, enc.encode("trailing junk")])])).length, 1);
});

Deno.test("readTar() rejects a zero block followed by a header", async () => {
  const archive = concat([new Uint8Array(512), rawHeader({ name: "x" }), END]);
  const err = await expectTarError(archive, /zero block is followed/);
  assert.equal(err.offset, 512);
});

Deno.test("readTar() drains the source unless told not to", async () => {
  const archive = await createTar([{ header: { name: "a", type: "file" }, body: enc.encode("a") }]);
  const tail = new Uint8Array(10240);
  let pulled = 0;
  async function* source(): AsyncGenerator<Uint8Array> {
    for (const c of [archive, tail, tail]) {
      pulled++;
      yield c;
    }
  }
  await readAll(source());
  assert.equal(pulled, 3);
  pulled = 0;
  const it = source();
  await readAll(it, { drain: false });
  assert.equal(pulled, 1);
  const rest = await it.next();
  assert.equal(rest.value, tail);
});

Deno.test("readTar() closes the source when the consumer stops early", async () => {
  const archive = await createTar([
    { header: { name: "a", type: "file" }, body: enc.encode("a") },
    { header: { name: "b", type: "file" }, body: enc.encode("b") },
  ]);
  let closed = false;
  async function* source(): AsyncGenerator<Uint8Array> {
    try {
      yield archive.subarray(0, 1024);
      yield archive.subarray(1024);
    } finally {
      closed = true;
    }
  }
  for await (const _ of readTar(source())) break;
  assert.ok(closed);
});

Deno.test("readTar() reads old GNU sparse entries with extension blocks", async () => {
  const segments = Array.from({ length: 30 }, (_, i) => ({ offset: i * 1000, length: 10 }));
  const data = new Uint8Array(300).map((_, i) => i);
  const archive = await createTar([{
    header: { name: "sp", type: "file", sparse: { realSize: 29_010, segments } },
    body: data,
  }], { format: "gnu" });
  assert.equal(String.fromCharCode(archive[156]!), "S");
  const [e] = await readAll(chunked(archive, () => 300));
  assert.deepEqual(e!.header.sparse, { realSize: 29_010, segments });
  assert.equal(e!.header.size, 300);
  assert.equal(e!.header.typeflag, "S");
  assert.deepEqual(e!.data, data);
});

Deno.test("readTar() reads PAX sparse maps in formats 0.0, 0.1 and 1.0", async () => {
  const body = enc.encode("helloworld");
  const v00 = paxRecord("GNU.sparse.size", "100") + paxRecord("GNU.sparse.numblocks", "2") +
    paxRecord("GNU.sparse.offset", "10") + paxRecord("GNU.sparse.numbytes", "5") +
    paxRecord("GNU.sparse.offset", "90") + paxRecord("GNU.sparse.numbytes", "5") +
    paxRecord("GNU.sparse.name", "real0");
  const v01 = paxRecord("GNU.sparse.size", "100") + paxRecord("GNU.sparse.map", "10,5,90,5") +
    paxRecord("GNU.sparse.name", "real1");
  const v10 = paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
    paxRecord("GNU.sparse.realsize", "100") + paxRecord("GNU.sparse.name", "real2");
  const len = (s: string): string => `${s.length.toString(8).padStart(11, "0")}\0`;
  const archive = concat([
    rawHeader({ typeflag: "x", size: len(v00) }),
    padded(v00),
    rawHeader({ name: "GNUSparseFile.1/real0", size: len("helloworld") }),
    padded(body),
    rawHeader({ typeflag: "x", size: len(v01) }),
    padded(v01),
    rawHeader({ name: "GNUSparseFile.1/real1", size: len("helloworld") }),
    padded(body),
    rawHeader({ typeflag: "x", size: len(v10) }),
    padded(v10),
    rawHeader({ name: "GNUSparseFile.1/real2", size: "00000001012\0" }),
    padded("2\n10\n5\n90\n5\n"),
    padded(body),
    END,
  ]);
  const entries = await readAll([archive]);
  const sparse = {
    realSize: 100,
    segments: [{ offset: 10, length: 5 }, { offset: 90, length: 5 }],
  };
  assert.deepEqual(entries.map((e) => e.header.name), ["real0", "real1", "real2"]);
  for (const e of entries) {
    assert.deepEqual(e.header.sparse, sparse);
    assert.equal(e.header.size, 10);
    assert.equal(e.header.type, "file");
    assert.equal(dec.decode(e.data), "helloworld");
  }
});

// Malformed input.

Deno.test("readTar() rejects a truncated header", async () => {
  const archive = await createTar([{ header: { name: "a", type: "file" }, body: enc.encode("a") }]);
  const err = await expectTarError(archive.subarray(0, 1024 + 100), /ends inside a header block/);
  assert.equal(err.offset, 1024);
  await expectTarError(archive.subarray(0, 300), /ends inside a header block/);
});

Deno.test("readTar() rejects a truncated body, naming the entry", async () => {
  const archive = await createTar([
    { header: { name: "ok", type: "file" }, body: enc.encode("a") },
    { header: { name: "cut", type: "file" }, body: new Uint8Array(2000) },
  ]);
  const err = await expectTarError(
    archive.subarray(0, 1024 + 512 + 1000),
    /"cut".*1000 bytes missing/,
  );
  assert.equal(err.entry, "cut");
  assert.equal(err.offset, 1024);
  // Also when the body is skipped rather than read.
  let caught: unknown;
  try {
    for await (const _ of readTar([archive.subarray(0, 1024 + 512 + 1000)])) { /* skip */ }
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof TarError);
  assert.match(caught.message, /"cut"/);
});

Deno.test("readTar() rejects a bad checksum", async () => {
  const block = rawHeader({ name: "x" });
  block[0] = 0x79;
  const err = await expectTarError(concat([block, END]), /checksum/);
  assert.equal(err.offset, 0);
  await expectTarError(concat([rawHeader({ name: "x", checksum: "zz" }), END]), /checksum/);
});

Deno.test("readTar() rejects bad octal numbers, naming the field", async () => {
  await expectTarError(
    concat([rawHeader({ name: "x", size: "0000000009\0\0" }), END]),
    /"x".*bad size field "0000000009"/,
  );
  await expectTarError(concat([rawHeader({ name: "y", uid: "12 34\0\0\0" }), END]), /bad uid/);
});

Deno.test("readTar() rejects PAX headers over the size limit", async () => {
  const local = paxRecord("comment", "x".repeat(5000));
  const archive = concat([
    rawHeader({ typeflag: "x", size: `${local.length.toString(8).padStart(11, "0")}\0` }),
    padded(local),
    rawHeader({ name: "f" }),
    END,
  ]);
  await expectTarError(archive, /exceeds the limit of 4096 bytes/, { maxHeaderSize: 4096 });
  assert.equal((await readAll([archive])).length, 1);
  const big = rawHeader({ typeflag: "L", size: "77777777777\0", magic: "ustar  \0" });
  await expectTarError(concat([big, END]), /exceeds the limit of 1048576 bytes/);
});

Deno.test("readTar() rejects malformed PAX records", async () => {
  for (const bad of ["5 a=b\n", "12 a=b\n", "x a=b\n", "6 =bc\n", "6 abcd\n", "7 a=bcd"]) {
    const archive = concat([
      rawHeader({ typeflag: "x", size: `${bad.length.toString(8).padStart(11, "0")}\0` }),
      padded(bad),
      rawHeader({ name: "f" }),
      END,
    ]);
    await expectTarError(archive, /malformed PAX/);
  }
  const badTime = paxRecord("mtime", "12.3.4");
  await expectTarError(
    concat([
      rawHeader({ typeflag: "x", size: `${badTime.length.toString(8).padStart(11, "0")}\0` }),
      padded(badTime),
      rawHeader({ name: "f" }),
      END,
    ]),
    /bad PAX record "mtime=12.3.4"/,
  );
});

Deno.test("readTar() rejects an extended header with no entry after it", async () => {
  const local = paxRecord("path", "p");
  const x = concat([
    rawHeader({ typeflag: "x", size: `${local.length.toString(8).padStart(11, "0")}\0` }),
    padded(local),
  ]);
  await expectTarError(x, /ends after an extended header/);
  await expectTarError(concat([x, END]), /followed by a zero block/);
});

Deno.test("readTar() rejects sparse maps that do not match the data", async () => {
  const v01 = paxRecord("GNU.sparse.size", "100") + paxRecord("GNU.sparse.map", "10,5,90,6");
  const archive = concat([
    rawHeader({ typeflag: "x", size: `${v01.length.toString(8).padStart(11, "0")}\0` }),
    padded(v01),
    rawHeader({ name: "s", size: "00000000012\0" }),
    padded("helloworld"),
    END,
  ]);
  await expectTarError(archive, /segments hold 11 bytes but the entry stores 10/);
});

Deno.test("readTar() rejects a source that yields something other than bytes", async () => {
  async function* bad(): AsyncGenerator<Uint8Array> {
    yield "text" as unknown as Uint8Array;
  }
  await assert.rejects(() => readAll(bad()), InvalidArgument);
});
