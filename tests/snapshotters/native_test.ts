import assert from "node:assert/strict";
import { join } from "node:path";
import { MetadataDb } from "../../metadata/db.ts";
import { NativeSnapshotter } from "../../snapshotters/native.ts";
import {
  defaultSnapshotterName,
  openSnapshotter,
  snapshotterNames,
} from "../../snapshotters/registry.ts";
import { SnapshotStorage } from "../../snapshotters/storage.ts";
import { FailedPrecondition, InvalidArgument, NotFound } from "../../errors.ts";
import { peerTest, runOk } from "../_peers.ts";

interface Env {
  sn: NativeSnapshotter;
  root: string;
  db: MetadataDb;
  dir: string;
}

async function withNative(fn: (env: Env) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "strata-native-" });
  const db = MetadataDb.open(root);
  const dir = join(root, "snapshots", "native");
  const sn = new NativeSnapshotter(dir, db);
  try {
    await fn({ sn, root, db, dir });
  } finally {
    await sn.close();
    db.close();
    await Deno.remove(root, { recursive: true });
  }
}

function entries(dir: string): string[] {
  return [...Deno.readDirSync(join(dir, "snapshots"))].map((e) => e.name).sort();
}

function mode(path: string): number {
  return (Deno.statSync(path).mode ?? 0) & 0o7777;
}

Deno.test("NativeSnapshotter lays out one plain directory per snapshot", async () => {
  await withNative(async ({ sn, dir }) => {
    assert.equal(mode(dir), 0o700);
    assert.equal(mode(join(dir, "snapshots")), 0o700);
    const active = await sn.prepare("a");
    assert.deepEqual(active, [{
      type: "bind",
      source: join(dir, "snapshots", "1"),
      options: ["rbind", "rw"],
    }]);
    assert.equal(mode(join(dir, "snapshots", "1")), 0o755);
    Deno.writeTextFileSync(join(dir, "snapshots", "1", "f"), "f");
    await sn.commit("base", "a");
    assert.deepEqual(entries(dir), ["1"]);
    const view = await sn.view("v", { parent: "base" });
    assert.deepEqual(view, [{
      type: "bind",
      source: join(dir, "snapshots", "1"),
      options: ["rbind", "ro"],
    }]);
    assert.deepEqual(entries(dir), ["1"], "a view with a parent has no directory");
    const empty = await sn.view("e");
    assert.deepEqual(empty, [{
      type: "bind",
      source: join(dir, "snapshots", "3"),
      options: ["rbind", "ro"],
    }]);
    const child = await sn.prepare("c", { parent: "base" });
    assert.equal(child[0]?.source, join(dir, "snapshots", "4"));
    assert.deepEqual(entries(dir), ["1", "3", "4"]);
    assert.deepEqual(await sn.mounts("c"), child);
  });
});

Deno.test("NativeSnapshotter.prepare() on a parent makes an independent full copy", async () => {
  await withNative(async ({ sn }) => {
    const [a] = await sn.prepare("a");
    Deno.writeTextFileSync(join(a!.source, "data"), "x".repeat(100_000));
    await sn.commit("base", "a");
    const [c] = await sn.prepare("c", { parent: "base" });
    assert.equal(Deno.readTextFileSync(join(c!.source, "data")), "x".repeat(100_000));
    Deno.writeTextFileSync(join(c!.source, "data"), "changed");
    const [v] = await sn.view("v", { parent: "base" });
    assert.equal(Deno.readTextFileSync(join(v!.source, "data")), "x".repeat(100_000));
    // Native usage of an active snapshot includes the copied parent data.
    const base = await sn.usage("base");
    Deno.writeTextFileSync(join(c!.source, "data"), "x".repeat(100_000));
    const usage = await sn.usage("c");
    assert.ok(usage.size >= base.size && usage.inodes === base.inodes, JSON.stringify(usage));
  });
});

Deno.test("NativeSnapshotter.remove() deletes the directory, keeps it when refused", async () => {
  await withNative(async ({ sn, dir }) => {
    await sn.prepare("a");
    await sn.commit("base", "a");
    await sn.prepare("c", { parent: "base" });
    await assert.rejects(sn.remove("base"), FailedPrecondition);
    assert.deepEqual(entries(dir), ["1", "2"]);
    await sn.remove("c");
    assert.deepEqual(entries(dir), ["1"]);
    await sn.remove("base");
    assert.deepEqual(entries(dir), []);
    await assert.rejects(sn.remove("base"), NotFound);
  });
});

