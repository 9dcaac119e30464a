// The cases of the layer-safety corpus (spec/layer-safety.md section 2), shared by the corpus
// test (both snapshotters) and its working-directory child. Each case builds its layers and says
// whether the last (or a given) layer is rejected, or what the applied tree must look like.

import assert from "node:assert/strict";
import { join } from "node:path";
import type { ApplyOptions, ApplyResult } from "../../diff/apply.ts";
import { FailedPrecondition, InvalidArgument } from "../../errors.ts";
import * as sys from "../../sys/mod.ts";
import { findListing } from "../_tree.ts";
import {
  bytes,
  concat,
  exists,
  gzip,
  layer,
  lstat,
  paxEntry,
  rawEntry,
  rawTar,
  sha256,
  withoutEnd,
  zstd,
} from "./_helpers.ts";

export type Kind = "native" | "overlay";

/** Where a layer is applied: the snapshot root's parent, the root's name, the victim dir. */
export interface Ctx {
  parent: string;
  rootName: string;
  victim: string;
}

export type ErrorClass = typeof InvalidArgument | typeof FailedPrecondition;

export interface Case {
  id: string;
  title: string;
  /** All case layers (built for the snapshot the layer at hand goes into). */
  layers(ctx: Ctx): Promise<Uint8Array[]> | Uint8Array[];
  /** Apply options for a layer. */
  options?(index: number, layers: Uint8Array[]): ApplyOptions | Promise<ApplyOptions>;
  /** The layer (default: the last) is rejected with this error. */
  reject?: { error: ErrorClass; message: RegExp; layer?: number };
  /** Checks the final view (the snapshot dir, or the merged overlay). */
  check?(view: string, ctx: Ctx, result: ApplyResult, kind: Kind): void | Promise<void>;
}

export const T = { sec: 1700000000, nsec: 123456789 };
export function read(view: string, path: string): string {
  return Deno.readTextFileSync(join(view, path));
}

export function kindAt(view: string, path: string): string {
  if (!exists(join(view, path))) return "absent";
  const mode = lstat(join(view, path)).mode & sys.S_IFMT;
  return {
    [sys.S_IFREG]: "file",
    [sys.S_IFDIR]: "dir",
    [sys.S_IFLNK]: "symlink",
    [sys.S_IFCHR]: "char",
    [sys.S_IFBLK]: "block",
    [sys.S_IFIFO]: "fifo",
  }[mode] ?? "other";
}

export function perm(view: string, path: string): number {
  return lstat(join(view, path)).mode & 0o7777;
}

/** A file's content, opened through Strata's calls (names that are not UTF-8 included). */
export function readRaw(view: string, path: string): string {
  const fd = sys.open(join(view, path), sys.O_RDONLY | sys.O_CLOEXEC);
  try {
    const buf = new Uint8Array(4096);
    return new TextDecoder().decode(buf.subarray(0, sys.read(fd, buf)));
  } finally {
    sys.close(fd);
  }
}

export function names(view: string, path = "."): string[] {
  return [...Deno.readDirSync(join(view, path))].map((e) => e.name).sort();
}

export function file(name: string, body = name, extra: Record<string, unknown> = {}) {
  return { header: { name, type: "file" as const, ...extra }, body };
}

export function dir(name: string, extra: Record<string, unknown> = {}) {
  return { header: { name, type: "directory" as const, ...extra } };
}

export function symlink(name: string, linkname: string) {
  return { header: { name, type: "symlink" as const, linkname } };
}

export function hardlink(name: string, linkname: string) {
  return { header: { name, type: "hardlink" as const, linkname } };
}

const invalid = (message: RegExp, layerIndex?: number) => ({
  error: InvalidArgument,
  message,
  ...(layerIndex === undefined ? {} : { layer: layerIndex }),
});

// ---------------------------------------------------------------------------------------------
// The cases.

