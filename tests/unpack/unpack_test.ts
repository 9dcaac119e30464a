// The unpack orchestrator end to end: the mounted chain equals a flattened apply of the layers and
// containerd's unpack of the same image, on both snapshotters; idempotency; labels; corrupt and
// missing blobs; the platform check; concurrent `strata unpack` processes.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { Client } from "../../client.ts";
import { applyLayer } from "../../diff/apply.ts";
import { createTar, type TarInput } from "../../diff/tar/mod.ts";
import { FailedPrecondition, NotFound } from "../../errors.ts";
import { exportArchive } from "../../images/archive/export.ts";
import { importArchive } from "../../images/archive/import.ts";
import { chainIds, imageLayers, resolveManifest } from "../../images/manifest.ts";
import {
  MEDIA_TYPE_OCI_CONFIG,
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_LAYER_GZIP,
  MEDIA_TYPE_OCI_MANIFEST,
} from "../../images/media_types.ts";
import {
  allPlatforms,
  defaultPlatformSpec,
  formatPlatform,
  onlyPlatform,
  parsePlatform,
} from "../../images/platforms.ts";
import type { Descriptor, ImageRecord, Platform } from "../../images/types.ts";
import { buildSample } from "../../sample/build.ts";
import { NATIVE_PLATFORMS } from "../../snapshotters/native.ts";
import { OVERLAY_PLATFORMS } from "../../snapshotters/overlay.ts";
import {
  LABEL_DIFF_ID,
  LABEL_GC_REF_SNAPSHOT,
  LABEL_PARENT_CHAIN_ID,
  LABEL_SNAPSHOT_REF,
  LABEL_UNCOMPRESSED,
  type LayerEvent,
  unpackImage,
} from "../../unpack/unpack.ts";
import {
  type Containerd,
  makeTempDir,
  makeUmociImage,
  peerTest,
  run,
  runOk,
  startContainerd,
} from "../_peers.ts";
import type { TreeEntry } from "../_tree.ts";
import {
  assertSameTree,
  CONTAINERD_NATIVE_COPY_LOSES_DIR_TIMES,
  containerdTree,
  ctrSnapshotNames,
  OVERLAY_KEEPS_IMPLIED_PARENT_TIME,
  strataTree,
  treeWithNanos,
} from "../_unpack_trees.ts";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const SNAPSHOTTERS = ["overlayfs", "native"] as const;
type SnapshotterName = typeof SNAPSHOTTERS[number];

// ---------------------------------------------------------------------------------------------
// Helpers.

interface TestRoot extends AsyncDisposable {
  /** The temporary directory (the Strata root is `<dir>/root`). */
  dir: string;
  root: string;
  client: Client;
}

async function testRoot(): Promise<TestRoot> {
  const tmp = await makeTempDir({ prefix: "strata-unpack-" });
  const root = join(tmp.path, "root");
  const client = Client.open({ root });
  return {
    dir: tmp.path,
    root,
    client,
    async [Symbol.asyncDispose]() {
      client.close();
      await tmp.stop();
    },
  };
}

/** Registers one test per snapshotter; overlayfs needs root. */
function bothSnapshotters(name: string, fn: (sn: SnapshotterName) => Promise<void>): void {
  peerTest(`${name} (overlayfs)`, { root: true }, () => fn("overlayfs"));
  Deno.test(`${name} (native)`, () => fn("native"));
}

async function importSample(r: TestRoot): Promise<ImageRecord> {
  const sample = await buildSample(join(r.dir, "sample"));
  const [record] = (await importArchive(r.client, sample.layout)).images;
  assert.ok(record);
  return record;
}

/** Names of every snapshot (any kind) in a snapshotter, sorted. */
async function snapshotNames(client: Client, sn: string): Promise<string[]> {
  return (await (await client.snapshotter(sn)).list()).map((i) => i.name).sort();
}

