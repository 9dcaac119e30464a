// Real images from `shared/tools/make-fixtures.sh` (Debian bookworm by debootstrap, then umoci
// layers with a big tree, deletions, links, special files, xattrs and a deep path): a flattened
// apply equals `umoci unpack`, and Strata's unpack into both snapshotters equals containerd's.
//
// The fixtures are built once (about 1.5 minutes, most of it debootstrap downloading from the
// Debian mirror) into $STRATA_FIXTURES (default /var/tmp/strata-fixtures) and reused by later runs
// while the script and the big tree's path are unchanged. $STRATA_FIXTURES_BIG_TREE picks the
// script's BIG_TREE (default /usr/lib/jvm when it exists, else /usr/lib/python3).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "../../client.ts";
import { applyLayer } from "../../diff/apply.ts";
import { importArchive } from "../../images/archive/import.ts";
import { chainIds, imageLayers } from "../../images/manifest.ts";
import type { ImageRecord } from "../../images/types.ts";
import { checkUnpacked } from "../../unpack/check.ts";
import type { LayerEvent } from "../../unpack/unpack.ts";
import { makeTempDir, peerTest, run, runOk, skopeoCopy, startContainerd } from "../_peers.ts";
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
const SCRIPT = resolve(REPO, "..", "shared", "tools", "make-fixtures.sh");
const FIXTURES = Deno.env.get("STRATA_FIXTURES") ?? "/var/tmp/strata-fixtures";
const BASE_NAME = "example.com/strata-fixtures";
const TOOLS = [
  "bash",
  "debootstrap",
  "umoci",
  "skopeo",
  "containerd",
  "ctr",
  "getfattr",
  "setfattr",
];

// ---------------------------------------------------------------------------------------------
// The fixture cache.

function bigTree(): string {
  const chosen = Deno.env.get("STRATA_FIXTURES_BIG_TREE");
  if (chosen) return chosen;
  try {
    Deno.statSync("/usr/lib/jvm");
    return "/usr/lib/jvm";
  } catch {
    return "/usr/lib/python3";
  }
}

interface FixtureStamp {
  script: string;
  bigTree: string;
  seconds: number;
  builtAt: string;
}

let layoutPromise: Promise<string> | undefined;

/** The make-fixtures OCI layout, built when missing or stale; one builder at a time (flock). */
function fixtureLayout(): Promise<string> {
  layoutPromise ??= buildFixtures();
  return layoutPromise;
}

async function buildFixtures(): Promise<string> {
  await Deno.mkdir(FIXTURES, { recursive: true });
  const layout = join(FIXTURES, "layout");
  const stampPath = join(FIXTURES, "strata-fixtures.json");
  const want = {
    script: createHash("sha256").update(await Deno.readFile(SCRIPT)).digest("hex"),
    bigTree: bigTree(),
  };
  using lock = await Deno.open(join(FIXTURES, ".lock"), { write: true, create: true });
  await lock.lock(true);
  try {
    const stamp = await Deno.readTextFile(stampPath).then(
      (text) => JSON.parse(text) as FixtureStamp,
      () => undefined,
    );
    if (stamp?.script === want.script && stamp.bigTree === want.bigTree) {
      const tags: string[] = await layoutTags(layout).catch(() => []);
      if (["base", "app", "many"].every((t) => tags.includes(t))) return layout;
    }
    // A debootstrap that did not finish leaves a rootfs that the script would reuse.
    const log = await Deno.readTextFile(join(FIXTURES, "debootstrap.log")).catch(() => "");
    if (!log.includes("Base system installed successfully")) {
      await Deno.remove(join(FIXTURES, "debian-rootfs"), { recursive: true }).catch(() => {});
    }
    await Deno.remove(stampPath).catch(() => {});
    const started = performance.now();
    const result = await run(["bash", SCRIPT, FIXTURES], { env: { BIG_TREE: want.bigTree } });
    const seconds = (performance.now() - started) / 1000;
    if (result.code !== 0) {
      const debootstrap = await Deno.readTextFile(join(FIXTURES, "debootstrap.log"))
        .catch(() => "");
      throw new Error(
        `Cannot build fixtures with "${SCRIPT}": exit code ${result.code}: ${
          tail(result.stderr + result.stdout)
        }${debootstrap ? `; debootstrap.log: ${tail(debootstrap)}` : ""}`,
      );
    }
    const next: FixtureStamp = { ...want, seconds, builtAt: new Date().toISOString() };
    await Deno.writeTextFile(stampPath, JSON.stringify(next, null, 2) + "\n");
    console.log(`make-fixtures.sh built ${FIXTURES} in ${seconds.toFixed(0)} s`);
    return layout;
  } finally {
    await lock.unlock();
  }
}

function tail(text: string): string {
  return text.trim().split("\n").slice(-8).join(" | ");
}

async function layoutTags(layout: string): Promise<string[]> {
  const index = JSON.parse(await Deno.readTextFile(join(layout, "index.json"))) as {
    manifests: { annotations?: Record<string, string> }[];
  };
  return index.manifests.map((m) => m.annotations?.["org.opencontainers.image.ref.name"] ?? "");
}

// ---------------------------------------------------------------------------------------------
// The test.

