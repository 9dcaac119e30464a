/**
 * Fidelity of the native snapshotter's copy (CopyDir, spec section 4.2): a tree with every kind
 * of entry is committed and a child prepared on it; the child must equal the parent in content,
 * modes, owners, nanosecond times (directories included, unlike containerd), xattrs, hardlink
 * groups, devices and holes.
 *
 * @module
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { MetadataDb } from "../../metadata/db.ts";
import { NativeSnapshotter } from "../../snapshotters/native.ts";
import {
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  close,
  fchmodat,
  fchownat,
  ftruncate,
  linkat,
  lsetxattr,
  makedev,
  mkdirat,
  mknodat,
  O_CREAT,
  O_WRONLY,
  open,
  pwrite,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFMT,
  S_IFSOCK,
  type Stat,
  statx,
  symlinkat,
  utimensat,
} from "../../sys/mod.ts";
import { diffTrees, findListing, snapshotTree } from "../_tree.ts";
import { peerTest } from "../_peers.ts";

const MIB = 1024 * 1024;

interface Built {
  /** Whether setting `security.capability` worked (then the copy must carry it). */
  capability: boolean;
}

function file(path: string, content: Uint8Array, mode = 0o644): void {
  Deno.writeFileSync(path, content);
  fchmodat(AT_FDCWD, path, mode, 0);
}

function dir(path: string, mode: number): void {
  mkdirat(AT_FDCWD, path, 0o700);
  fchmodat(AT_FDCWD, path, mode, 0);
}

/** Builds every kind of entry under `root`; times are set afterwards by {@linkcode stampTimes}. */
function buildTree(root: string): Built {
  const enc = new TextEncoder();
  file(join(root, "random"), randomBytes(300_000));
  file(join(root, "empty"), new Uint8Array(0), 0o600);
  file(join(root, "suid"), enc.encode("#!/bin/sh\n"), 0o755);
  fchownat(AT_FDCWD, join(root, "suid"), 0, 0, 0);
  fchmodat(AT_FDCWD, join(root, "suid"), 0o4755, 0);
  dir(join(root, "sgid"), 0o2775);
  dir(join(root, "sticky"), 0o1777);
  file(join(root, "sticky", "inside"), enc.encode("in"));
  file(join(root, "owned"), enc.encode("owned"), 0o640);
  fchownat(AT_FDCWD, join(root, "owned"), 1000, 2000, 0);
  fchmodat(AT_FDCWD, join(root, "owned"), 0o2640, 0);
  dir(join(root, "owned-dir"), 0o750);
  fchownat(AT_FDCWD, join(root, "owned-dir"), 1000, 2000, 0);
  file(join(root, "owned-dir", "f"), enc.encode("f"));
  symlinkat("f", AT_FDCWD, join(root, "owned-dir", "link"));
  fchownat(AT_FDCWD, join(root, "owned-dir", "link"), 1000, 2000, AT_SYMLINK_NOFOLLOW);
  file(join(root, "xattr-file"), enc.encode("x"));
  lsetxattr(join(root, "xattr-file"), "user.a", enc.encode("file value"));
  dir(join(root, "xattr-dir"), 0o755);
  lsetxattr(join(root, "xattr-dir"), "user.a", enc.encode("dir value"));
  lsetxattr(join(root, "xattr-dir"), "trusted.strata", enc.encode("root only"));
  file(join(root, "capfile"), enc.encode("cap"), 0o755);
  let capability = true;
  try {
    // VFS_CAP_REVISION_2 with the effective bit, permitted CAP_NET_BIND_SERVICE (10).
    const cap = new Uint8Array(20);
    new DataView(cap.buffer).setUint32(0, 0x02000001, true);
    new DataView(cap.buffer).setUint32(4, 1 << 10, true);
    lsetxattr(join(root, "capfile"), "security.capability", cap);
  } catch {
    capability = false;
  }
  dir(join(root, "links"), 0o755);
  file(join(root, "links", "h1"), randomBytes(5000));
  linkat(AT_FDCWD, join(root, "links", "h1"), AT_FDCWD, join(root, "links", "h2"), 0);
  linkat(AT_FDCWD, join(root, "links", "h1"), AT_FDCWD, join(root, "h3"), 0);
  file(join(root, "links", "g1"), randomBytes(10));
  linkat(AT_FDCWD, join(root, "links", "g1"), AT_FDCWD, join(root, "sticky", "g2"), 0);
  dir(join(root, "dev"), 0o755);
  mknodat(AT_FDCWD, join(root, "dev", "null"), S_IFCHR | 0o666, makedev(1, 3));
  mknodat(AT_FDCWD, join(root, "dev", "loop0"), S_IFBLK | 0o660, makedev(7, 0));
  fchownat(AT_FDCWD, join(root, "dev", "loop0"), 0, 6, 0);
  mknodat(AT_FDCWD, join(root, "fifo"), S_IFIFO | 0o620, 0);
  mknodat(AT_FDCWD, join(root, "socket"), S_IFSOCK | 0o755, 0);
  const sparse = join(root, "sparse");
  const fd = open(sparse, O_WRONLY | O_CREAT, 0o644);
  try {
    pwrite(fd, randomBytes(4096), 0);
    pwrite(fd, randomBytes(4096), 32 * MIB);
    ftruncate(fd, 64 * MIB);
  } finally {
    close(fd);
  }
  symlinkat("missing/target", AT_FDCWD, join(root, "dangling"));
  symlinkat("/etc/passwd", AT_FDCWD, join(root, "absolute"));
  let deep = root;
  for (let i = 0; i < 40; i++) {
    deep = join(deep, `level-${i}`);
    dir(deep, 0o755);
  }
  file(join(deep, "bottom"), enc.encode("bottom"));
  return { capability };
}