/** The chain IDs of an image, bottom first. */
async function imageChain(client: Client, record: ImageRecord): Promise<string[]> {
  const layers = await imageLayers(client.content, record.target);
  return chainIds(layers.map((l) => l.diffId));
}

/** Applies every layer of an image in order into `dir` (like `strata rootfs`). */
async function flattenedTree(
  client: Client,
  record: ImageRecord,
  dir: string,
): Promise<Map<string, TreeEntry>> {
  await Deno.mkdir(dir, { recursive: true });
  for (const layer of await imageLayers(client.content, record.target)) {
    await applyLayer(client.content.stream(layer.blob.digest), dir, {
      expectedDiffId: layer.diffId,
      expectedDigest: layer.blob.digest,
    });
  }
  return await treeWithNanos(dir);
}

async function exportToFile(client: Client, record: ImageRecord, file: string): Promise<void> {
  using out = await Deno.open(file, { write: true, create: true, truncate: true });
  await exportArchive(client, [record], async (chunk) => {
    let off = 0;
    while (off < chunk.length) off += await out.write(chunk.subarray(off));
  });
}

/** Labels of every blob in containerd's content store, by digest. */
async function ctrContentLabels(ctrd: Containerd): Promise<Map<string, Record<string, string>>> {
  const out = (await ctrd.ctrOk(["content", "ls"])).stdout;
  const result = new Map<string, Record<string, string>>();
  for (const line of out.trim().split("\n").slice(1)) {
    const fields = line.split("\t");
    const labels: Record<string, string> = {};
    const text = fields.at(-1) ?? "";
    if (text !== "" && text !== "-") {
      for (const pair of text.split(",")) {
        const eq = pair.indexOf("=");
        labels[pair.slice(0, eq)] = pair.slice(eq + 1);
      }
    }
    result.set(fields[0]!, labels);
  }
  return result;
}

/**
 * Unpacks `record` into both snapshotters with Strata and (from an exported archive) with
 * containerd, and asserts: the same chain IDs in both; the mounted top snapshot equals the
 * flattened apply and containerd's mounted snapshot; the same content labels as containerd sets.
 */
async function assertUnpackMatchesPeers(r: TestRoot, record: ImageRecord): Promise<void> {
  const chain = await imageChain(r.client, record);
  const top = chain.at(-1)!;
  const flat = await flattenedTree(r.client, record, join(r.dir, "flat"));
  const archive = join(r.dir, "image.tar");
  await exportToFile(r.client, record, archive);
  await using ctrd = await startContainerd();
  const image = r.client.getImage(record.name);
  for (const sn of SNAPSHOTTERS) {
    assert.equal(await image.isUnpacked(sn), false);
    const result = await image.unpack(sn);
    assert.equal(result.chainId, top);
    assert.equal(result.snapshotter, sn);
    assert.deepEqual(result.layers.map((l) => l.chainId), chain);
    assert.ok(result.layers.every((l) => l.applied));
    assert.equal(await image.isUnpacked(sn), true);
    assert.deepEqual(await snapshotNames(r.client, sn), [...chain].sort());

    const ours = await strataTree(r.client, sn, top);
    assertSameTree(ours, flat, `${sn} view vs flattened apply`, {
      minEntries: 5,
      ...(sn === "overlayfs" ? { unpackTimeInB: OVERLAY_KEEPS_IMPLIED_PARENT_TIME } : {}),
    });

    await ctrd.ctrOk(["images", "import", "--snapshotter", sn, archive]);
    assert.deepEqual(await ctrSnapshotNames(ctrd, sn), [...chain].sort(), "containerd's chain");
    const theirs = await containerdTree(ctrd, sn, top);
    assertSameTree(ours, theirs, `${sn}: strata view vs containerd view`, {
      minEntries: 5,
      unpackTimeInB: sn === "overlayfs"
        ? OVERLAY_KEEPS_IMPLIED_PARENT_TIME
        : CONTAINERD_NATIVE_COPY_LOSES_DIR_TIMES,
    });
  }
  // The content labels containerd's unpack sets, with the same values.
  const labels = await ctrContentLabels(ctrd);
  const { manifest } = await resolveManifest(r.client.content, record.target);
  for (const blob of [...manifest.layers, manifest.config]) {
    const ours = (await r.client.content.info(blob.digest)).labels;
    const theirs = labels.get(blob.digest) ?? {};
    for (
      const key of [
        LABEL_UNCOMPRESSED,
        `${LABEL_GC_REF_SNAPSHOT}overlayfs`,
        `${LABEL_GC_REF_SNAPSHOT}native`,
      ]
    ) {
      assert.equal(ours[key], theirs[key], `label "${key}" of ${blob.digest}`);
    }
  }
}

