// Parallel unpack (overlayfs, the `rebase` capability): the same snapshots as a sequential
// unpack, commits in order, clean failures, and the pieces it is made of (deferred lower layers
// in the applier, coalesced non-blocking syncfs).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { Client } from "../../client.ts";
import { applyLayer } from "../../diff/apply.ts";
import { createTar, type TarInput } from "../../diff/tar/mod.ts";
import { FailedPrecondition, InvalidArgument } from "../../errors.ts";
import { withTempMount } from "../../mount/mod.ts";
import { importArchive } from "../../images/archive/import.ts";
import { chainIds, imageLayers } from "../../images/manifest.ts";
import type { Descriptor, ImageRecord } from "../../images/types.ts";
import { type LayerEvent, type LayerFetcher, unpackImage } from "../../unpack/unpack.ts";
import { SyncQueue } from "../../unpack/_sync.ts";
import { makeTempDir, peerTest } from "../_peers.ts";
import type { TreeEntry } from "../_tree.ts";
import { assertSameTree, NS, strataTree, treeWithNanos } from "../_unpack_trees.ts";
import { manyFileLayers, writeLayout } from "./_build_image.ts";

const T = { sec: 1700000000, nsec: 0 };
const enc = new TextEncoder();
const CORES = navigator.hardwareConcurrency ?? 1;

/** A root test that needs more than one CPU (parallel mode is off on one). */
function parallelTest(name: string, fn: () => Promise<void>): void {
  if (CORES > 1) peerTest(name, { root: true }, fn);
  else Deno.test({ name: `${name} (skipped: needs more than one CPU)`, ignore: true, fn });
}

function file(name: string, text: string, extra: Partial<TarInput["header"]> = {}): TarInput {
  const body = enc.encode(text);
  return { header: { name, type: "file", mode: 0o644, mtime: T, ...extra }, body };
}

function dir(name: string, extra: Partial<TarInput["header"]> = {}): TarInput {
  return { header: { name, type: "directory", mode: 0o755, mtime: T, ...extra } };
}

/**
 * The many-file layers (whiteouts in directories the layer does not list, an opaque directory,
 * symlinks, hardlinks within and across layers, a write through a lower symlink, a sparse
 * file), plus two layers: xattrs, a 0:0 character device whiteout, an opaque directory and a
 * hardlink to a lower-only file under implied parents, a whiteout of a lower directory it wrote
 * into; and a top layer that lists every
 * directory it uses (it never needs the layers below).
 */
async function richTars(): Promise<Uint8Array[]> {
  // Seed 1 puts whiteouts in the opaque directory data/d02, which the applier must not make
  // (overlayfs would list them while lookups of their names fail).
  const many = await manyFileLayers({ seed: 1, filesPerLayer: 300, maxSize: 6000, dirs: 6 });
  const fourth = await createTar([
    file("etc/xattrs", "x", {
      xattrs: { "user.strata": enc.encode("yes"), "security.capability": capability() },
    }),
    { header: { name: "extra/e1", type: "char", devmajor: 0, devminor: 0, mtime: T } },
    file("data/d03/.wh..wh..opq", ""),
    file("data/d03/only-this", "o"),
    { header: { name: "deep/a/b/link", type: "hardlink", linkname: "etc/config", uid: 7 } },
    { header: { name: "data/d04/h-lower", type: "hardlink", linkname: "data/d04/f4" } },
    dir("newdir", { mode: 0o750, xattrs: { "user.dir": enc.encode("d") } }),
    // A whiteout of a lower directory after this layer wrote into it: only "mine" stays.
    file("data/d01/mine", "m"),
    file("data/.wh.d01", ""),
  ]);
  const fifth = await createTar([
    dir("top", { mode: 0o711 }),
    file("top/one", "1", { mode: 0o600, uid: 5, gid: 6 }),
    { header: { name: "top/two", type: "hardlink", linkname: "top/one" } },
    { header: { name: "top/sym", type: "symlink", linkname: "../etc/config", mtime: T } },
  ]);
  return [...many, fourth, fifth];
}

