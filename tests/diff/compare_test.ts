import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { ContentStore } from "../../content/mod.ts";
import { FailedPrecondition, InvalidArgument, NotFound, NotImplemented } from "../../errors.ts";
import { MetadataDb } from "../../metadata/db.ts";
import { readOnlyMounts, withTempMount } from "../../mount/mod.ts";
import { applyLayer } from "../../diff/apply.ts";
import { compareMounts, compareSnapshot, writeDiff } from "../../diff/compare.ts";
import { decompress } from "../../diff/compression.ts";
import { readTar, type TarHeader } from "../../diff/tar/mod.ts";
import { openSnapshotter } from "../../snapshotters/mod.ts";
import * as sys from "../../sys/mod.ts";
import { encodeName } from "../../sys/_names.ts";
import { makeTempDir, peerTest, runOk } from "../_peers.ts";
import { diffTrees, findListing, snapshotTree } from "../_tree.ts";

const OCI_TAR = "application/vnd.oci.image.layer.v1.tar";
const OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";
const UNCOMPRESSED = "containerd.io/uncompressed";
/** The mtime every entry gets unless a test says otherwise. */
const T0: sys.Timespec = { sec: 1_600_000_000, nsec: 0 };

// --- building trees -----------------------------------------------------------------------------

interface Meta {
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: sys.Timespec;
}

function setMeta(path: string, meta: Meta, defaultMode: number | undefined): void {
  if (meta.uid !== undefined || meta.gid !== undefined) {
    sys.fchownat(sys.AT_FDCWD, path, meta.uid ?? 0, meta.gid ?? 0, sys.AT_SYMLINK_NOFOLLOW);
  }
  const mode = meta.mode ?? defaultMode;
  if (mode !== undefined) Deno.chmodSync(path, mode);
  const mtime = meta.mtime ?? T0;
  sys.utimensat(sys.AT_FDCWD, path, [mtime, mtime], sys.AT_SYMLINK_NOFOLLOW);
}

/** Builds entries under a root; parents must be created first. */
class Tree {
  constructor(readonly root: string) {}

  path(rel: string): string {
    return join(this.root, rel);
  }

  dir(rel: string, meta: Meta = {}): this {
    Deno.mkdirSync(this.path(rel));
    setMeta(this.path(rel), meta, 0o755);
    return this;
  }

  file(rel: string, content: string, meta: Meta = {}): this {
    Deno.writeTextFileSync(this.path(rel), content);
    setMeta(this.path(rel), meta, 0o644);
    return this;
  }

  symlink(rel: string, target: string, meta: Meta = {}): this {
    Deno.symlinkSync(target, this.path(rel));
    setMeta(this.path(rel), meta, undefined);
    return this;
  }

  link(rel: string, existing: string): this {
    Deno.linkSync(this.path(existing), this.path(rel));
    return this;
  }

  node(rel: string, type: number, dev = 0, meta: Meta = {}): this {
    sys.mknodat(sys.AT_FDCWD, this.path(rel), type | 0o644, dev);
    setMeta(this.path(rel), meta, 0o644);
    return this;
  }
}

interface Pair extends AsyncDisposable {
  lower: Tree;
  upper: Tree;
  dir: string;
}

async function pair(): Promise<Pair> {
  const tmp = await makeTempDir({ prefix: "strata-compare-" });
  Deno.mkdirSync(join(tmp.path, "lower"));
  Deno.mkdirSync(join(tmp.path, "upper"));
  return {
    lower: new Tree(join(tmp.path, "lower")),
    upper: new Tree(join(tmp.path, "upper")),
    dir: tmp.path,
    [Symbol.asyncDispose]: () => tmp.stop(),
  };
}

// --- reading layers -----------------------------------------------------------------------------

interface Entry {
  header: TarHeader;
  data: Uint8Array;
}

async function* once(data: Uint8Array): AsyncGenerator<Uint8Array, void, undefined> {
  yield data;
}

async function diffBytes(
  lower: string,
  upper: string,
  options: Parameters<typeof writeDiff>[3] = {},
): Promise<{ tar: Uint8Array; entries: number }> {
  const parts: Uint8Array[] = [];
  const { entries } = await writeDiff(lower, upper, (chunk) => {
    parts.push(chunk);
    return Promise.resolve();
  }, options);
  const tar = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    tar.set(p, pos);
    pos += p.length;
  }
  return { tar, entries };
}

async function readEntries(tar: Uint8Array): Promise<Entry[]> {
  const out: Entry[] = [];
  for await (const entry of readTar(once(tar))) {
    const parts: Uint8Array[] = [];
    for await (const chunk of entry.body) parts.push(chunk.slice());
    const data = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let pos = 0;
    for (const p of parts) {
      data.set(p, pos);
      pos += p.length;
    }
    out.push({ header: entry.header, data });
  }
  return out;
}

