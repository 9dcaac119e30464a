// applyLayer() given a file: URL decompresses a big compressed layer on a worker thread. The
// result must be what the in-thread path gives, and errors must come out the same way.

import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { applyLayer } from "../../diff/apply.ts";
import { InvalidArgument, NotFound } from "../../errors.ts";
import { makeTempDir } from "../_peers.ts";
import { diffTrees, snapshotTree } from "../_tree.ts";
import { chunks, gzip, layer, sha256, zstd } from "./_helpers.ts";
import { growFile } from "./_grow.ts";

/** Bytes that barely compress, so that a few MiB of tar make a layer above the 4 MiB threshold. */
function noise(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0;
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Big files across 1 MiB chunk borders, many small ones, links and xattrs. */
async function bigLayer(): Promise<Uint8Array> {
  const entries: Parameters<typeof layer>[0] = [
    { header: { name: "big", type: "directory", mode: 0o750 } },
  ];
  for (let i = 0; i < 5; i++) {
    entries.push({
      header: {
        name: `big/f${i}`,
        type: "file",
        mode: 0o640,
        uid: 10 + i,
        mtime: { sec: 1_600_000_000 + i, nsec: 0 },
        xattrs: { "user.n": new Uint8Array([i]) },
      },
      body: noise((1 << 20) + 4099 * i, i + 1),
    });
  }
  entries.push({
    header: { name: "small", type: "directory", mtime: { sec: 1_500_000_000, nsec: 0 } },
  });
  for (let i = 0; i < 300; i++) {
    entries.push({ header: { name: `small/s${i}`, type: "file" }, body: `small ${i}\n` });
  }
  entries.push({ header: { name: "small/link", type: "hardlink", linkname: "big/f1" } });
  entries.push({ header: { name: "small/sym", type: "symlink", linkname: "../big/f2" } });
  return await layer(entries);
}

/**
 * Runs a worker-thread check of `_worker_threads_child.ts` in a process of its own (test files run
 * in parallel in this one, and their workers would be counted too) and returns what it printed.
 */
async function inChild<T>(args: string[]): Promise<T> {
  const child = new URL("./_worker_threads_child.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--no-lock", child, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout)) as T;
}

async function writeTemp(dir: string, name: string, data: Uint8Array): Promise<URL> {
  const path = join(dir, name);
  await Deno.writeFile(path, data);
  return pathToFileURL(path);
}

Deno.test("applyLayer() of a big compressed file off the main thread gives the tree and digests of the in-thread path", async () => {
  await using tmp = await makeTempDir();
  const tar = await bigLayer();
  for (const [name, packed] of [["gzip", gzip(tar)], ["zstd", zstd(tar)]] as const) {
    assert.ok(packed.length > 4 << 20, `${name} layer is above the off-thread threshold`);
    const url = await writeTemp(tmp.path, `layer.${name}`, packed);
    const off = join(tmp.path, `${name}-off`);
    const inThread = join(tmp.path, `${name}-in`);
    const streamed = join(tmp.path, `${name}-stream`);
    for (const dir of [off, inThread, streamed]) await Deno.mkdir(dir);
    const a = await applyLayer(url, off);
    const b = await applyLayer(url, inThread, { offThread: false });
    const c = await applyLayer(chunks(packed, 100_000), streamed);
    for (const r of [a, b, c]) {
      assert.equal(r.diffId, sha256(tar), name);
      assert.equal(r.size, tar.length, name);
      assert.equal(r.compressedDigest, sha256(packed), name);
      assert.equal(r.compressedSize, packed.length, name);
      assert.equal(r.entries, 5 + 2 + 300 + 2, name);
    }
    const treeOff = await snapshotTree(off);
    // The roots are not in the layer (their mtimes are the apply's own).
    const same = { ignorePaths: ["."] };
    assert.deepEqual(diffTrees(treeOff, await snapshotTree(inThread), same), [], name);
    assert.deepEqual(diffTrees(treeOff, await snapshotTree(streamed), same), [], name);
    assert.equal(treeOff.get("big/f3")?.size, (1 << 20) + 4099 * 3);
  }
});

Deno.test("applyLayer() with follow applies a layer file while it is written, on and off the main thread", async () => {
  await using tmp = await makeTempDir();
  const tar = await bigLayer();
  const packed = gzip(tar);
  const reference = join(tmp.path, "reference");
  await Deno.mkdir(reference);
  await applyLayer(await writeTemp(tmp.path, "whole.gz", packed), reference);
  const same = { ignorePaths: ["."] };
  for (const offThread of [true, false]) {
    const path = join(tmp.path, `growing-${offThread}.gz`);
    // Started on an empty file: without following it the apply would read nothing.
    const grow = await growFile(path, packed, { piece: 256 << 10, delayMs: 3 });
    const root = join(tmp.path, `applied-${offThread}`);
    await Deno.mkdir(root);
    const result = await applyLayer(pathToFileURL(path), root, {
      follow: grow.follow,
      offThread,
      expectedDigest: sha256(packed),
      expectedDiffId: sha256(tar),
    });
    await grow.done;
    assert.equal(result.compressedSize, packed.length);
    assert.deepEqual(
      diffTrees(await snapshotTree(reference), await snapshotTree(root), same),
      [],
      `offThread ${offThread}`,
    );
  }
});

