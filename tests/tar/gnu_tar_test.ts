// Interoperability with GNU tar, both ways. Needs root (mknod, chown) and GNU tar, setfattr,
// getfattr. Skipped with a reason otherwise, unless STRATA_REQUIRE_ALL=1.

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createTar,
  readTar,
  type TarHeader,
  type TarInput,
  TarWriter,
} from "../../diff/tar/mod.ts";
import { concat, gnuTarAvailable, Rng, run } from "./_helpers.ts";
import { makeTempDir, makeUmociImage, peerTest, runOk } from "../_peers.ts";

const tools = gnuTarAvailable();
if (!tools.ok) console.warn(`Skipping GNU tar interop tests: ${tools.reason}`);

function gnuTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name,
    ignore: !tools.ok && !tools.required,
    fn: async () => {
      if (!tools.ok) throw new Error(`Cannot run "${name}": ${tools.reason}`);
      await fn();
    },
  });
}

const LONG_100 = "d".repeat(60) + "/" + "e".repeat(60);
const LONG_255 = Array.from({ length: 5 }, (_, i) => String(i).repeat(60)).join("/");
const LONG_TARGET = "t".repeat(150);
const UNICODE = "héllo-日本🦕.txt";

async function write(path: string, data: Uint8Array | string): Promise<void> {
  if (typeof data === "string") await Deno.writeTextFile(path, data);
  else await Deno.writeFile(path, data);
}

/** Builds a tree with every entry type; `ustar` leaves out what ustar cannot hold. */
async function buildTree(root: string, ustar: boolean): Promise<void> {
  const rng = new Rng(42);
  const d = join(root, "dir");
  await Deno.mkdir(d);
  await write(join(d, "a.txt"), "hello\n");
  await write(join(d, "empty"), "");
  await write(join(d, "513.bin"), rng.bytes(513));
  await write(join(d, "big.bin"), rng.bytes(200_000));
  await write(join(d, "setuid"), "#!/bin/sh\n");
  await Deno.chmod(join(d, "setuid"), 0o4755);
  await Deno.symlink("a.txt", join(d, "sym"));
  await Deno.link(join(d, "a.txt"), join(d, "hard"));
  await run("mkfifo", [join(d, "fifo")]);
  await run("mknod", [join(d, "null"), "c", "1", "3"]);
  await run("mknod", [join(d, "loop"), "b", "7", "200"]);
  await Deno.mkdir(join(d, LONG_100), { recursive: true });
  await write(join(d, LONG_100, "file"), "long path\n");
  await write(join(d, "xattr.txt"), "x");
  await run("setfattr", ["-n", "user.x", "-v", "y", join(d, "xattr.txt")]);
  await write(join(d, UNICODE), "unicode\n");
  await run("touch", ["-h", "-d", "2021-03-04 05:06:07.123456789", join(d, "a.txt")]);
  await run("touch", ["-h", "-d", "1999-12-31 23:59:59.5", join(d, "sym")]);
  if (!ustar) {
    await Deno.mkdir(join(d, LONG_255), { recursive: true });
    await write(join(d, LONG_255, "file"), "very long path\n");
    await Deno.symlink(LONG_TARGET, join(d, "longlink"));
    await write(join(d, "bigid"), "ids\n");
    await Deno.chown(join(d, "bigid"), 3_000_000, 3_000_001);
    await makeSparse(join(d, "sparse"));
  }
  await run("touch", ["-d", "2020-01-01 00:00:00.25", d]);
}

async function makeSparse(path: string): Promise<void> {
  await run("truncate", ["-s", "10M", path]);
  const f = await Deno.open(path, { write: true });
  try {
    for (
      const [offset, text] of [[0, "start"], [5_000_000, "middle"], [
        10 * 1024 * 1024 - 3,
        "end",
      ]] as const
    ) {
      await f.seek(offset, Deno.SeekMode.Start);
      await f.write(new TextEncoder().encode(text));
    }
  } finally {
    f.close();
  }
}

interface Listed {
  type: string;
  perms: string;
  uid: number;
  gid: number;
  size: string;
  sec: number;
  nsec: number;
  name: string;
}

