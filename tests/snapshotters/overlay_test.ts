import assert from "node:assert/strict";
import { join } from "node:path";
import { FailedPrecondition, InvalidArgument } from "../../errors.ts";
import { MetadataDb } from "../../metadata/db.ts";
import { type Mount, mountAll, unmountMounts, withTempMount } from "../../mount/mod.ts";
import {
  OVERLAY_UPPERDIR_LABEL,
  OverlaySnapshotter,
  type OverlaySnapshotterOptions,
  supported,
} from "../../snapshotters/overlay.ts";
import * as sys from "../../sys/mod.ts";
import { makeTempDir, peerTest, run, runOk } from "../_peers.ts";

const INDEX_OFF: string[] = (() => {
  try {
    Deno.statSync("/sys/module/overlay/parameters/index");
    return ["index=off"];
  } catch {
    return [];
  }
})();

interface Env extends AsyncDisposable {
  sn: OverlaySnapshotter;
  db: MetadataDb;
  /** The Strata root (a temporary directory). */
  tmp: string;
  /** The snapshotter's directory, `<tmp>/snapshots/overlayfs`. */
  dir: string;
}

/** Opens an overlay snapshotter in a fresh temporary root; disposing unmounts and removes it. */
async function open(options: OverlaySnapshotterOptions = {}, subdir = ""): Promise<Env> {
  const tmp = await makeTempDir();
  const root = join(tmp.path, subdir);
  await Deno.mkdir(root, { recursive: true });
  const db = MetadataDb.open(root);
  const dir = join(root, "snapshots", "overlayfs");
  const sn = await OverlaySnapshotter.open(dir, db, options);
  return {
    sn,
    db,
    tmp: tmp.path,
    dir,
    async [Symbol.asyncDispose]() {
      try {
        assertNoMountsUnder(tmp.path);
      } finally {
        await sn.close();
        db.close();
        await tmp.stop();
      }
    },
  };
}

function mountsUnder(dir: string): string[] {
  const found: string[] = [];
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const point = line.split(" ")[4];
    if (point === undefined) continue;
    const decoded = point.replace(
      /\\([0-7]{3})/g,
      (_, octal: string) => String.fromCharCode(parseInt(octal, 8)),
    );
    if (decoded === dir || decoded.startsWith(dir + "/")) found.push(decoded);
  }
  return found;
}

function assertNoMountsUnder(dir: string): void {
  assert.deepEqual(mountsUnder(dir), [], `mounts left under ${dir}`);
}

function mode(path: string): number {
  return (Deno.lstatSync(path).mode ?? 0) & 0o7777;
}

/** Prepares `<name>-active` on `parent`, writes `files` into its upper dir, commits as `name`. */
async function layer(
  sn: OverlaySnapshotter,
  name: string,
  parent: string | undefined,
  files: Record<string, string>,
): Promise<number> {
  const mounts = await sn.prepare(`${name}-active`, parent === undefined ? {} : { parent });
  const id = idOf(mounts);
  for (const [path, text] of Object.entries(files)) {
    await Deno.writeTextFile(join(sn.root, "snapshots", String(id), "fs", path), text);
  }
  await sn.commit(name, `${name}-active`);
  return id;
}

function idOf(mounts: Mount[]): number {
  const upper = mounts[0]?.options.find((o) => o.startsWith("upperdir="));
  const path = upper?.slice("upperdir=".length) ?? mounts[0]?.source ?? "";
  const m = /\/snapshots\/([0-9]+)\/fs$/.exec(path);
  assert.ok(m !== null, JSON.stringify(mounts));
  return Number(m[1]);
}

async function readAll(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile) out[entry.name] = await Deno.readTextFile(join(dir, entry.name));
  }
  return out;
}

