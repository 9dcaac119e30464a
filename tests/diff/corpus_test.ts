// The conformance and security corpus of spec/layer-safety.md section 2 (cases A-I), each case
// applied through applyToMounts() on both snapshotters' mounts:
//
// - native: every layer in its own prepared snapshot (a single bind mount: the applier writes
//   into the snapshot directory, "delete" whiteouts);
// - overlay: a base layer first, then every case layer in a snapshot prepared on the previous
//   one (an overlay mount with an upperdir: the overlay fast path, whiteouts as 0:0 devices,
//   lowerdirs from the mount), the result looked at through a read-only overlay mount.
//
// Next to each snapshot's root lie canaries (the victim directory `victim/hello` 0400, a sibling
// `<root>-evil/` sharing the root's name as a prefix, a file in the root's parent), every other
// snapshot is watched too, and so are host paths: after every apply, accepted or rejected, all
// of them must be unchanged. A child process applies every case once more with a canary
// directory as its working directory (the test process cannot change its own: test modules
// share it). A few cases also run rootless (uid 65534) on a plain directory.
//
// Where the corpus allows two behaviours the test name says which one Strata picks.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { basename, dirname, join } from "node:path";
import { type ApplyResult, applyToMounts } from "../../diff/apply.ts";
import { MetadataDb } from "../../metadata/db.ts";
import { readOnlyMounts, withTempMount } from "../../mount/mod.ts";
import type { Mount } from "../../mount/types.ts";
import { NativeSnapshotter } from "../../snapshotters/native.ts";
import { OverlaySnapshotter } from "../../snapshotters/overlay.ts";
import type { Snapshotter } from "../../snapshotters/types.ts";
import { makeTempDir, peerTest } from "../_peers.ts";
import { snapshotTree } from "../_tree.ts";
import { chunks, exists, layer, lstat } from "./_helpers.ts";
import {
  type Case,
  CASES,
  type Ctx,
  dir,
  file,
  type Kind,
  kindAt,
  names,
  perm,
  read,
} from "./_corpus_cases.ts";

const BASE = await layer([{ header: { name: "base/marker", type: "file" }, body: "base" }]);

const HOST_ABSENT = [
  "/etc/pwn",
  "/etc/unbroken",
  "/etc/cron.d/pwn",
  "/etc/localpasswd",
  "/etc/in",
  "/pwn",
  "/victim",
  "/tmp/x",
];

// ---------------------------------------------------------------------------------------------
// The harness.

async function hostState(): Promise<string> {
  const passwd = lstat("/etc/passwd");
  const content = createHash("sha256").update(await Deno.readFile("/etc/passwd")).digest("hex");
  return JSON.stringify({
    absent: HOST_ABSENT.filter((p) => exists(p)),
    passwd: [
      passwd.mode,
      passwd.uid,
      passwd.gid,
      passwd.size,
      passwd.mtime,
      passwd.ino.toString(),
      content,
    ],
  });
}

/**
 * Everything under `watch` except the paths in `exclude` (the root being written), plus the
 * working directory and the host paths, as one comparable string: the canaries next to the
 * root, and on the snapshotters every other snapshot (the lower layers included).
 */
async function outside(watch: string, exclude: string[], cwd?: string): Promise<string> {
  const parts: Record<string, unknown> = {};
  const walk = async (dir: string): Promise<void> => {
    const st = lstat(dir);
    parts[dir] = [st.mode, st.uid, st.gid, st.mtime];
    for (const name of names(dir)) {
      const path = join(dir, name);
      if (exclude.includes(path)) continue;
      if (exclude.some((e) => e.startsWith(`${path}/`))) await walk(path);
      else parts[path] = [...(await snapshotTree(path))];
    }
  };
  await walk(watch);
  if (cwd !== undefined) parts.cwd = [...(await snapshotTree(cwd))];
  parts.host = await hostState();
  return JSON.stringify(parts);
}

async function plantCanaries(ctx: Ctx): Promise<void> {
  if (!exists(ctx.victim)) {
    await Deno.mkdir(ctx.victim);
    await Deno.writeTextFile(join(ctx.victim, "hello"), "hello");
    await Deno.chmod(join(ctx.victim, "hello"), 0o400);
  }
  const evil = join(ctx.parent, `${ctx.rootName}-evil`);
  if (!exists(evil)) {
    await Deno.mkdir(evil);
    await Deno.writeTextFile(join(evil, "secret"), "secret");
  }
  const parentFile = join(ctx.parent, "parent-file");
  if (!exists(parentFile)) await Deno.writeTextFile(parentFile, "parent");
}

