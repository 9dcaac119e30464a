// An unpack with syncFs measures the usage each commit stores while the layer's sync runs (and
// passes it to the commit), and keeps one descriptor per file system for its syncs. These tests
// check that the stored usage is what a walk of the committed directories gives and that no
// descriptor is left open.

import assert from "node:assert/strict";
import { join } from "node:path";
import { Client } from "../../client.ts";
import { createTar, type TarInput } from "../../diff/tar/mod.ts";
import { importArchive } from "../../images/archive/import.ts";
import { diskUsage } from "../../snapshotters/_usage.ts";
import { unpackImage } from "../../unpack/unpack.ts";
import { makeTempDir, peerTest } from "../_peers.ts";
import { fixedSizeLayers, writeLayout } from "./_build_image.ts";

const KIB = 1024;

/** Descriptors of this process open on something under `dir`. */
function openUnder(dir: string): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      const target = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
      // The client keeps its database open; the rest is the unpack's.
      if (target.startsWith(`${dir}/`) && !target.includes("/metadata.db")) {
        found.push(`${entry.name} -> ${target}`);
      }
    } catch {
      // Closed meanwhile.
    }
  }
  return found;
}

/** Two layers of 4 files of 256 KiB, then one of small files. */
async function layers(): Promise<Uint8Array[]> {
  const big = await fixedSizeLayers({ seed: 7, layers: 2, files: 4, size: 256 * KIB });
  const small: TarInput[] = [];
  const base = { uid: 0, gid: 0, mtime: { sec: 1700000000, nsec: 0 }, mode: 0o644 };
  small.push({ header: { ...base, name: "small", type: "directory", mode: 0o755 } });
  for (let i = 0; i < 20; i++) {
    const body = new TextEncoder().encode(`small ${i}\n`);
    small.push({ header: { ...base, name: `small/s${i}`, type: "file", size: body.length }, body });
  }
  return [big[0]!, big[1]!, await createTar(small)];
}

const CASES = [
  { snapshotter: "native", parallel: false },
  { snapshotter: "overlayfs", parallel: false },
  // Parallel where there are several CPUs: layers applied without their parent, then rebased.
  { snapshotter: "overlayfs", parallel: true },
];

for (const { snapshotter, parallel } of CASES) {
  peerTest(
    `unpack with syncFs on ${snapshotter}${
      parallel ? " (parallel)" : ""
    }: the usage stored is the committed tree's, no descriptor left`,
    { root: true },
    async () => {
      await using tmp = await makeTempDir({ prefix: "strata-sync-usage-" });
      const client = Client.open({ root: join(tmp.path, "root") });
      try {
        const built = await writeLayout(join(tmp.path, "layout"), await layers(), {
          name: "example.com/strata/sync-usage:1",
        });
        const [record] = (await importArchive(client, built.layout)).images;
        assert.ok(record);
        const result = await unpackImage(client, record, {
          snapshotter,
          syncFs: true,
          parallel,
        });
        assert.deepEqual(openUnder(tmp.path), [], "the syncs' descriptors are closed");

        // The usage stored at each commit is what a walk of the committed directory gives.
        const sn = await client.snapshotter(snapshotter);
        const stored = [];
        for (const layer of result.layers) stored.push(await sn.usage(layer.chainId));
        const dirs = join(tmp.path, "root", "snapshots", snapshotter, "snapshots");
        const walked = [...Deno.readDirSync(dirs)].map((e) =>
          diskUsage(snapshotter === "native" ? join(dirs, e.name) : join(dirs, e.name, "fs"))
        );
        const key = (u: { size: number; inodes: number }) => `${u.inodes}:${u.size}`;
        assert.deepEqual(stored.map(key).sort(), walked.map(key).sort());
        assert.ok(stored.every((u) => u.inodes > 1), "measured, not empty");
      } finally {
        client.close();
      }
    },
  );
}