peerTest("OverlaySnapshotter.open() lays out directories with containerd's modes", {
  root: true,
}, async () => {
  await using env = await open();
  const { sn, dir } = env;
  assert.equal(sn.root, dir);
  assert.equal(mode(dir), 0o700);
  assert.equal(mode(join(dir, "snapshots")), 0o700);
  const active = idOf(await sn.prepare("a"));
  assert.equal(mode(join(dir, "snapshots", String(active), "fs")), 0o755);
  assert.equal(mode(join(dir, "snapshots", String(active), "work")), 0o711);
  const view = idOf(await sn.view("v"));
  assert.equal(mode(join(dir, "snapshots", String(view), "fs")), 0o755);
  await assert.rejects(Deno.stat(join(dir, "snapshots", String(view), "work")));
  const names = [...Deno.readDirSync(join(dir, "snapshots"))].map((e) => e.name).sort();
  assert.deepEqual(names, [String(active), String(view)].sort(), "no new-* directory is left");
  await sn.commit("c", "a");
  assert.ok(Deno.statSync(join(dir, "snapshots", String(active), "work")).isDirectory);
});

peerTest("OverlaySnapshotter mounts follow containerd's table exactly", {
  root: true,
}, async () => {
  await using env = await open({ mountOptions: ["metacopy=off"] });
  const { sn, dir } = env;
  const upper = (id: number): string => join(dir, "snapshots", String(id), "fs");
  const work = (id: number): string => join(dir, "snapshots", String(id), "work");
  const options = ["metacopy=off", ...INDEX_OFF];
  assert.deepEqual(sn.mountOptions, options);

  const activeNone = await sn.prepare("active-none");
  const a = idOf(activeNone);
  assert.deepEqual(activeNone, [{ type: "bind", source: upper(a), options: ["rw", "rbind"] }]);
  const viewNone = await sn.view("view-none");
  const vn = idOf(viewNone);
  assert.deepEqual(viewNone, [{ type: "bind", source: upper(vn), options: ["ro", "rbind"] }]);

  const p1 = await layer(sn, "p1", undefined, {});
  const viewOne = await sn.view("view-one", { parent: "p1" });
  assert.deepEqual(viewOne, [{ type: "bind", source: upper(p1), options: ["ro", "rbind"] }]);
  const activeOne = await sn.prepare("active-one", { parent: "p1" });
  const a1 = idOf(activeOne);
  assert.deepEqual(activeOne, [{
    type: "overlay",
    source: "overlay",
    options: [`workdir=${work(a1)}`, `upperdir=${upper(a1)}`, `lowerdir=${upper(p1)}`, ...options],
  }]);

  const p2 = await layer(sn, "p2", "p1", {});
  const p3 = await layer(sn, "p3", "p2", {});
  const activeThree = await sn.prepare("active-three", { parent: "p3" });
  const a3 = idOf(activeThree);
  assert.deepEqual(activeThree, [{
    type: "overlay",
    source: "overlay",
    options: [
      `workdir=${work(a3)}`,
      `upperdir=${upper(a3)}`,
      `lowerdir=${upper(p3)}:${upper(p2)}:${upper(p1)}`,
      ...options,
    ],
  }]);
  const viewTwo = await sn.view("view-two", { parent: "p2" });
  assert.deepEqual(viewTwo, [{
    type: "overlay",
    source: "overlay",
    options: [`lowerdir=${upper(p2)}:${upper(p1)}`, ...options],
  }]);

  for (
    const [key, mounts] of [
      ["active-none", activeNone],
      ["view-none", viewNone],
      ["view-one", viewOne],
      ["active-one", activeOne],
      ["active-three", activeThree],
      ["view-two", viewTwo],
    ] as const
  ) {
    assert.deepEqual(await sn.mounts(key), mounts, `mounts("${key}") rebuilds the same list`);
  }
});

peerTest("OverlaySnapshotter.open() leaves index and userxattr to configured options", {
  root: true,
}, async () => {
  await using env = await open({ mountOptions: ["index=on", "userxattr"] });
  assert.deepEqual(env.sn.mountOptions, ["index=on", "userxattr"]);
  await using plain = await open();
  assert.deepEqual(plain.sn.mountOptions, INDEX_OFF, "no userxattr outside a user namespace");
  assert.deepEqual(plain.sn.capabilities, ["rebase"]);
  assert.equal(plain.sn.name, "overlayfs");
  const platforms = plain.sn.supportedPlatforms();
  assert.ok(platforms.every((p) => p.os === "linux"));
  for (const want of ["amd64", "arm64", "arm/v7", "386", "ppc64le", "s390x", "riscv64"]) {
    const [architecture, variant] = want.split("/");
    assert.ok(
      platforms.some((p) => p.architecture === architecture && p.variant === variant),
      want,
    );
  }
});