/** A version 2 file capability (cap_net_bind_service), as `setcap` writes it. */
function capability(): Uint8Array {
  const v = new Uint8Array(20);
  const view = new DataView(v.buffer);
  view.setUint32(0, 0x02000001, true);
  view.setUint32(4, 1 << 10, true);
  return v;
}

interface Root extends AsyncDisposable {
  dir: string;
  client: Client;
}

async function root(): Promise<Root> {
  const tmp = await makeTempDir({ prefix: "strata-parallel-" });
  const client = Client.open({ root: join(tmp.path, "root") });
  return {
    dir: tmp.path,
    client,
    async [Symbol.asyncDispose]() {
      client.close();
      await tmp.stop();
    },
  };
}

async function importLayout(r: Root, layout: string): Promise<ImageRecord> {
  const [record] = (await importArchive(r.client, layout)).images;
  assert.ok(record);
  return record;
}

async function snapshotNames(client: Client, sn: string): Promise<string[]> {
  return (await (await client.snapshotter(sn)).list()).map((i) => i.name).sort();
}

/** The trees of the upper directories of the snapshots `chain`. */
async function uppers(client: Client, chain: string[]): Promise<Map<string, TreeEntry>[]> {
  const sn = await client.snapshotter("overlayfs");
  const out = [];
  for (const id of chain) {
    const key = `upper-${crypto.randomUUID()}`;
    const mounts = await sn.view(key, { parent: id });
    const opt = mounts[0]!.options.find((o) => o.startsWith("lowerdir="));
    const top = opt === undefined ? mounts[0]!.source : opt.slice(9).split(":")[0]!;
    out.push(await treeWithNanos(top));
    await sn.remove(key);
  }
  return out;
}

/**
 * A fetcher holding layer 0 back until layer 1 asks for its blob: only a parallel unpack gets
 * past it (a sequential one would wait forever), so passing it proves the layers overlapped.
 */
function overlapFetcher(layers: Descriptor[]): LayerFetcher & { asked: string[] } {
  let release!: () => void;
  const second = new Promise<void>((r) => (release = r));
  const asked: string[] = [];
  return {
    asked,
    start() {},
    async ready(blob) {
      asked.push(blob.digest);
      if (blob.digest === layers[1]!.digest) release();
      if (blob.digest === layers[0]!.digest) await second;
    },
  };
}

