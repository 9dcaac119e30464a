import assert from "node:assert/strict";
import { join } from "node:path";
import { applyLayer, applyToMounts } from "../../diff/apply.ts";
import { FailedPrecondition, InvalidArgument, NotFound } from "../../errors.ts";
import * as sys from "../../sys/mod.ts";
import { makeTempDir, peerTest } from "../_peers.ts";
import {
  apply,
  bytes,
  chunks,
  concat,
  exists,
  gzip,
  layer,
  lstat,
  rawEntry,
  rawTar,
  sh,
  sha256,
  withMerged,
  xattr,
  zstd,
} from "./_helpers.ts";

const ROOT = { root: true };
const T = { sec: 1700000000, nsec: 123456789 };

function type(st: sys.Stat): number {
  return st.mode & sys.S_IFMT;
}

function perm(st: sys.Stat): number {
  return st.mode & 0o7777;
}

peerTest(
  "applyLayer() creates every entry type with owners, modes, xattrs and ns times",
  ROOT,
  async () => {
    await using tmp = await makeTempDir();
    const root = tmp.path;
    const data = await layer([
      { header: { name: "d", type: "directory", mode: 0o750, uid: 1, gid: 2, mtime: T } },
      {
        header: {
          name: "d/f",
          type: "file",
          mode: 0o640,
          uid: 3,
          gid: 4,
          mtime: { sec: 1600000000, nsec: 1 },
          atime: { sec: 1650000000, nsec: 999999999 },
          xattrs: { "user.note": bytes("hello") },
        },
        body: "content\n",
      },
      {
        header: {
          name: "d/l",
          type: "symlink",
          linkname: "f",
          uid: 5,
          gid: 6,
          mtime: { sec: 1500000000, nsec: 42 },
        },
      },
      {
        header: {
          name: "d/h",
          type: "hardlink",
          linkname: "d/f",
          mode: 0o640,
          uid: 3,
          gid: 4,
          mtime: { sec: 1600000000, nsec: 1 },
          atime: { sec: 1650000000, nsec: 999999999 },
        },
      },
      { header: { name: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 } },
      { header: { name: "dev/sda", type: "block", devmajor: 8, devminor: 0, mode: 0o660, gid: 6 } },
      { header: { name: "run/fifo", type: "fifo", mode: 0o620, uid: 9 } },
      { header: { name: "bin/su", type: "file", mode: 0o4755, uid: 0 }, body: "su" },
      { header: { name: "bin/sg", type: "file", mode: 0o2755, uid: 7, gid: 8 }, body: "sg" },
      { header: { name: "tmp", type: "directory", mode: 0o1777 } },
      { header: { name: "srv", type: "directory", mode: 0o2775, gid: 50 } },
      { header: { name: "srv/sub", type: "directory", mode: 0o755, gid: 0 } },
      {
        header: {
          name: "bin/ping",
          type: "file",
          mode: 0o755,
          xattrs: {
            // VFS_CAP_REVISION_2, effective, CAP_NET_RAW permitted.
            "security.capability": new Uint8Array([
              0,
              0,
              0,
              2,
              0,
              0x20,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
            ]),
          },
        },
        body: "ping",
      },
    ]);
    const result = await apply(data, root);
    assert.deepEqual(result.skipped, []);
    assert.equal(result.entries, 13);

    const d = lstat(join(root, "d"));
    assert.equal(type(d), sys.S_IFDIR);
    assert.deepEqual([perm(d), d.uid, d.gid], [0o750, 1, 2]);
    assert.deepEqual(d.mtime, T);

    const f = lstat(join(root, "d/f"));
    assert.deepEqual([type(f), perm(f), f.uid, f.gid, f.nlink], [sys.S_IFREG, 0o640, 3, 4, 2]);
    assert.deepEqual(f.mtime, { sec: 1600000000, nsec: 1 });
    assert.deepEqual(f.atime, { sec: 1650000000, nsec: 999999999 });
    assert.equal(await Deno.readTextFile(join(root, "d/f")), "content\n");
    assert.equal(xattr(join(root, "d/f"), "user.note"), "hello");
    assert.equal(lstat(join(root, "d/h")).ino, f.ino);

    const l = lstat(join(root, "d/l"));
    assert.equal(type(l), sys.S_IFLNK);
    assert.equal(await Deno.readLink(join(root, "d/l")), "f");
    assert.deepEqual([l.uid, l.gid], [5, 6]);
    assert.deepEqual(l.mtime, { sec: 1500000000, nsec: 42 });

    const cnull = lstat(join(root, "dev/null"));
    assert.deepEqual([type(cnull), perm(cnull), cnull.rdev], [
      sys.S_IFCHR,
      0o666,
      sys.makedev(1, 3),
    ]);
    const sda = lstat(join(root, "dev/sda"));
    assert.deepEqual([type(sda), perm(sda), sda.rdev, sda.gid], [
      sys.S_IFBLK,
      0o660,
      sys.makedev(8, 0),
      6,
    ]);
    const fifo = lstat(join(root, "run/fifo"));
    assert.deepEqual([type(fifo), perm(fifo), fifo.uid], [sys.S_IFIFO, 0o620, 9]);

    assert.equal(perm(lstat(join(root, "bin/su"))), 0o4755);
    const sg = lstat(join(root, "bin/sg"));
    assert.deepEqual([perm(sg), sg.uid, sg.gid], [0o2755, 7, 8]);
    assert.equal(perm(lstat(join(root, "tmp"))), 0o1777);
    const srv = lstat(join(root, "srv"));
    assert.deepEqual([perm(srv), srv.gid], [0o2775, 50]);
    const sub = lstat(join(root, "srv/sub"));
    assert.deepEqual([perm(sub), sub.gid], [0o755, 0]);
    assert.equal(
      sys.lgetxattr(join(root, "bin/ping"), "security.capability").length,
      20,
    );
  },
);

