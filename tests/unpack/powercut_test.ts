// Power cut right after an unpack returns, simulated as in spec/layer-safety.md 3.4: the Strata
// root lives on an ext4 file system (4 KiB blocks, commit=60 so the journal timer cannot fire)
// on a buffered loop device; the moment the unpack returns, the loop device's backing file is
// copied. The copy holds exactly the writes the file system had completed: what was only in the
// page cache (delayed allocation) is lost, as in a power cut. The copy is checked with e2fsck
// (journal replay), mounted on a second loop device (read-write: a check makes views), and
// checkUnpacked() runs on the root in it.
//
// - With sync-fs (syncfs(2) after each layer, before its commit) every committed snapshot is
//   complete in the copy: no difference.
// - Without it, the metadata database's fsync (SQLite synchronous=FULL) commits the ext4 journal,
//   which persists the new inodes with size 0 while their data is still delayed: the committed
//   snapshots hold zero-length files (containerd#5854), and the check reports them. On the
//   native snapshotter the copies of the parents' files (made without fsync: Strata relies on
//   syncfs) come back with their size but zeros as content, reported as digest differences.
//
// A copy is only used when the loop device completed no write and had none in flight while it
// was made (/sys/block/loopN/stat and inflight, read before and after); otherwise the sample is
// discarded and the whole procedure repeated.

import assert from "node:assert/strict";
import { join } from "node:path";
import { Client } from "../../client.ts";
import { importArchive } from "../../images/archive/import.ts";
import { type CheckReport, checkUnpacked } from "../../unpack/check.ts";
import { makeTempDir, peerTest, run, runOk } from "../_peers.ts";
import { fixedSizeLayers, writeLayout } from "./_build_image.ts";

