// Layers applied while they download (`LayerFetcher.ingestFile`): the result is that of an unpack
// of the complete blobs; a layer read while it downloaded that does not check out is applied
// again from the blob; a failed download fails the unpack with its own error and leaves no
// active snapshot.

import assert from "node:assert/strict";
import { join } from "node:path";
import { Client } from "../../client.ts";
import { Unavailable } from "../../errors.ts";
import { importArchive } from "../../images/archive/import.ts";
import { imageLayers } from "../../images/manifest.ts";
import type { Descriptor } from "../../images/types.ts";
import { type LayerFetcher, unpackImage } from "../../unpack/unpack.ts";
import { makeTempDir, peerTest } from "../_peers.ts";
import { assertSameTree, strataTree } from "../_unpack_trees.ts";
import { growFile } from "../diff/_grow.ts";
import { manyFileLayers, writeLayout } from "./_build_image.ts";

const SN = "overlayfs";

/** What goes wrong in a {@linkcode downloadingFetcher}'s downloads. */
interface Plan {
  /** This blob's download writes other bytes than the blob's (its ready still resolves). */
  garbage?: string;
  /** This blob's download stops half-way and its ready rejects. */
  fail?: string;
  /**
   * This blob's download writes nothing until the unpack asks for its ingest file (or 30 s
   * pass), so it is still downloading when the unpack reaches it, whatever the machine's load.
   */
  holdUntilAsked?: string;
}

/**
 * A fetcher whose "downloads" write each layer blob (already in the content store) into a file
 * of its own, a piece every few milliseconds, and tell that file as the ingest. Records
 * `<index> downloaded` when a download ends, the blobs whose ingest file the unpack asked for,
 * and those of them asked for while a bigger download was still running.
 */
function downloadingFetcher(
  client: Client,
  dir: string,
  layers: Descriptor[],
  events: string[],
  plan: Plan = {},
): LayerFetcher & { asked: Set<string>; askedBeforeBigger: string[] } {
  const downloads = new Map<string, { opened: Promise<void>; done: Promise<void> }>();
  const asked = new Set<string>();
  const askedBeforeBigger: string[] = [];
  const running = new Set<Descriptor>();
  const held = Promise.withResolvers<void>();
  if (plan.holdUntilAsked !== undefined) {
    const timeout = setTimeout(held.resolve, 30_000);
    held.promise.then(() => clearTimeout(timeout));
  }
  const begin = (blob: Descriptor) => {
    let download = downloads.get(blob.digest);
    if (download !== undefined) return download;
    const index = layers.findIndex((l) => l.digest === blob.digest);
    const path = join(dir, blob.digest.slice("sha256:".length));
    running.add(blob);
    const growing = (async () => {
      const real = await client.content.readBlob(blob.digest);
      const data = plan.garbage === blob.digest ? real.map((b) => b ^ 0x5a) : real;
      return await growFile(path, data, {
        piece: Math.ceil(data.length / 16),
        delayMs: 20,
        ...(plan.fail === blob.digest ? { stopAt: data.length >> 1 } : {}),
        ...(plan.holdUntilAsked === blob.digest ? { after: held.promise } : {}),
      });
    })();
    const done = growing.then((g) => g.done).finally(() => running.delete(blob)).then(() => {
      if (plan.fail === blob.digest) throw new Unavailable("injected download failure");
      events.push(`${index} downloaded`);
    });
    done.catch(() => {});
    download = { opened: growing.then(() => {}), done };
    downloads.set(blob.digest, download);
    return download;
  };
  return {
    asked,
    askedBeforeBigger,
    start(blobs) {
      for (const blob of blobs) begin(blob);
    },
    ready: (blob) => begin(blob).done,
    async ingestFile(blob) {
      asked.add(blob.digest);
      if ([...running].some((d) => d.size > blob.size)) askedBeforeBigger.push(blob.digest);
      if (blob.digest === plan.holdUntilAsked) held.resolve();
      await begin(blob).opened;
      return join(dir, blob.digest.slice("sha256:".length));
    },
  };
}

interface Setup extends AsyncDisposable {
  dir: string;
  /** A root with the image imported and unpacked from its blobs: the reference. */
  reference: Client;
  /** A root with the image imported, not unpacked. */
  client: Client;
  layers: Descriptor[];
  image: Awaited<ReturnType<typeof importArchive>>["images"][number];
}

