import assert from "node:assert/strict";
import { FailedPrecondition, InvalidArgument } from "../../errors.ts";
import { createTar, readTar, type TarHeader, TarWriter } from "../../diff/tar/mod.ts";
import { readAll } from "./_helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function typeflags(archive: Uint8Array): string[] {
  // Walk the archive's headers without the reader, to see what the writer produced.
  const flags: string[] = [];
  let pos = 0;
  while (pos + 512 <= archive.length && archive[pos] !== 0) {
    const flag = String.fromCharCode(archive[pos + 156]!);
    const size = parseInt(
      dec.decode(archive.subarray(pos + 124, pos + 136)).replace(/\0.*$/, ""),
      8,
    );
    flags.push(flag);
    pos += 512 + (["0", "x", "L", "K"].includes(flag) ? Math.ceil(size / 512) * 512 : 0);
  }
  return flags;
}

Deno.test("TarWriter writes plain ustar headers when every field fits", async () => {
  const archive = await createTar([
    { header: { name: "dir", type: "directory" } },
    {
      header: {
        name: "dir/f",
        type: "file",
        uid: 1000,
        gid: 1000,
        uname: "u",
        gname: "g",
        mtime: { sec: 1700000000, nsec: 0 },
      },
      body: enc.encode("abc"),
    },
    { header: { name: "p/".repeat(90) + "name", type: "file" }, body: new Uint8Array(0) },
  ]);
  assert.deepEqual(typeflags(archive), ["5", "0", "0"]);
  assert.equal(dec.decode(archive.subarray(257, 265)), "ustar\x0000");
  assert.equal(dec.decode(archive.subarray(0, 4)), "dir/");
  assert.equal(archive.length, 512 + 512 + 512 + 512 + 1024);
  const entries = await readAll([archive]);
  assert.deepEqual(entries.map((e) => [e.header.name, e.header.format]), [
    ["dir", "ustar"],
    ["dir/f", "ustar"],
    ["p/".repeat(90) + "name", "ustar"],
  ]);
  assert.equal(entries[1]!.header.uname, "u");
  assert.equal(entries[0]!.header.mode, 0o755);
  assert.equal(entries[1]!.header.mode, 0o644);
});

Deno.test("TarWriter adds PAX records for fields ustar cannot hold", async () => {
  const cases: [Partial<TarHeader> & { name: string; type: TarHeader["type"] }, string][] = [
    [{ name: "x/".repeat(130), type: "directory" }, "path"],
    [{ name: "naïve", type: "file" }, "path"],
    [{ name: "l", type: "symlink", linkname: "t".repeat(101) }, "linkpath"],
    [{ name: "u", type: "file", uid: 0o7777777 + 1 }, "uid"],
    [{ name: "g", type: "file", gid: 2 ** 32 }, "gid"],
    [{ name: "t", type: "file", mtime: { sec: 1, nsec: 1 } }, "mtime"],
    [{ name: "n", type: "file", mtime: { sec: -5, nsec: 0 } }, "mtime"],
    [{ name: "a", type: "file", atime: { sec: 1, nsec: 0 } }, "atime"],
    [{ name: "un", type: "file", uname: "jürgen" }, "uname"],
    [{ name: "gn", type: "file", gname: "g".repeat(40) }, "gname"],
    [{ name: "c", type: "file", pax: { comment: "hi" } }, "comment"],
  ];
  for (const [header, key] of cases) {
    const archive = await createTar([{ header }]);
    assert.deepEqual(typeflags(archive), [
      "x",
      header.type === "directory" ? "5" : header.type === "symlink" ? "2" : "0",
    ], key);
    const [e] = await readAll([archive]);
    assert.equal(e!.header.format, "pax");
    assert.ok(key in e!.header.pax, `${key} in ${JSON.stringify(e!.header.pax)}`);
    const expectedName = header.name.replace(/\/+$/, "");
    assert.equal(e!.header.name, expectedName);
  }
});

Deno.test("TarWriter stores binary xattr values exactly", async () => {
  const value = new Uint8Array([0, 10, 61, 255, 32]);
  const archive = await createTar([{
    header: {
      name: "f",
      type: "file",
      xattrs: { "user.a": value, "security.capability": new Uint8Array(0) },
    },
  }]);
  const [e] = await readAll([archive]);
  assert.deepEqual(e!.header.xattrs, { "user.a": value, "security.capability": new Uint8Array(0) });
});

Deno.test("TarWriter writes sizes beyond 8 GiB with PAX or base-256", async () => {
  const size = 8 * 1024 ** 3 + 1;
  const chunk = new Uint8Array(1 << 24);
  async function* body(): AsyncGenerator<Uint8Array> {
    let left = size;
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      yield chunk.subarray(0, n);
      left -= n;
    }
  }
  for (const format of ["pax", "gnu"] as const) {
    const head: Uint8Array[] = [];
    let total = 0;
    const writer = new TarWriter((c) => {
      if (total < 4096) head.push(c.slice());
      total += c.length;
    }, { format });
    await writer.add({ name: "big", type: "file", size }, body());
    await writer.finish();
    assert.equal(total, (format === "pax" ? 1536 : 512) + size + 511 + 1024);
    for await (const e of readTar(head, { drain: false })) {
      assert.equal(e.header.size, size);
      break;
    }
  }
});