/**
 * Builds the umoci test image and adds a third layer with what the first two lack: setuid and
 * setgid files, a FIFO, a char device, user and security xattrs, a deleted-and-recreated directory,
 * a hardlink to a lower file, a sticky directory, sub-second and old mtimes, metadata-only changes
 * (owner, mode), a symlink replaced by a directory, and names with spaces and non-ASCII.
 */
async function makeRichUmociImage(dir: string): Promise<string> {
  const { layout, tag } = await makeUmociImage(dir, { tag: "rich" });
  const image = `${layout}:${tag}`;
  const bundle = join(dir, "bundle-3");
  await runOk(["umoci", "unpack", "--image", image, bundle]);
  const fs = join(bundle, "rootfs");
  const at = (p: string) => join(fs, p);
  const sh = (script: string) => runOk(["sh", "-euc", script, "sh", fs]);
  await Deno.mkdir(at("usr/local/bin"), { recursive: true });
  await Deno.copyFile("/bin/true", at("usr/local/bin/suid-true"));
  await Deno.chmod(at("usr/local/bin/suid-true"), 0o4755);
  await Deno.copyFile("/bin/true", at("usr/local/bin/sgid-true"));
  await Deno.chmod(at("usr/local/bin/sgid-true"), 0o2711);
  await Deno.mkdir(at("run"), { recursive: true });
  await sh(`mkfifo "$1/run/fifo"; mkdir -p "$1/dev"; mknod "$1/dev/null2" c 1 3`);
  await sh(
    `setfattr -n user.strata.test -v hello "$1/etc/hostname"
     setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= "$1/usr/local/bin/suid-true"`,
  );
  // Delete a directory with contents and recreate it with other contents.
  await Deno.remove(at("usr/share/doc/strata"), { recursive: true });
  await Deno.mkdir(at("usr/share/doc/strata"));
  await Deno.writeTextFile(at("usr/share/doc/strata/NEW"), "recreated\n");
  await Deno.link(at("data/random.bin"), at("data/random.hardlink2"));
  await Deno.mkdir(at("tmp"));
  await Deno.chmod(at("tmp"), 0o1777);
  await Deno.writeTextFile(at("etc/old"), "old\n");
  // umoci (Go's tar writer) rounds it to whole seconds.
  await sh(`touch -h -d '2001-02-03 04:05:06.789123456' "$1/etc/old"`);
  await Deno.chown(at("etc/hostname"), 1234, 5678);
  await Deno.chmod(at("var/empty"), 0o700);
  await Deno.remove(at("data/motd.symlink"));
  await Deno.mkdir(at("data/motd.symlink"));
  await Deno.mkdir(at("name with spaces"));
  await Deno.writeTextFile(at("name with spaces/ünïcödé ☃.txt"), "unicode\n");
  await Deno.writeFile(at("empty-file"), new Uint8Array());
  await runOk(["umoci", "repack", "--image", image, "--history.created_by=strata test: 3", bundle]);
  await Deno.remove(bundle, { recursive: true });
  await runOk(["umoci", "gc", "--layout", layout]);
  return image;
}

/** What one layer of a hand-made image holds. */
type LayerEntries = TarInput[];

interface BuiltImage {
  name: string;
  layout: string;
  diffIds: string[];
  layers: Descriptor[];
  config: Descriptor;
}