Deno.test("NativeSnapshotter.prepare() leaves nothing behind when the copy fails", async () => {
  await withNative(async ({ sn, dir }) => {
    const [a] = await sn.prepare("a");
    await sn.commit("base", "a");
    // Corrupt the parent: its directory disappears, so copying it fails.
    Deno.renameSync(a!.source, join(dir, "moved"));
    await assert.rejects(
      sn.prepare("c", { parent: "base" }),
      (err: Error & { code?: string }) => err.code === "ENOENT",
    );
    await assert.rejects(sn.stat("c"), NotFound);
    assert.deepEqual(entries(dir), []);
    Deno.renameSync(join(dir, "moved"), a!.source);
    await sn.prepare("c", { parent: "base" });
    assert.equal((await sn.stat("c")).kind, "active");
  });
});

Deno.test("NativeSnapshotter: an interrupted prepare cannot commit; remove cleans it", async () => {
  await withNative(async ({ sn, db, dir }) => {
    await sn.prepare("a");
    await sn.commit("base", "a");
    // What a crash in the middle of the copy leaves: the record, and a partial new-<id>.
    const { id } = new SnapshotStorage(db, "native").createSnapshot("active", "crashed", {
      parent: "base",
    });
    Deno.mkdirSync(join(dir, "snapshots", `new-${id}`));
    Deno.writeTextFileSync(join(dir, "snapshots", `new-${id}`, "half"), "h");
    await assert.rejects(sn.commit("x", "crashed"), FailedPrecondition);
    await assert.rejects(
      sn.commit("x", "crashed", { usage: { size: 1, inodes: 1 } }),
      FailedPrecondition,
      "a given usage does not hide the missing directory",
    );
    await assert.rejects(sn.usage("crashed"), FailedPrecondition);
    await assert.rejects(sn.stat("x"), NotFound);
    await sn.cleanup();
    assert.deepEqual(entries(dir), ["1", `new-${id}`], "cleanup keeps a live record's copy");
    await sn.remove("crashed");
    assert.deepEqual(entries(dir), ["1"]);
  });
});

Deno.test("NativeSnapshotter.cleanup() removes rm-, stale new- and orphan directories", async () => {
  await withNative(async ({ sn, dir }) => {
    await sn.prepare("a");
    await sn.view("v");
    for (const name of ["rm-7", "new-99", "99", "junk"]) {
      Deno.mkdirSync(join(dir, "snapshots", name, "sub"), { recursive: true });
      Deno.chmodSync(join(dir, "snapshots", name, "sub"), 0o555);
    }
    Deno.writeTextFileSync(join(dir, "snapshots", "stray-file"), "x");
    await sn.cleanup();
    assert.deepEqual(entries(dir), ["1", "2"]);
  });
});

Deno.test("NativeSnapshotter is closed after close()", async () => {
  await withNative(async ({ sn }) => {
    await sn.close();
    await sn.close();
    await assert.rejects(sn.prepare("a"), FailedPrecondition);
  });
});

Deno.test("NativeSnapshotter declares every OS and no capabilities", async () => {
  await withNative(({ sn }) => {
    const platforms = sn.supportedPlatforms();
    const has = (os: string, architecture: string, variant?: string) =>
      platforms.some((p) =>
        p.os === os && p.architecture === architecture && p.variant === variant
      );
    for (const os of ["linux", "windows", "darwin", "freebsd"]) {
      for (const arch of ["amd64", "arm64", "386", "ppc64le", "s390x", "riscv64"]) {
        assert.ok(has(os, arch), `${os}/${arch}`);
      }
      assert.ok(has(os, "arm", "v7"), `${os}/arm/v7`);
    }
    assert.deepEqual(sn.capabilities, []);
    assert.equal(sn.name, "native");
    return Promise.resolve();
  });
});