Deno.test("TarWriter refuses a Uint8Array body of the wrong size and stays usable", async () => {
  const chunks: Uint8Array[] = [];
  const writer = new TarWriter((c) => {
    chunks.push(c);
  });
  await assert.rejects(
    () => writer.add({ name: "f", type: "file", size: 3 }, enc.encode("toolong")),
    (err: unknown) =>
      err instanceof InvalidArgument && /"f".*7 bytes, not its size 3/.test(err.message),
  );
  await writer.add({ name: "g", type: "file" }, enc.encode("ok"));
  await writer.finish();
  const entries = await readAll(chunks);
  assert.deepEqual(entries.map((e) => e.header.name), ["g"]);
});

Deno.test("TarWriter refuses streamed bodies of the wrong length and is then broken", async () => {
  async function* gen(parts: string[]): AsyncGenerator<Uint8Array> {
    for (const p of parts) yield enc.encode(p);
  }
  for (const parts of [["ab", "cd"], ["a"]]) {
    const writer = new TarWriter(() => {});
    await assert.rejects(
      () => writer.add({ name: "f", type: "file", size: 3 }, gen(parts)),
      InvalidArgument,
    );
    await assert.rejects(() => writer.add({ name: "g", type: "directory" }), FailedPrecondition);
    await assert.rejects(() => writer.finish(), FailedPrecondition);
  }
  const writer = new TarWriter(() => {});
  await assert.rejects(
    () => writer.add({ name: "f", type: "file" }, gen(["x"])),
    /needs header.size/,
  );
});

Deno.test("TarWriter validates headers", async () => {
  const writer = new TarWriter(() => {});
  const bad: [Parameters<TarWriter["add"]>, RegExp][] = [
    [[{ name: "", type: "file" }], /name is empty/],
    [[{ name: "l", type: "symlink" }], /needs a link name/],
    [[{ name: "d", type: "directory" }, enc.encode("x")], /cannot have a body/],
    [[{ name: "d", type: "directory", size: 5 }], /cannot have size 5/],
    [[{ name: "u", type: "unknown", typeflag: "x" }], /typeflag "x" is not available/],
    [[{ name: "u", type: "unknown" }], /one-character ASCII typeflag/],
    [[{ name: "m", type: "file", mode: 0o100000000 }], /does not fit/],
    [[{ name: "i", type: "file", uid: -1 }], /uid -1/],
    [[{ name: "t", type: "file", mtime: { sec: 1, nsec: 1e9 } }], /not a valid time/],
    [[{ name: "c", type: "char", devmajor: 2 ** 22 }], /devmajor .* does not fit/],
    [[{
      name: "s",
      type: "file",
      size: 5,
      sparse: { realSize: 10, segments: [{ offset: 8, length: 5 }] },
    }, new Uint8Array(5)], /past the real size/],
    [[{
      name: "s",
      type: "file",
      size: 4,
      sparse: { realSize: 10, segments: [{ offset: 0, length: 5 }] },
    }, new Uint8Array(4)], /hold 5 bytes/],
  ];
  for (const [args, pattern] of bad) {
    await assert.rejects(
      () => writer.add(...args),
      (err: unknown) => err instanceof InvalidArgument && pattern.test(err.message),
      String(pattern),
    );
  }
  await writer.finish();
  await assert.rejects(() => writer.finish(), FailedPrecondition);
  await assert.rejects(() => writer.add({ name: "late", type: "directory" }), FailedPrecondition);
});

Deno.test("TarWriter in GNU format writes long names, base-256 numbers and GNU times", async () => {
  const name = "n/".repeat(100) + "file";
  const link = "l/".repeat(60);
  const archive = await createTar([
    {
      header: {
        name,
        type: "file",
        uid: 2 ** 40,
        mtime: { sec: -100, nsec: 0 },
        atime: { sec: 7, nsec: 0 },
      },
      body: enc.encode("data"),
    },
    { header: { name: "s", type: "symlink", linkname: link, uname: "ünicode" } },
    { header: { name: "c", type: "char", devmajor: 2 ** 30, devminor: 5 } },
  ], { format: "gnu" });
  assert.deepEqual(typeflags(archive), ["L", "0", "K", "2", "3"]);
  const entries = await readAll([archive]);
  assert.deepEqual(entries.map((e) => e.header.format), ["gnu", "gnu", "gnu"]);
  assert.equal(entries[0]!.header.name, name);
  assert.equal(entries[0]!.header.uid, 2 ** 40);
  assert.deepEqual(entries[0]!.header.mtime, { sec: -100, nsec: 0 });
  assert.deepEqual(entries[0]!.header.atime, { sec: 7, nsec: 0 });
  assert.equal(dec.decode(entries[0]!.data), "data");
  assert.equal(entries[1]!.header.linkname, link);
  assert.equal(entries[1]!.header.uname, "ünicode");
  assert.equal(entries[2]!.header.devmajor, 2 ** 30);
});