/** One line per entry: `dir a`, `file a/b`, `symlink s -> t`, `link b -> a`, `char c 1:3`. */
function describe(h: TarHeader): string {
  switch (h.type) {
    case "directory":
      return `dir ${h.name}`;
    case "symlink":
      return `symlink ${h.name} -> ${h.linkname}`;
    case "hardlink":
      return `link ${h.name} -> ${h.linkname}`;
    case "char":
    case "block":
      return `${h.type} ${h.name} ${h.devmajor}:${h.devminor}`;
    default:
      return `${h.type} ${h.name}`;
  }
}

async function listDiff(p: Pair, options: Parameters<typeof writeDiff>[3] = {}): Promise<string[]> {
  const { tar, entries } = await diffBytes(p.lower.root, p.upper.root, options);
  const list = (await readEntries(tar)).map((e) => describe(e.header));
  assert.equal(entries, list.length, "writeDiff() counts the entries it wrote");
  return list;
}

async function headers(p: Pair, options: Parameters<typeof writeDiff>[3] = {}) {
  const { tar } = await diffBytes(p.lower.root, p.upper.root, options);
  return new Map((await readEntries(tar)).map((e) => [e.header.name, e]));
}

// --- the double walk: entry tables ----------------------------------------------------------------

interface Case {
  name: string;
  root?: boolean;
  build(lower: Tree, upper: Tree): void;
  expected: string[];
}