/** Parses `tar -tv --numeric-owner --full-time --quoting-style=literal` output (TZ=UTC). */
function parseListing(text: string): Listed[] {
  const re =
    /^(.)(\S{9}) (\d+)\/(\d+) +(\d+,\s*\d+|\d+) (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d+))? +(.*)$/;
  return text.split("\n").filter((l) => l !== "").map((line) => {
    const m = re.exec(line);
    assert.ok(m, `cannot parse tar listing line "${line}"`);
    return {
      type: m[1]!,
      perms: m[2]!,
      uid: Number(m[3]),
      gid: Number(m[4]),
      size: m[5]!.replace(/\s/g, ""),
      sec: Date.parse(`${m[6]}T${m[7]}Z`) / 1000,
      nsec: Number((m[8] ?? "").padEnd(9, "0")),
      name: m[9]!,
    };
  });
}

function permString(mode: number): string {
  const rwx = (bits: number, special: boolean, ch: string): string =>
    (bits & 4 ? "r" : "-") + (bits & 2 ? "w" : "-") +
    (special ? (bits & 1 ? ch : ch.toUpperCase()) : bits & 1 ? "x" : "-");
  return rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, "s") +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, "s") +
    rwx(mode & 7, (mode & 0o1000) !== 0, "t");
}

const TYPE_CHARS: Record<string, string> = {
  file: "-",
  directory: "d",
  symlink: "l",
  hardlink: "h",
  char: "c",
  block: "b",
  fifo: "p",
};

/** Renders a header the way `tar -tv` lists it. */
function asListed(h: TarHeader): Listed {
  let name = h.type === "directory" ? `${h.name}/` : h.name;
  if (h.type === "symlink") name += ` -> ${h.linkname}`;
  if (h.type === "hardlink") name += ` link to ${h.linkname}`;
  const dev = h.type === "char" || h.type === "block";
  return {
    type: TYPE_CHARS[h.type] ?? "?",
    perms: permString(h.mode),
    uid: h.uid,
    gid: h.gid,
    size: dev ? `${h.devmajor},${h.devminor}` : String(h.sparse?.realSize ?? h.size),
    sec: h.mtime.sec,
    nsec: h.mtime.nsec,
    name,
  };
}

/** Expands a sparse body into the real file. */
function expand(h: TarHeader, data: Uint8Array): Uint8Array {
  if (!h.sparse) return data;
  const out = new Uint8Array(h.sparse.realSize);
  let pos = 0;
  for (const s of h.sparse.segments) {
    out.set(data.subarray(pos, pos + s.length), s.offset);
    pos += s.length;
  }
  return out;
}

/** Reads an archive file, checks it against `tar -tv` and the files under `root`. */
async function checkArchive(archive: string, root: string): Promise<TarHeader[]> {
  const listing = parseListing(
    await run("tar", [
      "-tv",
      "--numeric-owner",
      "--full-time",
      "--quoting-style=literal",
      "-f",
      archive,
    ]),
  );
  const headers: TarHeader[] = [];
  const file = await Deno.open(archive);
  for await (const entry of readTar(file.readable)) {
    const h = entry.header;
    headers.push(h);
    const parts: Uint8Array[] = [];
    for await (const c of entry.body) parts.push(c.slice());
    const data = concat(parts);
    assert.equal(data.length, h.size, h.name);
    if (h.type === "file") {
      const original = await Deno.readFile(join(root, h.name));
      assert.ok(
        expand(h, data).every((b, i) => b === original[i]) &&
          original.length === expand(h, data).length,
        `content of "${h.name}"`,
      );
    }
    if (h.type === "symlink") assert.equal(h.linkname, await Deno.readLink(join(root, h.name)));
  }
  assert.deepEqual(headers.map(asListed), listing, archive);
  return headers;
}

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "strata-tar-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