Deno.test("TarWriter in GNU format refuses what only PAX can store", async () => {
  const writer = new TarWriter(() => {}, { format: "gnu" });
  await assert.rejects(
    () => writer.add({ name: "x", type: "file", xattrs: { "user.a": new Uint8Array(1) } }),
    /xattrs need the pax format/,
  );
  await assert.rejects(
    () => writer.add({ name: "t", type: "file", mtime: { sec: 1, nsec: 5 } }),
    /nanoseconds/,
  );
  await assert.rejects(
    () => writer.add({ name: "p", type: "file", pax: { comment: "c" } }),
    /"comment" needs the pax format/,
  );
  await assert.rejects(
    () => writer.add({ name: "u", type: "file", uname: "u".repeat(32) }),
    /longer than 31 bytes/,
  );
});

Deno.test("TarWriter writes PAX 1.0 sparse files", async () => {
  const sparse = {
    realSize: 1_000_000,
    segments: [{ offset: 0, length: 3 }, { offset: 999_997, length: 3 }],
  };
  const archive = await createTar([{
    header: { name: "dir/sparse", type: "file", sparse },
    body: enc.encode("abcxyz"),
  }]);
  const [e] = await readAll([archive]);
  assert.equal(e!.header.name, "dir/sparse");
  assert.equal(e!.header.size, 6);
  assert.deepEqual(e!.header.sparse, sparse);
  assert.equal(e!.header.pax["GNU.sparse.major"], "1");
  assert.equal(dec.decode(e!.data), "abcxyz");
});

Deno.test("TarWriter writes unknown entry types with their data", async () => {
  const archive = await createTar([{
    header: { name: "v", type: "unknown", typeflag: "V" },
    body: enc.encode("label"),
  }]);
  const [e] = await readAll([archive]);
  assert.equal(e!.header.type, "unknown");
  assert.equal(e!.header.typeflag, "V");
  assert.equal(dec.decode(e!.data), "label");
});

Deno.test("TarWriter ends a sparse map with an empty segment at the real size", async () => {
  for (const format of ["pax", "gnu"] as const) {
    const archive = await createTar([{
      header: {
        name: "s",
        type: "file",
        sparse: { realSize: 100, segments: [{ offset: 10, length: 2 }] },
      },
      body: enc.encode("ab"),
    }], { format });
    const [e] = await readAll([archive]);
    assert.deepEqual(e!.header.sparse, {
      realSize: 100,
      segments: [{ offset: 10, length: 2 }, { offset: 100, length: 0 }],
    });
  }
});

Deno.test("readTar and createTar keep names that are not UTF-8 byte for byte (U+DC80-U+DCFF)", async () => {
  // A ustar entry named "caf\xe9" (Latin-1), a symlink to it, and a PAX path with raw bytes.
  const block = (name: Uint8Array, flag: string, linkname = new Uint8Array(), size = 0) => {
    const b = new Uint8Array(512);
    b.set(name, 0);
    b.set(enc.encode("0000644\0"), 100);
    for (const at of [108, 116]) b.set(enc.encode("0000000\0"), at);
    b.set(enc.encode(size.toString(8).padStart(11, "0") + "\0"), 124);
    b.set(enc.encode("00000000000\0"), 136);
    b[156] = flag.charCodeAt(0);
    b.set(linkname, 157);
    b.set(enc.encode("ustar\x0000"), 257);
    b.fill(0x20, 148, 156);
    let sum = 0;
    for (const x of b) sum += x;
    b.set(enc.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
    return b;
  };
  const cafe = new Uint8Array([0x63, 0x61, 0x66, 0xe9]);
  const record = new Uint8Array([...enc.encode("13 path=x/"), 0xff, 0xfe, 0x0a]);
  const padded = new Uint8Array(512);
  padded.set(record);
  const archive = new Uint8Array([
    ...block(cafe, "0"),
    ...block(enc.encode("link"), "2", cafe),
    ...block(enc.encode("PaxHeader"), "x", new Uint8Array(), record.length),
    ...padded,
    ...block(enc.encode("ignored"), "0"),
    ...new Uint8Array(1024),
  ]);
  const names: [string, string][] = [];
  for await (const e of readTar([archive])) names.push([e.header.name, e.header.linkname]);
  assert.deepEqual(names, [["caf\udce9", ""], ["link", "caf\udce9"], ["x/\udcff\udcfe", ""]]);
  // Written back, the archive holds the same bytes, and reads back the same.
  const written = await createTar([
    { header: { name: "caf\udce9", type: "file" }, body: new Uint8Array() },
    { header: { name: "link", type: "symlink", linkname: "caf\udce9" } },
    { header: { name: "x/\udcff\udcfe", type: "file" }, body: new Uint8Array() },
  ]);
  const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  for (const bytes of [cafe, new Uint8Array([0x78, 0x2f, 0xff, 0xfe])]) {
    assert.ok(hex(written).includes(hex(bytes)), `${hex(bytes)} in the archive`);
  }
  const again: [string, string][] = [];
  for await (const e of readTar([written])) again.push([e.header.name, e.header.linkname]);
  assert.deepEqual(again, names);
});