peerTest(
  "applyLayer() sets atime to max(atime, mtime) and clamps out-of-range times",
  ROOT,
  async () => {
    await using tmp = await makeTempDir();
    const file = (name: string, mtime: { sec: number; nsec: number }, atime?: typeof mtime) => ({
      header: { name, type: "file" as const, mtime, ...(atime ? { atime } : {}) },
      body: "",
    });
    await apply(
      await layer([
        file("older-atime", { sec: 2000, nsec: 5 }, { sec: 1000, nsec: 0 }),
        file("newer-atime", { sec: 2000, nsec: 5 }, { sec: 3000, nsec: 7 }),
        file("no-atime", { sec: 2000, nsec: 5 }),
        file("negative", { sec: -100, nsec: 0 }),
        file("zero", { sec: 0, nsec: 0 }),
        file("2-pow-33", { sec: 2 ** 33, nsec: 0 }),
        file("after-2262", { sec: 10_000_000_000, nsec: 0 }),
        file("fraction", { sec: 1, nsec: 500_000_000 }),
      ]),
      tmp.path,
    );
    const times = (name: string) => {
      const st = lstat(join(tmp.path, name));
      return [st.atime, st.mtime];
    };
    assert.deepEqual(times("older-atime"), [{ sec: 2000, nsec: 5 }, { sec: 2000, nsec: 5 }]);
    assert.deepEqual(times("newer-atime"), [{ sec: 3000, nsec: 7 }, { sec: 2000, nsec: 5 }]);
    assert.deepEqual(times("no-atime"), [{ sec: 2000, nsec: 5 }, { sec: 2000, nsec: 5 }]);
    assert.deepEqual(times("negative"), [{ sec: 0, nsec: 0 }, { sec: 0, nsec: 0 }]);
    assert.deepEqual(times("zero"), [{ sec: 0, nsec: 0 }, { sec: 0, nsec: 0 }]);
    assert.deepEqual(times("2-pow-33")[1], { sec: 2 ** 33, nsec: 0 });
    assert.deepEqual(times("after-2262"), [{ sec: 0, nsec: 0 }, { sec: 0, nsec: 0 }]);
    assert.deepEqual(times("fraction")[1], { sec: 1, nsec: 500_000_000 });
  },
);

peerTest("applyLayer() restores directory times after their children", ROOT, async () => {
  await using tmp = await makeTempDir();
  const t = (sec: number) => ({ sec, nsec: 777 });
  await apply(
    await layer([
      { header: { name: "a", type: "directory", mtime: t(1000) } },
      { header: { name: "a/b", type: "directory", mtime: t(2000) } },
      { header: { name: "a/b/c", type: "directory", mode: 0o500, mtime: t(3000) } },
      { header: { name: "a/b/c/file", type: "file", mtime: t(4000) }, body: "x" },
      { header: { name: "a/b/link", type: "symlink", linkname: "c", mtime: t(5000) } },
      { header: { name: "a/new", type: "file", mtime: t(6000) }, body: "y" },
    ]),
    tmp.path,
  );
  assert.deepEqual(lstat(join(tmp.path, "a")).mtime, t(1000));
  assert.deepEqual(lstat(join(tmp.path, "a/b")).mtime, t(2000));
  assert.deepEqual(lstat(join(tmp.path, "a/b/c")).mtime, t(3000));
  assert.equal(perm(lstat(join(tmp.path, "a/b/c"))), 0o500);
  assert.deepEqual(lstat(join(tmp.path, "a/b/link")).mtime, t(5000));
});

peerTest(
  "applyLayer() creates implied parents 0755 owned by root, later entries set them",
  ROOT,
  async () => {
    await using tmp = await makeTempDir();
    await apply(
      await layer([
        { header: { name: "x/y/z/file", type: "file", uid: 1000 }, body: "z" },
        { header: { name: "x", type: "directory", mode: 0o700, uid: 1000, gid: 1000 } },
      ]),
      tmp.path,
    );
    for (const dir of ["x/y", "x/y/z"]) {
      const st = lstat(join(tmp.path, dir));
      assert.deepEqual([type(st), perm(st), st.uid, st.gid], [sys.S_IFDIR, 0o755, 0, 0], dir);
    }
    const x = lstat(join(tmp.path, "x"));
    assert.deepEqual([perm(x), x.uid, x.gid], [0o700, 1000, 1000]);
    assert.equal(await Deno.readTextFile(join(tmp.path, "x/y/z/file")), "z");
  },
);