parallelTest(
  "unpackImage() in parallel on overlayfs commits the same snapshots as a sequential unpack",
  async () => {
    await using a = await root();
    await using b = await root();
    const built = await writeLayout(join(a.dir, "layout"), await richTars(), {
      name: "example.com/strata/parallel:1",
    });
    const seqRecord = await importLayout(a, built.layout);
    const parRecord = await importLayout(b, built.layout);
    const layers = await imageLayers(b.client.content, parRecord.target);
    const chain = chainIds(layers.map((l) => l.diffId));

    const seqEvents: string[] = [];
    const seq = await unpackImage(a.client, seqRecord, {
      snapshotter: "overlayfs",
      parallel: false,
      syncFs: true,
      onLayer: (e) => seqEvents.push(`${e.index} ${e.state}`),
    });
    // Sequential: each layer is committed before the next one starts.
    assert.deepEqual(
      seqEvents,
      chain.flatMap((_, i) => [`${i} extracting`, `${i} extracted`]),
    );

    const fetcher = overlapFetcher(layers.map((l) => l.blob));
    const parEvents: LayerEvent[] = [];
    const par = await unpackImage(b.client, parRecord, {
      snapshotter: "overlayfs",
      syncFs: true,
      fetcher,
      onLayer: (e) => parEvents.push(e),
    });
    assert.equal(par.chainId, seq.chainId);
    assert.deepEqual(par.layers, seq.layers);
    // Layer 0 was held back until layer 1 asked: both were in flight at once.
    assert.deepEqual(
      fetcher.asked.slice(0, 2).sort(),
      [layers[0]!.blob.digest, layers[1]!.blob.digest].sort(),
    );
    assert.deepEqual(
      parEvents.filter((e) => e.state === "extracted").map((e) => e.index),
      chain.map((_, i) => i),
      "commits are in layer order",
    );
    // Only the chain is left: no extraction snapshot, no view of the lower layers.
    assert.deepEqual(await snapshotNames(b.client, "overlayfs"), [...chain].sort());
    const snapshotter = await b.client.snapshotter("overlayfs");
    for (const [i, id] of chain.entries()) {
      const info = await snapshotter.stat(id);
      assert.equal(info.kind, "committed");
      assert.equal(info.parent ?? "", i === 0 ? "" : chain[i - 1]);
    }
    for (const [i, id] of chain.entries()) {
      assertSameTree(
        await strataTree(a.client, "overlayfs", id),
        await strataTree(b.client, "overlayfs", id),
        `layer ${i} (${id}), sequential vs parallel`,
        { minEntries: 10 },
      );
    }
    // The whiteout of data/d01 hid the lower layers' files there, not this layer's own.
    const top = await strataTree(b.client, "overlayfs", chain.at(-1)!);
    assert.deepEqual([...top.keys()].filter((k) => k.startsWith("data/d01/")), ["data/d01/mine"]);
    // The upper directories themselves match too (whiteout devices, opaque xattrs, copy-ups).
    const [ua, ub] = [await uppers(a.client, chain), await uppers(b.client, chain)];
    for (const i of chain.keys()) {
      assertSameTree(
        withoutDeviceTimes(ua[i]!),
        withoutDeviceTimes(ub[i]!),
        `upper of layer ${i}`,
        {
          minEntries: 1,
        },
      );
    }
  },
);

parallelTest(
  "unpackImage() in parallel with a wrong diff ID in the middle leaves the layers below committed and no active snapshot",
  async () => {
    await using r = await root();
    const tars = await richTars();
    const diffIds = await Promise.all(tars.map((t) => sha256(t)));
    const built = await writeLayout(join(r.dir, "layout"), tars, {
      name: "example.com/strata/parallel-bad:1",
    });
    // Rewrite the config with a wrong diff ID for layer 2 (of 5).
    const record = await importLayout(r, await withWrongDiffId(built.layout, 2));
    const layers = await imageLayers(r.client.content, record.target);
    assert.equal(layers[0]!.diffId, diffIds[0]);
    const chain = chainIds(layers.map((l) => l.diffId));
    await assert.rejects(
      unpackImage(r.client, record, {
        snapshotter: "overlayfs",
        fetcher: overlapFetcher(layers.map((l) => l.blob)),
      }),
      (err: Error) => err instanceof FailedPrecondition && /diffID/.test(err.message),
    );
    assert.deepEqual(await snapshotNames(r.client, "overlayfs"), [chain[0]!, chain[1]!].sort());
    const sn = await r.client.snapshotter("overlayfs");
    await sn.cleanup();
    const dirs = [];
    for await (
      const e of Deno.readDir(join(r.dir, "root", "snapshots", "overlayfs", "snapshots"))
    ) {
      dirs.push(e.name);
    }
    assert.equal(dirs.length, 2, `snapshot directories left: ${dirs}`);

    // Repaired (the right config), the next unpack applies only the layers from 2 up.
    const good = await importLayout(r, built.layout);
    const result = await unpackImage(r.client, good, { snapshotter: "overlayfs" });
    assert.deepEqual(result.layers.map((l) => l.applied), [false, false, true, true, true]);
  },
);