peerTest("OverlaySnapshotter mounts show lower files and write to the upper dir", {
  root: true,
}, async () => {
  await using env = await open();
  const { sn, dir } = env;
  await layer(sn, "base", undefined, { shared: "base", "base-only": "b" });
  await layer(sn, "top", "base", { shared: "top", "top-only": "t" });
  const mounts = await sn.prepare("work", { parent: "top" });
  const id = idOf(mounts);
  await withTempMount(mounts, async (root) => {
    assert.deepEqual(await readAll(root), { shared: "top", "base-only": "b", "top-only": "t" });
    await Deno.writeTextFile(join(root, "new"), "n");
  });
  assert.equal(await Deno.readTextFile(join(dir, "snapshots", String(id), "fs", "new")), "n");
  const usage = await sn.usage("work");
  assert.equal(usage.inodes, 2, "usage counts the upper dir only: its root and one file");
});

peerTest("OverlaySnapshotter views refuse writes with EROFS", { root: true }, async () => {
  await using env = await open();
  const { sn } = env;
  await layer(sn, "base", undefined, { a: "a" });
  await layer(sn, "top", "base", { b: "b" });
  for (const parent of ["base", "top"]) {
    const mounts = await sn.view(`view-${parent}`, { parent });
    await withTempMount(mounts, async (root) => {
      assert.equal(await Deno.readTextFile(join(root, "a")), "a");
      assert.throws(
        () => Deno.writeTextFileSync(join(root, "x"), "x"),
        (err: Error) => /EROFS|Read-only/.test(`${(err as { code?: string }).code} ${err.message}`),
      );
    });
  }
});

peerTest("OverlaySnapshotter hides a file whited out by a c 0 0 device in an upper", {
  root: true,
}, async () => {
  await using env = await open();
  const { sn, dir } = env;
  await layer(sn, "base", undefined, { gone: "g", kept: "k" });
  const id = idOf(await sn.prepare("delete-active", { parent: "base" }));
  sys.mknodat(
    sys.AT_FDCWD,
    join(dir, "snapshots", String(id), "fs", "gone"),
    sys.S_IFCHR,
    sys.makedev(0, 0),
  );
  await sn.commit("delete", "delete-active");
  const mounts = await sn.view("look", { parent: "delete" });
  await withTempMount(mounts, async (root) => {
    assert.deepEqual(await readAll(root), { kept: "k" });
    await assert.rejects(Deno.lstat(join(root, "gone")), Deno.errors.NotFound);
  });
});

peerTest("OverlaySnapshotter mounts 128 layers under a long root (lowerdir compaction)", {
  root: true,
}, async () => {
  await using env = await open({}, "r".repeat(200));
  const { sn } = env;
  let parent: string | undefined;
  for (let i = 1; i <= 128; i++) {
    await layer(sn, `layer-${i}`, parent, { [`file${i}`]: String(i) });
    parent = `layer-${i}`;
  }
  const mounts = await sn.prepare("top", { parent: "layer-128" });
  assert.ok(mounts[0]!.options.join(",").length > 4096, "the options exceed one page");
  const target = join(env.tmp, "merged");
  await Deno.mkdir(target);
  await mountAll(mounts, target);
  try {
    const files = await readAll(target);
    assert.equal(Object.keys(files).length, 128);
    for (let i = 1; i <= 128; i++) assert.equal(files[`file${i}`], String(i));
  } finally {
    await unmountMounts(mounts, target);
  }
});

peerTest("OverlaySnapshotter gives a new upper root the owner of its parent's", {
  root: true,
}, async () => {
  await using env = await open();
  const { sn, dir } = env;
  const upper = (id: number): string => join(dir, "snapshots", String(id), "fs");
  const base = idOf(await sn.prepare("base-active"));
  assert.equal(Deno.statSync(upper(base)).uid, Deno.uid(), "no parent: the process owner");
  await Deno.chown(upper(base), 1234, 5678);
  await sn.commit("base", "base-active");
  for (
    const make of [
      () => sn.prepare("child", { parent: "base" }),
      () => sn.view("v", { parent: "base" }),
    ]
  ) {
    const st = Deno.statSync(upper(idOf(await make())));
    assert.equal(st.uid, 1234);
    assert.equal(st.gid, 5678);
  }
  const mapped = idOf(
    await sn.prepare("mapped", {
      parent: "base",
      labels: {
        "containerd.io/snapshot/uidmapping": "0:100000:65536",
        "containerd.io/snapshot/gidmapping": "0:200000:65536",
      },
    }),
  );
  const st = Deno.statSync(upper(mapped));
  assert.deepEqual([st.uid, st.gid], [100000, 200000], "idmap labels win over the parent");
  await assert.rejects(
    sn.prepare("unmapped", {
      labels: {
        "containerd.io/snapshot/uidmapping": "1:100000:65536",
        "containerd.io/snapshot/gidmapping": "0:200000:65536",
      },
    }),
    InvalidArgument,
  );
  await assert.rejects(sn.stat("unmapped"));
});