peerTest(
  "applyLayer() copies implied parents' attributes from the lower layers (overlay)",
  ROOT,
  async () => {
    await using tmp = await makeTempDir();
    const older = join(tmp.path, "older");
    const newer = join(tmp.path, "newer");
    const upper = join(tmp.path, "upper");
    for (const dir of [older, newer, upper]) await Deno.mkdir(dir);
    // The older layer has a/b (0711) and a/b/c (0701); the newer one only a/b (0710, uid 7).
    await Deno.mkdir(join(older, "a/b/c"), { recursive: true });
    await Deno.chmod(join(older, "a/b"), 0o711);
    await Deno.chmod(join(older, "a/b/c"), 0o701);
    await Deno.chown(join(older, "a/b/c"), 11, 12);
    await Deno.mkdir(join(newer, "a/b"), { recursive: true });
    await Deno.chmod(join(newer, "a/b"), 0o710);
    await Deno.chown(join(newer, "a/b"), 7, 8);
    sys.lsetxattr(join(newer, "a/b"), "user.k", bytes("v"));
    sys.lsetxattr(join(newer, "a/b"), "trusted.t", bytes("secret"));
    sys.utimensat(sys.AT_FDCWD, join(newer, "a/b"), [T, T], 0);
    await apply(
      await layer([{ header: { name: "a/b/c/d/file", type: "file" }, body: "f" }]),
      upper,
      { whiteouts: "overlay", lowerDirs: [newer, older] },
    );
    const b = lstat(join(upper, "a/b"));
    assert.deepEqual([perm(b), b.uid, b.gid], [0o710, 7, 8]);
    assert.equal(xattr(join(upper, "a/b"), "user.k"), "v");
    assert.equal(xattr(join(upper, "a/b"), "trusted.t"), undefined);
    assert.deepEqual(b.mtime, T);
    const c = lstat(join(upper, "a/b/c"));
    assert.deepEqual([perm(c), c.uid, c.gid], [0o701, 11, 12]);
    const d = lstat(join(upper, "a/b/c/d"));
    assert.deepEqual([perm(d), d.uid], [0o755, 0]);
  },
);

for (const format of ["pax", "gnu"] as const) {
  peerTest(`applyLayer() keeps the holes of ${format} sparse files`, ROOT, async () => {
    await using tmp = await makeTempDir();
    const run = new Uint8Array(4096).fill(0x61);
    const realSize = 256 * 1024 * 1024;
    const data = await layer([{
      header: {
        name: "sparse",
        type: "file",
        sparse: {
          realSize,
          segments: [{ offset: 8192, length: 4096 }, { offset: 128 * 1024 * 1024, length: 4096 }],
        },
      },
      body: concat(run, run),
    }], { format });
    await apply(data, tmp.path);
    const path = join(tmp.path, "sparse");
    const st = lstat(path);
    assert.equal(st.size, realSize);
    assert.ok(st.blocks * 512 <= 64 * 1024, `${st.blocks} blocks allocated`);
    const fd = sys.open(path, sys.O_RDONLY);
    try {
      const buf = new Uint8Array(4096);
      for (const [offset, fill] of [[0, 0], [8192, 0x61], [12288, 0], [128 * 1024 * 1024, 0x61]]) {
        sys.pread(fd, buf, offset!);
        assert.ok(buf.every((b) => b === fill), `bytes at ${offset}`);
      }
      assert.equal(sys.lseek(fd, 0, sys.SEEK_DATA), 8192);
      assert.equal(sys.lseek(fd, 8192, sys.SEEK_HOLE), 12288);
    } finally {
      sys.close(fd);
    }
  });
}

peerTest(
  "applyLayer() links hardlinks to one inode, a link to a symlink links the symlink",
  ROOT,
  async () => {
    await using tmp = await makeTempDir();
    await apply(
      await layer([
        { header: { name: "zzz", type: "file", mode: 0o600, mtime: T }, body: "z" },
        { header: { name: "xxx", type: "symlink", linkname: "zzz" } },
        { header: { name: "yyy", type: "hardlink", linkname: "xxx", mode: 0o777 } },
        { header: { name: "dir/h", type: "hardlink", linkname: "/zzz", mode: 0o600, mtime: T } },
      ]),
      tmp.path,
    );
    const x = lstat(join(tmp.path, "xxx"));
    const y = lstat(join(tmp.path, "yyy"));
    assert.equal(type(y), sys.S_IFLNK);
    assert.equal(y.ino, x.ino);
    assert.equal(y.nlink, 2);
    const z = lstat(join(tmp.path, "zzz"));
    assert.equal(perm(z), 0o600, "the symlink's target keeps its mode");
    assert.deepEqual(z.mtime, T);
    assert.equal(lstat(join(tmp.path, "dir/h")).ino, z.ino);
    assert.equal(z.nlink, 2);
  },
);