peerTest(
  "make-fixtures images: a flattened apply equals umoci unpack, and unpack into overlayfs and native equals containerd's",
  { tools: TOOLS, root: true },
  async (t) => {
    const layout = await fixtureLayout();
    await using tmp = await makeTempDir({ prefix: "strata-fixtures-" });
    const client = Client.open({ root: join(tmp.path, "root") });
    try {
      const { images } = await importArchive(client, layout, { baseName: BASE_NAME });
      const byName = new Map(images.map((i) => [i.name, i]));
      const base = byName.get(`${BASE_NAME}:base`);
      const app = byName.get(`${BASE_NAME}:app`);
      assert.ok(base && app, `imported: ${[...byName.keys()].join(", ")}`);
      const baseLayers = await imageLayers(client.content, base.target);
      const appLayers = await imageLayers(client.content, app.target);
      assert.equal(baseLayers.length, 1);
      assert.equal(appLayers.length, 3);
      assert.equal(appLayers[0]!.diffId, baseLayers[0]!.diffId);
      const chain = chainIds(appLayers.map((l) => l.diffId));

      let flat: Map<string, TreeEntry> | undefined;
      await t.step("applying each layer of app in order equals umoci unpack", async () => {
        const dir = join(tmp.path, "flat");
        await Deno.mkdir(dir);
        for (const layer of appLayers) {
          const r = await applyLayer(client.content.stream(layer.blob.digest), dir, {
            expectedDiffId: layer.diffId,
            expectedDigest: layer.blob.digest,
          });
          // umoci's layers start with a "." entry, which (like containerd) the applier ignores.
          assert.deepEqual(r.skipped.filter((e) => e.path !== "."), []);
        }
        flat = await treeWithNanos(dir);
        await Deno.remove(dir, { recursive: true });
        // `umoci raw unpack` is `umoci unpack` without the bundle around the rootfs (runtime
        // config and an mtree manifest, whose hashing of every file doubles umoci's time).
        const rootfs = join(tmp.path, "umoci-rootfs");
        await runOk(["umoci", "raw", "unpack", "--image", `${layout}:app`, rootfs]);
        const umoci = await treeWithNanos(rootfs);
        await Deno.remove(rootfs, { recursive: true });
        assertSameTree(flat, umoci, "flattened apply vs umoci unpack", { minEntries: 1000 });
        // What make-fixtures.sh puts in layer 3 is there.
        assert.equal(flat.get("usr/local/bin/suid-true")?.mode, 0o4755);
        assert.ok(flat.get("usr/local/bin/suid-true")?.xattrs?.["security.capability"]);
        assert.equal(flat.get("etc/hostname")?.xattrs?.["user.strata.test"], "68656c6c6f");
        assert.equal(flat.get("run/fifo")?.type, "fifo");
        assert.equal(flat.get("dev/null2")?.type, "char");
        assert.equal(flat.get("etc/passwd.hardlink")?.hardlinkGroup, "etc/passwd");
        assert.equal(flat.get("usr/jvm-link")?.linkTarget, "../opt/jvm");
        assert.deepEqual(
          [...flat.keys()].filter((p) => p.startsWith("etc/apt/")),
          ["etc/apt/only-file"],
        );
        assert.equal(flat.get("usr/share/doc"), undefined);
        assert.equal(flat.get("home/app")?.uid, 1000);
        assert.ok([...flat.keys()].some((p) => p.endsWith("/file-with-long-path")));
      });

      const archive = join(tmp.path, "app.tar");
      await skopeoCopy(`oci:${layout}:app`, `oci-archive:${archive}:app`);
      await using ctrd = await startContainerd();
      for (const sn of ["overlayfs", "native"]) {
        await t.step(`unpack of base then app into ${sn} equals containerd's unpack`, async () => {
          const baseResult = await client.getImage(base.name).unpack(sn, { syncFs: false });
          assert.deepEqual(baseResult.layers.map((l) => l.applied), [true]);
          const events: LayerEvent[] = [];
          const result = await client.getImage(app.name).unpack(sn, {
            syncFs: false,
            onLayer: (e) => events.push(e),
          });
          assert.equal(result.chainId, chain.at(-1));
          assert.deepEqual(
            events.filter((e) => e.state !== "extracting").map((e) => e.state),
            ["exists", "extracted", "extracted"],
          );
          const ours = await strataTree(client, sn, result.chainId);
          if (flat !== undefined) {
            assertSameTree(ours, flat, `${sn} view vs flattened apply`, {
              minEntries: 1000,
              ...(sn === "overlayfs" ? { unpackTimeInB: OVERLAY_KEEPS_IMPLIED_PARENT_TIME } : {}),
            });
          }
          await ctrd.ctrOk([
            "images",
            "import",
            "--snapshotter",
            sn,
            "--base-name",
            BASE_NAME,
            archive,
          ]);
          assert.deepEqual(await ctrSnapshotNames(ctrd, sn), [...chain].sort());
          const theirs = await containerdTree(ctrd, sn, result.chainId);
          assertSameTree(ours, theirs, `${sn}: strata view vs containerd view`, {
            minEntries: 1000,
            unpackTimeInB: sn === "overlayfs"
              ? OVERLAY_KEEPS_IMPLIED_PARENT_TIME
              : CONTAINERD_NATIVE_COPY_LOSES_DIR_TIMES,
          });
        });
        await t.step(`checkUnpacked() finds no difference in ${sn}`, async () => {
          const report = await checkUnpacked(client, app as ImageRecord, { snapshotter: sn });
          assert.equal(report.chainId, chain.at(-1));
          assert.equal(report.layers.length, 3);
          assert.deepEqual(report.differences, []);
        });
      }
    } finally {
      client.close();
    }
  },
);