async function openSnapshotter(kind: Kind, dir: string, db: MetadataDb): Promise<Snapshotter> {
  return kind === "native"
    ? new NativeSnapshotter(join(dir, "native"), db)
    : await OverlaySnapshotter.open(join(dir, "overlay"), db);
}

function rootOf(mounts: Mount[]): string {
  const [m] = mounts;
  if (m === undefined) throw new Error("no mounts");
  if (m.type === "bind") return m.source;
  const upper = m.options.find((o) => o.startsWith("upperdir="));
  if (upper === undefined) throw new Error(`no upperdir in ${JSON.stringify(m)}`);
  return upper.slice("upperdir=".length);
}

async function runCase(c: Case, kind: Kind): Promise<void> {
  await using tmp = await makeTempDir({ prefix: `strata-corpus-${c.id}-` });
  const db = MetadataDb.open(join(tmp.path, "meta"));
  const sn = await openSnapshotter(kind, tmp.path, db);
  const watch = join(tmp.path, kind, "snapshots");
  try {
    let layers: Uint8Array[] = [];
    let total = 2; // the base layer, then the case's layers (known once built)
    let rejectAt = -1;
    let parent: string | undefined;
    let result: ApplyResult | undefined;
    let mounts: Mount[] = [];
    let ctx: Ctx | undefined;
    for (let i = 0; i < total; i++) {
      const key = `layer-${i}`;
      mounts = await sn.prepare(key, parent === undefined ? {} : { parent });
      const root = rootOf(mounts);
      ctx = {
        parent: dirname(root),
        rootName: basename(root),
        victim: join(dirname(root), "victim"),
      };
      await plantCanaries(ctx);
      if (i === 1) {
        // Built once, for the first case snapshot (cases naming the root have one layer).
        layers = await c.layers(ctx);
        total = layers.length + 1;
        rejectAt = c.reject === undefined ? -1 : (c.reject.layer ?? layers.length - 1) + 1;
      }
      const data = i === 0 ? BASE : layers[i - 1]!;
      const options = i === 0 ? {} : (await c.options?.(i - 1, layers)) ?? {};
      const before = await outside(watch, [root]);
      let error: unknown;
      try {
        result = await applyToMounts(chunks(data, 64 * 1024), mounts, options);
      } catch (err) {
        error = err;
      }
      assert.equal(
        await outside(watch, [root]),
        before,
        `${c.id} layer ${i}: something outside the root changed`,
      );
      if (i === rejectAt) {
        assert.ok(error !== undefined, `${c.id}: layer ${i} was not rejected`);
        assert.ok(error instanceof c.reject!.error, `${c.id}: ${error}`);
        assert.match((error as Error).message, c.reject!.message);
        return;
      }
      if (error !== undefined) throw error;
      if (i < total - 1) {
        await sn.commit(`committed-${i}`, key);
        parent = `committed-${i}`;
      }
    }
    const check = c.check;
    if (check === undefined) return;
    if (kind === "native") {
      await check(rootOf(mounts), ctx!, result!, kind);
    } else {
      await withTempMount(readOnlyMounts(mounts), (merged) => check(merged, ctx!, result!, kind), {
        location: tmp.path,
      });
    }
  } finally {
    await sn.close();
    db.close();
  }
}

for (const kind of ["native", "overlay"] as const) {
  for (const c of CASES) {
    peerTest(`corpus ${c.id} (${kind}): ${c.title}`, { root: true }, () => runCase(c, kind));
  }
}

// ---------------------------------------------------------------------------------------------
// Rootless: a few cases on a plain directory as uid 65534 (devices, owners, unwritable
// directories, ids outside any subordinate range: squashed to the running user and reported).