peerTest(
  "unpackImage() with parallel: false applies one layer at a time on overlayfs",
  { root: true },
  async () => {
    await using r = await root();
    const built = await writeLayout(join(r.dir, "layout"), await richTars(), {
      name: "example.com/strata/sequential:1",
    });
    const record = await importLayout(r, built.layout);
    const layers = await imageLayers(r.client.content, record.target);
    const events: string[] = [];
    const asked: string[] = [];
    await unpackImage(r.client, record, {
      snapshotter: "overlayfs",
      parallel: false,
      fetcher: {
        start() {},
        ready(blob) {
          asked.push(`${layers.findIndex((l) => l.blob.digest === blob.digest)} ready`);
          events.push(asked.at(-1)!);
          return Promise.resolve();
        },
      },
      onLayer: (e) => events.push(`${e.index} ${e.state}`),
    });
    assert.deepEqual(
      events,
      layers.flatMap((_, i) => [`${i} ready`, `${i} extracting`, `${i} extracted`]),
    );
    // Sequential snapshots are prepared on their parent: the chain is the same.
    assert.equal((await snapshotNames(r.client, "overlayfs")).length, layers.length);
  },
);

Deno.test("unpackImage() on native stays sequential whatever `parallel` says", async () => {
  await using r = await root();
  const built = await writeLayout(join(r.dir, "layout"), await richTars(), {
    name: "example.com/strata/native:1",
  });
  const record = await importLayout(r, built.layout);
  const events: string[] = [];
  await unpackImage(r.client, record, {
    snapshotter: "native",
    parallel: true,
    onLayer: (e) => events.push(`${e.index} ${e.state}`),
  });
  assert.deepEqual(events, [0, 1, 2, 3, 4].flatMap((i) => [`${i} extracting`, `${i} extracted`]));
});

peerTest(
  "applyLayer() with awaitLowerDirs waits for the lowers only when an entry needs them, and gives the same tree",
  { root: true },
  async () => {
    await using tmp = await makeTempDir({ prefix: "strata-await-lowers-" });
    const lower = join(tmp.path, "lower");
    await Deno.mkdir(lower);
    await applyLayer(
      once(await createTar([dir("lib", { mode: 0o750, uid: 3 }), file("lib/target", "lower")])),
      lower,
    );
    const independent = await createTar([dir("x"), file("x/y", "y"), file("z", "z")]);
    const dependent = await createTar([
      file("a", "before"),
      { header: { name: "lib/link", type: "hardlink", linkname: "lib/target", uid: 4 } },
      file("lib/new", "implied parent"),
      file("lib/.wh.gone", ""),
    ]);
    for (
      const [what, tar, calls] of [["independent", independent, 0], [
        "dependent",
        dependent,
        1,
      ]] as const
    ) {
      const early = join(tmp.path, `${what}-early`);
      const late = join(tmp.path, `${what}-late`);
      await Deno.mkdir(early);
      await Deno.mkdir(late);
      await applyLayer(once(tar), early, { whiteouts: "overlay", lowerDirs: [lower] });
      let called = 0;
      await applyLayer(once(tar), late, {
        whiteouts: "overlay",
        awaitLowerDirs: async () => {
          called++;
          await new Promise((r) => setTimeout(r, 10));
          return [lower];
        },
      });
      assert.equal(called, calls, `${what}: awaitLowerDirs calls`);
      assertSameTree(
        withoutDeviceTimes(await treeWithNanos(early)),
        withoutDeviceTimes(await treeWithNanos(late)),
        what,
        {
          minEntries: 2,
        },
      );
    }
    // The hardlink target was copied up: same inode as the link, metadata from the link's header.
    const st = Deno.lstatSync(join(tmp.path, "dependent-late", "lib", "target"));
    assert.equal(st.nlink, 2);
    assert.equal(st.uid, 4);
    assert.equal(Deno.lstatSync(join(tmp.path, "dependent-late", "lib")).mode! & 0o7777, 0o750);
  },
);

Deno.test("SyncQueue.sync() coalesces requests made while a syncfs runs", async () => {
  await using tmp = await makeTempDir({ prefix: "strata-syncq-" });
  const q = new SyncQueue();
  const first = q.sync(tmp.path);
  const second = q.sync(tmp.path);
  const third = q.sync(tmp.path);
  // The first starts at once; the two asked meanwhile share the one queued behind it.
  assert.notEqual(first, second);
  assert.equal(second, third);
  await Promise.all([first, second, third]);
  const fourth = q.sync(tmp.path);
  assert.notEqual(fourth, third);
  await fourth;
  await assert.rejects(q.sync(join(tmp.path, "missing")), FailedPrecondition);
});