Deno.test("applyLayer() with follow fails when the writer stops half-way, on and off the main thread", async () => {
  await using tmp = await makeTempDir();
  const packed = gzip(await bigLayer());
  for (const offThread of [true, false]) {
    const path = join(tmp.path, `stopped-${offThread}.gz`);
    const grow = await growFile(path, packed, {
      piece: 256 << 10,
      delayMs: 2,
      stopAt: packed.length >> 1,
    });
    const root = join(tmp.path, `applied-${offThread}`);
    await Deno.mkdir(root);
    await assert.rejects(
      applyLayer(pathToFileURL(path), root, { follow: grow.follow, offThread }),
      /writer stopped after/,
    );
    await grow.done;
  }
});

Deno.test("applyLayer() off the main thread checks the expected digest and diffID", async () => {
  await using tmp = await makeTempDir();
  const tar = await bigLayer();
  const packed = gzip(tar);
  const url = await writeTemp(tmp.path, "layer.gz", packed);
  const wrong = `sha256:${"0".repeat(64)}`;
  await Deno.mkdir(join(tmp.path, "a"));
  await assert.rejects(applyLayer(url, join(tmp.path, "a"), { expectedDigest: wrong }), /digest/);
  await Deno.mkdir(join(tmp.path, "b"));
  await assert.rejects(applyLayer(url, join(tmp.path, "b"), { expectedDiffId: wrong }), /diffID/);
  await Deno.mkdir(join(tmp.path, "c"));
  const ok = await applyLayer(url, join(tmp.path, "c"), {
    expectedDigest: sha256(packed),
    expectedDiffId: sha256(tar),
  });
  assert.equal(ok.diffId, sha256(tar));
});

Deno.test("applyLayer() off the main thread fails like the in-thread path on corrupt and truncated files", async () => {
  await using tmp = await makeTempDir();
  const packed = gzip(await bigLayer());
  const corrupt = packed.slice();
  for (let i = 3 << 20; i < (3 << 20) + 64; i++) corrupt[i] = corrupt[i]! ^ 0xff;
  const truncated = packed.subarray(0, packed.length - 100_000);
  for (const [name, data] of [["corrupt", corrupt], ["truncated", truncated]] as const) {
    const url = await writeTemp(tmp.path, `${name}.gz`, data);
    const errors: unknown[] = [];
    for (const offThread of [true, false]) {
      const dir = join(tmp.path, `${name}-${offThread}`);
      await Deno.mkdir(dir);
      errors.push(await applyLayer(url, dir, { offThread }).then(() => null, (err) => err));
    }
    for (const err of errors) {
      assert.ok(err instanceof InvalidArgument, `${name}: ${err}`);
    }
    assert.equal((errors[0] as Error).message, (errors[1] as Error).message, name);
  }
});

Deno.test("applyLayer() off the main thread stops the worker when an entry fails half-way", async () => {
  await using tmp = await makeTempDir();
  const tar = await layer([
    { header: { name: "f", type: "file" }, body: noise(6 << 20, 9) },
    { header: { name: "f/below-a-file", type: "file" }, body: "x" },
    { header: { name: "g", type: "file" }, body: noise(2 << 20, 10) },
  ]);
  const url = await writeTemp(tmp.path, "layer.gz", gzip(tar));
  const dir = join(tmp.path, "root");
  await Deno.mkdir(dir);
  const { error, seen, ended } = await inChild<{ error?: string; seen: string[]; ended: boolean }>(
    ["error", url.href, dir],
  );
  assert.equal(error, "InvalidArgument");
  assert.ok(seen.length > 0, "the layer was inflated on a worker thread");
  // The worker's thread ends (a worker left running would wait for its buffers forever).
  assert.ok(ended, "the worker thread ended");
});

Deno.test("applyLayer() from a file: URL refuses missing files and other URL schemes", async () => {
  await using tmp = await makeTempDir();
  await assert.rejects(
    applyLayer(pathToFileURL(join(tmp.path, "missing.tar.gz")), tmp.path),
    (err: unknown) => err instanceof NotFound && /missing\.tar\.gz/.test(String(err)),
  );
  await assert.rejects(
    applyLayer(new URL("https://example.com/layer.tar.gz"), tmp.path),
    (err: unknown) => err instanceof InvalidArgument && /only file: URLs/.test(String(err)),
  );
  // A small or plain file is read on this thread: same results.
  const tar = await layer([{ header: { name: "a", type: "file" }, body: "a" }]);
  for (const data of [tar, gzip(tar)]) {
    const dir = await Deno.makeTempDir({ dir: tmp.path });
    const r = await applyLayer(await writeTemp(tmp.path, "small", data), dir);
    assert.equal(r.diffId, sha256(tar));
    assert.equal(r.compressedDigest, sha256(data));
    assert.equal(await Deno.readTextFile(join(dir, "a")), "a");
  }
});

Deno.test("keepInflateWorkers() has consecutive layers decompressed by one worker, ended when released", async () => {
  await using tmp = await makeTempDir();
  const url = await writeTemp(tmp.path, "layer.gz", gzip(await bigLayer()));
  const roots = [0, 1, 2].map((i) => join(tmp.path, `root${i}`));
  for (const root of roots) await Deno.mkdir(root);
  const { seen, diffIds, ended } = await inChild<{
    seen: string[];
    diffIds: string[];
    ended: boolean;
  }>(["reuse", url.href, ...roots]);
  assert.equal(seen.length, 1, `one worker thread for the three layers, saw ${seen}`);
  assert.deepEqual(diffIds, [diffIds[0], diffIds[0], diffIds[0]]);
  assert.ok(ended, "the idle worker ends once released");
  const first = await snapshotTree(roots[0]!);
  for (const root of roots.slice(1)) {
    // The roots are not in the layer (their mtimes are the apply's own).
    assert.deepEqual(diffTrees(first, await snapshotTree(root), { ignorePaths: ["."] }), [], root);
  }
});