Deno.test("NativeSnapshotter with fsync copies the same tree", async () => {
  const root = await Deno.makeTempDir({ prefix: "strata-native-" });
  const db = MetadataDb.open(root);
  try {
    const sn = new NativeSnapshotter(join(root, "snap"), db, { fsync: true });
    const [a] = await sn.prepare("a");
    Deno.mkdirSync(join(a!.source, "d"));
    Deno.writeTextFileSync(join(a!.source, "d", "f"), "content");
    await sn.commit("base", "a");
    const [c] = await sn.prepare("c", { parent: "base" });
    assert.equal(Deno.readTextFileSync(join(c!.source, "d", "f")), "content");
  } finally {
    db.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("registry: names, default, directories and unknown names", async () => {
  assert.deepEqual(snapshotterNames(), ["overlayfs", "native"]);
  assert.equal(defaultSnapshotterName(), Deno.build.os === "linux" ? "overlayfs" : "native");
  const root = await Deno.makeTempDir({ prefix: "strata-registry-" });
  const db = MetadataDb.open(root);
  try {
    await assert.rejects(openSnapshotter("zfs", { root, db }), (err: Error) => {
      assert.ok(err instanceof NotFound);
      assert.match(err.message, /"zfs".*"overlayfs", "native"/);
      return true;
    });
    const sn = await openSnapshotter("native", { root, db });
    const [m] = await sn.prepare("a");
    assert.equal(m?.source, join(root, "snapshots", "native", "snapshots", "1"));
    await sn.close();
  } finally {
    db.close();
    await Deno.remove(root, { recursive: true });
  }
});

peerTest(
  "NativeSnapshotter prepares, commits, copies and views as a non-root user",
  { root: true, tools: ["setpriv"] },
  async () => {
    const nobody = 65534;
    const tmp = await Deno.makeTempDir({ prefix: "strata-nonroot-" });
    try {
      Deno.chmodSync(tmp, 0o755);
      const root = join(tmp, "root");
      const home = join(tmp, "home");
      Deno.mkdirSync(root);
      Deno.mkdirSync(home);
      Deno.chownSync(root, nobody, nobody);
      Deno.chownSync(home, nobody, nobody);
      const child = new URL("./_native_nonroot_child.ts", import.meta.url).pathname;
      const { stdout } = await runOk([
        "setpriv",
        `--reuid=${nobody}`,
        `--regid=${nobody}`,
        "--clear-groups",
        "env",
        `HOME=${home}`,
        `DENO_DIR=${join(home, "deno")}`,
        "NO_COLOR=1",
        Deno.execPath(),
        "run",
        "--no-config",
        "-A",
        child,
        root,
      ]);
      const result = JSON.parse(stdout) as {
        uid: number;
        copied: string[];
        viewed: string[];
        usage: { size: number; inodes: number };
        warnings: string[];
        left: string[];
      };
      assert.equal(result.uid, nobody);
      const base = [
        "fifo?",
        "hello.txt=hello",
        "link->hello.txt",
        "ro/",
        "ro/inner/",
        "ro/inner/file=inner",
      ];
      assert.deepEqual(result.copied, base);
      assert.deepEqual(result.viewed.sort(), [...base, "extra.txt=extra"].sort());
      assert.equal(result.usage.inodes, 8);
      assert.deepEqual(result.warnings, []);
      assert.deepEqual(result.left, []);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

Deno.test("NativeSnapshotter.usage() of a copy counts the whole tree; commit stores a given usage", async () => {
  await withNative(async ({ sn }) => {
    const [a] = await sn.prepare("a");
    // More entries than one slice of the usage walk (2048).
    for (let d = 0; d < 3; d++) {
      Deno.mkdirSync(join(a!.source, `d${d}`));
      for (let f = 0; f < 800; f++) Deno.writeTextFileSync(join(a!.source, `d${d}`, `f${f}`), "x");
    }
    const measured = await sn.usage("a");
    assert.equal(measured.inodes, 1 + 3 + 2400);
    await sn.commit("base", "a");
    assert.deepEqual(await sn.usage("base"), measured, "the commit measures what usage() did");
    await sn.prepare("b", { parent: "base" });
    assert.deepEqual((await sn.usage("b")).inodes, measured.inodes, "a full copy of the parent");
    const given = { size: 4096, inodes: 3 };
    await sn.commit("top", "b", { usage: given });
    assert.deepEqual(await sn.usage("top"), given);
    await sn.prepare("c");
    await assert.rejects(
      sn.commit("bad", "c", { usage: { size: 1.5, inodes: 1 } }),
      (err) => err instanceof InvalidArgument && /not two non-negative integers/.test(err.message),
    );
    assert.equal((await sn.stat("c")).kind, "active");
  });
});