gnuTest("readTar() lists GNU tar's gnu, posix and ustar archives like tar -tv", async () => {
  await withTemp(async (tmp) => {
    const full = join(tmp, "full");
    const small = join(tmp, "small");
    await Deno.mkdir(full);
    await Deno.mkdir(small);
    await buildTree(full, false);
    await buildTree(small, true);

    const gnu = join(tmp, "gnu.tar");
    await run("tar", ["--format=gnu", "-S", "-cf", gnu, "-C", full, "."]);
    const gh = await checkArchive(gnu, full);
    assert.ok(gh.every((h) => h.format === "gnu"));
    const gs = gh.find((h) => h.name === "./dir/sparse")!;
    assert.equal(gs.typeflag, "S");
    assert.equal(gs.sparse?.realSize, 10 * 1024 * 1024);
    assert.equal(gh.find((h) => h.name === "./dir/bigid")!.uid, 3_000_000);
    assert.ok(gh.some((h) => h.name === `./dir/${LONG_255}/file`));
    assert.equal(gh.find((h) => h.name === "./dir/longlink")!.linkname, LONG_TARGET);

    const pax = join(tmp, "pax.tar");
    await run("tar", ["--format=posix", "--xattrs", "-S", "-cf", pax, "-C", full, "."]);
    const ph = await checkArchive(pax, full);
    assert.deepEqual(
      ph.find((h) => h.name === "./dir/xattr.txt")!.xattrs["user.x"],
      new TextEncoder().encode("y"),
    );
    assert.deepEqual(ph.find((h) => h.name === "./dir/a.txt")!.mtime, {
      sec: 1614834367,
      nsec: 123456789,
    });
    assert.ok(ph.find((h) => h.name === "./dir/sparse")!.sparse);
    assert.equal(ph.find((h) => h.name === "./dir/bigid")!.gid, 3_000_001);
    assert.ok(ph.find((h) => h.name === `./dir/${UNICODE}`));

    const ustar = join(tmp, "ustar.tar");
    await run("tar", ["--format=ustar", "-cf", ustar, "-C", small, "."]);
    const uh = await checkArchive(ustar, small);
    assert.ok(uh.every((h) => h.format === "ustar"));
    assert.ok(uh.some((h) => h.name === `./dir/${LONG_100}/file`));
  });
});

gnuTest("readTar() reads GNU tar's old GNU and PAX 0.0, 0.1 and 1.0 sparse maps", async () => {
  await withTemp(async (tmp) => {
    await Deno.mkdir(join(tmp, "src"));
    await makeSparse(join(tmp, "src", "sparse"));
    // Enough data runs that old GNU headers need sparse extension blocks.
    const many = join(tmp, "src", "many");
    await run("truncate", ["-s", "8M", many]);
    const f = await Deno.open(many, { write: true });
    for (let i = 0; i < 60; i++) {
      await f.seek(i * 131072 + 7, Deno.SeekMode.Start);
      await f.write(new TextEncoder().encode(`run ${i}`));
    }
    f.close();
    const gnu = join(tmp, "many.tar");
    await run("tar", ["--format=gnu", "-S", "-cf", gnu, "-C", join(tmp, "src"), "many"]);
    const [m] = await checkArchive(gnu, join(tmp, "src"));
    assert.equal(m!.typeflag, "S");
    assert.ok(m!.sparse!.segments.length > 25, `${m!.sparse!.segments.length} segments`);
    for (const version of ["0.0", "0.1", "1.0"]) {
      const archive = join(tmp, `sparse-${version}.tar`);
      await run("tar", [
        "--format=posix",
        `--sparse-version=${version}`,
        "-S",
        "-cf",
        archive,
        "-C",
        join(tmp, "src"),
        "sparse",
      ]);
      const [h] = await checkArchive(archive, join(tmp, "src"));
      assert.equal(h!.name, "sparse", version);
      assert.ok(h!.sparse, version);
      assert.ok(h!.size < 100_000, `${version}: only the data is stored`);
    }
  });
});

/** `stat` of a path: type, perms, ids, size, mtime, device numbers, inode, blocks. */
async function statOf(path: string): Promise<string[]> {
  const out = await run("stat", ["--format=%F|%a|%u|%g|%s|%.9Y|%t|%T|%i|%b", path]);
  return out.trim().split("|");
}