function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/**
 * Writes a one-image OCI layout for any platform, with gzip layers made by Strata's tar writer.
 * `wrongDiffId` replaces the config's diff ID of that layer with a wrong one.
 */
async function writeLayout(
  dir: string,
  options: { name: string; platform: Platform; layers: LayerEntries[]; wrongDiffId?: number },
): Promise<BuiltImage> {
  await Deno.mkdir(join(dir, "blobs", "sha256"), { recursive: true });
  const put = async (bytes: Uint8Array, mediaType: string): Promise<Descriptor> => {
    const digest = sha256(bytes);
    await Deno.writeFile(join(dir, "blobs", "sha256", digest.slice(7)), bytes);
    return { mediaType, digest, size: bytes.length };
  };
  const diffIds: string[] = [];
  const layers: Descriptor[] = [];
  for (const [i, entries] of options.layers.entries()) {
    const tar = await createTar(entries);
    diffIds.push(
      i === options.wrongDiffId ? sha256(new TextEncoder().encode(`not layer ${i}`)) : sha256(tar),
    );
    layers.push(await put(gzipSync(tar), MEDIA_TYPE_OCI_LAYER_GZIP));
  }
  const enc = new TextEncoder();
  const { os, architecture, variant } = options.platform;
  const config = await put(
    enc.encode(JSON.stringify({
      created: "2026-01-01T00:00:00Z",
      os,
      architecture,
      ...(variant ? { variant } : {}),
      config: {},
      rootfs: { type: "layers", diff_ids: diffIds },
    })),
    MEDIA_TYPE_OCI_CONFIG,
  );
  const manifest = await put(
    enc.encode(
      JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, config, layers }),
    ),
    MEDIA_TYPE_OCI_MANIFEST,
  );
  await Deno.writeTextFile(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_OCI_INDEX,
      manifests: [{
        ...manifest,
        platform: options.platform,
        annotations: { "io.containerd.image.name": options.name },
      }],
    }),
  );
  await Deno.writeTextFile(
    join(dir, "oci-layout"),
    JSON.stringify({ imageLayoutVersion: "1.0.0" }),
  );
  return { name: options.name, layout: dir, diffIds, layers, config };
}

const T = { sec: 1767225600, nsec: 0 };
const SMALL_LAYERS: LayerEntries[] = [
  [
    { header: { name: "etc", type: "directory", mtime: T } },
    {
      header: { name: "etc/hostname", type: "file", mtime: T },
      body: new TextEncoder().encode("a\n"),
    },
    { header: { name: "bin", type: "directory", mtime: T } },
  ],
  [
    { header: { name: "etc", type: "directory", mtime: T } },
    { header: { name: "etc/motd", type: "file", mtime: T }, body: new TextEncoder().encode("b\n") },
  ],
];

async function importBuilt(r: TestRoot, built: BuiltImage): Promise<ImageRecord> {
  const [record] = (await importArchive(r.client, built.layout)).images;
  assert.ok(record);
  return record;
}

/** Snapshot directories the snapshotter holds on disk (committed, active or leftovers). */
async function snapshotDirs(root: string, sn: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(join(root, "snapshots", sn, "snapshots"))) {
      names.push(e.name);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return names.sort();
}

// ---------------------------------------------------------------------------------------------
// Equality with a flattened apply and with containerd.

peerTest(
  "unpack of the sample into overlayfs and native equals a flattened apply and containerd's unpack",
  { tools: ["containerd", "ctr", "getfattr"], root: true },
  async () => {
    await using r = await testRoot();
    const record = await importSample(r);
    await assertUnpackMatchesPeers(r, record);
  },
);

