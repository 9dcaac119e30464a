// checkUnpacked() and the check commands: a clean unpack has no difference on either snapshotter;
// damage made by hand inside committed snapshots (truncation, rewritten content, deletion, a file
// turned into a symlink, modes, broken hardlinks, retargeted symlinks, whiteouts, opaque marks)
// is reported as exactly those differences.

import assert from "node:assert/strict";
import { join } from "node:path";
import { Client } from "../../client.ts";
import {
  checkCommand,
  imagesCheckCommand,
  imagesMountCommand,
  imagesUnmountCommand,
  imagesUsageCommand,
} from "../../cli/check.ts";
import { type Command, type CommandContext, parseCommandArgs } from "../../cli/_command.ts";
import { FailedPrecondition } from "../../errors.ts";
import { collectGarbage } from "../../gc/mod.ts";
import { importArchive } from "../../images/archive/import.ts";
import { withTempMount } from "../../mount/mod.ts";
import { chainIds } from "../../images/manifest.ts";
import { buildSample } from "../../sample/build.ts";
import * as sys from "../../sys/mod.ts";
import {
  type CheckDifference,
  checkUnpacked,
  snapshotDirs,
  snapshotDirsFromView,
} from "../../unpack/check.ts";
import { makeTempDir, peerTest, type TempDir } from "../_peers.ts";
import { findListing } from "../_tree.ts";
import { concat, exists, rawEntry, rawTar } from "../diff/_helpers.ts";
import { createTar, type TarInput } from "../../diff/tar/mod.ts";
import { manyFileLayers, writeLayout } from "./_build_image.ts";

const SNAPSHOTTERS = ["native", "overlayfs"] as const;

interface Setup {
  tmp: TempDir;
  client: Client;
  name: string;
  chain: string[];
  [Symbol.asyncDispose](): Promise<void>;
}

/** A root with the many-file test image imported and unpacked into `snapshotter`. */
async function unpacked(snapshotter: string, filesPerLayer = 200): Promise<Setup> {
  const tmp = await makeTempDir();
  const tars = await manyFileLayers({ seed: 7, filesPerLayer, maxSize: 8192, dirs: 8 });
  const image = await writeLayout(join(tmp.path, "layout"), tars, { name: "test/check:1" });
  const client = Client.open({ root: join(tmp.path, "root") });
  await importArchive(client, image.layout);
  await client.getImage(image.name).unpack(snapshotter, { syncFs: false });
  return {
    tmp,
    client,
    name: image.name,
    chain: chainIds(image.diffIds),
    async [Symbol.asyncDispose]() {
      client.close();
      await tmp.stop();
    },
  };
}