const CASES: Case[] = [
  {
    name: "identical trees give an empty layer",
    build(l, u) {
      for (const t of [l, u]) t.dir("d").file("d/f", "same").symlink("s", "d/f");
    },
    expected: [],
  },
  {
    name: "an added file is written after its unchanged parent directory",
    build(l, u) {
      l.dir("d");
      u.dir("d").file("d/new", "new");
    },
    expected: ["dir d", "file d/new"],
  },
  {
    name: "parents are included once, before their children (ParentInclusion)",
    build(l, u) {
      l.dir("d1").dir("d2");
      u.dir("d1").dir("d1/d").dir("d2").file("d2/f", "x");
    },
    expected: ["dir d1", "dir d1/d", "dir d2", "file d2/f"],
  },
  {
    name: "entries come in depth-first name order with / sorting lowest",
    build(_l, u) {
      u.dir("a").file("a/b", "1").file("a.b", "2").file("a-", "3").file("B", "4");
    },
    // "a-" sorts before "a/b" bytewise, but "/" sorts lowest: "a/b" < "a-" < "a.b".
    expected: ["file B", "dir a", "file a/b", "file a-", "file a.b"],
  },
  {
    name: "a content change with the same size and whole-second mtimes is found by content",
    build(l, u) {
      l.file("f", "aaaa");
      u.file("f", "bbbb");
    },
    expected: ["file f"],
  },
  {
    name: "a content change with the same size and the same nanosecond mtime is not seen",
    build(l, u) {
      // containerd's rule: content is compared only when both mtimes have no nanoseconds.
      const mtime = { sec: T0.sec, nsec: 123 };
      l.file("f", "aaaa", { mtime });
      u.file("f", "bbbb", { mtime });
    },
    expected: [],
  },
  {
    name: "a different mtime second or nanosecond is a change",
    build(l, u) {
      l.file("sec", "x").file("nsec", "x", { mtime: { sec: T0.sec, nsec: 1 } });
      u.file("sec", "x", { mtime: { sec: T0.sec + 1, nsec: 0 } })
        .file("nsec", "x", { mtime: { sec: T0.sec, nsec: 2 } });
    },
    expected: ["file nsec", "file sec"],
  },
  {
    name: "a mode-only change is a change",
    build(l, u) {
      l.file("f", "x", { mode: 0o644 }).file("g", "x");
      u.file("f", "x", { mode: 0o4755 }).file("g", "x");
    },
    expected: ["file f"],
  },
  {
    name: "a chown is a change",
    root: true,
    build(l, u) {
      l.file("f", "x").file("g", "x");
      u.file("f", "x", { uid: 1000, gid: 1001 }).file("g", "x");
    },
    expected: ["file f"],
  },
  {
    name: "a deleted file becomes a whiteout",
    build(l, u) {
      l.dir("d").file("d/f", "x").file("d/keep", "k");
      u.dir("d").file("d/keep", "k");
    },
    expected: ["dir d", "file d/.wh.f"],
  },
  {
    name: "a deleted directory is one whiteout, its children none",
    build(l, u) {
      l.dir("d").dir("d/sub").file("d/sub/f", "x").file("d/g", "y").file("z", "z");
      u.file("z", "z");
    },
    expected: ["file .wh.d"],
  },
  {
    name: "a directory replaced by a file gives no whiteouts for its children",
    build(l, u) {
      l.dir("d").file("d/x", "x").dir("d/y");
      u.file("d", "now a file");
    },
    expected: ["file d"],
  },
  {
    name: "a file replaced by a directory is the directory and its children",
    build(l, u) {
      l.file("d", "a file");
      u.dir("d").file("d/x", "x");
    },
    expected: ["dir d", "file d/x"],
  },
  {
    name: "a changed symlink target is found (same length, whole-second mtimes)",
    build(l, u) {
      l.file("a", "1").file("b", "2").symlink("s", "a").symlink("same", "a");
      u.file("a", "1").file("b", "2").symlink("s", "b").symlink("same", "a");
    },
    expected: ["symlink s -> b"],
  },
  {
    name: "a directory whose only change is its mtime is not written",
    build(l, u) {
      l.dir("d", { mtime: { sec: 1, nsec: 0 } }).file("d/f", "x");
      u.dir("d", { mtime: { sec: 2, nsec: 5 } }).file("d/f", "x");
    },
    expected: [],
  },
  {
    name: "a directory with a new mode is written without its unchanged children",
    build(l, u) {
      l.dir("d", { mode: 0o755 }).file("d/f", "x");
      u.dir("d", { mode: 0o1777 }).file("d/f", "x");
    },
    expected: ["dir d"],
  },
  {
    name: "a new hardlink group is one file and links to it",
    build(_l, u) {
      u.file("a", "shared").link("b", "a").dir("d").link("d/c", "a");
    },
    expected: ["file a", "link b -> a", "dir d", "link d/c -> a"],
  },
  {
    name: "an unchanged hardlink group is not written",
    build(l, u) {
      for (const t of [l, u]) t.file("a", "shared").link("b", "a");
    },
    expected: [],
  },
  {
    name: "a new member of an unchanged group re-emits the earlier unchanged partners as links",
    build(l, u) {
      l.file("a", "shared").link("c", "a");
      u.file("a", "shared").link("b", "a").link("c", "a");
    },
    expected: ["file b", "link a -> b", "link c -> b"],
  },
  {
    name: "a partly changed group: the changed member is the source (HardlinkParentInclusion)",
    build(l, u) {
      // In upper, "x" joins the group of "d/a" and "e/b" by replacing a separate file.
      l.dir("d").file("d/a", "shared").dir("e").link("e/b", "d/a").file("x", "other");
      u.dir("d").file("d/a", "shared").dir("e").link("e/b", "d/a").link("x", "d/a");
    },
    expected: ["file x", "dir d", "link d/a -> x", "dir e", "link e/b -> x"],
  },
  {
    name:
      "a hardlink split that changes nothing else is not seen (containerd compares no link counts)",
    build(l, u) {
      l.file("x", "same").link("y", "x");
      u.file("x", "same").file("y", "same");
    },
    expected: [],
  },
  {
    name: "devices and fifos are written with their numbers",
    root: true,
    build(_l, u) {
      u.dir("dev")
        .node("dev/null", sys.S_IFCHR, sys.makedev(1, 3))
        .node("dev/loop0", sys.S_IFBLK, sys.makedev(7, 0))
        .node("dev/big", sys.S_IFCHR, sys.makedev(300, 70000))
        .node("dev/fifo", sys.S_IFIFO);
    },
    expected: [
      "dir dev",
      "char dev/big 300:70000",
      "fifo dev/fifo",
      "block dev/loop0 7:0",
      "char dev/null 1:3",
    ],
  },
  {
    name: "a changed device number is a change",
    root: true,
    build(l, u) {
      l.node("c", sys.S_IFCHR, sys.makedev(1, 3));
      u.node("c", sys.S_IFCHR, sys.makedev(1, 5));
    },
    expected: ["char c 1:5"],
  },
  {
    name: "sockets are skipped",
    build(l, u) {
      l.dir("d");
      u.dir("d").node("d/sock", sys.S_IFSOCK).node("sock", sys.S_IFSOCK);
    },
    expected: [],
  },
  {
    name: "a deleted socket still gets a whiteout",
    build(l, _u) {
      l.node("sock", sys.S_IFSOCK);
    },
    expected: ["file .wh.sock"],
  },
];

for (const c of CASES) {
  const run = async (): Promise<void> => {
    await using p = await pair();
    c.build(p.lower, p.upper);
    assert.deepEqual(await listDiff(p), c.expected);
  };
  if (c.root === true) peerTest(`writeDiff() walk: ${c.name}`, { root: true }, run);
  else Deno.test(`writeDiff() walk: ${c.name}`, run);
}

// --- the double walk: headers -------------------------------------------------------------------

Deno.test("writeDiff() writes whiteouts as empty files with mode 0, owner 0:0 and mtime 0", async () => {
  await using p = await pair();
  const owner: Meta = Deno.uid() === 0 ? { uid: 5, gid: 5 } : {};
  p.lower.dir("d", owner).file("d/gone", "x", { ...owner, mode: 0o755 });
  p.upper.dir("d", owner);
  const h = (await headers(p, { sourceDateEpoch: new Date(1_000_000) })).get("d/.wh.gone")!.header;
  assert.deepEqual(
    { type: h.type, size: h.size, mode: h.mode, uid: h.uid, gid: h.gid, mtime: h.mtime },
    { type: "file", size: 0, mode: 0, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 } },
  );
});