peerTest(
  "applyLayer() rejects hardlinks to directories, missing targets and themselves",
  ROOT,
  async () => {
    const cases: [string, Parameters<typeof layer>[0], RegExp][] = [
      [
        "directory",
        [{ header: { name: "d", type: "directory" } }, {
          header: { name: "dl", type: "hardlink", linkname: "d" },
        }],
        /hardlink target "d" is a directory/,
      ],
      [
        "missing",
        [{ header: { name: "b", type: "hardlink", linkname: "missing" } }],
        /hardlink target "missing" does not exist/,
      ],
      ["itself", [{ header: { name: "a", type: "hardlink", linkname: "a" } }], /does not exist/],
      ["root", [{ header: { name: "r", type: "hardlink", linkname: "./" } }], /root directory/],
    ];
    for (const [what, entries, message] of cases) {
      await using tmp = await makeTempDir();
      await assert.rejects(apply(await layer(entries), tmp.path), (err: unknown) => {
        assert.ok(err instanceof InvalidArgument, `${what}: ${err}`);
        assert.match((err as Error).message, message);
        return true;
      });
    }
  },
);

peerTest(
  "applyLayer() rejects device numbers above 2^32-1 and unknown entry types",
  ROOT,
  async () => {
    await using tmp = await makeTempDir();
    const big = await layer([{
      header: { name: "dev/big", type: "char", devmajor: 2 ** 32, devminor: 1 },
    }], { format: "gnu" });
    await assert.rejects(apply(big, tmp.path), InvalidArgument);
    await assert.rejects(apply(big, tmp.path), /device number 4294967296:1 is out of range/);
    const unknown = rawTar(rawEntry({ name: "label", typeflag: "V" }));
    await assert.rejects(apply(unknown, tmp.path), /unhandled tar header type "V"/);
  },
);

peerTest(
  "applyLayer() replaces what is in the way and never follows the final component",
  ROOT,
  async () => {
    await using tmp = await makeTempDir();
    const root = join(tmp.path, "root");
    await Deno.mkdir(root);
    const outside = join(tmp.path, "outside");
    await Deno.writeTextFile(outside, "outside");
    await apply(
      await layer([
        { header: { name: "dir/sub/file", type: "file" }, body: "old" },
        { header: { name: "link", type: "symlink", linkname: outside } },
        { header: { name: "dir", type: "file" }, body: "now a file" },
        { header: { name: "link", type: "file", mode: 0o600 }, body: "replaced" },
        { header: { name: "merged", type: "directory", mode: 0o700 } },
        { header: { name: "merged/kept", type: "file" }, body: "k" },
        { header: { name: "merged", type: "directory", mode: 0o750, uid: 3 } },
      ]),
      root,
    );
    assert.equal(await Deno.readTextFile(join(root, "dir")), "now a file");
    assert.equal(type(lstat(join(root, "link"))), sys.S_IFREG);
    assert.equal(await Deno.readTextFile(outside), "outside");
    assert.equal(perm(lstat(outside)), 0o644);
    assert.ok(exists(join(root, "merged/kept")));
    const merged = lstat(join(root, "merged"));
    assert.deepEqual([perm(merged), merged.uid], [0o750, 3]);
    await assert.rejects(
      apply(await layer([{ header: { name: "dir/x", type: "file" }, body: "" }]), root),
      /"dir" is not a directory/,
    );
  },
);

peerTest("applyLayer() deletes whiteout targets (delete policy)", ROOT, async () => {
  await using tmp = await makeTempDir();
  const root = tmp.path;
  await apply(
    await layer([
      { header: { name: "file", type: "file" }, body: "f" },
      { header: { name: "dir/sub/deep", type: "file" }, body: "d" },
      { header: { name: "target", type: "file" }, body: "t" },
      { header: { name: "link", type: "symlink", linkname: "target" } },
      { header: { name: "keep", type: "file" }, body: "k" },
    ]),
    root,
  );
  const result = await apply(
    await layer([
      { header: { name: ".wh.file", type: "file" } },
      { header: { name: ".wh.dir", type: "file" } },
      { header: { name: ".wh.link", type: "file" } },
      { header: { name: ".wh.ghost", type: "file" } },
      { header: { name: "missing/.wh.x", type: "file" } },
      { header: { name: "new", type: "file" }, body: "n" },
      { header: { name: ".wh.new", type: "file" } },
    ]),
    root,
  );
  assert.deepEqual(result.skipped, []);
  const names = [...Deno.readDirSync(root)].map((e) => e.name).sort();
  assert.deepEqual(names, ["keep", "new", "target"]);
});

