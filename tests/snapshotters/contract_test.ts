/**
 * The snapshotter contract (spec `containerd-snapshots-and-diff.md` sections 1, 2 and the
 * "Snapshotter API / storage" checklist of section 9), run against every snapshotter of
 * `snapshotterNames()`. The overlay snapshotter and every test that mounts need root; they are
 * registered with `peerTest` and skip visibly otherwise.
 *
 * @module
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { MetadataDb } from "../../metadata/db.ts";
import { openSnapshotter, snapshotterNames } from "../../snapshotters/registry.ts";
import type { SnapshotInfo, Snapshotter } from "../../snapshotters/types.ts";
import type { Mount } from "../../mount/types.ts";
import { withTempMount } from "../../mount/mod.ts";
import { AlreadyExists, FailedPrecondition, InvalidArgument, NotFound } from "../../errors.ts";
import { peerTest } from "../_peers.ts";

/** What a contract test gets: an open snapshotter in a fresh Strata root. */
export interface ContractEnv {
  /** The snapshotter under test. */
  sn: Snapshotter;
  /** Its name. */
  name: string;
  /** The Strata root. */
  root: string;
  /** The root's database. */
  db: MetadataDb;
}

interface ContractOptions {
  /** The test mounts (needs root). */
  mount?: boolean;
}

/** Snapshotters that cannot open without root. */
const NEEDS_ROOT = new Set(["overlayfs"]);

function contractTest(
  name: string,
  title: string,
  options: ContractOptions,
  fn: (env: ContractEnv) => Promise<void>,
): void {
  const body = async (): Promise<void> => {
    const root = await Deno.makeTempDir({ prefix: `strata-contract-${name}-` });
    const db = MetadataDb.open(root);
    let sn: Snapshotter | undefined;
    try {
      sn = await openSnapshotter(name, { root, db });
      await fn({ sn, name, root, db });
    } finally {
      await sn?.close();
      db.close();
      await Deno.remove(root, { recursive: true });
    }
  };
  const testName = `${name}: ${title}`;
  if (NEEDS_ROOT.has(name) || options.mount === true) {
    peerTest(testName, { root: true }, body);
  } else {
    Deno.test(testName, body);
  }
}

/** The source of a mount list that is one bind mount, else `undefined`. */
function bindSource(mounts: Mount[]): string | undefined {
  const [first] = mounts;
  return mounts.length === 1 && first?.type === "bind" ? first.source : undefined;
}

/** The snapshot id in a mount list: from `upperdir=` or the bind source (`.../snapshots/<id>`). */
export function snapshotId(mounts: Mount[]): number {
  const upper = mounts.flatMap((m) => m.options).find((o) => o.startsWith("upperdir="));
  const path = upper?.slice("upperdir=".length) ?? mounts[0]?.source ?? "";
  const m = /\/snapshots\/([0-9]+)(?:\/|$)/.exec(path);
  assert.ok(m !== null, `no snapshot id in ${JSON.stringify(mounts)}`);
  return Number(m[1]);
}

async function writeFiles(dir: string, files: Record<string, string>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await Deno.mkdir(dirname(join(dir, path)), { recursive: true });
    await Deno.writeTextFile(join(dir, path), content);
  }
}

async function readFiles(dir: string, prefix = ""): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const names: string[] = [];
  for await (const entry of Deno.readDir(join(dir, prefix))) names.push(entry.name);
  for (const name of names.sort()) {
    const rel = prefix === "" ? name : `${prefix}/${name}`;
    const info = await Deno.lstat(join(dir, rel));
    if (info.isDirectory) Object.assign(out, await readFiles(dir, rel));
    else if (info.isFile) out[rel] = await Deno.readTextFile(join(dir, rel));
  }
  return out;
}

/** Writes files into an active snapshot: directly into a bind source, else through a mount. */
async function fill(sn: Snapshotter, key: string, files: Record<string, string>): Promise<void> {
  const mounts = await sn.mounts(key);
  const source = bindSource(mounts);
  if (source !== undefined) await writeFiles(source, files);
  else await withTempMount(mounts, (dir) => writeFiles(dir, files));
}

/** Reads the files a snapshot's mounts show: directly from a bind source, else mounted. */
async function show(mounts: Mount[]): Promise<Record<string, string>> {
  const source = bindSource(mounts);
  if (source !== undefined) return await readFiles(source);
  return await withTempMount(mounts, (dir) => readFiles(dir));
}