export const CASES: Case[] = [
  // A. Entry names
  {
    id: "A1",
    title: "dot-dot name is confined as root/victim/pwn (CONFINE, containerd)",
    layers: async () => [await layer([file("../victim/pwn", "pwned?")])],
    check: (v) => assert.equal(read(v, "victim/pwn"), "pwned?"),
  },
  {
    id: "A2",
    title: "absolute names lose their leading slash (CONFINE)",
    layers: async () => [await layer([file("/etc/pwn"), file("/../victim/pwn2")])],
    check: (v) => {
      assert.equal(read(v, "etc/pwn"), "/etc/pwn");
      assert.equal(read(v, "victim/pwn2"), "/../victim/pwn2");
    },
  },
  {
    id: "A3",
    title: "exit-and-re-enter names are cleaned lexically inside the root (CONFINE)",
    layers: async (ctx) => [
      await layer([file("a/../../victim/pwn"), file(`../${ctx.rootName}/x`, "x")]),
    ],
    check: (v, ctx) => {
      assert.equal(read(v, "victim/pwn"), "a/../../victim/pwn");
      assert.equal(read(v, `${ctx.rootName}/x`), "x");
      assert.equal(kindAt(v, "a"), "absent");
    },
  },
  {
    id: "A4",
    title: "root entries '.', './' and '..' are ignored, the root keeps its attributes (IGNORE)",
    layers: () => [
      rawTar(
        rawEntry({ name: ".", typeflag: "5", mode: 0o700, uid: 42 }),
        rawEntry({ name: "./", typeflag: "5", mode: 0o700, uid: 42 }),
        rawEntry({ name: "..", typeflag: "0" }, bytes("dotdot")),
      ),
    ],
    check: (v, _ctx, result) => {
      const root = lstat(v);
      assert.notEqual(root.mode & 0o7777, 0o700);
      assert.notEqual(root.uid, 42);
      // The reader drops a directory's trailing slash: "./" is reported as ".".
      assert.deepEqual(result.skipped.map((s) => s.path), [".", ".", ".."]);
    },
  },
  {
    id: "A5",
    title: "a symlink for the root never changes its type; a later layer writes inside (IGNORE)",
    layers: (ctx) =>
      Promise.all([
        layer([symlink(".", ctx.victim), symlink("/", ctx.victim)]),
        layer([file("pwn", "inside")]),
      ]),
    check: (v) => {
      assert.equal(kindAt(v, "."), "dir");
      assert.equal(read(v, "pwn"), "inside");
    },
  },
  {
    id: "A6",
    title: "empty names (file and symlink) are ignored, never the root (IGNORE)",
    layers: () => [
      rawTar(
        rawEntry({ name: "", typeflag: "0" }, bytes("empty")),
        rawEntry({ name: "", typeflag: "2", linkname: "/etc" }),
      ),
    ],
    check: (v, _ctx, result) => {
      assert.equal(kindAt(v, "."), "dir");
      assert.deepEqual(result.skipped.map((s) => s.path), ["", ""]);
    },
  },
  {
    id: "A7",
    title: "hardlink to ../<root>-evil/secret: the target is looked up inside (REJECT, missing)",
    layers: async (ctx) => [await layer([hardlink("h", `../${ctx.rootName}-evil/secret`)])],
    reject: invalid(/hardlink target .*-evil\/secret" does not exist/),
  },
  {
    id: "A7b",
    title: "written through a symlink to ../<root>-evil, the file stays inside (CONFINE)",
    layers: async (ctx) => [
      await layer([symlink("s", `../${ctx.rootName}-evil`), file("s/written", "w")]),
    ],
    check: (v, ctx) => assert.equal(read(v, `${ctx.rootName}-evil/written`), "w"),
  },

  // B. Symlinks
  {
    id: "B8",
    title: "localetc -> /etc then localetc/unbroken lands in root/etc (CONFINE)",
    layers: async () => [
      await layer([dir("etc"), symlink("localetc", "/etc"), file("localetc/unbroken", "u")]),
    ],
    check: (v) => {
      assert.equal(read(v, "etc/unbroken"), "u");
      assert.equal(kindAt(v, "localetc"), "symlink");
    },
  },
  {
    id: "B9",
    title: "loophole -> ../victim then loophole/file lands in root/victim (CONFINE)",
    layers: async () => [await layer([symlink("loophole", "../victim"), file("loophole/file")])],
    check: (v) => assert.equal(read(v, "victim/file"), "loophole/file"),
  },
  {
    id: "B10",
    title: "parents created through dir/loophole -> ../../victim stay inside (CONFINE)",
    layers: async () => [
      await layer([symlink("dir/loophole", "../../victim"), file("dir/loophole/newdir/newfile")]),
    ],
    check: (v) => assert.equal(kindAt(v, "victim/newdir/newfile"), "file"),
  },
  {
    id: "B12",
    title: "a symlink loop is refused without hanging (REJECT, ELOOP)",
    layers: async () => [await layer([symlink("a", "b"), symlink("b", "a"), file("a/x")])],
    reject: invalid(/too many levels of symbolic links/),
  },
  {
    id: "B16",
    title: "a lower layer's usr/lib/x -> /etc confines the upper layer's write to root/etc",
    layers: (_ctx) =>
      Promise.all([
        layer([symlink("usr/lib/x", "/etc")]),
        layer([file("usr/lib/x/cron.d/pwn", "cron")]),
      ]),
    check: (v) => {
      assert.equal(read(v, "etc/cron.d/pwn"), "cron");
      assert.equal(kindAt(v, "usr/lib/x"), "symlink");
    },
  },
  {
    id: "B16b",
    title: "a lower layer's usr/lib/x -> ../../../../etc confines the write to root/etc",
    layers: () =>
      Promise.all([
        layer([dir("etc", { mode: 0o711 }), symlink("usr/lib/x", "../../../../etc")]),
        layer([file("usr/lib/x/cron.d/pwn", "cron")]),
      ]),
    check: (v) => {
      assert.equal(read(v, "etc/cron.d/pwn"), "cron");
      assert.equal(perm(v, "etc"), 0o711);
    },
  },
  {
    id: "B17",
    title: "a directory replaces a lower symlink; its file lives in it",
    layers: () =>
      Promise.all([
        layer([symlink("localetc", "/etc"), file("etc/passwd", "in-root")]),
        layer([dir("localetc"), file("localetc/localpasswd", "local")]),
      ]),
    check: (v) => {
      assert.equal(kindAt(v, "localetc"), "dir");
      assert.equal(read(v, "localetc/localpasswd"), "local");
      assert.equal(kindAt(v, "etc/localpasswd"), "absent");
      assert.equal(read(v, "etc/passwd"), "in-root");
    },
  },
  {
    id: "B18",
    title: "a dangerous symlink target is stored verbatim (OK)",
    layers: async () => [await layer([symlink("passwdlink", "../../../../../etc/passwd")])],
    check: (v) =>
      assert.equal(Deno.readLinkSync(join(v, "passwdlink")), "../../../../../etc/passwd"),
  },

  // C. Hardlinks
  ...[
    ["C19", "an absolute target", "/etc/passwd"],
    ["C20", "a relative escaping target", "../../../../../etc/passwd"],
  ].map(([id, what, target]): Case => ({
    id: id!,
    title: `a hardlink with ${what} links root/etc/passwd (CONFINE)`,
    layers: async () => [
      await layer([file("etc/passwd", "in-root"), hardlink("localpasswd", target!)]),
    ],
    check: (v) => {
      assert.equal(lstat(join(v, "localpasswd")).ino, lstat(join(v, "etc/passwd")).ino);
      assert.equal(read(v, "localpasswd"), "in-root");
    },
  })),
  {
    id: "C21",
    title: "a hardlink target through breakouts/d1 -> ../../etc resolves inside (CONFINE)",
    layers: async () => [
      await layer([
        file("etc/passwd", "in-root"),
        symlink("breakouts/d1", "../../etc"),
        hardlink("breakouts/mypasswd", "breakouts/d1/passwd"),
      ]),
    ],
    check: (v) =>
      assert.equal(lstat(join(v, "breakouts/mypasswd")).ino, lstat(join(v, "etc/passwd")).ino),
  },
  {
    id: "C23",
    title: "a hardlink to a symlink links the symlink itself (OK)",
    layers: async () => [
      await layer([file("zzz", "z", { mode: 0o600 }), symlink("xxx", "zzz"), {
        header: { name: "yyy", type: "hardlink" as const, linkname: "xxx", mode: 0o777 },
      }]),
    ],
    check: (v) => {
      assert.equal(kindAt(v, "yyy"), "symlink");
      assert.equal(lstat(join(v, "yyy")).ino, lstat(join(v, "xxx")).ino);
      assert.equal(perm(v, "zzz"), 0o600);
    },
  },
  {
    id: "C24",
    title: "a hardlink to a directory is refused (REJECT)",
    layers: async () => [await layer([dir("d"), hardlink("dl", "d")])],
    reject: invalid(/hardlink target "d" is a directory/),
  },
  {
    id: "C25",
    title: "a hardlink to itself is refused (REJECT)",
    layers: async () => [await layer([hardlink("a", "a")])],
    reject: invalid(/hardlink target "a" does not exist/),
  },
  {
    id: "C25b",
    title: "a hardlink to a missing target is refused (REJECT)",
    layers: async () => [await layer([hardlink("b", "missing")])],
    reject: invalid(/hardlink target "missing" does not exist/),
  },

  // D. Whiteouts
  ...[".wh..", "etc/.wh..", ".wh...", "etc/.wh...", ".wh.", "etc/.wh."].map((name, i): Case => ({
    id: i < 4 ? `D28-${i + 1}` : `D29-${i - 3}`,
    title: `whiteout ${JSON.stringify(name)} is invalid (REJECT)`,
    layers: async () => [await layer([dir("etc"), file(name, "")])],
    reject: invalid(/invalid whiteout name/),
  })),
  {
    id: "D30",
    title: "a whiteout through a lower symlinked parent removes root/etc/whitedout (CONFINE)",
    layers: () =>
      Promise.all([
        layer([symlink("localetc", "/etc"), file("etc/whitedout"), file("etc/kept")]),
        layer([file("localetc/.wh.whitedout", "")]),
      ]),
    check: (v) => {
      assert.equal(kindAt(v, "etc/whitedout"), "absent");
      assert.equal(kindAt(v, "etc/kept"), "file");
    },
  },
  {
    id: "D31",
    title: "a whiteout of a symlink removes only the link",
    layers: () =>
      Promise.all([
        layer([symlink("localetc", "/etc"), file("etc/keep")]),
        layer([file(".wh.localetc", "")]),
      ]),
    check: (v) => {
      assert.equal(kindAt(v, "localetc"), "absent");
      assert.equal(kindAt(v, "etc/keep"), "file");
    },
  },
  {
    id: "D32",
    title: "a whiteout under a dangling link is a no-op (nothing created)",
    layers: () =>
      Promise.all([layer([symlink("localetc", "/dne")]), layer([file("localetc/.wh.etc", "")])]),
    check: (v) => {
      assert.equal(kindAt(v, "dne"), "absent");
      assert.equal(kindAt(v, "localetc"), "symlink");
    },
  },
  {
    id: "D33",
    title: ".wh.etc/somefile is literal; AUFS .wh..wh.* metadata is ignored (IGNORE)",
    layers: async () => [
      await layer([
        dir("etc"),
        file(".wh.etc/somefile", "s"),
        file(".wh..wh.plnk/123.4", "plnk"),
        dir(".wh..wh.orph"),
      ]),
    ],
    check: (v, _ctx, result) => {
      assert.equal(read(v, ".wh.etc/somefile"), "s");
      assert.equal(kindAt(v, "etc"), "dir");
      assert.equal(kindAt(v, ".wh..wh.plnk"), "absent");
      assert.equal(kindAt(v, ".wh..wh.orph"), "absent");
      assert.deepEqual(result.skipped.map((s) => s.path), [".wh..wh.plnk/123.4", ".wh..wh.orph"]);
    },
  },
  {
    id: "D34",
    title: "an opaque marker after its siblings keeps them (OK: foo present, bar absent)",
    layers: () =>
      Promise.all([
        layer([file("a/b/c/bar")]),
        layer([dir("a"), dir("a/b"), dir("a/b/c"), file("a/b/c/foo"), file("a/.wh..wh..opq", "")]),
      ]),
    check: (v) => assert.deepEqual(names(v, "a/b/c"), ["foo"]),
  },
  {
    id: "D35",
    title: "a whiteout of a directory removes the whole subtree",
    layers: () =>
      Promise.all([layer([file("dir/sub/deep"), file("dir/x")]), layer([file(".wh.dir", "")])]),
    check: (v) => assert.equal(kindAt(v, "dir"), "absent"),
  },
  {
    id: "D35b",
    title:
      "a whiteout after this layer wrote into the directory hides only the lower content (DEVIATION: containerd deletes it all, or fails on overlay)",
    layers: () =>
      Promise.all([
        layer([
          file("d/f", "old"),
          file("d/other"),
          file("d/sub/x"),
          file("g/a"),
          file("h/a"),
        ]),
        layer([
          file("d/f", "new"),
          file("d/new/n"),
          file(".wh.d", ""),
          // Only a whiteout of this layer below it: nothing of this layer stays, so it goes.
          file("g/.wh.a", ""),
          file(".wh.g", ""),
          // Listed by this layer: it stays, empty.
          dir("h"),
          file(".wh.h", ""),
        ]),
      ]),
    check: (v) => {
      // OCI: whiteouts apply to lower layers only; what the same layer put there stays.
      assert.deepEqual(names(v, "d"), ["f", "new"]);
      assert.equal(read(v, "d/f"), "new");
      assert.deepEqual(names(v, "d/new"), ["n"]);
      assert.equal(kindAt(v, "g"), "absent");
      assert.equal(kindAt(v, "h"), "dir");
      assert.deepEqual(names(v, "h"), []);
    },
  },
  {
    id: "D38",
    title: "a whiteout of nothing is fine",
    layers: async () => [await layer([file(".wh.ghost", "")])],
    check: (v) => assert.equal(kindAt(v, "ghost"), "absent"),
  },
  {
    id: "D39",
    title: "non-empty or non-regular whiteouts act by name, never materialise (by name)",
    layers: () =>
      Promise.all([
        layer([file("foo"), file("foo2"), file("foo3")]),
        layer([
          dir(".wh.foo"),
          symlink(".wh.foo2", "target"),
          file(".wh.foo3", "0123456789"),
        ]),
      ]),
    check: (v) =>
      assert.deepEqual(names(v).filter((n) => n.startsWith("foo") || n.startsWith(".wh")), []),
  },

  // E. Types and metadata
  {
    id: "E40",
    title: "device nodes are created inside the root as root",
    layers: async () => [
      await layer([
        { header: { name: "dev/sda", type: "block", devmajor: 8, devminor: 0, mode: 0o660 } },
        { header: { name: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 } },
      ]),
    ],
    check: (v) => {
      assert.equal(kindAt(v, "dev/sda"), "block");
      assert.equal(lstat(join(v, "dev/sda")).rdev, sys.makedev(8, 0));
      assert.equal(lstat(join(v, "dev/null")).rdev, sys.makedev(1, 3));
    },
  },
  {
    id: "E40b",
    title: "device major 2^32 is refused (REJECT)",
    layers: async () => [
      await layer([{ header: { name: "dev/x", type: "char", devmajor: 2 ** 32, devminor: 0 } }], {
        format: "gnu",
      }),
    ],
    reject: invalid(/device number 4294967296:0 is out of range/),
  },
  {
    id: "E40c",
    title: "a negative device minor is refused (REJECT)",
    layers: () => [
      rawTar(rawEntry({ name: "dev/y", typeflag: "3", devminor: new Uint8Array(8).fill(0xff) })),
    ],
    reject: invalid(/device number 0:-1 is out of range/),
  },
  {
    id: "E40d",
    title: "a char 0:0 entry is a whiteout on both snapshotters (convert)",
    layers: () =>
      Promise.all([
        layer([file("dev/gone")]),
        layer([{ header: { name: "dev/gone", type: "char", devmajor: 0, devminor: 0 } }]),
      ]),
    check: (v) => assert.equal(kindAt(v, "dev/gone"), "absent"),
  },
  {
    id: "E41",
    title: "setuid, sticky and setgid modes and owners are exact (no setgid leaking into sub)",
    layers: async () => [
      await layer([
        file("bin/su", "su", { mode: 0o4755, uid: 0 }),
        dir("tmp", { mode: 0o1777 }),
        dir("srv", { mode: 0o2775, gid: 50 }),
        dir("srv/sub", { mode: 0o755, gid: 0 }),
      ]),
    ],
    check: (v) => {
      assert.equal(perm(v, "bin/su"), 0o4755);
      assert.equal(perm(v, "tmp"), 0o1777);
      assert.equal(perm(v, "srv"), 0o2775);
      assert.equal(lstat(join(v, "srv")).gid, 50);
      assert.equal(perm(v, "srv/sub"), 0o755);
      assert.equal(lstat(join(v, "srv/sub")).gid, 0);
    },
  },
  {
    id: "E42",
    title: "security.capability is set (as root)",
    layers: async () => [
      await layer([{
        header: {
          name: "bin/ping",
          type: "file",
          mode: 0o755,
          xattrs: {
            "security.capability": new Uint8Array([
              0,
              0,
              0,
              2,
              0,
              0x20,
              0,
              0,
              ...new Array(12).fill(0),
            ]),
          },
        },
        body: "ping",
      }]),
    ],
    check: (v) =>
      assert.equal(sys.lgetxattr(join(v, "bin/ping"), "security.capability").length, 20),
  },
  {
    id: "E44",
    title: "1000 xattrs on one entry fill ext4's xattr space (REJECT cleanly, ENOSPC)",
    layers: async () => {
      const xattrs: Record<string, Uint8Array> = {};
      for (let i = 0; i < 1000; i++) xattrs[`user.k${i}`] = bytes("0123456789abcdef");
      return [await layer([{ header: { name: "many", type: "file", xattrs }, body: "" }])];
    },
    reject: invalid(/cannot set xattr "user\.k\d+" .*ENOSPC/),
  },
  {
    id: "E44b",
    title: "a 70 000-byte xattr value is refused (REJECT, E2BIG)",
    layers: async () => [
      await layer([{
        header: { name: "big", type: "file", xattrs: { "user.big": new Uint8Array(70000) } },
        body: "",
      }]),
    ],
    reject: invalid(/cannot set xattr "user\.big" \(70000 bytes\).*E2BIG/),
  },
  {
    id: "E44c",
    title: "a 256-byte xattr name is refused (REJECT, ERANGE)",
    layers: async () => [
      await layer([{
        header: { name: "long", type: "file", xattrs: { [`user.${"n".repeat(251)}`]: bytes("v") } },
        body: "",
      }]),
    ],
    reject: invalid(/ERANGE/),
  },
  {
    id: "E46",
    title: "timestamps are applied or clamped to the epoch; directory mtimes survive children",
    layers: async () => [
      await layer([
        dir("times", { mtime: T }),
        file("times/negative", "", { mtime: { sec: -5, nsec: 0 } }),
        file("times/zero", "", { mtime: { sec: 0, nsec: 0 } }),
        file("times/2-33", "", { mtime: { sec: 2 ** 33, nsec: 0 } }),
        file("times/after-2262", "", { mtime: { sec: 9223372037, nsec: 0 } }),
        file("times/fraction", "", { mtime: { sec: 1, nsec: 500000000 } }),
        file("times/atime-only", "", { mtime: { sec: 0, nsec: 0 }, atime: { sec: 99, nsec: 9 } }),
      ]),
    ],
    check: (v) => {
      const m = (p: string) => lstat(join(v, "times", p)).mtime;
      assert.deepEqual(m("negative"), { sec: 0, nsec: 0 });
      assert.deepEqual(m("zero"), { sec: 0, nsec: 0 });
      assert.deepEqual(m("2-33"), { sec: 2 ** 33, nsec: 0 });
      assert.deepEqual(m("after-2262"), { sec: 0, nsec: 0 });
      assert.deepEqual(m("fraction"), { sec: 1, nsec: 500000000 });
      assert.deepEqual(lstat(join(v, "times/atime-only")).atime, { sec: 99, nsec: 9 });
      assert.deepEqual(lstat(join(v, "times")).mtime, T);
    },
  },
  {
    id: "E47",
    title: "'\\0' and '7' are regular files, a 'g' global header creates nothing (7: regular)",
    layers: () => [
      rawTar(
        rawEntry({ name: "old-regular", typeflag: "\0" }, bytes("old")),
        rawEntry({ name: "contiguous", typeflag: "7" }, bytes("contig")),
        paxEntry({ comment: "global" }, { global: true, name: "foo/bar" }),
        rawEntry({ name: "after", typeflag: "0" }, bytes("after")),
      ),
    ],
    check: (v) => {
      assert.equal(read(v, "old-regular"), "old");
      assert.equal(read(v, "contiguous"), "contig");
      assert.equal(kindAt(v, "foo"), "absent");
      assert.equal(read(v, "after"), "after");
    },
  },
  ...["V", "M", "D", "N"].map((flag): Case => ({
    id: `E47-${flag}`,
    title: `type flag '${flag}' is refused (REJECT)`,
    layers: () => [rawTar(rawEntry({ name: `entry-${flag}`, typeflag: flag }))],
    reject: invalid(new RegExp(`unhandled tar header type "${flag}"`)),
  })),
  {
    id: "E48",
    title: "a FIFO is created",
    layers:
      async () => [await layer([{ header: { name: "run/fifo", type: "fifo", mode: 0o600 } }])],
    check: (v) => assert.equal(kindAt(v, "run/fifo"), "fifo"),
  },

  // F. Format and encoding
  {
    id: "F49",
    title: "long names and link targets give identical results in ustar, GNU and PAX",
    layers: async () => {
      const long = (tag: string) =>
        `${tag}/${"d".repeat(60)}/${"e".repeat(60)}/file-${"f".repeat(20)}`;
      const target = `/${"t".repeat(150)}`;
      const ustar = withoutEnd(await layer([file(long("ustar"), "same")]));
      const gnu = withoutEnd(
        await layer([file(long("gnu"), "same"), symlink("gnu-link", target)], { format: "gnu" }),
      );
      const pax = concat(
        paxEntry({ path: long("pax") }),
        rawEntry({ name: "truncated-name", typeflag: "0" }, bytes("same")),
        paxEntry({ linkpath: target }),
        rawEntry({ name: "pax-link", typeflag: "2", linkname: "short" }),
      );
      return [rawTar(ustar, gnu, pax)];
    },
    check: (v) => {
      for (const tag of ["ustar", "gnu", "pax"]) {
        assert.equal(
          read(v, `${tag}/${"d".repeat(60)}/${"e".repeat(60)}/file-${"f".repeat(20)}`),
          "same",
        );
      }
      assert.equal(Deno.readLinkSync(join(v, "gnu-link")), `/${"t".repeat(150)}`);
      assert.equal(Deno.readLinkSync(join(v, "pax-link")), `/${"t".repeat(150)}`);
      assert.equal(kindAt(v, "truncated-name"), "absent");
    },
  },
  {
    id: "F50",
    title: "a 256-byte component is refused (REJECT, ENAMETOOLONG)",
    layers: async () => [await layer([file(`dir/${"x".repeat(256)}`)])],
    reject: invalid(/ENAMETOOLONG/),
  },
  {
    id: "F50b",
    title: "a path over 4095 bytes is refused, never truncated (REJECT)",
    layers: async () => [
      await layer([file(Array.from({ length: 20 }, (_, i) => `${i}`.padEnd(250, "x")).join("/"))]),
    ],
    reject: invalid(/longer than 4095 bytes/),
  },
  {
    id: "F51",
    title:
      "UTF-8, newline, backslash and colon names are byte-exact; names that are not UTF-8 keep their bytes (containerd)",
    layers: () => {
      const latin1 = new Uint8Array([0x62, 0xff, 0xfe]); // "b\xff\xfe"
      const cafe = new Uint8Array([0x63, 0x61, 0x66, 0xe9]); // Latin-1 "café"
      // A PAX path record carrying raw bytes, as Go's archive/tar writes for such names.
      const record = concat(bytes(" path="), cafe, bytes("/menu\n"));
      let length = record.length + 2;
      if (String(length).length !== 2) throw new Error("the record needs another length");
      length = record.length + String(length).length;
      return [rawTar(
        paxEntry({ path: "données/日本語.txt" }),
        rawEntry({ name: "x", typeflag: "0" }, bytes("utf8")),
        rawEntry({ name: "new\nline\\back:colon", typeflag: "0" }, bytes("odd")),
        rawEntry({ name: latin1, typeflag: "0" }, bytes("latin")),
        rawEntry({ name: concat(cafe, bytes("/")), typeflag: "5" }),
        rawEntry({ name: "PaxHeader", typeflag: "x" }, concat(bytes(String(length)), record)),
        rawEntry({ name: "ignored", typeflag: "0" }, bytes("menu")),
        rawEntry({ name: "link", typeflag: "2", linkname: latin1 }),
        rawEntry({ name: "hard", typeflag: "1", linkname: latin1 }),
        rawEntry({ name: bytes("\ufeffbom"), typeflag: "0" }, bytes("bom")),
      )];
    },
    check: (v) => {
      assert.equal(read(v, "données/日本語.txt"), "utf8");
      assert.ok(names(v, "données").includes("日本語.txt"));
      assert.equal(read(v, "new\nline\\back:colon"), "odd");
      // The names and link target on disk, as bytes (find, not Strata's decoding).
      const found = findListing(v);
      for (
        const line of [
          "b\xff\xfe ",
          "caf\xe9 ",
          "caf\xe9/menu ",
          "\xef\xbb\xbfbom ",
          "link b\xff\xfe",
        ]
      ) {
        assert.ok(found.includes(line), `${JSON.stringify(line)} on disk`);
      }
      // Strata's names for them open the same files.
      assert.equal(readRaw(v, "b\udcff\udcfe"), "latin");
      assert.equal(readRaw(v, "caf\udce9/menu"), "menu");
      assert.equal(readRaw(v, "\ufeffbom"), "bom");
      assert.equal(sys.readlinkat(sys.AT_FDCWD, join(v, "link")), "b\udcff\udcfe");
      assert.equal(lstat(join(v, "hard")).ino, lstat(join(v, "b\udcff\udcfe")).ino);
    },
  },
  {
    id: "F53",
    title: "GNU and PAX 0.0/0.1/1.0 sparse files keep their holes; a 1 TiB map writes no zeros",
    layers: async () => {
      const run = new Uint8Array(4096).fill(0x73);
      const sparse = (realSize: number) => ({
        realSize,
        segments: [{ offset: 0, length: 4096 }, { offset: realSize - 4096, length: 4096 }],
      });
      const GiB = 1024 ** 3;
      const gnu = withoutEnd(
        await layer([{
          header: { name: "gnu-sparse", type: "file", sparse: sparse(GiB) },
          body: concat(run, run),
        }], { format: "gnu" }),
      );
      const pax10 = withoutEnd(
        await layer([{
          header: { name: "pax10-sparse", type: "file", sparse: sparse(GiB) },
          body: concat(run, run),
        }, {
          header: { name: "bomb", type: "file", sparse: sparse(1024 * GiB) },
          body: concat(run, run),
        }]),
      );
      const pax00 = concat(
        paxEntry([
          ["GNU.sparse.size", String(GiB)],
          ["GNU.sparse.numblocks", "2"],
          ["GNU.sparse.offset", "0"],
          ["GNU.sparse.numbytes", "4096"],
          ["GNU.sparse.offset", String(GiB - 4096)],
          ["GNU.sparse.numbytes", "4096"],
        ]),
        rawEntry({ name: "pax00-sparse", typeflag: "0" }, concat(run, run)),
      );
      const pax01 = concat(
        paxEntry({
          "GNU.sparse.size": String(GiB),
          "GNU.sparse.numblocks": "2",
          "GNU.sparse.map": `0,4096,${GiB - 4096},4096`,
        }),
        rawEntry({ name: "pax01-sparse", typeflag: "0" }, concat(run, run)),
      );
      return [rawTar(gnu, pax10, pax00, pax01)];
    },
    check: (v) => {
      const GiB = 1024 ** 3;
      for (
        const [name, size] of [
          ["gnu-sparse", GiB],
          ["pax10-sparse", GiB],
          ["pax00-sparse", GiB],
          ["pax01-sparse", GiB],
          ["bomb", 1024 * GiB],
        ] as const
      ) {
        const st = lstat(join(v, name));
        assert.equal(st.size, size, name);
        assert.ok(st.blocks * 512 <= 64 * 1024, `${name}: ${st.blocks} blocks`);
        const fd = sys.open(join(v, name), sys.O_RDONLY);
        try {
          const buf = new Uint8Array(4096);
          sys.pread(fd, buf, size - 4096);
          assert.ok(buf.every((b) => b === 0x73), `${name}: last run`);
          sys.pread(fd, buf, size / 2);
          assert.ok(buf.every((b) => b === 0), `${name}: hole`);
        } finally {
          sys.close(fd);
        }
      }
    },
  },
  {
    id: "F54",
    title: "duplicates: the later entry wins, a directory twice merges",
    layers: async () => [
      await layer([
        file("etc/conf", "first"),
        file("etc/conf", "second"),
        dir("d", { mode: 0o700 }),
        file("d/child"),
        dir("d", { mode: 0o750 }),
        file("x"),
        dir("x"),
        file("y/child"),
        file("y", "now a file"),
      ]),
    ],
    check: (v) => {
      assert.equal(read(v, "etc/conf"), "second");
      assert.equal(perm(v, "d"), 0o750);
      assert.equal(kindAt(v, "d/child"), "file");
      assert.equal(kindAt(v, "x"), "dir");
      assert.equal(read(v, "y"), "now a file");
    },
  },
  {
    id: "F55",
    title: "out-of-order entries: implied parents, later directory entries set them",
    layers: async () => [
      await layer([
        file("a/b/c/file", "f"),
        dir("a", { mode: 0o700, uid: 1000 }),
        dir("a/b", { mode: 0o711 }),
        hardlink("h/link", "a/b/c/file"),
      ]),
    ],
    check: (v) => {
      assert.equal(perm(v, "a"), 0o700);
      assert.equal(lstat(join(v, "a")).uid, 1000);
      assert.equal(perm(v, "a/b"), 0o711);
      assert.equal(perm(v, "h"), 0o755);
      assert.equal(lstat(join(v, "h/link")).ino, lstat(join(v, "a/b/c/file")).ino);
    },
  },
  {
    id: "F56",
    title: "children of 0555 and 000 directories are written, final modes as the headers",
    layers: async () => [
      await layer([
        dir("ro", { mode: 0o555 }),
        file("ro/f"),
        dir("locked", { mode: 0o000 }),
        file("locked/sub/file"),
      ]),
    ],
    check: (v) => {
      assert.equal(perm(v, "ro"), 0o555);
      assert.equal(perm(v, "locked"), 0o000);
      assert.equal(read(v, "ro/f"), "ro/f");
      assert.equal(read(v, "locked/sub/file"), "locked/sub/file");
    },
  },
  {
    id: "F57",
    title: "a file where a parent directory is needed is refused (REJECT, never followed)",
    layers: async () => [await layer([file("a"), file("a/b")])],
    reject: invalid(/"a" is not a directory/),
  },
  {
    id: "F57b",
    title: "an error names an entry with its bytes that are not UTF-8 as \\xNN (REJECT)",
    layers: async () => [await layer([file("caf\udce9"), file("caf\udce9/b\n")])],
    reject: invalid(/entry "caf\\xe9\/b\\x0a": .*"caf\\xe9" is not a directory/),
  },

  // G. Resource exhaustion
  {
    id: "G59",
    title: "a 10 MB PAX comment is refused by the header limit (REJECT)",
    layers: async () => [
      await layer([{
        header: { name: "f", type: "file", pax: { comment: "c".repeat(10_000_000) } },
        body: "",
      }]),
    ],
    reject: invalid(/exceeds the limit of 1048576 bytes/),
  },
  {
    id: "G59b",
    title: "a 2 MB xattr record is refused by the header limit (REJECT)",
    layers: async () => [
      await layer([{
        header: { name: "f", type: "file", xattrs: { "user.huge": new Uint8Array(2_000_000) } },
        body: "",
      }]),
    ],
    reject: invalid(/exceeds the limit of 1048576 bytes/),
  },
  {
    id: "G59c",
    title: "a 5 MB GNU long name is refused by the header limit (REJECT)",
    layers: async () => [await layer([file("n/".repeat(2_500_000) + "f")], { format: "gnu" })],
    reject: invalid(/exceeds the limit of 1048576 bytes/),
  },
  {
    id: "G60",
    title: "100 000 empty files (scaled down from 10^6) and 1000-level nesting apply",
    layers: async () => {
      const entries: Parameters<typeof layer>[0] = [];
      for (let i = 0; i < 100_000; i++) entries.push(file(`many/${i}`, ""));
      let path = "deep";
      for (let i = 0; i < 1000; i++) {
        entries.push(dir(path));
        path += "/d";
      }
      entries.push(file(`${path}/leaf`));
      return [await layer(entries)];
    },
    check: (v) => {
      assert.equal(names(v, "many").length, 100_000);
      assert.ok(exists(join(v, "deep" + "/d".repeat(1000) + "/leaf")));
    },
  },
  {
    id: "G60b",
    title: "a 10 000-level path is refused (REJECT, longer than 4095 bytes)",
    layers: () => [rawTar(paxEntry({ path: "d/".repeat(10_000) + "f" }), rawHeader0("ignored"))],
    reject: invalid(/longer than 4095 bytes/),
  },
  ...([
    ["gzip", () => gzip(bytes("not a tar archive\n".repeat(100)))],
    ["zstd", () => zstd(bytes("not a tar archive\n".repeat(100)))],
    ["bzip2", () => concat(bytes("BZh91AY&SY"), new Uint8Array(600).fill(7))],
    [
      "xz",
      () => concat(new Uint8Array([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0]), new Uint8Array(600).fill(7)),
    ],
    ["short", () => bytes("short")],
  ] as const).map(([name, make]): Case => ({
    id: `G61-${name}`,
    title: `junk (${name}) is refused quickly (REJECT)`,
    layers: () => [make()],
    reject: invalid(/tar|Cannot apply/),
  })),

  // H. Stream integrity
  ...([
    [
      "empty blob",
      new Uint8Array(0),
      "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ],
    [
      "1024 zero bytes",
      new Uint8Array(1024),
      "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
    ],
    ["10240 zero bytes", new Uint8Array(10240), undefined],
  ] as const).map(([what, data, diffId], i): Case => ({
    id: `H62-${i + 1}`,
    title: `${what} is an empty layer (a declared +gzip is not enforced: detected by magic)`,
    layers: () => [data],
    options: () => (diffId === undefined ? {} : { expectedDiffId: diffId }),
    check: (_v, _ctx, result) => {
      assert.equal(result.entries, 0);
      assert.equal(result.diffId, diffId ?? sha256(data));
      if (diffId === undefined) assert.match(result.diffId, /^sha256:84ff9269.*d652$/);
    },
  })),
  {
    id: "H64",
    title: "a truncated gzip layer is refused (REJECT)",
    layers: async () => {
      const gz = gzip(await layer([file("big", "x".repeat(100_000) + Math.random())]));
      return [gz.subarray(0, gz.length - 10)];
    },
    reject: invalid(/Cannot decompress gzip stream/),
  },
  {
    id: "H65",
    title: "a tar cut at an entry boundary parses, the diffID check refuses it (REJECT)",
    layers: async () => {
      const full = await layer([file("one"), file("two")]);
      return [full.subarray(0, 1024)];
    },
    options: async () => ({ expectedDiffId: sha256(await layer([file("one"), file("two")])) }),
    reject: { error: FailedPrecondition, message: /diffID "sha256:[0-9a-f]{64}" does not match/ },
  },
  {
    id: "H66",
    title: "a wrong diffID is refused after the apply (REJECT)",
    layers: async () => [await layer([file("f")])],
    options: () => ({ expectedDiffId: `sha256:${"1".repeat(64)}` }),
    reject: { error: FailedPrecondition, message: /does not match the expected "sha256:1111/ },
  },
  {
    id: "H66b",
    title: "a wrong compressed digest is refused (REJECT, after streaming)",
    layers: async () => [gzip(await layer([file("f")]))],
    options: () => ({ expectedDigest: `sha256:${"2".repeat(64)}` }),
    reject: { error: FailedPrecondition, message: /digest "sha256:[0-9a-f]{64}" does not match/ },
  },
  {
    id: "H67",
    title: "a zstd layer declared +gzip is detected by magic; the diffID still matches",
    layers: async () => [zstd(await layer([file("f", "zstd inside")]))],
    options: () => ({}),
    check: async (v, _ctx, result) => {
      assert.equal(read(v, "f"), "zstd inside");
      assert.equal(result.diffId, sha256(await layer([file("f", "zstd inside")])));
    },
  },

  // I. Benign multi-layer semantics
  {
    id: "I68",
    title: "a hardlink to a file of the same layer shares its inode",
    layers: async () => [await layer([file("a"), hardlink("b", "a")])],
    check: (v) => {
      assert.equal(lstat(join(v, "b")).ino, lstat(join(v, "a")).ino);
      assert.equal(lstat(join(v, "a")).nlink, 2);
    },
  },
  {
    id: "I69",
    title: "a hardlink to a lower-only file works on both (overlay: the target is copied up)",
    layers: () =>
      Promise.all([
        layer([file("lib/target", "lower", { mode: 0o640, uid: 3, mtime: T })]),
        layer([{
          header: {
            name: "lib/link",
            type: "hardlink",
            linkname: "lib/target",
            mode: 0o640,
            uid: 4,
          },
        }]),
      ]),
    check: (v) => {
      assert.equal(read(v, "lib/link"), "lower");
      assert.equal(lstat(join(v, "lib/link")).ino, lstat(join(v, "lib/target")).ino);
      assert.equal(lstat(join(v, "lib/target")).nlink, 2);
      // As in containerd, the link's header metadata goes to the shared inode.
      assert.equal(lstat(join(v, "lib/target")).uid, 4);
    },
  },
  {
    id: "I72",
    title: "file<->directory, symlink->directory and non-empty directory->file across layers",
    layers: () =>
      Promise.all([
        layer([file("f"), file("d/child"), symlink("s", "/etc"), file("n/deep/x")]),
        layer([
          dir("f"),
          file("f/inner"),
          file("d", "file now"),
          dir("s"),
          file("s/in"),
          file("n"),
        ]),
      ]),
    check: (v) => {
      assert.deepEqual(names(v, "f"), ["inner"]);
      assert.equal(read(v, "d"), "file now");
      assert.deepEqual(names(v, "s"), ["in"]);
      assert.equal(kindAt(v, "n"), "file");
      assert.equal(kindAt(v, "etc/in"), "absent");
    },
  },
  {
    id: "I73",
    title: "a directory whited out, then re-created: only the new children show",
    layers: () =>
      Promise.all([
        layer([file("dir/old")]),
        layer([file(".wh.dir", "")]),
        layer([dir("dir"), file("dir/new")]),
      ]),
    check: (v) => assert.deepEqual(names(v, "dir"), ["new"]),
  },
  {
    id: "I74",
    title: "an opaque directory in a later layer keeps only its own children",
    layers: () =>
      Promise.all([
        layer([file("dir/a"), file("dir/b")]),
        layer([file("dir/c"), file("dir/.wh..wh..opq", "")]),
      ]),
    check: (v) => assert.deepEqual(names(v, "dir"), ["c"]),
  },
  {
    id: "I75",
    title: "a metadata-only directory entry replaces attributes and keeps lower children",
    layers: () =>
      Promise.all([
        layer([dir("dir", { mode: 0o755 }), file("dir/child")]),
        layer([dir("dir", { mode: 0o700, uid: 5, mtime: T })]),
      ]),
    check: (v) => {
      assert.equal(perm(v, "dir"), 0o700);
      assert.equal(lstat(join(v, "dir")).uid, 5);
      assert.deepEqual(lstat(join(v, "dir")).mtime, T);
      assert.deepEqual(names(v, "dir"), ["child"]);
    },
  },
];

function rawHeader0(name: string, typeflag = "0"): Uint8Array {
  return rawEntry({ name, typeflag });
}