peerTest(
  "applyLayer() keeps only this layer's objects under an opaque marker (delete)",
  ROOT,
  async () => {
    await using tmp = await makeTempDir();
    const root = tmp.path;
    await apply(
      await layer([
        { header: { name: "a/old", type: "file" }, body: "o" },
        { header: { name: "a/b/old2", type: "file" }, body: "o" },
        { header: { name: "a/b/c/bar", type: "file" }, body: "o" },
        { header: { name: "other/x", type: "file" }, body: "x" },
      ]),
      root,
    );
    await apply(
      await layer([
        { header: { name: "a", type: "directory" } },
        { header: { name: "a/b", type: "directory" } },
        { header: { name: "a/b/c", type: "directory" } },
        { header: { name: "a/b/c/foo", type: "file" }, body: "foo" },
        { header: { name: "a/implied/file", type: "file" }, body: "i" },
        { header: { name: "a/.wh..wh..opq", type: "file" } },
        { header: { name: "a/after", type: "file" }, body: "after" },
      ]),
      root,
    );
    const found = (await sh(["find", ".", "-mindepth", "1"], { cwd: root })).trim().split("\n")
      .sort();
    assert.deepEqual(found, [
      "./a",
      "./a/after",
      "./a/b",
      "./a/b/c",
      "./a/b/c/foo",
      "./a/implied",
      "./a/implied/file",
      "./other",
      "./other/x",
    ]);
  },
);

peerTest("applyLayer() rejects .wh., .wh.. and .wh... on every policy", ROOT, async () => {
  for (const policy of ["delete", "overlay", "overlay-userxattr"] as const) {
    for (const name of [".wh.", ".wh..", ".wh...", "etc/.wh..", "etc/.wh...", "etc/.wh."]) {
      await using tmp = await makeTempDir();
      await assert.rejects(
        apply(await layer([{ header: { name, type: "file" } }]), tmp.path, { whiteouts: policy }),
        (err: unknown) => {
          assert.ok(err instanceof InvalidArgument);
          assert.match((err as Error).message, /invalid whiteout name/);
          return true;
        },
        `${policy} ${name}`,
      );
    }
  }
});

async function overlaySetup(tmp: string): Promise<{ lower: string; upper: string }> {
  const lower = join(tmp, "lower");
  const upper = join(tmp, "upper");
  await Deno.mkdir(upper);
  await Deno.mkdir(lower);
  await apply(
    await layer([
      { header: { name: "file", type: "file" }, body: "f" },
      { header: { name: "dir/old", type: "file" }, body: "o" },
      { header: { name: "dir/sub/old", type: "file" }, body: "o" },
      { header: { name: "dir2/old", type: "file" }, body: "o" },
      { header: { name: "keep", type: "file" }, body: "k" },
    ]),
    lower,
  );
  return { lower, upper };
}

for (const policy of ["overlay", "overlay-userxattr"] as const) {
  const prefix = policy === "overlay" ? "trusted.overlay." : "user.overlay.";
  peerTest(`applyLayer() writes ${policy} whiteouts and opaque directories`, ROOT, async () => {
    await using tmp = await makeTempDir();
    const { lower, upper } = await overlaySetup(tmp.path);
    const result = await apply(
      await layer([
        { header: { name: ".wh.file", type: "file", uid: 1000, gid: 1001 } },
        { header: { name: "dir/.wh..wh..opq", type: "file" } },
        { header: { name: "dir/new", type: "file" }, body: "n" },
        { header: { name: ".wh.dir2", type: "file" } },
        { header: { name: "dir2", type: "directory" } },
        { header: { name: "dir2/fresh", type: "file" }, body: "f" },
        { header: { name: ".wh.ghost", type: "file" } },
      ]),
      upper,
      { whiteouts: policy, lowerDirs: [lower] },
    );
    assert.deepEqual(result.skipped, []);
    const wh = lstat(join(upper, "file"));
    assert.deepEqual([type(wh), wh.rdev, wh.uid, wh.gid], [sys.S_IFCHR, 0, 1000, 1001]);
    assert.equal(xattr(join(upper, "dir"), `${prefix}opaque`), "y");
    assert.equal(xattr(join(upper, "dir2"), `${prefix}opaque`), "y");
    assert.equal(type(lstat(join(upper, "ghost"))), sys.S_IFCHR);
    const names = [...Deno.readDirSync(upper)].map((e) => e.name).sort();
    assert.deepEqual(names, ["dir", "dir2", "file", "ghost"]);
    await withMerged(tmp.path, [upper, lower], (merged) => {
      const top = [...Deno.readDirSync(merged)].map((e) => e.name).sort();
      assert.deepEqual(top, ["dir", "dir2", "keep"]);
      assert.deepEqual([...Deno.readDirSync(join(merged, "dir"))].map((e) => e.name), ["new"]);
      assert.deepEqual([...Deno.readDirSync(join(merged, "dir2"))].map((e) => e.name), ["fresh"]);
    }, { userxattr: policy === "overlay-userxattr" });
  });
  // Deviation from containerd, whose applier makes every whiteout: overlayfs lists a whiteout
  // in an opaque directory (it reads such a directory as it is) while lookups of its name fail,
  // so the applier makes none there, before or after the opaque marker (nothing below shows
  // through anyway; overlayfs itself never leaves one there).
  peerTest(
    `applyLayer() makes no ${policy} whiteout in a directory the layer marks opaque`,
    ROOT,
    async () => {
      await using tmp = await makeTempDir();
      const { lower, upper } = await overlaySetup(tmp.path);
      await apply(
        await layer([
          { header: { name: "dir/.wh.old", type: "file" } },
          { header: { name: "dir/.wh..wh..opq", type: "file" } },
          { header: { name: "dir/.wh.sub", type: "file" } },
          { header: { name: "dir/new", type: "file" }, body: "n" },
          { header: { name: "dir2/.wh..wh..opq", type: "file" } },
          { header: { name: "dir2/.wh.old", type: "file" } },
          { header: { name: ".wh.keep", type: "file" } },
        ]),
        upper,
        { whiteouts: policy, lowerDirs: [lower] },
      );
      assert.deepEqual([...Deno.readDirSync(join(upper, "dir"))].map((e) => e.name), ["new"]);
      assert.deepEqual([...Deno.readDirSync(join(upper, "dir2"))].map((e) => e.name), []);
      assert.equal(type(lstat(join(upper, "keep"))), sys.S_IFCHR);
      await withMerged(tmp.path, [upper, lower], (merged) => {
        assert.deepEqual([...Deno.readDirSync(join(merged, "dir"))].map((e) => e.name), ["new"]);
        assert.deepEqual([...Deno.readDirSync(join(merged, "dir2"))].map((e) => e.name), []);
        assert.deepEqual([...Deno.readDirSync(merged)].map((e) => e.name).sort(), [
          "dir",
          "dir2",
          "file",
        ]);
      }, { userxattr: policy === "overlay-userxattr" });
    },
  );
}