/** The tree without the times of character devices (whiteouts get the time they were made). */
function withoutDeviceTimes(tree: Map<string, TreeEntry>): Map<string, TreeEntry> {
  const out = new Map<string, TreeEntry>();
  for (const [path, e] of tree) {
    if (e.type !== "char") out.set(path, e);
    else {
      const xattrs = { ...e.xattrs };
      delete xattrs[NS];
      out.set(path, { ...e, mtime: 0, xattrs });
    }
  }
  return out;
}

function sha256(bytes: Uint8Array): Promise<string> {
  return Promise.resolve(`sha256:${createHash("sha256").update(bytes).digest("hex")}`);
}

/** The bytes as a one-chunk stream. */
async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

/** A copy of a one-image layout whose config names a wrong diff ID for layer `index`. */
async function withWrongDiffId(layout: string, index: number): Promise<string> {
  const out = `${layout}-wrong-${index}`;
  await Deno.mkdir(join(out, "blobs", "sha256"), { recursive: true });
  for await (const e of Deno.readDir(join(layout, "blobs", "sha256"))) {
    await Deno.copyFile(
      join(layout, "blobs", "sha256", e.name),
      join(out, "blobs", "sha256", e.name),
    );
  }
  await Deno.copyFile(join(layout, "oci-layout"), join(out, "oci-layout"));
  const index0 = JSON.parse(await Deno.readTextFile(join(layout, "index.json")));
  const mdesc = index0.manifests[0];
  const blob = (d: string) => join(out, "blobs", "sha256", d.slice(7));
  const manifest = JSON.parse(await Deno.readTextFile(blob(mdesc.digest)));
  const config = JSON.parse(await Deno.readTextFile(blob(manifest.config.digest)));
  config.rootfs.diff_ids[index] = await sha256(enc.encode(`not layer ${index}`));
  const put = async (value: unknown) => {
    const bytes = enc.encode(JSON.stringify(value));
    const digest = await sha256(bytes);
    await Deno.writeFile(blob(digest), bytes);
    return { digest, size: bytes.length };
  };
  manifest.config = { ...manifest.config, ...(await put(config)) };
  const m = await put(manifest);
  index0.manifests[0] = {
    ...mdesc,
    ...m,
    annotations: { "io.containerd.image.name": "example.com/strata/parallel-wrong:1" },
  };
  await Deno.writeTextFile(join(out, "index.json"), JSON.stringify(index0));
  return out;
}

// --- implied directories made before the lower layers exist ------------------------------------

const T1 = { sec: 1600000001, nsec: 123456789 };
const T2 = { sec: 1500000002, nsec: 987654321 };

/** A layer case: lower layers (bottom first), the layer, and what the late apply must do. */
interface ImpliedCase {
  name: string;
  lowers: TarInput[][];
  layer: TarInput[];
  /**
   * Whether the late apply, given the lowers at the end, must read the layer again (a lower
   * non-directory at a directory it implies).
   */
  reapplied: boolean;
  /** Whether the lowers are needed before the end anyway (hardlink targets, whiteouts). */
  waits?: boolean;
  /** The apply fails (both ways) with this error class. */
  fails?: typeof InvalidArgument;
}