Deno.test("writeDiff() headers carry type, mode, owner, size, link text and second-truncated mtimes", async () => {
  await using p = await pair();
  p.upper.dir("d", { mode: 0o2750, mtime: { sec: 1_700_000_000, nsec: 999_999_999 } })
    .file("d/f", "hello", { mode: 0o4711, mtime: { sec: 1_700_000_001, nsec: 5 } })
    .symlink("d/s", "../target/path", { mtime: { sec: 1_700_000_002, nsec: 7 } });
  const dirTime = { sec: 1_700_000_000, nsec: 999_999_999 };
  sys.utimensat(sys.AT_FDCWD, p.upper.path("d"), [dirTime, dirTime], 0);
  const got = await headers(p);
  const dir = got.get("d")!.header;
  assert.deepEqual([dir.type, dir.mode, dir.mtime], ["directory", 0o2750, {
    sec: 1_700_000_000,
    nsec: 0,
  }]);
  const file = got.get("d/f")!;
  assert.deepEqual([file.header.mode, file.header.size, file.header.mtime], [0o4711, 5, {
    sec: 1_700_000_001,
    nsec: 0,
  }]);
  assert.equal(new TextDecoder().decode(file.data), "hello");
  const link = got.get("d/s")!.header;
  assert.deepEqual([link.type, link.linkname, link.mtime.sec], [
    "symlink",
    "../target/path",
    1_700_000_002,
  ]);
  for (const { header } of got.values()) {
    assert.deepEqual(
      [header.uname, header.gname],
      ["", ""],
      `no user or group names on ${header.name}`,
    );
    assert.equal(header.atime, undefined);
    assert.equal(header.ctime, undefined);
    assert.equal(header.uid, Deno.uid());
  }
});

Deno.test("writeDiff() lowers later mtimes to sourceDateEpoch and leaves earlier ones", async () => {
  await using p = await pair();
  p.upper.file("old", "o", { mtime: { sec: 1000, nsec: 500 } })
    .file("new", "n", { mtime: { sec: 2_000_000_000, nsec: 0 } });
  const got = await headers(p, { sourceDateEpoch: new Date(1_500_000_000_750) });
  assert.deepEqual(got.get("old")!.header.mtime, { sec: 1000, nsec: 0 });
  assert.deepEqual(got.get("new")!.header.mtime, { sec: 1_500_000_000, nsec: 0 });
});

peerTest(
  "writeDiff() carries only the security.capability xattr (containerd's rule: user.*, trusted.* and security.selinux are dropped)",
  { root: true },
  async () => {
    await using p = await pair();
    const cap = new Uint8Array([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    p.lower.file("same", "x").file("capchanged", "x");
    p.upper.file("same", "x").file("capchanged", "x").file("new", "n");
    for (const rel of ["new", "capchanged"]) {
      sys.lsetxattr(p.upper.path(rel), "security.capability", cap);
    }
    sys.lsetxattr(p.upper.path("new"), "user.note", new TextEncoder().encode("dropped"));
    sys.lsetxattr(p.upper.path("new"), "trusted.note", new TextEncoder().encode("dropped"));
    // A user.* change alone is no change.
    sys.lsetxattr(p.upper.path("same"), "user.note", new TextEncoder().encode("ignored"));
    const got = await headers(p);
    assert.deepEqual([...got.keys()], ["capchanged", "new"]);
    for (const entry of got.values()) {
      assert.deepEqual(Object.keys(entry.header.xattrs), ["security.capability"]);
      assert.deepEqual(entry.header.xattrs["security.capability"], cap);
    }
  },
);

Deno.test("writeDiff() never writes the root, even when its metadata changed", async () => {
  await using p = await pair();
  Deno.chmodSync(p.upper.root, 0o700);
  p.upper.file("f", "x");
  assert.deepEqual(await listDiff(p), ["file f"]);
});

Deno.test("writeDiff() refuses a missing or non-directory root and an invalid epoch", async () => {
  await using p = await pair();
  p.upper.file("f", "x");
  const sink = async (): Promise<void> => {};
  await assert.rejects(writeDiff(join(p.dir, "nope"), p.upper.root, sink), NotFound);
  await assert.rejects(writeDiff(p.lower.root, p.upper.path("f"), sink), InvalidArgument);
  await assert.rejects(
    writeDiff(p.lower.root, p.upper.root, sink, { sourceDateEpoch: new Date(NaN) }),
    InvalidArgument,
  );
});

Deno.test("writeDiff() streams a large file's content exactly", async () => {
  await using p = await pair();
  const big = new Uint8Array(3 * 1024 * 1024 + 17);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 11)) & 0xff;
  Deno.writeFileSync(p.upper.path("big"), big);
  const got = (await headers(p)).get("big")!;
  assert.equal(got.header.size, big.length);
  assert.equal(sha256(got.data), sha256(big));
});