async function setup(): Promise<Setup> {
  const tmp = await makeTempDir({ prefix: "strata-streamed-" });
  const tars = await manyFileLayers({ seed: 3, filesPerLayer: 400, maxSize: 9000, dirs: 8 });
  const built = await writeLayout(join(tmp.path, "layout"), tars, {
    name: "example.com/strata/streamed:1",
  });
  const reference = Client.open({ root: join(tmp.path, "reference") });
  const client = Client.open({ root: join(tmp.path, "root") });
  const [refImage] = (await importArchive(reference, built.layout)).images;
  await unpackImage(reference, refImage!, { snapshotter: SN });
  const [image] = (await importArchive(client, built.layout)).images;
  const layers = (await imageLayers(client.content, image!.target)).map((l) => l.blob);
  await Deno.mkdir(join(tmp.path, "downloads"));
  return {
    dir: join(tmp.path, "downloads"),
    reference,
    client,
    layers,
    image: image!,
    async [Symbol.asyncDispose]() {
      reference.close();
      client.close();
      await tmp.stop();
    },
  };
}

async function assertSameAsReference(s: Setup, chainId: string): Promise<void> {
  assertSameTree(
    await strataTree(s.reference, SN, chainId),
    await strataTree(s.client, SN, chainId),
    "applied while downloading vs from the blobs",
    { minEntries: 100 },
  );
}

async function activeSnapshots(client: Client): Promise<number> {
  let active = 0;
  await (await client.snapshotter(SN)).walk((info) => {
    if (info.kind === "active") active++;
  });
  return active;
}

for (const parallel of [false, true]) {
  peerTest(
    `unpackImage() applies layers while they download (parallel: ${parallel})`,
    { root: true },
    async () => {
      await using s = await setup();
      const events: string[] = [];
      // Sequential: the bottom layer is read as it downloads; parallel: only the biggest layer
      // still downloading. That one's download is held until the unpack asks for it (so the
      // others' end sooner, as a smaller download does).
      const biggest = s.layers.reduce((a, b) => (b.size > a.size ? b : a));
      const streamed = parallel ? s.layers.indexOf(biggest) : 0;
      const fetcher = downloadingFetcher(s.client, s.dir, s.layers, events, {
        holdUntilAsked: s.layers[streamed]!.digest,
      });
      const result = await unpackImage(s.client, s.image, {
        snapshotter: SN,
        parallel,
        fetcher,
        onLayer: (e) => events.push(`${e.index} ${e.state}`),
      });
      await assertSameAsReference(s, result.chainId);
      assert.ok(
        events.indexOf(`${streamed} extracting`) < events.indexOf(`${streamed} downloaded`),
        `layer ${streamed} was extracting before its download ended: ${events.join(", ")}`,
      );
      if (parallel) {
        // The biggest layer, and any other only once no bigger download was running (a layer
        // whose turn comes after the biggest's download ended is the biggest still downloading).
        assert.ok(fetcher.asked.has(biggest.digest));
        assert.deepEqual(fetcher.askedBeforeBigger, []);
      }
    },
  );
}

peerTest(
  "unpackImage() applies a layer again from its blob when what it read while downloading was wrong",
  { root: true },
  async () => {
    await using s = await setup();
    const events: string[] = [];
    const fetcher = downloadingFetcher(s.client, s.dir, s.layers, events, {
      garbage: s.layers[0]!.digest,
    });
    const result = await unpackImage(s.client, s.image, {
      snapshotter: SN,
      parallel: false,
      fetcher,
    });
    assert.ok(fetcher.asked.has(s.layers[0]!.digest));
    await assertSameAsReference(s, result.chainId);
    assert.equal(await activeSnapshots(s.client), 0);
  },
);

peerTest(
  "unpackImage() fails with the download's error when a layer's download fails while it is applied",
  { root: true },
  async () => {
    await using s = await setup();
    const events: string[] = [];
    const fetcher = downloadingFetcher(s.client, s.dir, s.layers, events, {
      fail: s.layers[1]!.digest,
    });
    await assert.rejects(
      unpackImage(s.client, s.image, {
        snapshotter: SN,
        parallel: false,
        fetcher,
        onLayer: (e) => events.push(`${e.index} ${e.state}`),
      }),
      (err) => err instanceof Unavailable && err.message === "injected download failure",
    );
    assert.ok(events.includes("1 extracting"), events.join(", "));
    assert.equal(await activeSnapshots(s.client), 0);
    // The layer below stays committed.
    const committed: string[] = [];
    await (await s.client.snapshotter(SN)).walk((info) => {
      if (info.kind === "committed") committed.push(info.name);
    });
    assert.equal(committed.length, 1);
  },
);