peerTest(
  "unpack of a umoci image (whiteouts, hardlinks, setuid, devices, xattrs) equals a flattened apply and containerd's unpack",
  { tools: ["umoci", "containerd", "ctr", "getfattr", "setfattr", "mkfifo", "mknod"], root: true },
  async () => {
    await using r = await testRoot();
    const layout = await makeRichUmociImage(join(r.dir, "umoci"));
    const at = layout.lastIndexOf(":");
    const [record] = (await importArchive(r.client, layout.slice(0, at), {
      baseName: "example.com/strata/rich",
    })).images;
    assert.ok(record);
    assert.equal((await imageLayers(r.client.content, record.target)).length, 3);
    await assertUnpackMatchesPeers(r, record);
    // The special cases really are in the result (and so compared above).
    const tree = await strataTree(
      r.client,
      "overlayfs",
      (await imageChain(r.client, record)).at(-1)!,
    );
    assert.equal(tree.get("usr/local/bin/suid-true")?.mode, 0o4755);
    assert.equal(tree.get("usr/local/bin/sgid-true")?.mode, 0o2711);
    assert.equal(tree.get("run/fifo")?.type, "fifo");
    assert.equal(tree.get("dev/null2")?.type, "char");
    assert.equal(tree.get("etc/hostname")?.xattrs?.["user.strata.test"], "68656c6c6f");
    assert.ok(tree.get("usr/local/bin/suid-true")?.xattrs?.["security.capability"]);
    assert.equal(tree.get("to-delete.txt"), undefined);
    assert.deepEqual(
      [...tree.keys()].filter((p) => p.startsWith("usr/share/doc/strata/")),
      ["usr/share/doc/strata/NEW"],
    );
    assert.equal(tree.get("data/random.hardlink2")?.hardlinkGroup, "data/random.bin");
    assert.equal(tree.get("tmp")?.mode, 0o1777);
    assert.equal(tree.get("etc/old")?.xattrs?.["(mtime ns)"], "981173107.0000000000");
    assert.equal(tree.get("data/motd.symlink")?.type, "dir");
  },
);

// ---------------------------------------------------------------------------------------------
// Idempotency and labels.

bothSnapshotters(
  "unpackImage() a second time applies nothing and reports each layer as existing",
  async (sn) => {
    await using r = await testRoot();
    const record = await importSample(r);
    const first: LayerEvent[] = [];
    await unpackImage(r.client, record, { snapshotter: sn, onLayer: (e) => first.push(e) });
    // Per layer in order; the layers interleave in parallel mode (overlayfs on several CPUs).
    assert.deepEqual(first.map((e) => `${e.index} ${e.state}`).sort(), [
      "0 extracted",
      "0 extracting",
      "1 extracted",
      "1 extracting",
    ]);
    const snapshotter = await r.client.snapshotter(sn);
    const before = await snapshotter.list();
    const dirs = await snapshotDirs(r.root, sn);

    const second: LayerEvent[] = [];
    const result = await unpackImage(r.client, record, {
      snapshotter: sn,
      onLayer: (e) => second.push(e),
    });
    assert.deepEqual(second.map((e) => e.state), ["exists", "exists"]);
    assert.deepEqual(result.layers.map((l) => l.applied), [false, false]);
    assert.deepEqual(await snapshotter.list(), before);
    assert.deepEqual(await snapshotDirs(r.root, sn), dirs);
  },
);