const TOOLS = ["losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "cp"];
const ATTEMPTS = 3;
const FS_SIZE = 768 * 1024 * 1024;

/** The loop device's completed writes (field 5 of its stat) and requests in flight. */
function loopCounters(device: string): { writes: number; inflight: number } {
  const name = device.replace(/^\/dev\//, "");
  const stat = Deno.readTextFileSync(`/sys/block/${name}/stat`).trim().split(/\s+/);
  const inflight = Deno.readTextFileSync(`/sys/block/${name}/inflight`).trim().split(/\s+/);
  return { writes: Number(stat[4]), inflight: inflight.reduce((n, v) => n + Number(v), 0) };
}

/** Attaches `file` to a free loop device (buffered I/O) and calls `fn` with it; detaches after. */
async function withLoop<T>(file: string, fn: (device: string) => Promise<T>): Promise<T> {
  const device = (await runOk(["losetup", "--find", "--show", file])).stdout.trim();
  try {
    return await fn(device);
  } finally {
    await runOk(["losetup", "--detach", device]);
  }
}

/** Mounts `device` on `dir` and calls `fn`; unmounts after. */
async function withMount<T>(
  device: string,
  dir: string,
  options: string,
  fn: () => Promise<T>,
): Promise<T> {
  await Deno.mkdir(dir, { recursive: true });
  await runOk(["mount", "-t", "ext4", "-o", options, device, dir]);
  try {
    return await fn();
  } finally {
    await runOk(["umount", dir]);
  }
}

interface Sample {
  report: CheckReport;
  copyMs: number;
  fsck: number;
}

/**
 * Unpacks the image into a fresh ext4 on a loop device, copies the backing file as soon as the
 * unpack returns, and checks the image in the copy.
 *
 * @returns The check of the copy, or `undefined` when the copy was not clean (writes happened).
 */
async function powerCut(
  dir: string,
  layout: string,
  name: string,
  options: { snapshotter: string; syncFs: boolean },
): Promise<Sample | undefined> {
  await Deno.mkdir(dir, { recursive: true });
  const image = join(dir, "fs.img");
  const crash = join(dir, "crash.img");
  await Deno.writeFile(image, new Uint8Array(0));
  await Deno.truncate(image, FS_SIZE);
  await runOk(["mkfs.ext4", "-q", "-F", "-b", "4096", image]);
  let copyMs = 0;
  const valid = await withLoop(
    image,
    (device) =>
      withMount(device, join(dir, "live"), "commit=60", async () => {
        const client = Client.open({ root: join(dir, "live", "root") });
        try {
          await importArchive(client, layout);
          await client.getImage(name).unpack(options.snapshotter, { syncFs: options.syncFs });
          // The power cut: copy what the device has now, right away.
          const before = loopCounters(device);
          const started = performance.now();
          await runOk(["cp", "--sparse=always", image, crash]);
          copyMs = performance.now() - started;
          const after = loopCounters(device);
          const clean = before.writes === after.writes && before.inflight === 0 &&
            after.inflight === 0;
          if (!clean) {
            console.log(`  discarded sample: ${JSON.stringify({ before, after })}`);
          }
          return clean;
        } finally {
          client.close();
        }
      }),
  );
  await Deno.remove(image);
  if (!valid) {
    await Deno.remove(crash);
    return undefined;
  }
  // Journal replay and repair: 0 (clean) or 1 (errors corrected) are fine.
  const fsck = await run(["e2fsck", "-f", "-y", crash]);
  assert.ok(fsck.code === 0 || fsck.code === 1, `e2fsck exit ${fsck.code}: ${fsck.stdout}`);
  const report = await withLoop(
    crash,
    (device) =>
      withMount(device, join(dir, "copy"), "rw", async () => {
        const client = Client.open({ root: join(dir, "copy", "root") });
        try {
          return await checkUnpacked(client, client.images.get(name), {
            snapshotter: options.snapshotter,
          });
        } finally {
          client.close();
        }
      }),
  );
  await Deno.remove(crash);
  return { report, copyMs, fsck: fsck.code };
}

function describe(report: CheckReport): string {
  const counts: Record<string, number> = {};
  for (const d of report.differences) {
    const key = `${d.problem}${d.problem === "size" ? ` (found ${d.actual})` : ""}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return JSON.stringify(counts);
}

for (const snapshotter of ["native", "overlayfs"]) {
  for (const syncFs of [true, false]) {
    const name = syncFs
      ? `a power cut right after an unpack with sync-fs loses nothing: check passes (${snapshotter})`
      : `a power cut right after an unpack without sync-fs leaves zero-length files that check reports (${snapshotter})`;
    peerTest(name, { tools: TOOLS, root: true }, async () => {
      await using tmp = await makeTempDir();
      // 510 files of 64 KiB in three layers.
      const tars = await fixedSizeLayers({ seed: 5, layers: 3, files: 170, size: 65536 });
      const image = await writeLayout(join(tmp.path, "layout"), tars, { name: "test/powercut:1" });
      let sample: Sample | undefined;
      let attempt = 0;
      while (attempt < ATTEMPTS) {
        attempt++;
        sample = await powerCut(join(tmp.path, `attempt-${attempt}`), image.layout, image.name, {
          snapshotter,
          syncFs,
        });
        if (sample === undefined) continue;
        console.log(
          `  ${snapshotter}, sync-fs ${syncFs}, attempt ${attempt}: copy ${
            Math.round(sample.copyMs)
          } ms, e2fsck ${sample.fsck}, differences ${describe(sample.report)}`,
        );
        // Without sync-fs a loss is expected; a run without one (a global sync(2) by another
        // process flushes this file system too) is repeated.
        if (syncFs || sample.report.differences.length > 0) break;
      }
      assert.ok(sample !== undefined, `no clean copy in ${ATTEMPTS} attempts`);
      const { report } = sample;
      assert.equal(report.layers.length, 3, "every layer is committed in the copy");
      if (syncFs) {
        assert.deepEqual(report.differences, []);
      } else {
        assert.ok(report.differences.length > 0, "the copy lost data that check reports");
        const zeroLength = report.differences.filter((d) =>
          d.problem === "size" && d.actual === "0 bytes"
        );
        assert.ok(zeroLength.length > 0, `zero-length files: ${describe(report)}`);
        for (const d of zeroLength) assert.equal(d.expected, "65536 bytes");
      }
    });
  }
}