peerTest(
  "applyLayer() hashes the whole stream, trailing bytes included, and checks digests",
  ROOT,
  async () => {
    await using tmp = await makeTempDir();
    const tar = await layer([{ header: { name: "f", type: "file" }, body: "f" }]);
    const data = concat(tar, new Uint8Array(4096), bytes("trailing junk after the archive"));
    const result = await apply(data, tmp.path);
    assert.equal(result.diffId, sha256(data));
    assert.notEqual(result.diffId, sha256(tar));
    assert.equal(result.size, data.length);
    assert.equal(result.compressedDigest, sha256(data));
    assert.equal(result.compressedSize, data.length);

    const wrong = `sha256:${"0".repeat(64)}`;
    await assert.rejects(apply(data, tmp.path, { expectedDiffId: wrong }), (err: unknown) => {
      assert.ok(err instanceof FailedPrecondition);
      assert.ok((err as Error).message.includes(wrong));
      assert.ok((err as Error).message.includes(sha256(data)));
      return true;
    });
    const gz = gzip(data);
    await assert.rejects(apply(gz, tmp.path, { expectedDigest: wrong }), (err: unknown) => {
      assert.ok(err instanceof FailedPrecondition);
      assert.ok((err as Error).message.includes(sha256(gz)));
      return true;
    });
    const ok = await apply(gz, tmp.path, {
      expectedDigest: sha256(gz),
      expectedDiffId: sha256(data),
    });
    assert.equal(ok.diffId, sha256(data));
  },
);

peerTest(
  "applyLayer() detects gzip, zstd and plain layers by their first bytes",
  ROOT,
  async () => {
    const tar = await layer([
      { header: { name: "etc/os-release", type: "file" }, body: "ID=strata\n".repeat(500) },
    ]);
    for (const [name, data] of [["none", tar], ["gzip", gzip(tar)], ["zstd", zstd(tar)]] as const) {
      await using tmp = await makeTempDir();
      const result = await apply(data, tmp.path);
      assert.equal(result.diffId, sha256(tar), name);
      assert.equal(result.size, tar.length, name);
      assert.equal(result.compressedDigest, sha256(data), name);
      assert.equal(result.compressedSize, data.length, name);
      assert.equal(
        await Deno.readTextFile(join(tmp.path, "etc/os-release")),
        "ID=strata\n".repeat(500),
      );
    }
    await using tmp = await makeTempDir();
    const empty = await apply(new Uint8Array(0), tmp.path);
    assert.equal(empty.diffId, sha256(new Uint8Array(0)));
    assert.equal(empty.entries, 0);
  },
);

/**
 * Applies a layer to `root` as uid/gid 65534 in a child process (setpriv) and returns the
 * ApplyResult it printed; `dir` holds the layer file and the child's Deno directory.
 */