/** The base of most cases: directories with unusual owners, modes, xattrs and times. */
function oddLower(): TarInput[] {
  return [
    dir("opt", {
      mode: 0o2751,
      uid: 1234,
      gid: 567,
      mtime: T1,
      atime: T2,
      xattrs: userXattr("opt"),
    }),
    dir("opt/jvm", { mode: 0o1700, uid: 5, gid: 6, mtime: T2, xattrs: userXattr("jvm") }),
    file("opt/jvm/lowerfile", "lower", { uid: 8 }),
    dir("usr", { mode: 0o755 }),
    dir("usr/bin", { mode: 0o750, uid: 3, mtime: T1 }),
    dir("usr/lib", { mode: 0o705, uid: 4, mtime: T2 }),
    { header: { name: "bin", type: "symlink", linkname: "usr/bin", mtime: T } },
    { header: { name: "lib", type: "symlink", linkname: "/usr/lib", mtime: T } },
    dir("gone", { mode: 0o700, uid: 11 }),
    dir("gone/sub", { mode: 0o700, uid: 12 }),
    dir("opq", { mode: 0o755, uid: 13 }),
    dir("opq/sub", { mode: 0o711, uid: 14, xattrs: userXattr("opq-sub") }),
    dir("real", { mode: 0o750, uid: 15, mtime: T1 }),
    { header: { name: "link", type: "symlink", linkname: "real", mtime: T } },
    dir("etc", { mode: 0o755, uid: 0 }),
    file("etc/conf", "c"),
  ];
}

/** A second lower layer: newer attributes for `opt`, a deleted and an opaque directory. */
function secondLower(): TarInput[] {
  return [
    dir("opt", { mode: 0o750, uid: 42, gid: 43, mtime: T2, xattrs: userXattr("opt-2") }),
    file(".wh.gone", ""),
    dir("opq", { mode: 0o755, uid: 13 }),
    file("opq/.wh..wh..opq", ""),
    file("opq/kept", "k"),
  ];
}

function userXattr(value: string): Record<string, Uint8Array> {
  return { "user.strata": enc.encode(value) };
}

const IMPLIED_CASES: ImpliedCase[] = [
  {
    name: "implied parents that are directories below (newest lower wins), nested, and missing",
    lowers: [oddLower(), secondLower()],
    layer: [
      file("opt/jvm/java/bin/x", "x"),
      file("opt/other/y", "y"),
      file("new/deep/er/f", "f"),
      file("gone/sub/new", "n"),
      file("opq/sub/f", "f"),
      file("usr/bin/tool", "t"),
    ],
    reapplied: false,
  },
  {
    name: "an implied parent later given an explicit entry, and one made opaque later",
    lowers: [oddLower()],
    layer: [
      file("opt/x", "x"),
      file("opt/jvm/y", "y"),
      dir("opt", {
        mode: 0o711,
        uid: 9,
        gid: 10,
        mtime: T,
        xattrs: { "user.hdr": enc.encode("h") },
      }),
      file("opt/jvm/z", "z"),
      file("usr/lib/a/b", "b"),
      file("usr/lib/.wh..wh..opq", ""),
      dir("usr/lib/a", { mode: 0o700, uid: 2, mtime: T1, xattrs: userXattr("header-wins") }),
    ],
    reapplied: false,
  },
  {
    name: "implied parents removed and made again in the same layer",
    lowers: [oddLower()],
    layer: [
      file("opt/jvm/f", "f"),
      file("opt", "now a file"),
      dir("opt", { mode: 0o700, mtime: T }),
      file("opt/jvm/g", "g"),
      file("new/a/f", "f"),
      file("new", "file"),
      dir("new", { mode: 0o750, mtime: T1 }),
      file("new/a/g", "g"),
    ],
    reapplied: false,
  },
  {
    name: "a hardlink to a lower file and a whiteout after implied parents",
    lowers: [oddLower(), secondLower()],
    layer: [
      file("opt/jvm/new", "n"),
      { header: { name: "opt/h", type: "hardlink", linkname: "opt/jvm/lowerfile", uid: 4 } },
      file("usr/lib/new", "n"),
      file("opq/.wh.kept", ""),
    ],
    reapplied: false,
    waits: true,
  },
  {
    name: "implied parents that are symlinks below (relative and absolute)",
    lowers: [oddLower(), secondLower()],
    layer: [
      file("opt/jvm/x", "x"),
      file("bin/tool", "t"),
      file("lib/x/y", "y"),
      dir("lib/x", { mode: 0o700, uid: 2, mtime: T1 }),
    ],
    reapplied: true,
  },
  {
    name: "an implied parent that is a symlink below, replaced by a file in the same layer",
    lowers: [oddLower()],
    layer: [file("link/f", "through the symlink"), file("link", "a file now"), file("z", "z")],
    reapplied: true,
  },
  {
    name: "an implied parent that is a file below",
    lowers: [oddLower()],
    layer: [file("opt/a", "a"), file("etc/conf/x", "x")],
    reapplied: true,
    fails: InvalidArgument,
  },
];