bothSnapshotters(
  "unpackImage() labels layer blobs, the config blob and the snapshots as containerd does",
  async (sn) => {
    await using r = await testRoot();
    const record = await importSample(r);
    const layers = await imageLayers(r.client.content, record.target);
    const chain = chainIds(layers.map((l) => l.diffId));
    const { manifest } = await resolveManifest(r.client.content, record.target);
    for (const l of layers) {
      assert.equal(
        (await r.client.content.info(l.blob.digest)).labels[LABEL_UNCOMPRESSED],
        undefined,
      );
    }
    await unpackImage(r.client, record, { snapshotter: sn });
    for (const l of layers) {
      assert.equal(
        (await r.client.content.info(l.blob.digest)).labels[LABEL_UNCOMPRESSED],
        l.diffId,
      );
    }
    const config = (await r.client.content.info(manifest.config.digest)).labels;
    assert.equal(config[`${LABEL_GC_REF_SNAPSHOT}${sn}`], chain.at(-1));
    const other = sn === "native" ? "overlayfs" : "native";
    assert.equal(config[`${LABEL_GC_REF_SNAPSHOT}${other}`], undefined);
    const snapshotter = await r.client.snapshotter(sn);
    for (const [i, l] of layers.entries()) {
      const info = await snapshotter.stat(chain[i]!);
      assert.equal(info.kind, "committed");
      assert.equal(info.parent, i === 0 ? undefined : chain[i - 1]);
      assert.equal(info.labels[LABEL_SNAPSHOT_REF], chain[i]);
      assert.equal(info.labels[LABEL_DIFF_ID], l.diffId);
      assert.equal(info.labels[LABEL_PARENT_CHAIN_ID], i === 0 ? undefined : chain[i - 1]);
    }
  },
);

// ---------------------------------------------------------------------------------------------
// Corrupt and missing blobs.

bothSnapshotters(
  "unpackImage() of a corrupt layer blob fails with FailedPrecondition and commits nothing of it",
  async (sn) => {
    await using r = await testRoot();
    const record = await importSample(r);
    const layers = await imageLayers(r.client.content, record.target);
    const chain = chainIds(layers.map((l) => l.diffId));
    const top = layers.at(-1)!.blob.digest;
    const path = r.client.content.blobPath(top);
    const original = await Deno.readFile(path);
    // Byte 4 is in the gzip header's mtime: the layer still decompresses to the same tar, so only
    // the check of the compressed digest can catch it.
    const corrupt = original.slice();
    corrupt[4] = corrupt[4]! ^ 0xff;
    await Deno.chmod(path, 0o644);
    await Deno.writeFile(path, corrupt);

    const events: LayerEvent[] = [];
    await assert.rejects(
      unpackImage(r.client, record, { snapshotter: sn, onLayer: (e) => events.push(e) }),
      (err: Error) => err instanceof FailedPrecondition && err.message.includes(top),
    );
    // In parallel mode layer 1 may start before layer 0 is committed.
    assert.deepEqual(events.map((e) => `${e.index} ${e.state}`).sort(), [
      "0 extracted",
      "0 extracting",
      "1 extracting",
    ]);
    // The lower layer stays committed; the corrupt one left no committed or active snapshot.
    assert.deepEqual(await snapshotNames(r.client, sn), [chain[0]!]);
    await (await r.client.snapshotter(sn)).cleanup();
    assert.equal((await snapshotDirs(r.root, sn)).length, 1);
    assert.equal((await r.client.content.info(top)).labels[LABEL_UNCOMPRESSED], undefined);
    const { manifest } = await resolveManifest(r.client.content, record.target);
    const config = (await r.client.content.info(manifest.config.digest)).labels;
    assert.equal(config[`${LABEL_GC_REF_SNAPSHOT}${sn}`], undefined);

    // Repaired, the next unpack applies only the missing layer.
    await Deno.writeFile(path, original);
    const result = await unpackImage(r.client, record, { snapshotter: sn });
    assert.deepEqual(result.layers.map((l) => l.applied), [false, true]);
    assert.deepEqual(await snapshotNames(r.client, sn), [...chain].sort());
  },
);

bothSnapshotters(
  "unpackImage() of an image whose config names a wrong diff ID fails and commits nothing of that layer",
  async (sn) => {
    await using r = await testRoot();
    const built = await writeLayout(join(r.dir, "layout"), {
      name: "example.com/strata/wrong-diff-id:1",
      platform: defaultPlatformSpec(),
      layers: SMALL_LAYERS,
      wrongDiffId: 1,
    });
    const record = await importBuilt(r, built);
    await assert.rejects(
      unpackImage(r.client, record, { snapshotter: sn }),
      (err: Error) => err instanceof FailedPrecondition && /diff ?id/i.test(err.message),
    );
    assert.deepEqual(await snapshotNames(r.client, sn), [built.diffIds[0]!]);
    assert.ok((await snapshotNames(r.client, sn)).every((n) => !n.startsWith("extract-")));
  },
);