// --- the overlay upperdir walk --------------------------------------------------------------------

peerTest("writeDiff() upperdirOnly: 0:0 devices are whiteouts, opaque dirs get .wh..wh..opq", {
  root: true,
}, async () => {
  await using p = await pair();
  // lower = the merged tree below, upper = an overlay upperdir made by hand.
  p.lower.dir("keep").file("keep/a", "a").dir("opq").file("opq/old", "o").file("gone", "g")
    .dir("same", { mode: 0o750 }).file("same/f", "f").dir("chmod");
  p.upper.node("gone", sys.S_IFCHR, 0, { mode: 0 })
    .dir("keep").file("keep/b", "b")
    .dir("opq").file("opq/new", "n")
    .dir("same", { mode: 0o750 })
    .dir("chmod", { mode: 0o700 })
    .dir("fresh").node("fresh/sock", sys.S_IFSOCK);
  sys.lsetxattr(p.upper.path("opq"), "trusted.overlay.opaque", new TextEncoder().encode("y"));
  // Shared whiteouts are hardlinks of one 0:0 device; they must stay whiteouts.
  p.upper.link("keep/.hidden", "gone");
  p.lower.file("keep/.hidden", "h");
  assert.deepEqual(await listDiff(p, { upperdirOnly: true }), [
    "dir chmod",
    "dir fresh",
    "file .wh.gone",
    "dir keep",
    "file keep/.wh..hidden",
    "file keep/b",
    "dir opq",
    "file opq/.wh..wh..opq",
    "file opq/new",
  ]);
});

peerTest("writeDiff() upperdirOnly with userxattr reads user.overlay.opaque", {
  root: true,
}, async () => {
  await using p = await pair();
  p.lower.dir("o").file("o/x", "x").dir("t");
  p.upper.dir("o").dir("t");
  sys.lsetxattr(p.upper.path("o"), "user.overlay.opaque", new TextEncoder().encode("y"));
  sys.lsetxattr(p.upper.path("t"), "trusted.overlay.opaque", new TextEncoder().encode("y"));
  assert.deepEqual(await listDiff(p, { upperdirOnly: true, userxattr: true }), [
    "dir o",
    "file o/.wh..wh..opq",
  ]);
  assert.deepEqual(await listDiff(p, { upperdirOnly: true }), ["dir t", "file t/.wh..wh..opq"]);
});

peerTest("writeDiff() upperdirOnly keeps hardlinks and refuses metacopy entries", {
  root: true,
}, async () => {
  await using p = await pair();
  p.upper.dir("d").file("d/a", "x").link("d/b", "d/a");
  assert.deepEqual(await listDiff(p, { upperdirOnly: true }), [
    "dir d",
    "file d/a",
    "link d/b -> d/a",
  ]);
  sys.lsetxattr(p.upper.path("d/a"), "trusted.overlay.metacopy", new Uint8Array(0));
  await assert.rejects(
    writeDiff(p.lower.root, p.upper.root, async () => {}, { upperdirOnly: true }),
    FailedPrecondition,
  );
});

// --- compareMounts: media types, labels, the content store -----------------------------------------

interface StoreEnv extends AsyncDisposable {
  store: ContentStore;
  db: MetadataDb;
  root: string;
}

async function storeEnv(): Promise<StoreEnv> {
  const tmp = await makeTempDir({ prefix: "strata-compare-store-" });
  const db = MetadataDb.open(tmp.path);
  return {
    store: new ContentStore(join(tmp.path, "content"), db),
    db,
    root: tmp.path,
    async [Symbol.asyncDispose]() {
      db.close();
      await tmp.stop();
    },
  };
}