function rtEntries(format: "pax" | "gnu"): { entries: TarInput[]; sparseData: Uint8Array } {
  const rng = new Rng(7);
  const pax = format === "pax";
  const t = (sec: number, nsec: number) => ({ sec, nsec: pax ? nsec : 0 });
  const sparseBody = rng.bytes(8192 + 100);
  const sparse = {
    realSize: 10 * 1024 * 1024,
    segments: [{ offset: 4096, length: 8192 }, { offset: 9 * 1024 * 1024, length: 100 }],
  };
  const entries: TarInput[] = [
    { header: { name: "rt", type: "directory", mode: 0o750, mtime: t(1600000000, 999) } },
    {
      header: {
        name: "rt/file",
        type: "file",
        mode: 0o640,
        uid: 3_000_000,
        gid: 3_000_001,
        uname: "nobody-here",
        mtime: t(1500000000, 123456789),
        ...(pax
          ? {
            xattrs: { "user.a": new Uint8Array([0, 10, 61, 255]), "user.empty": new Uint8Array(0) },
          }
          : {}),
      },
      body: rng.bytes(1000),
    },
    { header: { name: "rt/empty", type: "file", mtime: t(1, 0) }, body: new Uint8Array(0) },
    { header: { name: "rt/513", type: "file", mtime: t(2, 0) }, body: rng.bytes(513) },
    {
      header: { name: "rt/setuid", type: "file", mode: 0o4755, mtime: t(3, 0) },
      body: rng.bytes(4),
    },
    { header: { name: `rt/${LONG_100}`, type: "directory", mtime: t(4, 0) } },
    { header: { name: `rt/${LONG_255}`, type: "directory", mtime: t(5, 0) } },
    { header: { name: `rt/${LONG_255}/f`, type: "file", mtime: t(6, 0) }, body: rng.bytes(10) },
    { header: { name: `rt/${UNICODE}`, type: "file", mtime: t(7, 0) }, body: rng.bytes(10) },
    { header: { name: "rt/longlink", type: "symlink", linkname: LONG_TARGET, mtime: t(8, 0) } },
    { header: { name: "rt/hard", type: "hardlink", linkname: "rt/file" } },
    { header: { name: "rt/fifo", type: "fifo", mode: 0o600, mtime: t(9, 0) } },
    {
      header: {
        name: "rt/null",
        type: "char",
        devmajor: 1,
        devminor: 3,
        mode: 0o666,
        mtime: t(10, 0),
      },
    },
    {
      header: {
        name: "rt/loop",
        type: "block",
        devmajor: 7,
        devminor: 201,
        mode: 0o660,
        mtime: t(11, 0),
      },
    },
    {
      header: { name: "rt/sparse", type: "file", sparse, mtime: t(12, 5) },
      body: sparseBody,
    },
  ];
  return { entries, sparseData: expand({ sparse } as TarHeader, sparseBody) };
}

