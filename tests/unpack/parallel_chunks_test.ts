// Blobs are read into one reused buffer and decompressed chunk by chunk: file data that spans
// chunk boundaries must come out whole, for gzip and for plain (uncompressed) tar layers, in a
// parallel unpack (worker threads) as in a sequential one.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { Client } from "../../client.ts";
import { createTar, type TarInput } from "../../diff/tar/mod.ts";
import { importArchive } from "../../images/archive/import.ts";
import { makeTempDir, peerTest } from "../_peers.ts";
import { assertSameTree, strataTree } from "../_unpack_trees.ts";
import { seededRandom, writeLayout } from "./_build_image.ts";

const T = { sec: 1700000000, nsec: 0 };
/** File sizes around tar block, 64 KiB and 1 MiB boundaries. */
const SIZES = [1, 511, 513, 65_537, (1 << 20) - 100, (1 << 20) + 100, 1_700_000, 3, 2_500_000];

/** A layer of incompressible files whose sizes straddle 1 MiB chunk boundaries. */
async function layerTar(seed: number, prefix: string): Promise<Uint8Array> {
  const random = seededRandom(seed);
  const entries: TarInput[] = [{
    header: { name: prefix, type: "directory", mode: 0o755, mtime: T },
  }];
  for (const [i, size] of SIZES.entries()) {
    const body = new Uint8Array(size);
    for (let k = 0; k < size; k++) body[k] = Math.floor(random() * 256);
    entries.push({
      header: { name: `${prefix}/f${i}`, type: "file", mode: 0o644, mtime: T },
      body,
    });
  }
  return await createTar(entries);
}

peerTest(
  "unpack of plain and gzip layers spanning read chunks gives whole files, parallel or not",
  { root: true },
  async () => {
    await using tmp = await makeTempDir({ prefix: "strata-chunks-" });
    const layers = [
      { tar: await layerTar(1, "a"), gzip: false },
      { tar: await layerTar(2, "b"), gzip: false },
      { tar: await layerTar(3, "c"), gzip: true },
      { tar: await layerTar(4, "d"), gzip: false },
    ];
    await writeLayout(join(tmp.path, "layout"), layers.map((l) => l.tar), {
      name: "example.com/chunks:1",
      uncompressed: layers.flatMap((l, i) => l.gzip ? [] : [i]),
    });
    const trees = [];
    for (const parallel of [true, false]) {
      using client = Client.open({ root: join(tmp.path, `root-${parallel}`) });
      await importArchive(client, join(tmp.path, "layout"));
      const result = await client.getImage("example.com/chunks:1").unpack("overlayfs", {
        parallel,
        syncFs: false,
      });
      trees.push(await strataTree(client, "overlayfs", result.chainId));
    }
    assertSameTree(trees[0]!, trees[1]!, "parallel vs sequential", { minEntries: 36 });
    // Against the tars themselves: hash each file's bytes from the tar input.
    for (const [i, seed] of [1, 2, 3, 4].entries()) {
      const random = seededRandom(seed);
      const sizes = [
        1,
        511,
        513,
        65_537,
        (1 << 20) - 100,
        (1 << 20) + 100,
        1_700_000,
        3,
        2_500_000,
      ];
      for (const [k, size] of sizes.entries()) {
        const body = new Uint8Array(size);
        for (let b = 0; b < size; b++) body[b] = Math.floor(random() * 256);
        const want = createHash("sha256").update(body).digest("hex");
        assert.equal(trees[0]!.get(`${"abcd"[i]}/f${k}`)?.sha256, want, `${"abcd"[i]}/f${k}`);
      }
    }
  },
);