async function applyAsNobody(
  dir: string,
  data: Uint8Array,
  root: string,
): Promise<{ skipped: { path: string; reason: string }[] }> {
  const layerPath = join(dir, "layer.tar");
  await Deno.writeFile(layerPath, data, { mode: 0o644 });
  const denoDir = join(dir, "deno-dir");
  await Deno.mkdir(denoDir, { recursive: true });
  await Deno.chown(denoDir, 65534, 65534);
  const child = new URL("./_rootless_child.ts", import.meta.url).pathname;
  const out = await new Deno.Command("setpriv", {
    args: [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      Deno.execPath(),
      "run",
      "--allow-all",
      "--no-lock",
      child,
      layerPath,
      root,
    ],
    env: { DENO_DIR: denoDir, HOME: denoDir, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, stderr);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

peerTest("applyLayer() reports what rootless mode cannot apply (uid 65534)", {
  root: true,
  tools: ["setpriv"],
}, async () => {
  await using tmp = await makeTempDir();
  const dir = tmp.path;
  await Deno.chmod(dir, 0o755);
  const root = join(dir, "root");
  await Deno.mkdir(root);
  await Deno.chown(root, 65534, 65534);
  const data = await layer([
    { header: { name: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 } },
    { header: { name: "dev/sda", type: "block", devmajor: 8, devminor: 0 } },
    { header: { name: "run/fifo", type: "fifo", mode: 0o600 } },
    { header: { name: "etc/shadow", type: "file", mode: 0o640, uid: 0, gid: 42 }, body: "s" },
    { header: { name: "home/nobody/x", type: "file", uid: 65534, gid: 65534 }, body: "x" },
    { header: { name: "bin/su", type: "file", mode: 0o4755, uid: 65534, gid: 65534 }, body: "su" },
    { header: { name: "ro", type: "directory", mode: 0o555, uid: 65534, gid: 65534 } },
    { header: { name: "ro/f", type: "file", uid: 65534, gid: 65534 }, body: "f" },
    { header: { name: "locked", type: "directory", mode: 0o000, uid: 65534, gid: 65534 } },
    { header: { name: "locked/sub/file", type: "file", uid: 65534, gid: 65534 }, body: "l" },
  ]);
  const result = await applyAsNobody(dir, data, root);
  const reasons = (result.skipped as { path: string; reason: string }[]).map((s) =>
    `${s.path}: ${s.reason}`
  );
  assert.ok(
    reasons.some((r) => r.startsWith("dev/null: char device 1:3 not created")),
    reasons.join("\n"),
  );
  assert.ok(reasons.some((r) => r.startsWith("dev/sda: block device 8:0 not created")));
  assert.ok(reasons.some((r) => r.startsWith("etc/shadow: owner 0:42 not set")));
  assert.ok(
    !reasons.some((r) => r.startsWith("home/nobody/x")),
    "matching owners are not reported",
  );
  assert.ok(!exists(join(root, "dev/null")));
  assert.equal(type(lstat(join(root, "run/fifo"))), sys.S_IFIFO);
  const shadow = lstat(join(root, "etc/shadow"));
  assert.deepEqual([perm(shadow), shadow.uid], [0o640, 65534]);
  assert.equal(perm(lstat(join(root, "bin/su"))), 0o4755);
  assert.equal(perm(lstat(join(root, "ro"))), 0o555);
  assert.equal(await Deno.readTextFile(join(root, "ro/f")), "f");
  assert.equal(perm(lstat(join(root, "locked"))), 0o000);
  assert.equal(await Deno.readTextFile(join(root, "locked/sub/file")), "l");
});

peerTest(
  "rootless applyLayer() writes into directories earlier layers left unwritable, then puts their modes back (umoci)",
  {
    root: true,
    tools: ["setpriv"],
  },
  async () => {
    await using tmp = await makeTempDir();
    const dir = tmp.path;
    await Deno.chmod(dir, 0o755);
    const root = join(dir, "root");
    await Deno.mkdir(root);
    await Deno.chown(root, 65534, 65534);
    // The first layer leaves what RPM-based images have (0555 /usr/bin, 0550 /root) and worse.
    await applyAsNobody(
      dir,
      await layer([
        { header: { name: "usr/bin", type: "directory", mode: 0o555 } },
        { header: { name: "usr/bin/old", type: "file" }, body: "old" },
        { header: { name: "usr/bin/gone", type: "file" }, body: "gone" },
        { header: { name: "root", type: "directory", mode: 0o550 } },
        { header: { name: "locked", type: "directory", mode: 0o000 } },
        { header: { name: "locked/sub", type: "directory", mode: 0o500 } },
      ]),
      root,
    );
    assert.equal(perm(lstat(join(root, "usr/bin"))), 0o555);
    // The second layer adds, replaces and deletes in them, and makes a directory inside one.
    const result = await applyAsNobody(
      dir,
      await layer([
        { header: { name: "usr/bin/new", type: "file", mode: 0o755 }, body: "new" },
        { header: { name: "usr/bin/old", type: "file" }, body: "replaced" },
        { header: { name: "usr/bin/.wh.gone", type: "file" }, body: "" },
        { header: { name: "usr/bin/sub/x", type: "file" }, body: "x" },
        { header: { name: "root/.bashrc", type: "file" }, body: "rc" },
        { header: { name: "locked/sub/deep", type: "file" }, body: "deep" },
      ]),
      root,
    );
    assert.ok(result.skipped.every((s) => s.reason.startsWith("owner ")), JSON.stringify(result));
    assert.deepEqual(
      ["usr/bin", "usr/bin/sub", "root", "locked", "locked/sub"].map((p) =>
        perm(lstat(join(root, p))).toString(8)
      ),
      ["555", "755", "550", "0", "500"],
    );
    // Read back as root (the modes are the layers' again).
    for (
      const [path, text] of [
        ["usr/bin/new", "new"],
        ["usr/bin/old", "replaced"],
        ["usr/bin/sub/x", "x"],
        ["root/.bashrc", "rc"],
        ["locked/sub/deep", "deep"],
      ]
    ) {
      assert.equal(await Deno.readTextFile(join(root, path!)), text, path);
    }
    assert.ok(!exists(join(root, "usr/bin/gone")));
  },
);

peerTest("applyLayer() syncs the root's file system with syncFs", ROOT, async () => {
  await using tmp = await makeTempDir();
  const result = await apply(
    await layer([{ header: { name: "f", type: "file" }, body: "f" }]),
    tmp.path,
    { syncFs: true },
  );
  assert.equal(result.entries, 1);
  assert.ok(exists(join(tmp.path, "f")));
});

peerTest("applyLayer() stops at an aborted signal", ROOT, async () => {
  await using tmp = await makeTempDir();
  const controller = new AbortController();
  controller.abort(new Error("stop now"));
  const data = await layer([{ header: { name: "f", type: "file" }, body: "f" }]);
  await assert.rejects(apply(data, tmp.path, { signal: controller.signal }), /stop now/);
  assert.ok(!exists(join(tmp.path, "f")));
  const late = new AbortController();
  async function* source() {
    yield* chunks(data.subarray(0, 512));
    late.abort(new Error("stopped mid-way"));
    yield* chunks(data.subarray(512));
  }
  await assert.rejects(applyLayer(source(), tmp.path, { signal: late.signal }), /mid-way/);
});

peerTest(
  "applyToMounts() writes a bind source and an overlay upperdir directly",
  ROOT,
  async () => {
    await using tmp = await makeTempDir();
    const { lower, upper } = await overlaySetup(tmp.path);
    const data = await layer([
      { header: { name: ".wh.file", type: "file" } },
      { header: { name: "added", type: "file" }, body: "a" },
    ]);
    const work = join(tmp.path, "work");
    await Deno.mkdir(work);
    await applyToMounts(chunks(data), [{
      type: "overlay",
      source: "overlay",
      options: [`workdir=${work}`, `upperdir=${upper}`, `lowerdir=${lower}`],
    }], { syncFs: true });
    assert.equal(type(lstat(join(upper, "file"))), sys.S_IFCHR, "overlay policy by default");
    assert.ok(exists(join(upper, "added")));

    const bind = join(tmp.path, "bind");
    await Deno.mkdir(bind);
    await Deno.writeTextFile(join(bind, "file"), "f");
    await applyToMounts(chunks(data), [{ type: "bind", source: bind, options: ["rw", "rbind"] }]);
    assert.deepEqual([...Deno.readDirSync(bind)].map((e) => e.name), ["added"]);

    await assert.rejects(
      applyToMounts(chunks(data), [{ type: "bind", source: bind, options: ["ro", "rbind"] }]),
      FailedPrecondition,
    );
    await assert.rejects(applyToMounts(chunks(data), []), InvalidArgument);
  },
);

peerTest("applyToMounts() mounts anything else on a temporary directory", ROOT, async () => {
  await using tmp = await makeTempDir();
  const target = join(tmp.path, "target");
  await Deno.mkdir(target);
  await Deno.writeTextFile(join(target, "old"), "o");
  const data = await layer([
    { header: { name: ".wh.old", type: "file" } },
    { header: { name: "new", type: "file" }, body: "n" },
  ]);
  // A "none" type with the bind option is a bind mount that singleBindSource does not take.
  await applyToMounts(chunks(data), [{ type: "none", source: target, options: ["bind"] }], {
    tempMountDir: tmp.path,
  });
  assert.deepEqual([...Deno.readDirSync(target)].map((e) => e.name), ["new"]);
  const left = [...Deno.readDirSync(tmp.path)].map((e) => e.name).sort();
  assert.deepEqual(left, ["target"], "the temporary mount point is removed");
});

peerTest("applyLayer() reports a missing root or lower directory as NotFound", ROOT, async () => {
  await using tmp = await makeTempDir();
  const data = await layer([{ header: { name: "f", type: "file" }, body: "f" }]);
  await assert.rejects(apply(data, join(tmp.path, "missing")), NotFound);
  await assert.rejects(
    apply(data, tmp.path, { whiteouts: "overlay", lowerDirs: [join(tmp.path, "gone")] }),
    /Cannot apply layer to .* with lower directories/,
  );
  await Deno.writeTextFile(join(tmp.path, "file"), "");
  await assert.rejects(apply(data, join(tmp.path, "file")), InvalidArgument);
});