/**
 * The layer's bytes in small chunks; `gate` is told when half of them and when all of them were
 * read, so the lowers can be given at different moments of the apply.
 */
async function* chunked(
  bytes: Uint8Array,
  gate: (at: "half" | "end") => void,
): AsyncGenerator<Uint8Array> {
  const size = 512;
  const n = Math.ceil(bytes.length / size);
  for (let i = 0; i < n; i++) {
    if (i === Math.floor(n / 2)) gate("half");
    yield bytes.subarray(i * size, (i + 1) * size);
  }
  gate("end");
}

/** Applies the lower layers, bottom first, each as an overlay upper on the ones below. */
async function lowerDirs(base: string, lowers: TarInput[][]): Promise<string[]> {
  const dirs: string[] = [];
  for (const [i, entries] of lowers.entries()) {
    const d = join(base, `lower${i}`);
    await Deno.mkdir(d);
    await applyLayer(once(await createTar(entries)), d, {
      whiteouts: "overlay",
      lowerDirs: [...dirs].reverse(),
    });
    dirs.push(d);
  }
  return dirs.reverse();
}

/** The tree a read-only overlay of `dirs` (newest first) shows. */
async function mergedTree(dirs: string[]): Promise<Map<string, TreeEntry>> {
  return await withTempMount(
    [{ type: "overlay", source: "overlay", options: [`lowerdir=${dirs.join(":")}`] }],
    (d) => treeWithNanos(d),
  );
}

peerTest(
  "applyLayer() with awaitLowerDirs and reopen makes implied directories at once and ends with the tree applied on the lowers",
  { root: true },
  async () => {
    for (const c of IMPLIED_CASES) {
      await using tmp = await makeTempDir({ prefix: "strata-implied-" });
      const lowers = await lowerDirs(tmp.path, c.lowers);
      const tar = await createTar(c.layer);
      const early = join(tmp.path, "early");
      await Deno.mkdir(early);
      const want = await applyLayer(once(tar), early, { whiteouts: "overlay", lowerDirs: lowers })
        .then((r) => ({ ok: r }), (err: Error) => ({ err }));
      if (c.fails) assert.ok("err" in want && want.err instanceof c.fails, `${c.name}: early`);
      else {assert.ok(
          "ok" in want,
          `${c.name}: early apply failed: ${(want as { err: Error }).err}`,
        );}
      // The lowers at once (a settled promise), half way through the layer, and at its end; a hang
      // (the apply waiting for them before the end) is caught by the timer.
      // Layers that need them (a hardlink target below) get them shortly after they ask.
      const moments = c.waits ? ["now", "later"] as const : ["now", "half", "end"] as const;
      for (const moment of moments) {
        const what = `${c.name} (lowers given ${moment})`;
        const late = join(tmp.path, `late-${moment}`);
        await Deno.mkdir(late);
        let release!: () => void;
        const given = new Promise<void>((r) => (release = r));
        let asked = 0;
        let reopened = 0;
        let hung = false;
        const timer = setTimeout(() => {
          hung = true;
          release();
        }, 10_000);
        const got = await applyLayer(
          chunked(tar, (at) => {
            if (at === moment) release();
          }),
          late,
          {
            whiteouts: "overlay",
            awaitLowerDirs: async () => {
              asked++;
              if (moment === "later") setTimeout(release, 20);
              if (moment !== "now") await given;
              return lowers;
            },
            reopen: () => {
              reopened++;
              return once(tar);
            },
          },
        ).then((r) => ({ ok: r }), (err: Error) => ({ err }));
        clearTimeout(timer);
        assert.equal(hung, false, `${what}: the apply waited for the lowers`);
        assert.equal(asked, 1, `${what}: awaitLowerDirs calls`);
        // Lowers given early reach the entries that would conflict before they are applied.
        if (moment === "end") assert.equal(reopened, c.reapplied ? 1 : 0, `${what}: applied again`);
        else assert.ok(reopened <= (c.reapplied ? 1 : 0), `${what}: applied again`);
        if (c.fails) {
          assert.ok("err" in got && got.err instanceof c.fails, `${what}: ${JSON.stringify(got)}`);
          continue;
        }
        assert.ok("ok" in got && "ok" in want, `${what}: ${(got as { err: Error }).err}`);
        assert.equal(got.ok.diffId, want.ok.diffId);
        assert.deepEqual(got.ok.skipped, want.ok.skipped, what);
        // The upper directories themselves (xattrs, whiteouts, opaque markers, copy-ups)...
        assertSameTree(
          withoutDeviceTimes(await treeWithNanos(early)),
          withoutDeviceTimes(await treeWithNanos(late)),
          `${what}: upper`,
          { minEntries: 2 },
        );
        // ...and the merged view.
        assertSameTree(
          withoutDeviceTimes(await mergedTree([early, ...lowers])),
          withoutDeviceTimes(await mergedTree([late, ...lowers])),
          `${what}: merged`,
          { minEntries: 5 },
        );
      }
    }
  },
);