function sha256(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

function bind(source: string) {
  return [{ type: "bind", source, options: ["ro", "rbind"] }];
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of source) parts.push(chunk.slice());
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

for (
  const [mediaType, label] of [
    [OCI_GZIP, "gzip (the default)"],
    [OCI_ZSTD, "zstd"],
    [OCI_TAR, "no compression"],
  ] as const
) {
  Deno.test(`compareMounts() stores a ${label} layer with its digest, size and uncompressed label`, async () => {
    await using env = await storeEnv();
    await using p = await pair();
    p.lower.dir("d").file("d/old", "old");
    p.upper.dir("d").file("d/new", "new".repeat(10000));
    const expected = await diffBytes(p.lower.root, p.upper.root);
    const result = await compareMounts(
      env.store,
      bind(p.lower.root),
      bind(p.upper.root),
      mediaType === OCI_GZIP ? {} : { mediaType },
    );
    assert.equal(result.descriptor.mediaType, mediaType);
    assert.deepEqual(Object.keys(result.descriptor).sort(), ["digest", "mediaType", "size"]);
    const blob = await env.store.readBlob(result.descriptor.digest);
    assert.equal(sha256(blob), result.descriptor.digest);
    assert.equal(blob.length, result.descriptor.size);
    const tar = await collect(decompress(once(blob)));
    assert.deepEqual(tar, expected.tar, "the blob decompresses to writeDiff()'s tar");
    assert.equal(result.diffId, sha256(tar));
    const info = await env.store.info(result.descriptor.digest);
    if (mediaType === OCI_TAR) {
      assert.equal(result.diffId, result.descriptor.digest);
      assert.equal(info.labels[UNCOMPRESSED], undefined);
    } else {
      assert.notEqual(result.diffId, result.descriptor.digest);
      assert.equal(info.labels[UNCOMPRESSED], result.diffId);
    }
    assert.deepEqual(await env.store.listIngests(), [], "no ingest is left behind");
  });
}

Deno.test("compareMounts() refuses other media types with NotImplemented", async () => {
  await using env = await storeEnv();
  await using p = await pair();
  for (
    const mediaType of [
      "application/vnd.docker.image.rootfs.diff.tar.gzip",
      "application/vnd.oci.image.layer.v1.tar+bzip2",
      "text/plain",
    ]
  ) {
    await assert.rejects(
      compareMounts(env.store, bind(p.lower.root), bind(p.upper.root), { mediaType }),
      NotImplemented,
    );
  }
  assert.deepEqual(await env.store.listIngests(), []);
});

Deno.test("compareMounts() adds extra labels, and the uncompressed label to an existing blob lacking it", async () => {
  await using env = await storeEnv();
  await using p = await pair();
  p.upper.file("f", "content");
  const first = await compareMounts(env.store, bind(p.lower.root), bind(p.upper.root), {
    labels: { "example.com/owner": "test" },
  });
  const digest = first.descriptor.digest;
  assert.deepEqual((await env.store.info(digest)).labels, {
    "example.com/owner": "test",
    [UNCOMPRESSED]: first.diffId,
  });
  await env.store.update(digest, {}, { fieldpaths: [`labels.${UNCOMPRESSED}`] });
  assert.equal((await env.store.info(digest)).labels[UNCOMPRESSED], undefined);
  const again = await compareMounts(env.store, bind(p.lower.root), bind(p.upper.root));
  assert.deepEqual(again, first, "the same trees give the same blob");
  assert.deepEqual((await env.store.info(digest)).labels, {
    "example.com/owner": "test",
    [UNCOMPRESSED]: first.diffId,
  });
});

Deno.test("compareMounts() uses the given ref, restarts a stale ingest and aborts a generated one on failure", async () => {
  await using env = await storeEnv();
  await using p = await pair();
  p.upper.file("f", "x");
  const stale = await env.store.writer({ ref: "my-ref" });
  await stale.write(new TextEncoder().encode("garbage from an earlier try"));
  await stale.close();
  const result = await compareMounts(env.store, bind(p.lower.root), bind(p.upper.root), {
    ref: "my-ref",
    mediaType: OCI_TAR,
  });
  assert.equal(result.descriptor.digest, sha256((await diffBytes(p.lower.root, p.upper.root)).tar));
  await assert.rejects(env.store.status("my-ref"), NotFound);

  await assert.rejects(
    compareMounts(env.store, bind(p.lower.root), bind(join(p.dir, "missing"))),
    NotFound,
  );
  assert.deepEqual(await env.store.listIngests(), [], "the generated ingest was aborted");
});

Deno.test("compareMounts() reads an empty lower list as an empty tree and rejects bad options", async () => {
  await using env = await storeEnv();
  await using p = await pair();
  p.upper.dir("d").file("d/f", "x");
  const result = await compareMounts(env.store, [], bind(p.upper.root), { mediaType: OCI_TAR });
  const entries = await readEntries(await env.store.readBlob(result.descriptor.digest));
  assert.deepEqual(entries.map((e) => describe(e.header)), ["dir d", "file d/f"]);
  await assert.rejects(
    compareMounts(env.store, [], bind(p.upper.root), {
      method: "fast" as unknown as "walk",
    }),
    InvalidArgument,
  );
  await assert.rejects(
    compareMounts(env.store, [], bind(p.upper.root), { method: "overlay" }),
    FailedPrecondition,
  );
});

// --- compareSnapshot ----------------------------------------------------------------------------------

Deno.test("compareSnapshot() diffs active and committed native snapshots against their parent and removes its views", async () => {
  await using env = await storeEnv();
  const sn = await openSnapshotter("native", { root: env.root, db: env.db });
  try {
    const [base] = await sn.prepare("base-active");
    new Tree(base!.source).dir("etc").file("etc/a", "a").file("etc/b", "b");
    await sn.commit("base", "base-active");
    const [work] = await sn.prepare("work", { parent: "base" });
    const t = new Tree(work!.source);
    Deno.removeSync(t.path("etc/a"));
    t.file("etc/c", "c");

    const active = await compareSnapshot(env.store, sn, "work", { mediaType: OCI_TAR });
    const listed = (await readEntries(await env.store.readBlob(active.descriptor.digest)))
      .map((e) => describe(e.header));
    assert.deepEqual(listed, ["dir etc", "file etc/.wh.a", "file etc/c"]);

    const bottom = await compareSnapshot(env.store, sn, "base", { mediaType: OCI_TAR });
    const all = (await readEntries(await env.store.readBlob(bottom.descriptor.digest)))
      .map((e) => describe(e.header));
    assert.deepEqual(all, ["dir etc", "file etc/a", "file etc/b"]);

    await sn.commit("top", "work");
    const committed = await compareSnapshot(env.store, sn, "top", { mediaType: OCI_TAR });
    assert.equal(committed.diffId, active.diffId);

    assert.deepEqual((await sn.list()).map((i) => i.name).sort(), ["base", "top"]);
    await assert.rejects(compareSnapshot(env.store, sn, "nope"), NotFound);
  } finally {
    await sn.close();
  }
});

// --- overlay snapshots: the upperdir walk against the double walk ------------------------------------

async function treeOf(dir: string) {
  return await snapshotTree(dir, { xattrs: true });
}

/** Non-directory mtimes must match to the second; directory mtimes are not compared. */
function mtimeDiffs(a: Awaited<ReturnType<typeof treeOf>>, b: Awaited<ReturnType<typeof treeOf>>) {
  const out: string[] = [];
  for (const [path, x] of a) {
    const y = b.get(path);
    if (y === undefined || x.type === "dir" || y.type === "dir") continue;
    if (Math.floor(x.mtime / 1000) !== Math.floor(y.mtime / 1000)) {
      out.push(`${path}: mtime ${x.mtime} != ${y.mtime}`);
    }
  }
  return out;
}

peerTest(
  "compareSnapshot() on an overlay snapshot: the upperdir fast path applies to the same tree as the double walk",
  { root: true },
  async () => {
    await using env = await storeEnv();
    const sn = await openSnapshotter("overlayfs", { root: env.root, db: env.db });
    try {
      const base = join(env.root, "base-tree");
      Deno.mkdirSync(base);
      new Tree(base).dir("etc").file("etc/passwd", "root:x:0:0").file("etc/group", "root:x:0")
        .dir("etc/opq").file("etc/opq/old1", "1").dir("etc/opq/sub").file("etc/opq/sub/old2", "2")
        .dir("var").dir("var/lib").file("var/lib/db", "db").file("var/lib/keep", "keep")
        .dir("gone").file("gone/x", "x").file("todir", "file").dir("tofile").file("tofile/y", "y")
        .symlink("link", "etc/passwd").file("h1", "linked").link("h2", "h1")
        .file("mode", "m", { mode: 0o600 }).file("own", "o");
      const [first] = await sn.prepare("base-active");
      await runOk(["cp", "-a", `${base}/.`, first!.source]);
      await sn.commit("base", "base-active");

      const mounts = await sn.prepare("work", { parent: "base" });
      await withTempMount(mounts, (merged) => {
        const t = new Tree(merged);
        Deno.writeTextFileSync(t.path("etc/passwd"), "root:x:0:0\nuser:x:1000:1000");
        Deno.removeSync(t.path("etc/group"));
        Deno.removeSync(t.path("etc/opq"), { recursive: true });
        t.dir("etc/opq").file("etc/opq/fresh", "fresh");
        Deno.removeSync(t.path("gone"), { recursive: true });
        Deno.removeSync(t.path("todir"));
        t.dir("todir").file("todir/inner", "inner");
        Deno.removeSync(t.path("tofile"), { recursive: true });
        t.file("tofile", "now a file");
        Deno.removeSync(t.path("link"));
        t.symlink("link", "etc/group-gone");
        Deno.writeTextFileSync(t.path("h1"), "linked, changed");
        t.file("var/lib/new", "new").link("var/lib/new-link", "var/lib/new");
        Deno.chmodSync(t.path("mode"), 0o640);
        sys.fchownat(sys.AT_FDCWD, t.path("own"), 1000, 1000, 0);
        t.node("fifo", sys.S_IFIFO).node("null", sys.S_IFCHR, sys.makedev(1, 3));
      });

      const fast = await compareSnapshot(env.store, sn, "work", {
        method: "overlay",
        mediaType: OCI_TAR,
      });
      const walk = await compareSnapshot(env.store, sn, "work", {
        method: "walk",
        mediaType: OCI_TAR,
      });
      const auto = await compareSnapshot(env.store, sn, "work", { mediaType: OCI_TAR });
      assert.equal(auto.diffId, fast.diffId, "auto takes the fast path on an overlay");
      assert.notEqual(walk.diffId, fast.diffId, "the two paths write different bytes");

      const fastList = (await readEntries(await env.store.readBlob(fast.descriptor.digest)))
        .map((e) => describe(e.header));
      assert.ok(fastList.includes("file etc/opq/.wh..wh..opq"), fastList.join("\n"));
      assert.ok(fastList.includes("file .wh.gone"), fastList.join("\n"));
      const walkList = (await readEntries(await env.store.readBlob(walk.descriptor.digest)))
        .map((e) => describe(e.header));
      assert.ok(walkList.includes("file etc/opq/.wh.old1"), walkList.join("\n"));
      assert.ok(walkList.includes("file etc/opq/.wh.sub"), walkList.join("\n"));

      // Apply both onto copies of the parent; both must give the merged view of "work".
      const expected = await withTempMount(readOnlyMounts(mounts), (merged) => treeOf(merged));
      for (const [name, result] of [["fast", fast], ["walk", walk]] as const) {
        const target = join(env.root, `applied-${name}`);
        await runOk(["cp", "-a", base, target]);
        await applyLayer(once(await env.store.readBlob(result.descriptor.digest)), target, {
          whiteouts: "delete",
        });
        const got = await treeOf(target);
        assert.deepEqual(
          [
            ...diffTrees(expected, got, { ignore: ["mtime"], ignorePaths: ["."] }),
            ...mtimeDiffs(expected, got),
          ],
          [],
          `the ${name} layer applied onto the parent gives the snapshot`,
        );
      }
      assert.deepEqual((await sn.list()).map((i) => i.name).sort(), ["base", "work"]);

      // Committed, the layer's directory is the top lowerdir of a view: the same fast path.
      await sn.commit("done", "work");
      const committed = await compareSnapshot(env.store, sn, "done", { mediaType: OCI_TAR });
      assert.equal(committed.diffId, fast.diffId);
      assert.deepEqual((await sn.list()).map((i) => i.name).sort(), ["base", "done"]);
    } finally {
      await sn.close();
    }
  },
);

Deno.test("writeDiff() keeps names that are not UTF-8 byte for byte, in byte order, and they apply back", async () => {
  await using p = await pair();
  // Names as Strata's calls take them: bytes that are not UTF-8 are U+DC80-U+DCFF.
  const cafe = "caf\udce9"; // Latin-1 "café": 63 61 66 e9
  sys.close(sys.open(p.lower.path("z\udcfe"), sys.O_WRONLY | sys.O_CREAT, 0o644));
  sys.mkdirat(sys.AT_FDCWD, p.upper.path(cafe), 0o755);
  const fd = sys.open(p.upper.path(`${cafe}/b\udcff`), sys.O_WRONLY | sys.O_CREAT, 0o644);
  sys.writeAll(fd, new TextEncoder().encode("latin"));
  sys.close(fd);
  sys.symlinkat("b\udcff", sys.AT_FDCWD, p.upper.path(`${cafe}/link`));
  // Byte order: e9 sorts before f0 9f 98 80 (U+1F600), though U+DCE9 > U+D83D as UTF-16.
  for (const name of ["x\udce9", "x😀"]) {
    sys.close(sys.open(p.upper.path(name), sys.O_WRONLY | sys.O_CREAT, 0o644));
  }
  const { tar } = await diffBytes(p.lower.root, p.upper.root);
  const names = (await readEntries(tar)).map((e) => e.header.name);
  assert.deepEqual(names, [
    cafe,
    `${cafe}/b\udcff`,
    `${cafe}/link`,
    "x\udce9",
    "x😀",
    ".wh.z\udcfe",
  ]);
  // GNU tar reads the same bytes (no decoding on our side: its raw output).
  const file = join(p.dir, "layer.tar");
  Deno.writeFileSync(file, tar);
  const out = new Deno.Command("tar", {
    args: ["-tf", file, "--quoting-style=literal"],
    env: { LC_ALL: "C" },
  }).outputSync();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const listed = new TextDecoder("latin1").decode(out.stdout).split("\n").filter((l) => l !== "");
  const want = [cafe, `${cafe}/b\udcff`, `${cafe}/link`, "x\udce9", "x😀", ".wh.z\udcfe"]
    .map((n) => new TextDecoder("latin1").decode(encodeName(n)));
  assert.deepEqual(listed.map((l) => l.replace(/\/$/, "")), want);
  // Applied onto a copy of lower, the layer gives upper's names and link text.
  const target = join(p.dir, "target");
  Deno.mkdirSync(target);
  sys.close(sys.open(join(target, "z\udcfe"), sys.O_WRONLY | sys.O_CREAT, 0o644));
  await applyLayer(once(tar), target);
  assert.deepEqual(
    findListing(target),
    want.slice(0, 5).map((n) => n === "caf\xe9/link" ? `${n} b\xff` : `${n} `).sort(),
  );
  assert.equal(sys.readlinkat(sys.AT_FDCWD, join(target, `${cafe}/link`)), "b\udcff");
});