/** Lists every path under `root` (relative, `.` for the root), children before their parent. */
function postOrder(root: string, rel = "."): string[] {
  const abs = rel === "." ? root : join(root, rel);
  const out: string[] = [];
  if ((statx(AT_FDCWD, abs, AT_SYMLINK_NOFOLLOW).mode & S_IFMT) === S_IFDIR) {
    for (const entry of [...Deno.readDirSync(abs)].sort((a, b) => a.name < b.name ? -1 : 1)) {
      out.push(...postOrder(root, rel === "." ? entry.name : `${rel}/${entry.name}`));
    }
  }
  out.push(rel);
  return out;
}

/** Gives every entry distinct atime and mtime with nanoseconds, children before directories. */
function stampTimes(root: string, paths: string[]): void {
  let n = 0;
  for (const rel of paths) {
    n++;
    const path = rel === "." ? root : join(root, rel);
    utimensat(AT_FDCWD, path, [
      { sec: 1_500_000_000 + n, nsec: 111_111_111 + n },
      { sec: 1_600_000_000 + n, nsec: 987_654_321 - n },
    ], AT_SYMLINK_NOFOLLOW);
  }
}

/**
 * Stats the given paths without listing any directory: reading a directory would update its
 * atime (relatime), which is what the test compares.
 */
function statPaths(root: string, paths: string[]): Map<string, Stat> {
  const out = new Map<string, Stat>();
  for (const rel of paths) {
    out.set(rel, statx(AT_FDCWD, rel === "." ? root : join(root, rel), AT_SYMLINK_NOFOLLOW));
  }
  return out;
}

function ts(t: { sec: number; nsec: number }): string {
  return `${t.sec}.${String(t.nsec).padStart(9, "0")}`;
}