bothSnapshotters(
  "unpackImage() with a missing layer blob fails with NotFound and commits nothing",
  async (sn) => {
    await using r = await testRoot();
    const record = await importSample(r);
    const layers = await imageLayers(r.client.content, record.target);
    // The file of the bottom layer is gone while its record stays (a damaged store) ...
    await Deno.remove(r.client.content.blobPath(layers[0]!.blob.digest));
    await assert.rejects(unpackImage(r.client, record, { snapshotter: sn }), NotFound);
    assert.deepEqual(await snapshotNames(r.client, sn), []);
    // ... or the blob is not in the store at all.
    await r.client.content.delete(layers[0]!.blob.digest);
    await assert.rejects(
      unpackImage(r.client, record, { snapshotter: sn }),
      (err: Error) => err instanceof NotFound && err.message.includes(layers[0]!.blob.digest),
    );
    assert.deepEqual(await snapshotNames(r.client, sn), []);
    await (await r.client.snapshotter(sn)).cleanup();
    assert.deepEqual(await snapshotDirs(r.root, sn), []);
  },
);

// ---------------------------------------------------------------------------------------------
// The platform check: the snapshotter's platforms decide, not the host's.

const WINDOWS: Platform = { os: "windows", architecture: "amd64" };
const ARM64: Platform = { os: "linux", architecture: "arm64", variant: "v8" };

peerTest(
  "overlayfs refuses a windows image before creating any snapshot, naming snapshotter, platform and image",
  {
    root: true,
  },
  async () => {
    await using r = await testRoot();
    const built = await writeLayout(join(r.dir, "layout"), {
      name: "example.com/strata/windows:1",
      platform: WINDOWS,
      layers: SMALL_LAYERS,
    });
    await importBuilt(r, built);
    const image = r.client.getImage(built.name, { platform: onlyPlatform(WINDOWS) });
    await assert.rejects(image.unpack("overlayfs"), (err: Error) => {
      assert.ok(err instanceof FailedPrecondition, String(err));
      assert.match(err.message, /"overlayfs"/);
      assert.match(err.message, /"windows\/amd64"/);
      assert.ok(err.message.includes(`"${built.name}"`), err.message);
      assert.ok(err.message.includes(built.config.digest), err.message);
      return true;
    });
    assert.deepEqual(await snapshotNames(r.client, "overlayfs"), []);
    assert.deepEqual(await snapshotDirs(r.root, "overlayfs"), []);
    for (const l of built.layers) {
      assert.deepEqual(
        (await r.client.content.info(l.digest)).labels[LABEL_UNCOMPRESSED],
        undefined,
      );
    }
    // With the check off, overlayfs stacks the files like any others.
    const result = await image.unpack("overlayfs", { checkPlatform: false });
    assert.equal(result.chainId, chainIds(built.diffIds).at(-1));
    assert.equal(await image.isUnpacked("overlayfs"), true);
  },
);

Deno.test("native accepts a windows image, as its documented platforms say", async () => {
  // snapshotters/native.ts: "it copies plain files, so any OS on any architecture".
  assert.ok(NATIVE_PLATFORMS.some((p) => p.os === "windows" && p.architecture === "amd64"));
  await using r = await testRoot();
  const built = await writeLayout(join(r.dir, "layout"), {
    name: "example.com/strata/windows:1",
    platform: WINDOWS,
    layers: SMALL_LAYERS,
  });
  await importBuilt(r, built);
  const image = r.client.getImage(built.name, { platform: onlyPlatform(WINDOWS) });
  const result = await image.unpack("native");
  assert.equal(result.chainId, chainIds(built.diffIds).at(-1));
});

