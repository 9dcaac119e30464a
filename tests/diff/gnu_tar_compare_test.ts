// Applied trees against peers: GNU tar's extraction of the same layer (real content from
// /usr/include and /etc, and a synthetic tree with every entry type; plain and gzip), and
// umoci's unpack of an image built with umoci.

import assert from "node:assert/strict";
import { join } from "node:path";
import { applyLayer } from "../../diff/apply.ts";
import * as sys from "../../sys/mod.ts";
import { makeTempDir, makeUmociImage, peerTest, umociUnpack } from "../_peers.ts";
import { diffTrees, snapshotTree } from "../_tree.ts";
import { readFileChunks, sh } from "./_helpers.ts";

const GNU_TAR = { root: true, tools: ["tar", "getfattr", "gzip"] };

/** Lists every path below `dir` ("." for the root) without following symlinks. */
function walk(dir: string, rel = ".", out: string[] = []): string[] {
  out.push(rel);
  const info = Deno.lstatSync(rel === "." ? dir : join(dir, rel));
  if (info.isDirectory) {
    const names = [...Deno.readDirSync(rel === "." ? dir : join(dir, rel))].map((e) => e.name);
    for (const name of names.sort()) walk(dir, rel === "." ? name : `${rel}/${name}`, out);
  }
  return out;
}

/** Nanosecond mtimes (and allocated blocks of regular files) that differ between two trees. */
function nsDiffs(a: string, b: string, options: { ignoreRootMtime?: boolean } = {}): string[] {
  const diffs: string[] = [];
  for (const rel of walk(a)) {
    if (rel === "." && options.ignoreRootMtime) continue;
    let y: sys.Stat;
    try {
      y = sys.lstat(join(b, rel));
    } catch {
      continue; // reported by diffTrees
    }
    const x = sys.lstat(join(a, rel));
    if (x.mtime.sec !== y.mtime.sec || x.mtime.nsec !== y.mtime.nsec) {
      diffs.push(
        `${JSON.stringify(rel)}: mtime ${JSON.stringify(x.mtime)} != ${JSON.stringify(y.mtime)}`,
      );
    }
    if ((x.mode & sys.S_IFMT) === sys.S_IFREG && x.blocks !== y.blocks) {
      diffs.push(`${JSON.stringify(rel)}: ${x.blocks} blocks != ${y.blocks}`);
    }
  }
  return diffs;
}

/**
 * Applies `layer` with Strata and extracts it with GNU tar, then compares the two trees (or
 * their `subdir`, for layers whose parents have no entry: those get the time of extraction).
 */
async function compareWithGnuTar(dir: string, layerPath: string, subdir = ""): Promise<void> {
  const ours = join(dir, "ours");
  const theirs = join(dir, "theirs");
  await Deno.mkdir(ours);
  await Deno.mkdir(theirs);
  const result = await applyLayer(readFileChunks(layerPath), ours);
  assert.deepEqual(result.skipped.filter((s) => s.path !== "./" && s.path !== "."), []);
  await sh([
    "tar",
    "--xattrs",
    "--xattrs-include=*",
    "--numeric-owner",
    "--same-owner",
    "-xpf",
    layerPath,
    "-C",
    theirs,
  ]);
  // The root's attributes come from the layer with GNU tar and never with Strata.
  const a = join(ours, subdir);
  const b = join(theirs, subdir);
  const diffs = diffTrees(await snapshotTree(a), await snapshotTree(b), {
    ignorePaths: subdir === "" ? ["."] : [],
  });
  assert.deepEqual(diffs, []);
  assert.deepEqual(nsDiffs(a, b, { ignoreRootMtime: subdir === "" }), []);
}