peerTest("native copy keeps every entry, owner, mode, ns time, xattr, link and hole", {
  root: true,
  tools: ["getfattr"],
}, async () => {
  const root = await Deno.makeTempDir({ prefix: "strata-copy-" });
  const db = MetadataDb.open(root);
  const warnings: string[] = [];
  const sn = new NativeSnapshotter(join(root, "snapshots", "native"), db, {
    onWarning: (message) => warnings.push(message),
  });
  try {
    const [src] = await sn.prepare("tree");
    const source = src!.source;
    const { capability } = buildTree(source);
    const paths = postOrder(source);
    stampTimes(source, paths);
    await sn.commit("base", "tree");
    const before = statPaths(source, paths);

    const [dst] = await sn.prepare("copy", { parent: "base" });
    const copy = dst!.source;
    const after = statPaths(copy, paths);
    assert.deepEqual(warnings, []);

    // Nanosecond times, modes, owners and device numbers of every entry, the root included.
    // (Whether the copy has exactly these paths is checked with snapshotTree below.)
    const mismatches: string[] = [];
    for (const [rel, want] of before) {
      const got = after.get(rel)!;
      const fields: [string, unknown, unknown][] = [
        ["mode", got.mode.toString(8), want.mode.toString(8)],
        ["uid", got.uid, want.uid],
        ["gid", got.gid, want.gid],
        ["rdev", got.rdev, want.rdev],
        ["nlink", got.nlink, want.nlink],
        ["mtime", ts(got.mtime), ts(want.mtime)],
        ["atime", ts(got.atime), ts(want.atime)],
      ];
      for (const [what, g, w] of fields) {
        if (g !== w) mismatches.push(`${rel}: ${what} ${g} != ${w}`);
      }
    }
    assert.deepEqual(mismatches, []);

    // Holes stay holes: the copy allocates what the source does, far less than 64 MiB.
    const sparseBefore = before.get("sparse")!;
    const sparseAfter = after.get("sparse")!;
    assert.equal(sparseAfter.size, 64 * MIB);
    assert.ok(sparseAfter.blocks <= sparseBefore.blocks, `${sparseAfter.blocks} blocks`);
    assert.ok(sparseAfter.blocks * 512 < MIB, `${sparseAfter.blocks * 512} bytes allocated`);

    // Content, types, link targets, hardlink groups and xattrs (read with getfattr).
    const a = await snapshotTree(source);
    const b = await snapshotTree(copy);
    assert.deepEqual(diffTrees(a, b), []);
    assert.equal(b.get("links/h1")?.hardlinkGroup, "h3");
    assert.equal(b.get("sticky/g2")?.hardlinkGroup, "links/g1");
    assert.equal(b.get("xattr-dir")?.xattrs?.["trusted.strata"], "726f6f74206f6e6c79");
    assert.equal(b.get("xattr-file")?.xattrs?.["user.a"], "66696c652076616c7565");
    assert.equal(b.get("dev/null")?.type, "char");
    assert.equal(b.get("dev/loop0")?.type, "block");
    assert.equal(b.get("socket")?.type, "socket");
    assert.equal(b.get("suid")?.mode, 0o4755);
    assert.equal(b.get("owned")?.mode, 0o2640);
    if (capability) assert.ok(b.get("capfile")?.xattrs?.["security.capability"] !== undefined);
    // The copy is a separate inode tree.
    assert.notEqual(after.get("random")!.ino, before.get("random")!.ino);
  } finally {
    await sn.close();
    db.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("native copy keeps names that are not UTF-8 byte for byte", async () => {
  const root = await Deno.makeTempDir({ prefix: "strata-copy-" });
  const db = MetadataDb.open(root);
  const sn = new NativeSnapshotter(join(root, "snapshots", "native"), db);
  try {
    const [src] = await sn.prepare("tree");
    const source = src!.source;
    // Latin-1 "café" (63 61 66 e9) and "b\xff" as Strata's calls take them (U+DC80-U+DCFF).
    mkdirat(AT_FDCWD, join(source, "caf\udce9"), 0o755);
    close(open(join(source, "caf\udce9", "b\udcff"), O_WRONLY | O_CREAT, 0o644));
    symlinkat("b\udcff", AT_FDCWD, join(source, "caf\udce9", "link"));
    await sn.commit("base", "tree");
    const [dst] = await sn.prepare("copy", { parent: "base" });
    const want = findListing(source);
    assert.deepEqual(want, ["caf\xe9 ", "caf\xe9/b\xff ", "caf\xe9/link b\xff"]);
    assert.deepEqual(findListing(dst!.source), want);
  } finally {
    db.close();
    await Deno.remove(root, { recursive: true });
  }
});
