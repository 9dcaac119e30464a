import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../../cli.ts";
import { makeTempDir, peerTest } from "../_peers.ts";

async function strata(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { stdout: (l) => out.push(l), stderr: (l) => err.push(l) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

for (const snapshotter of ["native", "overlayfs"]) {
  peerTest(
    `strata snapshots prepare/commit/ls/tree/info/usage/label/rm and mount work with ${snapshotter}`,
    { root: true },
    async () => {
      await using tmp = await makeTempDir();
      const root = join(tmp.path, "root");
      const s = (...args: string[]) =>
        strata([
          "--root",
          root,
          "snapshots",
          args[0]!,
          "--snapshotter",
          snapshotter,
          ...args.slice(1),
        ]);
      const prep = await s("prepare", "base-active");
      assert.equal(prep.code, 0, prep.err);
      const mounts = JSON.parse(prep.out) as { type: string; source: string }[];
      assert.equal(mounts[0]!.type, "bind");
      await Deno.writeTextFile(join(mounts[0]!.source, "hello.txt"), "hi\n");
      assert.equal((await s("commit", "base", "base-active")).code, 0);
      const child = await s("prepare", "--target", "/mnt/x", "child", "base");
      assert.equal(child.code, 0, child.err);
      assert.match(child.out, /^mount -t (bind|overlay) /);

      const ls = await s("ls");
      assert.match(ls.out, /^KEY\s+PARENT\s+KIND/);
      assert.match(ls.out, /base\s+Committed/);
      assert.match(ls.out, /child\s+base\s+Active/);
      // --snapshotter may also stand before the command, as with ctr.
      const tree = await strata([
        "--root",
        root,
        "snapshots",
        "--snapshotter",
        snapshotter,
        "tree",
      ]);
      assert.equal(tree.out, "base\n\\_ child");
      const info = JSON.parse((await s("info", "child")).out);
      assert.equal(info.kind, "active");
      assert.equal(info.parent, "base");
      assert.ok(info.labels["containerd.io/gc.root"], "prepare labels snapshots as GC roots");
      const usage = await s("usage", "--bytes", "base");
      assert.match(usage.out, /base\s+\d+\s+\d+/);
      const label = await s("label", "base", "team=a");
      assert.match(label.out, /team=a/);
      const filtered = await s("ls", "labels.team==a");
      assert.equal(filtered.out.split("\n").length, 2);

      // strata mount shows the parent's file through the child.
      const target = join(tmp.path, "mnt");
      const m = await strata([
        "--root",
        root,
        "mount",
        "--snapshotter",
        snapshotter,
        "child",
        target,
      ]);
      assert.equal(m.code, 0, m.err);
      try {
        assert.equal(await Deno.readTextFile(join(target, "hello.txt")), "hi\n");
      } finally {
        const u = await strata(["unmount", target]);
        assert.equal(u.code, 0, u.err);
      }
      await assert.rejects(Deno.readTextFile(join(target, "hello.txt")), Deno.errors.NotFound);

      const busy = await s("rm", "base");
      assert.equal(busy.code, 5, "a parent with a child cannot be removed");
      assert.equal((await s("rm", "child", "base")).code, 0);
      const gone = await s("info", "base");
      assert.equal(gone.code, 3);
    },
  );
}

Deno.test("strata snapshots reports an unknown snapshotter", async () => {
  await using tmp = await makeTempDir();
  const r = await strata(["--root", tmp.path, "snapshots", "ls", "--snapshotter", "zfs"]);
  assert.equal(r.code, 3);
  assert.match(r.err, /overlayfs/);
});