peerTest("OverlaySnapshotter removes directories in cleanup() by default", {
  root: true,
}, async () => {
  await using env = await open();
  const { sn, dir } = env;
  const id = idOf(await sn.prepare("a"));
  const keep = idOf(await sn.prepare("keep"));
  await Deno.mkdir(join(dir, "snapshots", "new-crashed"));
  await sn.remove("a");
  assert.ok(Deno.statSync(join(dir, "snapshots", String(id))).isDirectory, "kept until cleanup");
  await sn.prepare("a");
  await sn.cleanup();
  const names = new Set([...Deno.readDirSync(join(dir, "snapshots"))].map((e) => e.name));
  assert.ok(!names.has(String(id)));
  assert.ok(!names.has("new-crashed"));
  assert.ok(names.has(String(keep)));
  assert.equal(names.size, 2, 'the new "a" and "keep"');
});

peerTest("OverlaySnapshotter with syncRemove deletes directories at once", {
  root: true,
}, async () => {
  await using env = await open({ syncRemove: true });
  const { sn, dir } = env;
  const id = idOf(await sn.prepare("a"));
  const keep = idOf(await sn.prepare("keep"));
  await Deno.mkdir(join(dir, "snapshots", "new-crashed"));
  await sn.remove("a");
  const names = [...Deno.readDirSync(join(dir, "snapshots"))].map((e) => e.name);
  assert.deepEqual(names, [String(keep)]);
  assert.notEqual(id, keep);
});

peerTest("OverlaySnapshotter with upperdirLabel reports the upper dir without storing it", {
  root: true,
}, async () => {
  await using env = await open({ upperdirLabel: true });
  const { sn, dir, db } = env;
  const id = idOf(await sn.prepare("a", { labels: { x: "1" } }));
  const upper = join(dir, "snapshots", String(id), "fs");
  const want = { x: "1", [OVERLAY_UPPERDIR_LABEL]: upper };
  assert.deepEqual((await sn.stat("a")).labels, want);
  assert.deepEqual(
    (await sn.update({ name: "a", labels: { x: "2" } }, { fieldpaths: ["labels.x"] })).labels,
    { ...want, x: "2" },
  );
  assert.deepEqual((await sn.list()).map((i) => i.labels), [{ ...want, x: "2" }]);
  const walked: Record<string, string>[] = [];
  await sn.walk((info) => {
    walked.push(info.labels);
  });
  assert.deepEqual(walked, [{ ...want, x: "2" }]);
  assert.deepEqual(await sn.list([`labels."${OVERLAY_UPPERDIR_LABEL}"`]), [], "not filterable");
  const plain = await OverlaySnapshotter.open(dir, db);
  assert.deepEqual((await plain.stat("a")).labels, { x: "2" }, "never stored");
});

peerTest("supported() passes on the real file system", { root: true }, async () => {
  await using tmp = await makeTempDir();
  const root = join(tmp.path, "overlayfs");
  await supported(root);
  assert.deepEqual([...Deno.readDirSync(root)], [], "the trial directory is removed");
  assertNoMountsUnder(tmp.path);
});