/** Prepares `name-active` on `parent`, writes `files`, commits as `name`. */
async function layer(
  sn: Snapshotter,
  name: string,
  parent: string | undefined,
  files: Record<string, string> = {},
): Promise<void> {
  const key = `${name}-active`;
  await sn.prepare(key, parent === undefined ? {} : { parent });
  if (Object.keys(files).length > 0) await fill(sn, key, files);
  await sn.commit(name, key);
}

function names(infos: SnapshotInfo[]): string[] {
  return infos.map((info) => info.name);
}

/**
 * Registers the contract tests for one snapshotter.
 *
 * @param name The snapshotter's name in the registry.
 */
export function contractSuite(name: string): void {
  contractTest(
    name,
    "kinds: prepare is active, view is view, commit is committed",
    {},
    async ({ sn }) => {
      await sn.prepare("a");
      assert.equal((await sn.stat("a")).kind, "active");
      await sn.view("v");
      assert.equal((await sn.stat("v")).kind, "view");
      await sn.commit("c", "a");
      const info = await sn.stat("c");
      assert.equal(info.kind, "committed");
      assert.equal(info.name, "c");
      assert.equal(info.parent, undefined);
      await assert.rejects(sn.stat("a"), NotFound);
      await assert.rejects(sn.stat("nope"), NotFound);
    },
  );

  contractTest(name, "prepare and view check the parent before the key", {}, async ({ sn }) => {
    await layer(sn, "base", undefined);
    await sn.prepare("act", { parent: "base" });
    await sn.view("vw", { parent: "base" });
    for (const create of [sn.prepare.bind(sn), sn.view.bind(sn)]) {
      await assert.rejects(create("new", { parent: "missing" }), NotFound);
      await assert.rejects(create("new", { parent: "act" }), InvalidArgument);
      await assert.rejects(create("new", { parent: "vw" }), InvalidArgument);
      // The parent error wins over the key collision.
      await assert.rejects(create("act", { parent: "missing" }), NotFound);
      await assert.rejects(create("base", { parent: "vw" }), InvalidArgument);
      await assert.rejects(create("act", { parent: "base" }), AlreadyExists);
    }
    await assert.rejects(sn.stat("new"), NotFound);
  });

  contractTest(name, "keys and names share one space across kinds", {}, async ({ sn }) => {
    await layer(sn, "base", undefined);
    await sn.prepare("p");
    await sn.view("v");
    for (const key of ["p", "v", "base"]) {
      await assert.rejects(sn.prepare(key), AlreadyExists);
      await assert.rejects(sn.view(key), AlreadyExists);
    }
    await sn.prepare("x");
    await assert.rejects(sn.commit("p", "x"), AlreadyExists);
    await assert.rejects(sn.commit("v", "x"), AlreadyExists);
    await assert.rejects(sn.commit("base", "x"), AlreadyExists);
    assert.deepEqual(names(await sn.list()), ["base", "p", "v", "x"]);
  });

  contractTest(name, "commit: errors, labels from options, times, parent", {}, async ({ sn }) => {
    await layer(sn, "base", undefined);
    await sn.prepare("a", { parent: "base", labels: { inherited: "no" } });
    await sn.view("v", { parent: "base" });
    await assert.rejects(sn.commit("c", "missing"), NotFound);
    await assert.rejects(sn.commit("base", "a"), AlreadyExists);
    await assert.rejects(sn.commit("c", "v"), FailedPrecondition);
    await assert.rejects(sn.commit("c", "base"), FailedPrecondition);
    assert.equal((await sn.stat("a")).kind, "active");
    const before = Date.now();
    await sn.commit("c", "a", { labels: { mine: "1", empty: "" } });
    const after = Date.now();
    const info = await sn.stat("c");
    assert.deepEqual(info.labels, { mine: "1" });
    assert.equal(info.parent, "base");
    assert.equal(info.created.getTime(), info.updated.getTime());
    assert.ok(info.created.getTime() >= before && info.created.getTime() <= after);
    await assert.rejects(sn.stat("a"), NotFound);
    await assert.rejects(sn.mounts("a"), NotFound);
  });

  contractTest(name, "commit with a parent rebases a parentless active", {}, async ({ sn }) => {
    await layer(sn, "base", undefined);
    await layer(sn, "other", undefined);
    await sn.prepare("loose");
    await sn.prepare("child", { parent: "base" });
    await sn.prepare("act");
    await assert.rejects(sn.commit("x", "child", { parent: "other" }), InvalidArgument);
    await assert.rejects(sn.commit("x", "loose", { parent: "missing" }), NotFound);
    await assert.rejects(sn.commit("x", "loose", { parent: "act" }), FailedPrecondition);
    await sn.commit("same", "child", { parent: "base" });
    assert.equal((await sn.stat("same")).parent, "base");
    await sn.commit("rebased", "loose", { parent: "other" });
    assert.equal((await sn.stat("rebased")).parent, "other");
    await assert.rejects(sn.remove("other"), FailedPrecondition);
  });

  contractTest(
    name,
    "remove: errors, children first, keys reusable at once",
    {},
    async ({ sn }) => {
      await assert.rejects(sn.remove("missing"), NotFound);
      await layer(sn, "base", undefined, { "a.txt": "a" });
      await layer(sn, "mid", "base", { "b.txt": "b" });
      await sn.view("v", { parent: "mid" });
      await sn.prepare("p", { parent: "mid" });
      await assert.rejects(sn.remove("base"), FailedPrecondition);
      await assert.rejects(sn.remove("mid"), FailedPrecondition);
      await sn.remove("v");
      await assert.rejects(sn.remove("mid"), FailedPrecondition);
      await sn.remove("p");
      await sn.remove("mid");
      await assert.rejects(sn.stat("mid"), NotFound);
      // Keys and names can be used again immediately, by any kind.
      await sn.view("p", { parent: "base" });
      await sn.prepare("v", { parent: "base" });
      await sn.commit("mid", "v");
      assert.equal((await sn.stat("mid")).parent, "base");
      await sn.remove("p");
      await sn.prepare("p");
      assert.equal((await sn.stat("p")).kind, "active");
      await sn.remove("mid");
      await sn.remove("base");
      assert.deepEqual(names(await sn.list()), ["p"]);
    },
  );

  contractTest(name, "mounts: errors for committed and missing keys", {}, async ({ sn }) => {
    await layer(sn, "base", undefined);
    await assert.rejects(sn.mounts("base"), FailedPrecondition);
    await assert.rejects(sn.mounts("missing"), NotFound);
    const prepared = await sn.prepare("p", { parent: "base" });
    assert.deepEqual(await sn.mounts("p"), prepared);
    const viewed = await sn.view("v", { parent: "base" });
    assert.deepEqual(await sn.mounts("v"), viewed);
    const empty = await sn.view("e");
    assert.deepEqual(await sn.mounts("e"), empty);
    for (const mounts of [viewed, empty]) {
      assert.ok(mounts.some((m) => m.options.includes("ro")), JSON.stringify(mounts));
    }
  });

  contractTest(name, "update: field paths; only labels and Updated change", {}, async ({ sn }) => {
    await layer(sn, "base", undefined);
    await sn.prepare("a", { parent: "base", labels: { a: "1", b: "2" } });
    const original = await sn.stat("a");
    await assert.rejects(sn.update({ name: "missing", labels: {} }), NotFound);
    for (const field of ["parent", "name", "kind", "created", "updated", "labels_x"]) {
      await assert.rejects(
        sn.update({ name: "a", labels: {} }, { fieldpaths: [field] }),
        InvalidArgument,
      );
    }
    assert.deepEqual((await sn.stat("a")).labels, { a: "1", b: "2" });
    // No field paths: replace all; the other fields of the argument are ignored.
    const changed: SnapshotInfo = {
      kind: "committed",
      name: "a",
      parent: "elsewhere",
      labels: { c: "3" },
      created: new Date(0),
      updated: new Date(0),
    };
    const before = Date.now();
    let info = await sn.update(changed);
    assert.deepEqual(info.labels, { c: "3" });
    assert.equal(info.kind, "active");
    assert.equal(info.parent, "base");
    assert.equal(info.created.getTime(), original.created.getTime());
    assert.ok(info.updated.getTime() >= before);
    assert.deepEqual(await sn.stat("a"), info);
    info = await sn.update({ name: "a", labels: { d: "4", c: "x" } }, { fieldpaths: ["labels.d"] });
    assert.deepEqual(info.labels, { c: "3", d: "4" });
    info = await sn.update({ name: "a", labels: {} }, { fieldpaths: ["labels.c"] });
    assert.deepEqual(info.labels, { d: "4" });
    info = await sn.update({ name: "a", labels: { d: "" } }, { fieldpaths: ["labels.d"] });
    assert.deepEqual(info.labels, {});
    info = await sn.update({ name: "a", labels: { e: "5", f: "" } }, { fieldpaths: ["labels"] });
    assert.deepEqual(info.labels, { e: "5" });
    info = await sn.update({ name: "base", labels: { g: "7" } });
    assert.equal(info.kind, "committed");
    assert.deepEqual((await sn.stat("base")).labels, { g: "7" });
    await assert.rejects(
      sn.update({ name: "a", labels: { big: "x".repeat(4094) } }),
      InvalidArgument,
    );
    assert.deepEqual((await sn.stat("a")).labels, { e: "5" });
  });

  contractTest(name, "labels: empty values are never stored, sizes limited", {}, async ({ sn }) => {
    await sn.prepare("a", { labels: { keep: "v", drop: "" } });
    assert.deepEqual((await sn.stat("a")).labels, { keep: "v" });
    await sn.view("v", { labels: { only: "" } });
    assert.deepEqual((await sn.stat("v")).labels, {});
    await assert.rejects(sn.prepare("big", { labels: { k: "x".repeat(4096) } }), InvalidArgument);
    await sn.prepare("max", { labels: { k: "x".repeat(4095) } });
    assert.deepEqual(names(await sn.list(["labels.drop"])), []);
  });

  contractTest(name, "walk and list: filters and lexicographic order", {}, async ({ sn }) => {
    await layer(sn, "p", undefined);
    await sn.update({ name: "p", labels: { l: "1" } });
    await sn.prepare("a-np-wl", { labels: { l: "2" } });
    await sn.prepare("a-wp", { parent: "p" });
    await sn.view("v-wp", { parent: "p", labels: { "x.y": "dot" } });
    await sn.prepare("B");
    await sn.view("_v");
    const all = ["B", "_v", "a-np-wl", "a-wp", "p", "v-wp"];
    assert.deepEqual(names(await sn.list()), all);
    const walked: string[] = [];
    await sn.walk((info) => {
      walked.push(info.name);
    });
    assert.deepEqual(walked, all);
    const cases: [string[], string[]][] = [
      [["kind==active"], ["B", "a-np-wl", "a-wp"]],
      [["kind==view"], ["_v", "v-wp"]],
      [["kind==committed"], ["p"]],
      [["name==p"], ["p"]],
      [["name==p", "name==a-np-wl"], ["a-np-wl", "p"]],
      [["parent==p"], ["a-wp", "v-wp"]],
      [['parent!=""'], ["a-wp", "v-wp"]],
      [['parent==""'], ["B", "_v", "a-np-wl", "p"]],
      [["parent"], all],
      [["labels.l"], ["a-np-wl", "p"]],
      [["labels.l==2"], ["a-np-wl"]],
      [["labels.l!=1"], ["B", "_v", "a-np-wl", "a-wp", "v-wp"]],
      [['labels."x.y"==dot'], ["v-wp"]],
      [["name~=^a-"], ["a-np-wl", "a-wp"]],
      [["kind==active,labels.l"], ["a-np-wl"]],
      [["kind==view,parent==p", "kind==committed"], ["p", "v-wp"]],
      [["name==none"], []],
    ];
    for (const [filters, want] of cases) {
      assert.deepEqual(names(await sn.list(filters)), want, JSON.stringify(filters));
      const seen: string[] = [];
      await sn.walk((info) => {
        seen.push(info.name);
      }, filters);
      assert.deepEqual(seen, want, `walk ${JSON.stringify(filters)}`);
    }
    await assert.rejects(sn.list(["name=="]), InvalidArgument);
    await assert.rejects(sn.walk(() => {}, ["labels.("]), InvalidArgument);
  });

  contractTest(name, "stat inside walk does not deadlock", {}, async ({ sn }) => {
    await layer(sn, "base", undefined);
    await sn.prepare("a", { parent: "base" });
    await sn.view("v", { parent: "base" });
    const stats: string[] = [];
    await sn.walk(async (info) => {
      const again = await sn.stat(info.name);
      stats.push(`${again.name}:${again.kind}`);
    });
    assert.deepEqual(stats, ["a:active", "base:committed", "v:view"]);
  });

  contractTest(
    name,
    "usage: live for active, stored for committed, zero for views",
    {},
    async ({ sn }) => {
      await sn.prepare("a");
      const empty = await sn.usage("a");
      assert.equal(empty.inodes, 1, "the root directory counts");
      await fill(sn, "a", { "data.bin": "x".repeat(8192) });
      const filled = await sn.usage("a");
      assert.equal(filled.inodes, 2);
      assert.ok(filled.size >= empty.size + 8192, `${filled.size} >= ${empty.size} + 8192`);
      await sn.commit("c", "a");
      assert.deepEqual(await sn.usage("c"), filled);
      await sn.view("v", { parent: "c" });
      assert.deepEqual(await sn.usage("v"), { size: 0, inodes: 0 });
      await sn.view("v2");
      assert.deepEqual(await sn.usage("v2"), { size: 0, inodes: 0 });
      await assert.rejects(sn.usage("missing"), NotFound);
    },
  );

  contractTest(name, "ids grow and are never reused", {}, async ({ sn }) => {
    const a = snapshotId(await sn.prepare("a"));
    const b = snapshotId(await sn.prepare("b"));
    await sn.remove("b");
    const c = snapshotId(await sn.prepare("b"));
    await sn.commit("committed", "b");
    const d = snapshotId(await sn.prepare("d", { parent: "committed" }));
    assert.ok(a < b && b < c && c < d, `${a} < ${b} < ${c} < ${d}`);
  });

  contractTest(name, "created equals updated on create", {}, async ({ sn }) => {
    await layer(sn, "base", undefined);
    for (const [key, create] of [["p", sn.prepare.bind(sn)], ["v", sn.view.bind(sn)]] as const) {
      const before = Date.now();
      await create(key, { parent: "base" });
      const after = Date.now();
      const info = await sn.stat(key);
      assert.equal(info.created.getTime(), info.updated.getTime());
      assert.ok(info.created.getTime() >= before && info.created.getTime() <= after);
      assert.equal(info.parent, "base");
    }
  });

  contractTest(name, "close twice succeeds", {}, async ({ sn }) => {
    await sn.prepare("a");
    await sn.close();
    await sn.close();
  });

  contractTest(
    name,
    "a fresh snapshot without parent is an empty 0755 directory",
    {},
    async ({ sn }) => {
      const source = bindSource(await sn.prepare("a"));
      assert.ok(source !== undefined);
      const info = await Deno.stat(source);
      assert.ok(info.isDirectory);
      assert.equal((info.mode ?? 0) & 0o7777, 0o755);
      assert.deepEqual([...Deno.readDirSync(source)], []);
    },
  );

  contractTest(name, "cleanup keeps every live snapshot", {}, async ({ sn }) => {
    await layer(sn, "base", undefined, { "a.txt": "a" });
    await layer(sn, "top", "base", { "b.txt": "b" });
    await sn.prepare("p", { parent: "top" });
    await sn.view("v", { parent: "top" });
    await sn.remove("v");
    await sn.cleanup();
    assert.deepEqual(await show(await sn.mounts("p")), { "a.txt": "a", "b.txt": "b" });
    assert.deepEqual(names(await sn.list()), ["base", "p", "top"]);
  });

  contractTest(
    name,
    "mounts show parents' files; views refuse writes",
    { mount: true },
    async ({ sn }) => {
      await layer(sn, "base", undefined, { "etc/hostname": "base", "keep": "k" });
      await sn.prepare("work", { parent: "base" });
      await withTempMount(await sn.mounts("work"), async (dir) => {
        assert.deepEqual(await readFiles(dir), { "etc/hostname": "base", "keep": "k" });
        await Deno.writeTextFile(join(dir, "etc/hostname"), "top");
        await Deno.writeTextFile(join(dir, "new"), "n");
      });
      await sn.commit("top", "work");
      const want = { "etc/hostname": "top", "keep": "k", "new": "n" };
      const view = await sn.view("look", { parent: "top" });
      await withTempMount(view, async (dir) => {
        assert.deepEqual(await readFiles(dir), want);
        await assert.rejects(
          Deno.writeTextFile(join(dir, "x"), "x"),
          (err: Error & { code?: string }) => err.code === "EROFS",
        );
      });
      await withTempMount(await sn.view("empty"), async (dir) => {
        assert.deepEqual(await readFiles(dir), {});
        await assert.rejects(
          Deno.mkdir(join(dir, "d")),
          (err: Error & { code?: string }) => err.code === "EROFS",
        );
      });
      // The base layer is unchanged underneath.
      await withTempMount(await sn.view("look-base", { parent: "base" }), async (dir) => {
        assert.deepEqual(await readFiles(dir), { "etc/hostname": "base", "keep": "k" });
      });
      if (name === "native") {
        const source = bindSource(view);
        assert.ok(source !== undefined);
        assert.deepEqual(await readFiles(source), want);
      }
    },
  );

  contractTest(name, "128 stacked layers show every layer's file", {}, async ({ sn }) => {
    const count = 128;
    const want: Record<string, string> = {};
    for (let i = 0; i < count; i++) {
      const file = `layer-${String(i).padStart(3, "0")}`;
      want[file] = String(i);
      await layer(sn, `l${i}`, i === 0 ? undefined : `l${i - 1}`, { [file]: String(i) });
    }
    const parent = `l${count - 1}`;
    const view = await sn.view("top", { parent });
    assert.deepEqual(await show(view), want);
    if (Deno.uid() === 0) {
      await withTempMount(view, async (dir) => assert.deepEqual(await readFiles(dir), want));
      const active = await sn.prepare("work", { parent });
      await withTempMount(active, async (dir) => {
        assert.deepEqual(await readFiles(dir), want);
        await Deno.writeTextFile(join(dir, "extra"), "x");
      });
    }
  });

  contractTest(name, "two processes prepare and commit on one root", {}, async ({ root, sn }) => {
    const child = new URL("./_contract_child.ts", import.meta.url).pathname;
    const run = (prefix: string) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", child, name, root, prefix, "50"],
        stdout: "piped",
        stderr: "piped",
      }).output();
    const outputs = await Promise.all([run("one"), run("two")]);
    const results = outputs.map((out) => {
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, stderr);
      return JSON.parse(new TextDecoder().decode(out.stdout)) as ChildResult;
    });
    const ids = results.flatMap((r) => r.ids);
    assert.equal(new Set(ids).size, ids.length, `duplicate ids in ${ids}`);
    for (const shared of [...results[0]!.sharedKeys]) {
      const won = results.filter((r) => r.preparedShared.includes(shared)).length;
      const lost = results.filter((r) => r.existsShared.includes(shared)).length;
      assert.deepEqual([won, lost], [1, 1], `shared key ${shared}`);
    }
    for (const shared of [...results[0]!.sharedNames]) {
      const won = results.filter((r) => r.committedShared.includes(shared)).length;
      const lost = results.filter((r) => r.existsSharedName.includes(shared)).length;
      assert.deepEqual([won, lost], [1, 1], `shared name ${shared}`);
    }
    const committed = results.flatMap((r) => [...r.committed, ...r.committedShared]).sort();
    assert.deepEqual(names(await sn.list(["kind==committed"])), committed);
    const actives = results.flatMap((r) => r.preparedShared).sort();
    assert.deepEqual(names(await sn.list(["kind==active"])), actives);
    // Each process's chain has the right parents.
    for (const prefix of ["one", "two"]) {
      const top = await sn.stat(`${prefix}-c-39`);
      assert.equal(top.parent, `${prefix}-c-38`);
    }
  });
}

/** What `_contract_child.ts` prints. */
export interface ChildResult {
  /** Ids of every snapshot the child created. */
  ids: number[];
  /** Its own committed names. */
  committed: string[];
  /** The shared keys it tried. */
  sharedKeys: string[];
  /** Shared keys it prepared. */
  preparedShared: string[];
  /** Shared keys that already existed. */
  existsShared: string[];
  /** The shared committed names it tried. */
  sharedNames: string[];
  /** Shared names it committed. */
  committedShared: string[];
  /** Shared names that already existed. */
  existsSharedName: string[];
}

for (const name of snapshotterNames()) contractSuite(name);