async function runRootless(
  entries: Parameters<typeof layer>[0],
): Promise<{ root: string; result: ApplyResult; cleanup: () => Promise<void> }> {
  const tmp = await makeTempDir({ prefix: "strata-corpus-rootless-" });
  await Deno.chmod(tmp.path, 0o755);
  const root = join(tmp.path, "root");
  await Deno.mkdir(root);
  await Deno.chown(root, 65534, 65534);
  const ctx: Ctx = { parent: tmp.path, rootName: "root", victim: join(tmp.path, "victim") };
  await plantCanaries(ctx);
  const cwd = join(tmp.path, "cwd");
  await Deno.mkdir(cwd);
  const layerPath = join(tmp.path, "layer.tar");
  await Deno.writeFile(layerPath, await layer(entries), { mode: 0o644 });
  const denoDir = join(tmp.path, "deno-dir");
  await Deno.mkdir(denoDir);
  await Deno.chown(denoDir, 65534, 65534);
  const exclude = [root, denoDir];
  const before = await outside(tmp.path, exclude, cwd);
  const child = new URL("./_rootless_child.ts", import.meta.url).pathname;
  const out = await new Deno.Command("setpriv", {
    args: [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      Deno.execPath(),
      "run",
      "-A",
      "--no-lock",
      child,
      layerPath,
      root,
    ],
    env: { DENO_DIR: denoDir, HOME: denoDir, NO_COLOR: "1" },
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  assert.equal(await outside(tmp.path, exclude, cwd), before, "something outside the root changed");
  return {
    root,
    result: JSON.parse(new TextDecoder().decode(out.stdout)),
    cleanup: () => tmp.stop(),
  };
}

peerTest("corpus rootless E40/E48: devices are skipped and reported, FIFOs created", {
  root: true,
  tools: ["setpriv"],
}, async () => {
  const { root, result, cleanup } = await runRootless([
    { header: { name: "dev/sda", type: "block", devmajor: 8, devminor: 0 } },
    { header: { name: "dev/null", type: "char", devmajor: 1, devminor: 3 } },
    { header: { name: "run/fifo", type: "fifo" } },
  ]);
  try {
    assert.deepEqual(result.skipped.map((s) => `${s.path}: ${s.reason}`), [
      "dev/sda: block device 8:0 not created: no privilege",
      "dev/null: char device 1:3 not created: no privilege",
      "run/fifo: owner 0:0 not set: no privilege (owned by 65534:65534)",
    ]);
    assert.equal(kindAt(root, "dev/sda"), "absent");
    assert.equal(kindAt(root, "run/fifo"), "fifo");
  } finally {
    await cleanup();
  }
});

peerTest("corpus rootless E41/I77: foreign owners are squashed and reported, setuid kept", {
  root: true,
  tools: ["setpriv"],
}, async () => {
  const { root, result, cleanup } = await runRootless([
    file("bin/su", "su", { mode: 0o4755, uid: 0, gid: 0 }),
    file("outside-range", "o", { uid: 3_000_000, gid: 3_000_000 }),
    file("mine", "m", { uid: 65534, gid: 65534 }),
  ]);
  try {
    const reported = result.skipped.map((s) => `${s.path}: ${s.reason}`);
    assert.ok(reported.some((r) => r.startsWith("bin/su: owner 0:0 not set")), reported.join("\n"));
    assert.ok(reported.some((r) => r.startsWith("outside-range: owner 3000000:3000000 not set")));
    assert.ok(!reported.some((r) => r.startsWith("mine")));
    assert.equal(perm(root, "bin/su"), 0o4755);
    assert.equal(lstat(join(root, "outside-range")).uid, 65534);
  } finally {
    await cleanup();
  }
});

peerTest("corpus rootless F56: children of 0555 and 000 directories are written", {
  root: true,
  tools: ["setpriv"],
}, async () => {
  const { root, cleanup } = await runRootless([
    dir("ro", { mode: 0o555, uid: 65534, gid: 65534 }),
    file("ro/f", "f", { uid: 65534, gid: 65534 }),
    dir("locked", { mode: 0o000, uid: 65534, gid: 65534 }),
    file("locked/sub/file", "l", { uid: 65534, gid: 65534 }),
  ]);
  try {
    assert.equal(perm(root, "ro"), 0o555);
    assert.equal(perm(root, "locked"), 0o000);
    assert.equal(read(root, "locked/sub/file"), "l");
  } finally {
    await cleanup();
  }
});

peerTest("corpus: every case leaves the working directory alone (child process)", {
  root: true,
}, async () => {
  await using tmp = await makeTempDir({ prefix: "strata-corpus-cwd-" });
  const cwd = join(tmp.path, "cwd");
  await Deno.mkdir(join(cwd, "victim"), { recursive: true });
  await Deno.writeTextFile(join(cwd, "victim/hello"), "hello");
  await Deno.writeTextFile(join(cwd, "cwd-file"), "cwd");
  await Deno.symlink("/etc", join(cwd, "etc-link"));
  const work = join(tmp.path, "work");
  await Deno.mkdir(work);
  const before = await outside(cwd, []);
  const child = new URL("./_corpus_cwd_child.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-lock", child, work],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  assert.equal(await outside(cwd, []), before, "the working directory or the host changed");
  const outcomes: Record<string, string> = JSON.parse(new TextDecoder().decode(out.stdout));
  for (const c of CASES.filter((c) => c.id !== "G60")) {
    assert.equal(outcomes[c.id], c.reject === undefined ? "applied" : "rejected", c.id);
  }
});