/** A tree with every entry type and attribute a layer can carry. */
async function syntheticTree(src: string): Promise<void> {
  const at = (p: string) => join(src, p);
  for (const d of ["bin", "dev", "etc/nested/deeper", "run", "srv/sub", "tmp", "var/empty"]) {
    await Deno.mkdir(at(d), { recursive: true });
  }
  await Deno.writeTextFile(at("etc/hostname"), "strata\n");
  await Deno.writeTextFile(at("etc/nested/deeper/file"), "deep\n".repeat(1000));
  await Deno.writeFile(at("bin/tool"), new Uint8Array(300_000).map((_, i) => (i * 31) % 251));
  await Deno.chmod(at("bin/tool"), 0o4755);
  await Deno.writeTextFile(at("bin/sgid"), "sgid");
  await Deno.chmod(at("bin/sgid"), 0o2711);
  await Deno.chown(at("bin/sgid"), 12, 34);
  await Deno.chmod(at("tmp"), 0o1777);
  await Deno.chmod(at("srv"), 0o2775);
  await Deno.chown(at("srv"), 0, 50);
  await Deno.chmod(at("srv/sub"), 0o750);
  await Deno.link(at("bin/tool"), at("bin/tool-link"));
  await Deno.link(at("etc/hostname"), at("etc/nested/hostname-link"));
  await Deno.symlink("../etc/hostname", at("bin/rel-link"));
  await Deno.symlink("/etc/hostname", at("bin/abs-link"));
  await Deno.symlink("dangling/target", at("bin/dangling"));
  await sh(["mknod", "-m", "0666", at("dev/null"), "c", "1", "3"]);
  await sh(["mknod", "-m", "0660", at("dev/sda"), "b", "8", "0"]);
  await sh(["mknod", "-m", "0600", at("dev/big"), "c", "4095", "1048575"]);
  await sh(["mkfifo", "-m", "0620", at("run/fifo")]);
  await Deno.chown(at("run/fifo"), 1000, 1000);
  sys.lsetxattr(at("etc/hostname"), "user.comment", new TextEncoder().encode("a comment"));
  sys.lsetxattr(at("srv/sub"), "user.dir", new Uint8Array([0, 1, 2, 255]));
  sys.lsetxattr(
    at("bin/tool"),
    "security.capability",
    new Uint8Array([0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
  );
  // A sparse file: 64 MiB with two 4 KiB runs.
  const fd = sys.open(at("var/sparse"), sys.O_WRONLY | sys.O_CREAT, 0o644);
  try {
    sys.ftruncate(fd, 64 << 20);
    sys.pwrite(fd, new Uint8Array(4096).fill(1), 4096);
    sys.pwrite(fd, new Uint8Array(4096).fill(2), 40 << 20);
  } finally {
    sys.close(fd);
  }
  await Deno.writeTextFile(at("var/empty/.keep"), "");
  await Deno.writeTextFile(at("données-日本語"), "utf-8 name");
  // Nanosecond times everywhere, symlinks included, directories last.
  let n = 0;
  for (const rel of walk(src).reverse()) {
    n++;
    const t = { sec: 1600000000 + n * 1000, nsec: (n * 123457) % 1e9 };
    sys.utimensat(sys.AT_FDCWD, join(src, rel), [t, t], sys.AT_SYMLINK_NOFOLLOW);
  }
}

peerTest(
  "applyLayer() gives GNU tar's tree for /usr/include (gnu format, plain)",
  GNU_TAR,
  async () => {
    await using tmp = await makeTempDir();
    const layerPath = join(tmp.path, "usr-include.tar");
    await sh(["tar", "--numeric-owner", "-C", "/", "-cf", layerPath, "usr/include"]);
    await compareWithGnuTar(tmp.path, layerPath, "usr/include");
    const implied = sys.lstat(join(tmp.path, "ours/usr"));
    assert.deepEqual([implied.mode & 0o7777, implied.uid, implied.gid], [0o755, 0, 0]);
  },
);

peerTest(
  "applyLayer() gives GNU tar's tree for /etc (posix format with xattrs, gzip)",
  GNU_TAR,
  async () => {
    await using tmp = await makeTempDir();
    const layerPath = join(tmp.path, "etc.tar.gz");
    await sh([
      "tar",
      "--format=posix",
      "--xattrs",
      "--xattrs-include=user.*",
      "--numeric-owner",
      "-C",
      "/",
      "-czf",
      layerPath,
      "etc",
    ]);
    await compareWithGnuTar(tmp.path, layerPath);
  },
);

for (const compressed of [false, true]) {
  peerTest(
    `applyLayer() gives GNU tar's tree for every entry type (posix, sparse, ${
      compressed ? "gzip" : "plain"
    })`,
    GNU_TAR,
    async () => {
      await using tmp = await makeTempDir();
      const src = join(tmp.path, "src");
      await Deno.mkdir(src);
      await syntheticTree(src);
      const layerPath = join(tmp.path, compressed ? "synthetic.tar.gz" : "synthetic.tar");
      await sh([
        "tar",
        "--format=posix",
        "--sparse",
        "--xattrs",
        "--xattrs-include=*",
        "--numeric-owner",
        "-C",
        src,
        compressed ? "-czf" : "-cf",
        layerPath,
        ".",
      ]);
      await compareWithGnuTar(tmp.path, layerPath);
      // The source itself, too (GNU tar and Strata agree with what was archived).
      const ours = await snapshotTree(join(tmp.path, "ours"));
      assert.deepEqual(diffTrees(ours, await snapshotTree(src), { ignorePaths: ["."] }), []);
      assert.deepEqual(nsDiffs(join(tmp.path, "ours"), src, { ignoreRootMtime: true }), []);
    },
  );
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

function blobPath(layout: string, digest: string): string {
  const [algorithm, hex] = digest.split(":");
  return join(layout, "blobs", algorithm!, hex!);
}

peerTest("applyLayer() gives umoci unpack's tree for an umoci-built image", {
  root: true,
  tools: ["umoci", "getfattr"],
}, async () => {
  await using tmp = await makeTempDir();
  const { layout, tag } = await makeUmociImage(join(tmp.path, "image"));
  const rootfs = await umociUnpack(`${layout}:${tag}`, join(tmp.path, "bundle"));

  const index = JSON.parse(await Deno.readTextFile(join(layout, "index.json")));
  const entry = (index.manifests as (Descriptor & { annotations?: Record<string, string> })[])
    .find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === tag);
  assert.ok(entry, `no manifest tagged ${tag}`);
  const manifest = JSON.parse(await Deno.readTextFile(blobPath(layout, entry.digest)));
  const config = JSON.parse(await Deno.readTextFile(blobPath(layout, manifest.config.digest)));
  const layers = manifest.layers as Descriptor[];
  assert.ok(layers.length >= 2);

  const ours = join(tmp.path, "ours");
  await Deno.mkdir(ours);
  for (const [i, layer] of layers.entries()) {
    const result = await applyLayer(readFileChunks(blobPath(layout, layer.digest)), ours, {
      whiteouts: "delete",
      expectedDigest: layer.digest,
      expectedDiffId: config.rootfs.diff_ids[i],
    });
    assert.equal(result.compressedSize, layer.size);
  }
  const diffs = diffTrees(await snapshotTree(ours), await snapshotTree(rootfs), {
    ignorePaths: ["."],
  });
  // Layer 2 adds etc/layer2.txt without an entry for etc/: containerd and Strata leave etc with
  // the time of that change, umoci restores the directory's earlier mtime.
  const parentTime = (d: string) => d.startsWith('"etc": mtime');
  assert.deepEqual(diffs.filter((d) => !d.startsWith('".umoci') && !parentTime(d)), []);
  assert.deepEqual(
    nsDiffs(ours, rootfs, { ignoreRootMtime: true }).filter((d) => !parentTime(d)),
    [],
  );
});