/** The first overlay whiteout (a 0:0 character device) below `dir`, in sorted order. */
function firstWhiteout(root: string, dir: string): string | undefined {
  for (const name of [...Deno.readDirSync(join(root, dir))].map((e) => e.name).sort()) {
    const rel = `${dir}/${name}`;
    const st = sys.lstat(join(root, rel));
    if ((st.mode & sys.S_IFMT) === sys.S_IFCHR && st.rdev === 0) return rel;
    if ((st.mode & sys.S_IFMT) === sys.S_IFDIR) {
      const found = firstWhiteout(root, rel);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

function summary(ds: CheckDifference[]): string[] {
  return ds.map((d) => `${d.chainId.slice(7, 15)} ${d.path} ${d.problem}`).sort();
}

/** Runs a command object as the CLI would, collecting its output. */
async function runCommand(
  client: Client,
  cmd: Command,
  args: string[],
): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const ctx: CommandContext = {
    client: () => Promise.resolve(client),
    json: false,
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    write: () => Promise.resolve(),
    config: {},
  };
  const parsed = parseCommandArgs("strata", cmd, args, ctx.out)!;
  const code = (await cmd.run(ctx, parsed.values, parsed.positionals)) ?? 0;
  return { code, out, err };
}

for (const snapshotter of SNAPSHOTTERS) {
  peerTest(
    `checkUnpacked() finds no difference after a clean unpack (${snapshotter})`,
    { root: snapshotter === "overlayfs" },
    async () => {
      // The built-in sample (a whiteout, a symlink, a hardlink) and the many-file image.
      await using tmp = await makeTempDir();
      const sample = await buildSample(join(tmp.path, "layout"));
      const client = Client.open({ root: join(tmp.path, "root") });
      try {
        await importArchive(client, sample.layout);
        await client.getImage(sample.name).unpack(snapshotter);
        const report = await checkUnpacked(client, client.images.get(sample.name), {
          snapshotter,
        });
        assert.deepEqual(report.differences, []);
        assert.equal(report.snapshotter, snapshotter);
        assert.equal(report.chainId, chainIds(sample.diffIds).at(-1));
        assert.deepEqual(report.layers.map((l) => l.chainId), chainIds(sample.diffIds));
        assert.ok(report.layers.every((l) => l.checked > 0 && l.entries > 0));
        const sn = await client.snapshotter(snapshotter);
        assert.deepEqual(
          (await sn.list()).filter((i) => i.kind !== "committed"),
          [],
          "the views used to find the snapshots' directories are removed",
        );
      } finally {
        client.close();
      }
      await using many = await unpacked(snapshotter);
      const report = await checkUnpacked(many.client, many.client.images.get(many.name), {
        snapshotter,
      });
      assert.deepEqual(report.differences, []);
      assert.equal(report.layers.length, 3);
    },
  );

  peerTest(
    `checkUnpacked() reports damage inside committed snapshots (${snapshotter})`,
    { root: snapshotter === "overlayfs" },
    async () => {
      await using s = await unpacked(snapshotter);
      const sn = await s.client.snapshotter(snapshotter);
      const [c1, c2, c3] = s.chain as [string, string, string];
      const top = (await snapshotDirs(sn, c3)).dir;
      const second = (await snapshotDirs(sn, c2)).dir;
      const bottom = (await snapshotDirs(sn, c1)).dir;
      // Files of the top layer with some content to damage.
      const sized = [...Deno.readDirSync(join(top, "more"))]
        .filter((e) => e.name.startsWith("m")).map((e) => `more/${e.name}`)
        .filter((p) => Deno.lstatSync(join(top, p)).size > 2)
        .sort();
      const [truncated, rewritten, deleted, replaced] = sized as [string, string, string, string];
      await Deno.truncate(join(top, truncated), 0);
      const bytes = await Deno.readFile(join(top, rewritten));
      bytes[1] = bytes[1]! ^ 0xff;
      await Deno.writeFile(join(top, rewritten), bytes);
      await Deno.remove(join(top, deleted));
      await Deno.remove(join(top, replaced));
      await Deno.symlink("elsewhere", join(top, replaced));
      // A byte changed in the second data segment of the sparse file.
      {
        using f = await Deno.open(join(top, "more/sparse"), { read: true, write: true });
        const byte = new Uint8Array(1);
        await f.seek((4 << 20) + 10, Deno.SeekMode.Start);
        await f.read(byte);
        await f.seek((4 << 20) + 10, Deno.SeekMode.Start);
        await f.write(new Uint8Array([byte[0]! ^ 0xff]));
      }
      // The bottom layer's etc/config: another mode.
      await Deno.chmod(join(bottom, "etc/config"), 0o644);
      // The second layer: a hardlink broken into a copy, a symlink retargeted, and a whiteout
      // undone (overlayfs: a whiteout device removed and an opaque mark dropped; native: a file
      // of the first layer in the directory it whites out is back; the directory itself stays
      // when the layer wrote into it before its whiteout, which hides the lower content only).
      await Deno.remove(join(second, "extra/h1"));
      await Deno.copyFile(join(second, "extra/e1"), join(second, "extra/h1"));
      await Deno.remove(join(second, "extra/s2"));
      await Deno.symlink("e3", join(second, "extra/s2"));
      let whiteout = "data/d07";
      if (snapshotter === "overlayfs") {
        whiteout = firstWhiteout(second, "data")!;
        await Deno.remove(join(second, whiteout));
        sys.lremovexattr(join(second, "data/d02"), "trusted.overlay.opaque");
      } else if (exists(join(second, whiteout))) {
        whiteout = [...Deno.readDirSync(join(bottom, whiteout))]
          .map((e) => `${whiteout}/${e.name}`).sort()
          .find((p) => !exists(join(second, p)))!;
        await Deno.writeTextFile(join(second, whiteout), "back");
      } else {
        await Deno.mkdir(join(second, whiteout));
      }

      const report = await checkUnpacked(s.client, s.client.images.get(s.name), { snapshotter });
      const id = (c: string) => c.slice(7, 15);
      const expected = [
        `${id(c3)} /${truncated} size`,
        `${id(c3)} /${rewritten} digest`,
        `${id(c3)} /${deleted} missing`,
        `${id(c3)} /${replaced} type`,
        `${id(c3)} /more/sparse digest`,
        `${id(c1)} /etc/config mode`,
        `${id(c2)} /extra/h1 hardlink`,
        `${id(c2)} /extra/s2 link`,
        `${id(c2)} /${whiteout} whiteout`,
        ...(snapshotter === "overlayfs" ? [`${id(c2)} /data/d02 opaque`] : []),
      ].sort();
      assert.deepEqual(summary(report.differences), expected);
      const size = report.differences.find((d) => d.problem === "size")!;
      assert.equal(size.actual, "0 bytes");
      assert.match(size.expected, /^[1-9][0-9]* bytes$/);
      assert.equal(report.differences.find((d) => d.problem === "type")!.actual, "symlink");
      const layers = await s.client.getImage(s.name).rootFS();
      assert.equal(layers.length, 3);
      for (const d of report.differences) {
        assert.equal(d.layer, report.layers.find((l) => l.chainId === d.chainId)!.digest);
      }

      // The command prints one line per difference and exits with 5.
      const ran = await runCommand(s.client, checkCommand, ["--snapshotter", snapshotter, s.name]);
      assert.equal(ran.code, 5);
      assert.equal(ran.out.length, expected.length);
      assert.ok(ran.out.some((l) => l.startsWith(`size /${truncated}: expected `)), ran.out[0]);
      assert.ok(
        ran.err.join("\n").endsWith(`differs from its layers: ${expected.length} difference(s)`),
        ran.err.join("\n"),
      );
    },
  );
}

for (const snapshotter of SNAPSHOTTERS) {
  peerTest(
    `an image whose names are not UTF-8 unpacks byte for byte and checks clean (${snapshotter})`,
    { root: snapshotter === "overlayfs" },
    async () => {
      await using tmp = await makeTempDir();
      const enc = (text: string) => new TextEncoder().encode(text);
      const cafe = new Uint8Array([0x63, 0x61, 0x66, 0xe9]); // Latin-1 "café"
      const name = (...parts: (string | Uint8Array)[]) =>
        concat(...parts.map((p) => typeof p === "string" ? enc(p) : p));
      const first = rawTar(...[
        rawEntry({ name: name(cafe, "/"), typeflag: "5", mode: 0o755 }),
        rawEntry({ name: name(cafe, "/b", new Uint8Array([0xff])), typeflag: "0" }, enc("latin")),
        rawEntry({ name: name(cafe, "/gone", new Uint8Array([0xfe])), typeflag: "0" }, enc("x")),
        rawEntry({
          name: "link",
          typeflag: "2",
          linkname: name(cafe, "/b", new Uint8Array([0xff])),
        }),
        rawEntry({
          name: "hard",
          typeflag: "1",
          linkname: name(cafe, "/b", new Uint8Array([0xff])),
        }),
      ]);
      // The second layer deletes a file whose name is not UTF-8 (its whiteout's name is not either).
      const second = rawTar(...[
        rawEntry({ name: name(cafe, "/.wh.gone", new Uint8Array([0xfe])), typeflag: "0" }),
      ]);
      const image = await writeLayout(join(tmp.path, "layout"), [first, second], {
        name: "test/latin1:1",
      });
      const client = Client.open({ root: join(tmp.path, "root") });
      try {
        await importArchive(client, image.layout);
        await client.getImage(image.name).unpack(snapshotter);
        const report = await checkUnpacked(client, client.images.get(image.name), { snapshotter });
        assert.deepEqual(report.differences, []);
        assert.ok(report.layers.every((l) => l.checked > 0));
        // The merged view, listed by find(1): the bytes of the layers, the deleted file gone.
        const sn = await client.snapshotter(snapshotter);
        const mounts = await sn.view("latin1-view", { parent: chainIds(image.diffIds).at(-1)! });
        const found = await withTempMount(mounts, findListing);
        await sn.remove("latin1-view");
        assert.deepEqual(found, ["caf\xe9 ", "caf\xe9/b\xff ", "hard ", "link caf\xe9/b\xff"]);
        // Damage the file in the first layer's snapshot: strata check names it as GNU tar would.
        const bottom = (await snapshotDirs(sn, chainIds(image.diffIds)[0]!)).dir;
        const fd = sys.open(join(bottom, "caf\udce9/b\udcff"), sys.O_WRONLY | sys.O_CLOEXEC);
        sys.ftruncate(fd, 1);
        sys.close(fd);
        const checked = await runCommand(client, checkCommand, [
          "--snapshotter",
          snapshotter,
          image.name,
        ]);
        assert.equal(checked.code, 5, checked.err.join("\n"));
        assert.ok(
          checked.out.some((l) =>
            /^size \/caf\\xe9\/b\\xff: expected 5 bytes, found 1 bytes/.test(l)
          ),
          checked.out.join("\n"),
        );
      } finally {
        client.close();
      }
    },
  );
}

for (const snapshotter of SNAPSHOTTERS) {
  peerTest(
    `checkUnpacked() expects a whiteout to hide only the lower content of a directory its layer wrote into (${snapshotter})`,
    { root: snapshotter === "overlayfs" },
    async () => {
      await using tmp = await makeTempDir();
      const enc = new TextEncoder();
      const file = (name: string, body = name): TarInput => ({
        header: { name, type: "file", mode: 0o644 },
        body: enc.encode(body),
      });
      const tars = [
        await createTar([file("d/f", "old"), file("d/other"), file("d/sub/x"), file("g/a")]),
        await createTar([
          file("d/f", "new"),
          file("d/new/n"),
          file(".wh.d", ""),
          file("g/.wh.a", ""),
          file(".wh.g", ""),
          { header: { name: "h", type: "directory", mode: 0o750 } },
          file(".wh.h", ""),
        ]),
        await createTar([file("top")]),
      ];
      const image = await writeLayout(join(tmp.path, "layout"), tars, { name: "test/wh:1" });
      using client = Client.open({ root: join(tmp.path, "root") });
      await importArchive(client, image.layout);
      await client.getImage(image.name).unpack(snapshotter, { syncFs: false });
      const report = await checkUnpacked(client, client.images.get(image.name), { snapshotter });
      assert.deepEqual(summary(report.differences), []);
      assert.ok(report.layers.every((l) => l.checked > 0));
    },
  );
}

Deno.test("checkUnpacked() refuses an image that is not unpacked", async () => {
  await using tmp = await makeTempDir();
  const sample = await buildSample(join(tmp.path, "layout"));
  const client = Client.open({ root: join(tmp.path, "root") });
  try {
    await importArchive(client, sample.layout);
    await assert.rejects(
      checkUnpacked(client, client.images.get(sample.name), { snapshotter: "native" }),
      (err: Error) => {
        assert.ok(err instanceof FailedPrecondition);
        assert.match(err.message, /is not unpacked in snapshotter "native"/);
        return true;
      },
    );
  } finally {
    client.close();
  }
});

Deno.test("snapshotDirsFromView() finds a committed snapshot's directory in a view's mounts", () => {
  assert.deepEqual(
    snapshotDirsFromView([{ type: "bind", source: "/s/snapshots/4", options: ["rbind", "ro"] }]),
    { dir: "/s/snapshots/4", lowers: [] },
  );
  assert.deepEqual(
    snapshotDirsFromView([{
      type: "overlay",
      source: "overlay",
      options: ["lowerdir=/s/snapshots/3/fs:/s/snapshots/2/fs:/s/snapshots/1/fs", "index=off"],
    }]),
    { dir: "/s/snapshots/3/fs", lowers: ["/s/snapshots/2/fs", "/s/snapshots/1/fs"] },
  );
  assert.throws(
    () =>
      snapshotDirsFromView([{
        type: "overlay",
        source: "overlay",
        options: ["workdir=/s/5/work", "upperdir=/s/5/fs", "lowerdir=/s/3/fs"],
      }]),
    FailedPrecondition,
  );
  assert.throws(() => snapshotDirsFromView([]), FailedPrecondition);
});

Deno.test("strata check exits 0 and says so when the image is intact", async () => {
  await using s = await unpacked("native", 50);
  const ran = await runCommand(s.client, checkCommand, ["--snapshotter", "native", s.name]);
  assert.equal(ran.code, 0, ran.err.join("\n"));
  assert.match(ran.out.join("\n"), /^ok: test\/check:1 in native: 3 layers, \d+ paths match$/);
  const json = await runCommand(s.client, checkCommand, [
    "--json",
    "--snapshotter",
    "native",
    s.name,
  ]);
  assert.equal(json.code, 0);
  const report = JSON.parse(json.out.join("\n"));
  assert.deepEqual(report.differences, []);
  assert.equal(report.layers.length, 3);
});

Deno.test("strata images check and images usage show completeness, unpacking and usage", async () => {
  await using s = await unpacked("native", 50);
  const check = await runCommand(s.client, imagesCheckCommand, ["--snapshotter", "native"]);
  assert.equal(check.code, 0, check.err.join("\n"));
  assert.match(check.out[0]!, /^REF +TYPE +DIGEST +STATUS +SIZE +UNPACKED$/);
  assert.match(check.out[1]!, /^test\/check:1 .* complete \(4\/4\) .*\/.* true$/);
  const quiet = await runCommand(s.client, imagesCheckCommand, ["-q", "--snapshotter", "native"]);
  assert.deepEqual(quiet.out, ["test/check:1"]);
  const usage = await runCommand(s.client, imagesUsageCommand, ["--snapshotter", "native", s.name]);
  assert.equal(usage.code, 0);
  assert.match(usage.out[0]!, /^KEY +SIZE +INODES$/);
  assert.deepEqual(usage.out.slice(1).map((l) => l.split(/ +/)[0]), [...s.chain].reverse());

  // Not unpacked in the other snapshotter's sense: a fresh image name without snapshots.
  const sn = await s.client.snapshotter("native");
  for (const c of [...s.chain].reverse()) await sn.remove(c);
  const after = await runCommand(s.client, imagesCheckCommand, ["--snapshotter", "native"]);
  assert.match(after.out[1]!, / false$/);
  await assert.rejects(
    runCommand(s.client, imagesUsageCommand, ["--snapshotter", "native", s.name]),
    FailedPrecondition,
  );
});

for (const snapshotter of SNAPSHOTTERS) {
  peerTest(
    `strata images mount and unmount --rm show an image at a directory (${snapshotter})`,
    { root: true },
    async () => {
      await using s = await unpacked(snapshotter, 20);
      const target = join(s.tmp.path, "mnt");
      const sn = await s.client.snapshotter(snapshotter);
      for (const rw of [false, true]) {
        const args = [...(rw ? ["--rw"] : []), "--snapshotter", snapshotter, s.name, target];
        const mounted = await runCommand(s.client, imagesMountCommand, args);
        try {
          assert.equal(mounted.code, 0, mounted.err.join("\n"));
          assert.deepEqual(mounted.out, [s.chain.at(-1), target]);
          assert.equal((await sn.stat(target)).kind, rw ? "active" : "view");
          // The merged tree: a file written through a symlinked directory by the top layer.
          assert.ok(Deno.statSync(join(target, "data/d01/through-symlink")).isFile);
          assert.equal(Deno.statSync(join(target, "etc/config")).mode! & 0o777, 0o640);
          if (rw) await Deno.writeTextFile(join(target, "new"), "x");
          else assert.throws(() => Deno.writeTextFileSync(join(target, "new"), "x"));
          // Deviation from ctr, which holds the snapshot with a lease that expires after 24
          // hours (a collection then removes a snapshot still mounted): ours is a GC root until
          // unmount --rm, so a collection leaves it alone.
          assert.ok((await sn.stat(target)).labels["containerd.io/gc.root"]);
          const gc = await collectGarbage(s.client);
          assert.deepEqual(gc.snapshots.filter((r) => r.name === target), []);
          assert.equal((await sn.stat(target)).kind, rw ? "active" : "view");
          assert.ok(Deno.statSync(join(target, "etc/config")).isFile);
        } finally {
          const un = await runCommand(s.client, imagesUnmountCommand, [
            "--rm",
            "--snapshotter",
            snapshotter,
            target,
          ]);
          assert.equal(un.code, 0, un.err.join("\n"));
          assert.deepEqual(un.out, [target]);
        }
        await assert.rejects(sn.stat(target));
        assert.deepEqual([...Deno.readDirSync(target)], [], "nothing is mounted any more");
      }
    },
  );
}