Deno.test("native refuses an OS outside its documented platforms, and accepts it with the check off", async () => {
  const plan9: Platform = { os: "plan9", architecture: "amd64" };
  assert.ok(!NATIVE_PLATFORMS.some((p) => p.os === "plan9"));
  await using r = await testRoot();
  const built = await writeLayout(join(r.dir, "layout"), {
    name: "example.com/strata/plan9:1",
    platform: plan9,
    layers: SMALL_LAYERS,
  });
  const record = await importBuilt(r, built);
  await assert.rejects(
    unpackImage(r.client, record, { snapshotter: "native", platform: allPlatforms }),
    (err: Error) =>
      err instanceof FailedPrecondition && err.message.includes(`"${formatPlatform(plan9)}"`) &&
      err.message.includes('"native"'),
  );
  assert.deepEqual(await snapshotNames(r.client, "native"), []);
  const result = await unpackImage(r.client, record, {
    snapshotter: "native",
    platform: allPlatforms,
    checkPlatform: false,
  });
  assert.equal(result.chainId, chainIds(built.diffIds).at(-1));
});

peerTest("overlayfs accepts a linux image of another architecture than the host's", {
  root: true,
}, async () => {
  // The check asks what the snapshotter can hold (overlayfs: linux on every architecture), not
  // what the host can run; the sample image is for the host, this one for arm64 (or amd64 on an
  // arm64 host).
  const other = Deno.build.arch === "aarch64" ? parsePlatform("linux/amd64") : ARM64;
  assert.ok(
    OVERLAY_PLATFORMS.some((p) => p.os === "linux" && p.architecture === other.architecture),
  );
  await using r = await testRoot();
  const built = await writeLayout(join(r.dir, "layout"), {
    name: "example.com/strata/foreign-arch:1",
    platform: other,
    layers: SMALL_LAYERS,
  });
  await importBuilt(r, built);
  const image = r.client.getImage(built.name, { platform: onlyPlatform(other) });
  const result = await image.unpack("overlayfs");
  assert.equal(result.chainId, chainIds(built.diffIds).at(-1));
  const tree = await strataTree(r.client, "overlayfs", result.chainId);
  assert.deepEqual([...tree.keys()], [".", "bin", "etc", "etc/hostname", "etc/motd"]);
});

// ---------------------------------------------------------------------------------------------
// Concurrent processes.

peerTest(
  "8 concurrent `strata unpack` processes of one image make one chain, each layer applied once",
  {
    root: true,
  },
  async (t) => {
    await using r = await testRoot();
    const sample = await buildSample(join(r.dir, "sample"));
    const cli = [Deno.execPath(), "run", "--allow-all", "--no-lock", join(REPO, "cli.ts")];
    await runOk([...cli, "--root", r.root, "import", sample.layout], { cwd: REPO });
    const chain = chainIds(sample.diffIds);
    for (const sn of SNAPSHOTTERS) {
      await t.step(sn, async () => {
        const results = await Promise.all(
          Array.from({ length: 8 }, () =>
            run(
              [
                ...cli,
                "--root",
                r.root,
                "unpack",
                "--snapshotter",
                sn,
                "--no-sync-fs",
                sample.name,
              ],
              { cwd: REPO },
            )),
        );
        for (const [i, res] of results.entries()) {
          assert.equal(res.code, 0, `process ${i}: ${res.stderr}`);
          assert.equal(res.stderr.trim(), "", `process ${i}`);
        }
        const lines = results.flatMap((res) => res.stdout.trim().split("\n"));
        const extracted = lines.filter((l) => l.startsWith("extracted "));
        const existing = lines.filter((l) => l.startsWith("exists "));
        assert.equal(extracted.length, chain.length, lines.join("\n"));
        assert.equal(existing.length, 8 * chain.length - chain.length);
        // Each layer was extracted by exactly one process.
        assert.equal(new Set(extracted).size, chain.length);
        assert.deepEqual(await snapshotNames(r.client, sn), [...chain].sort());
        assert.equal((await snapshotDirs(r.root, sn)).length, chain.length);
      });
    }
  },
);