peerTest("supported() fails with FailedPrecondition where the kernel refuses overlay", {
  root: true,
}, async () => {
  await using tmp = await makeTempDir();
  const at = (p: string): string => join(tmp.path, p);
  for (const d of ["l1", "l2", "upper", "work", "merged"]) await Deno.mkdir(at(d));
  // An overlay cannot be the upper layer of another overlay.
  const mounts: Mount[] = [{
    type: "overlay",
    source: "overlay",
    options: [
      `workdir=${at("work")}`,
      `upperdir=${at("upper")}`,
      `lowerdir=${at("l2")}:${at("l1")}`,
    ],
  }];
  await mountAll(mounts, at("merged"));
  try {
    await assert.rejects(
      supported(at("merged/root")),
      (err: unknown) =>
        err instanceof FailedPrecondition &&
        err.message.startsWith(
          `Cannot use overlayfs at "${
            at("merged/root")
          }": the kernel refused an overlay mount: EINVAL`,
        ),
    );
  } finally {
    await unmountMounts(mounts, at("merged"));
  }
  assertNoMountsUnder(tmp.path);
});

const D_TYPE_TEST = "OverlaySnapshotter.open() rejects a file system without d_type";
peerTest(D_TYPE_TEST, {
  root: true,
  tools: ["truncate", "mkfs.ext4", "mount", "umount"],
}, async () => {
  await using tmp = await makeTempDir();
  const image = join(tmp.path, "image");
  const mnt = join(tmp.path, "mnt");
  await Deno.mkdir(mnt);
  await runOk(["truncate", "-s", "16M", image]);
  await runOk(["mkfs.ext4", "-q", "-O", "^filetype,^has_journal", image]);
  await runOk(["mount", "-o", "loop", image, mnt]);
  const db = MetadataDb.open(tmp.path);
  try {
    await assert.rejects(
      OverlaySnapshotter.open(join(mnt, "overlayfs"), db),
      (err: unknown) => err instanceof FailedPrecondition && err.message.includes("d_type"),
    );
    await assert.rejects(
      supported(join(mnt, "other")),
      (err: unknown) =>
        err instanceof FailedPrecondition &&
        err.message.startsWith(`Cannot use overlayfs at "${join(mnt, "other")}": `) &&
        err.message.endsWith("(it lacks d_type; reformat XFS with ftype=1)"),
    );
    assert.deepEqual(
      [...Deno.readDirSync(join(mnt, "overlayfs"))].map((e) => e.name),
      [],
      "the probe file is removed",
    );
  } finally {
    db.close();
    await run(["umount", mnt]);
  }
});

Deno.test("OverlaySnapshotter.usage() walks a large upper dir in slices; commit stores a given usage", async () => {
  await using env = await open();
  const { sn } = env;
  const mounts = await sn.prepare("big-active");
  const upper = join(sn.root, "snapshots", String(idOf(mounts)), "fs");
  // More entries than one slice of the walk (2048), in nested directories, with hardlinks.
  for (let d = 0; d < 5; d++) {
    Deno.mkdirSync(join(upper, `d${d}`));
    for (let f = 0; f < 500; f++) Deno.writeTextFileSync(join(upper, `d${d}`, `f${f}`), "x");
  }
  Deno.linkSync(join(upper, "d0", "f0"), join(upper, "link"));
  Deno.writeFileSync(join(upper, "big"), new Uint8Array(1 << 20).fill(1));
  // 1 root + 5 dirs + 2500 files + "big"; the link shares f0's inode.
  const expected = await sn.usage("big-active");
  assert.equal(expected.inodes, 2507);
  assert.ok(expected.size >= (1 << 20) + 2500 * 4096, `size ${expected.size}`);
  let turns = 0;
  const timer = setInterval(() => turns++, 0);
  try {
    assert.deepEqual(await sn.usage("big-active"), expected);
  } finally {
    clearInterval(timer);
  }
  assert.ok(turns > 0, "the walk let the event loop run");

  // A given usage is stored as it is; without one the commit measures.
  const given = { size: 12345, inodes: 7 };
  await sn.commit("big", "big-active", { usage: given });
  assert.deepEqual(await sn.usage("big"), given);
  await layer(sn, "measured", undefined, { a: "a" });
  assert.equal((await sn.usage("measured")).inodes, 2);

  await sn.prepare("bad-active");
  for (const usage of [{ size: -1, inodes: 1 }, { size: 1, inodes: 0.5 }]) {
    await assert.rejects(
      sn.commit("bad", "bad-active", { usage }),
      (err) => err instanceof InvalidArgument && /not two non-negative integers/.test(err.message),
    );
  }
  assert.equal((await sn.stat("bad-active")).kind, "active", "a refused commit changes nothing");
});