parallelTest(
  "unpackImage() in parallel gives layers that imply directories of the layers below the same snapshots as a sequential unpack",
  async () => {
    await using a = await root();
    await using b = await root();
    // Layer 1 on: implied parents that are odd directories below, nested, missing, listed
    // later; layers 2 and 3 write through symlinks of layer 0 (applied again, on a worker or
    // here); layer 4 has a hardlink to a lower file under an implied parent.
    const tars = [
      await createTar(oddLower()),
      await createTar([
        ...secondLower(),
        file("opt/jvm/java/bin/x", "x"),
        file("new/deep/f", "f"),
        file("usr/lib/a/b", "b"),
        dir("usr/lib/a", { mode: 0o700, uid: 2, mtime: T1, xattrs: userXattr("header-wins") }),
      ]),
      await createTar([file("opt/jvm/y", "y"), file("bin/tool", "t"), file("opt/z", "z")]),
      await createTar([file("lib/x/y", "y"), file("gone/sub/f", "f")]),
      await createTar([
        file("opt/jvm/java/z", "z"),
        { header: { name: "opt/h", type: "hardlink", linkname: "opt/jvm/lowerfile", uid: 4 } },
      ]),
    ];
    const built = await writeLayout(join(a.dir, "layout"), tars, {
      name: "example.com/strata/implied:1",
    });
    const seqRecord = await importLayout(a, built.layout);
    const parRecord = await importLayout(b, built.layout);
    const layers = await imageLayers(b.client.content, parRecord.target);
    const chain = chainIds(layers.map((l) => l.diffId));
    await unpackImage(a.client, seqRecord, { snapshotter: "overlayfs", parallel: false });
    const fetcher = overlapFetcher(layers.map((l) => l.blob));
    await unpackImage(b.client, parRecord, { snapshotter: "overlayfs", fetcher });
    assert.deepEqual(await snapshotNames(b.client, "overlayfs"), [...chain].sort());
    const [ua, ub] = [await uppers(a.client, chain), await uppers(b.client, chain)];
    for (const [i, id] of chain.entries()) {
      assertSameTree(
        await strataTree(a.client, "overlayfs", id),
        await strataTree(b.client, "overlayfs", id),
        `layer ${i}, sequential vs parallel`,
        { minEntries: 10 },
      );
      assertSameTree(
        withoutDeviceTimes(ua[i]!),
        withoutDeviceTimes(ub[i]!),
        `upper of layer ${i}`,
        { minEntries: 1 },
      );
    }
  },
);