for (const format of ["pax", "gnu"] as const) {
  gnuTest(`GNU tar extracts what TarWriter writes in the ${format} format`, async () => {
    await withTemp(async (tmp) => {
      const { entries, sparseData } = rtEntries(format);
      const archive = join(tmp, "ours.tar");
      const file = await Deno.open(archive, { write: true, create: true });
      const writer = new TarWriter(async (chunk) => {
        let done = 0;
        while (done < chunk.length) done += await file.write(chunk.subarray(done));
      }, { format });
      for (const e of entries) await writer.add(e.header, e.body);
      await writer.finish();
      file.close();
      // The in-memory convenience writes the same bytes.
      assert.deepEqual(await createTar(entries, { format }), await Deno.readFile(archive));

      const dest = join(tmp, "out");
      await Deno.mkdir(dest);
      await run("tar", [
        "-xf",
        archive,
        "-C",
        dest,
        "--xattrs",
        "--xattrs-include=*",
        "--numeric-owner",
        "--same-owner",
        "-p",
      ]);
      const inode = new Map<string, string>();
      for (const { header: h, body } of entries) {
        const path = join(dest, h.name);
        const [kind, perms, uid, gid, size, mtime, major, minor, ino, blocks] = await statOf(path);
        inode.set(h.name, ino!);
        const expectedKind = {
          file: (body as Uint8Array | undefined)?.length === 0
            ? "regular empty file"
            : "regular file",
          directory: "directory",
          symlink: "symbolic link",
          hardlink: "regular file",
          fifo: "fifo",
          char: "character special file",
          block: "block special file",
          unknown: "",
        }[h.type];
        assert.equal(kind, expectedKind, h.name);
        if (h.type === "hardlink") {
          assert.equal(ino, inode.get(h.linkname!), `${h.name} is a hard link`);
          continue;
        }
        if (h.type !== "symlink") {
          assert.equal(
            perms,
            (h.mode ?? (h.type === "directory" ? 0o755 : 0o644)).toString(8),
            h.name,
          );
          const m = h.mtime ?? { sec: 0, nsec: 0 };
          assert.equal(mtime, `${m.sec}.${String(m.nsec).padStart(9, "0")}`, `${h.name} mtime`);
        }
        assert.equal(Number(uid), h.uid ?? 0, h.name);
        assert.equal(Number(gid), h.gid ?? 0, h.name);
        if (h.type === "char" || h.type === "block") {
          assert.deepEqual([parseInt(major!, 16), parseInt(minor!, 16)], [h.devmajor, h.devminor]);
        }
        if (h.type === "symlink") assert.equal(await Deno.readLink(path), h.linkname);
        if (h.type === "file") {
          const content = await Deno.readFile(path);
          if (h.sparse) {
            assert.equal(Number(size), h.sparse.realSize);
            assert.ok(content.every((b, i) => b === sparseData[i]), "sparse content");
            assert.ok(Number(blocks) * 512 < h.sparse.realSize / 2, "holes were kept");
          } else {
            assert.deepEqual(content, body, h.name);
          }
        }
      }
      const xattrs = await run("getfattr", ["-d", "-e", "hex", "-m", "-", join(dest, "rt/file")]);
      if (format === "pax") {
        assert.match(xattrs, /^user\.a=0x000a3dff$/m);
        assert.match(xattrs, /^user\.empty=0x$/m);
      } else {
        assert.doesNotMatch(xattrs, /user\./);
      }
    });
  });
}

peerTest(
  "readTar() lists Go-made layers (umoci, skopeo) exactly as tar -tv does",
  { tools: ["umoci", "skopeo", "tar", "gzip"], root: true },
  async () => {
    await using tmp = await makeTempDir();
    const { layout, tag } = await makeUmociImage(join(tmp.path, "img"));
    // skopeo re-writes the image as a docker-archive: its layer tars are Go-made too.
    const docker = join(tmp.path, "docker.tar");
    await runOk([
      "skopeo",
      "copy",
      "--insecure-policy",
      `oci:${layout}:${tag}`,
      `docker-archive:${docker}:x/y:z`,
    ]);
    const index = JSON.parse(await Deno.readTextFile(join(layout, "index.json")));
    const blobs = join(layout, "blobs", "sha256");
    const manifest = JSON.parse(
      await Deno.readTextFile(join(blobs, index.manifests[0].digest.slice(7))),
    );
    const layers: string[] = [];
    for (const [i, l] of (manifest.layers as { digest: string }[]).entries()) {
      const out = join(tmp.path, `layer${i}.tar`);
      await runOk(["sh", "-c", `gzip -dc < ${join(blobs, l.digest.slice(7))} > ${out}`]);
      layers.push(out);
    }
    const unpacked = join(tmp.path, "docker");
    await Deno.mkdir(unpacked);
    await runOk(["tar", "-xf", docker, "-C", unpacked]);
    const dm = JSON.parse(await Deno.readTextFile(join(unpacked, "manifest.json")));
    for (const l of dm[0].Layers as string[]) layers.push(join(unpacked, l));
    assert.ok(layers.length >= 4);
    for (const archive of layers) {
      const listing = parseListing(
        await run("tar", [
          "-tv",
          "--numeric-owner",
          "--full-time",
          "--quoting-style=literal",
          "-f",
          archive,
        ]),
      );
      const headers: TarHeader[] = [];
      for await (const entry of readTar((await Deno.open(archive)).readable)) {
        headers.push(entry.header);
      }
      assert.ok(headers.length > 0, archive);
      // Go writes some directory names without the trailing slash that GNU tar writes; tar -tv
      // shows names as stored, the reader gives directory names without it.
      const dirName = (
        l: Listed,
      ) => (l.type === "d" ? { ...l, name: l.name.replace(/\/$/, "") } : l);
      assert.deepEqual(headers.map(asListed).map(dirName), listing.map(dirName), archive);
    }
  },
);
