import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  AlreadyExists,
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  Unavailable,
} from "../../errors.ts";
import { openStore, pattern, sha256 } from "./_helpers.ts";

const encoder = new TextEncoder();

function ingestPath(contentRoot: string, ref: string): string {
  return join(contentRoot, "ingest", createHash("sha256").update(ref).digest("hex"));
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

Deno.test("writer() ingests bytes and commit() stores a read-only blob and a record", async () => {
  await using f = await openStore();
  const data = pattern(300_000);
  const w = await f.store.writer({ ref: "layer-1" });
  assert.equal(w.ref, "layer-1");
  const dir = ingestPath(f.store.root, "layer-1");
  assert.equal(await Deno.readTextFile(join(dir, "ref")), "layer-1");
  assert.match(await Deno.readTextFile(join(dir, "lock")), new RegExp(`^${Deno.pid}\n`));
  await w.write(data.subarray(0, 100_000));
  await w.write(data.subarray(100_000));
  assert.equal(w.offset, data.length);
  assert.equal(w.digest(), sha256(data));
  assert.equal(w.status().offset, data.length);
  const info = await w.commit({ labels: { a: "1" } });
  assert.equal(info.digest, sha256(data));
  assert.equal(info.size, data.length);
  assert.deepEqual(info.labels, { a: "1" });

  const path = f.store.blobPath(info.digest);
  assert.equal(path, join(f.store.root, "blobs", "sha256", info.digest.slice("sha256:".length)));
  assert.deepEqual(await Deno.readFile(path), data);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o444);
  assert.equal(await exists(dir), false);
  await assert.rejects(f.store.status("layer-1"), NotFound);
  const stored = await f.store.info(info.digest);
  assert.equal(stored.size, data.length);
  assert.deepEqual(stored.labels, { a: "1" });
  assert.ok(stored.createdAt instanceof Date && !Number.isNaN(stored.createdAt.getTime()));
});

Deno.test("writer() resumes a closed ingest at its offset and the commit has the right digest", async () => {
  await using f = await openStore();
  const data = pattern(1_000_003);
  const half = 500_000;
  const w1 = await f.store.writer({ ref: "resume", expected: { size: data.length } });
  await w1.write(data.subarray(0, half));
  await w1.close();
  await w1.close();
  const status = await f.store.status("resume");
  assert.equal(status.offset, half);
  assert.equal(status.total, data.length);

  const w2 = await f.store.writer({ ref: "resume", expected: { size: data.length } });
  assert.equal(w2.offset, half);
  assert.equal(w2.status().total, data.length);
  assert.equal(w2.digest(), sha256(data.subarray(0, half)));
  await w2.write(data.subarray(half));
  const info = await w2.commit({ size: data.length, expected: sha256(data) });
  assert.equal(info.digest, sha256(data));
  assert.deepEqual(await f.store.readBlob(info.digest), data);
});

Deno.test("writer() resumes an ingest left by a SIGKILLed process, taking over its stale lock", async () => {
  await using f = await openStore();
  const total = 400_000;
  const written = 123_456;
  const data = pattern(total);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./_ingest_child.ts", import.meta.url).pathname,
      f.root,
      "killed",
      `${total}`,
      `${written}`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  assert.match(out, /ready/);

  // While the child lives, it holds the ref, across processes.
  await assert.rejects(
    f.store.writer({ ref: "killed" }),
    (err: unknown) =>
      err instanceof Unavailable &&
      err.message === `Cannot open ingest "killed": it is locked by process ${child.pid}`,
  );
  await assert.rejects(f.store.abort("killed"), Unavailable);

  child.kill("SIGKILL");
  const status = await child.status;
  assert.equal(status.signal, "SIGKILL");
  await reader.cancel();

  const dir = ingestPath(f.store.root, "killed");
  assert.match(await Deno.readTextFile(join(dir, "lock")), new RegExp(`^${child.pid}\n`));
  assert.equal(await exists(join(f.store.root, "blobs")), false);
  await assert.rejects(f.store.info(sha256(data)), NotFound);
  assert.equal((await f.store.status("killed")).offset, written);

  const w = await f.store.writer({
    ref: "killed",
    expected: { digest: sha256(data), size: total },
  });
  assert.match(await Deno.readTextFile(join(dir, "lock")), new RegExp(`^${Deno.pid}\n`));
  assert.equal(w.offset, written);
  await w.write(data.subarray(written));
  const info = await w.commit();
  assert.equal(info.digest, sha256(data));
  assert.deepEqual(await f.store.readBlob(info.digest), data);
});

// Deliberate deviation from containerd, which keeps the bad bytes in the ingest after a mismatch.
Deno.test("commit() with the wrong size fails with FailedPrecondition, discards the ingest, and a retry succeeds", async () => {
  await using f = await openStore();
  const data = encoder.encode("twelve bytes");
  const w = await f.store.writer({ ref: "size" });
  await w.write(data);
  await assert.rejects(
    w.commit({ size: 13 }),
    (err: unknown) =>
      err instanceof FailedPrecondition &&
      err.message === 'Cannot commit ingest "size": unexpected size 12, expected 13',
  );
  await assert.rejects(f.store.status("size"), NotFound);
  await assert.rejects(w.write(data), FailedPrecondition);

  const retry = await f.store.writer({ ref: "size" });
  assert.equal(retry.offset, 0);
  await retry.write(data);
  assert.equal((await retry.commit({ size: 12 })).size, 12);
});

// Deliberate deviation from containerd, which keeps the bad bytes in the ingest after a mismatch.
Deno.test("commit() with the wrong digest fails with FailedPrecondition, discards the ingest, and a retry succeeds", async () => {
  await using f = await openStore();
  const good = encoder.encode("good bytes");
  const bad = encoder.encode("bad bytes!");
  const w = await f.store.writer({ ref: "digest", expected: { digest: sha256(good) } });
  await w.write(bad);
  await assert.rejects(
    w.commit(),
    (err: unknown) =>
      err instanceof FailedPrecondition && err.message.includes("unexpected digest"),
  );
  await assert.rejects(f.store.status("digest"), NotFound);
  await assert.rejects(f.store.info(sha256(bad)), NotFound);
  await assert.rejects(f.store.info(sha256(good)), NotFound);

  const retry = await f.store.writer({ ref: "digest", expected: { digest: sha256(good) } });
  assert.equal(retry.offset, 0);
  await retry.write(good);
  assert.equal((await retry.commit({ expected: sha256(good) })).digest, sha256(good));
});

Deno.test("writer() and commit() report AlreadyExists for a stored digest", async () => {
  await using f = await openStore();
  const data = encoder.encode("exists");
  await f.store.writeBlob("first", data, {});
  await assert.rejects(
    f.store.writer({ ref: "second", expected: { digest: sha256(data) } }),
    AlreadyExists,
  );
  await assert.rejects(f.store.status("second"), NotFound);

  const w = await f.store.writer({ ref: "third" });
  await w.write(data);
  await assert.rejects(w.commit(), AlreadyExists);
  await assert.rejects(f.store.status("third"), NotFound);
  assert.equal((await f.store.usage()).count, 1);
});

Deno.test("writer() on a ref held by another writer fails with Unavailable until it is closed", async () => {
  await using f = await openStore();
  const w = await f.store.writer({ ref: "held" });
  await assert.rejects(
    f.store.writer({ ref: "held" }),
    (err: unknown) =>
      err instanceof Unavailable &&
      err.message === `Cannot open ingest "held": it is locked by process ${Deno.pid}`,
  );
  await assert.rejects(
    f.store.writeBlob("held", encoder.encode("x"), { lockTimeoutMs: 0 }),
    Unavailable,
  );
  await w.close();
  const again = await f.store.writer({ ref: "held" });
  await again.close();
});

Deno.test("writeBlob() waits for a locked ref to be released", async () => {
  await using f = await openStore();
  const data = encoder.encode("waited");
  const w = await f.store.writer({ ref: "wait" });
  await w.write(encoder.encode("something else"));
  const pending = f.store.writeBlob("wait", data, { expected: { digest: sha256(data) } });
  setTimeout(() => w.close(), 50);
  const info = await pending;
  assert.equal(info.digest, sha256(data));
  assert.deepEqual(await f.store.readBlob(info.digest), data);
});

Deno.test("write() past the expected size fails with FailedPrecondition and writes nothing", async () => {
  await using f = await openStore();
  const w = await f.store.writer({ ref: "bounded", expected: { size: 4 } });
  await w.write(encoder.encode("abc"));
  await assert.rejects(w.write(encoder.encode("de")), FailedPrecondition);
  assert.equal(w.offset, 3);
  await w.write(encoder.encode("d"));
  assert.equal((await w.commit()).digest, sha256(encoder.encode("abcd")));
});

Deno.test("close() keeps the ingest, and write() and commit() after it fail with FailedPrecondition", async () => {
  await using f = await openStore();
  const w = await f.store.writer({ ref: "closed" });
  await w.write(encoder.encode("abc"));
  await w.close();
  await w.close();
  await assert.rejects(w.write(encoder.encode("d")), FailedPrecondition);
  await assert.rejects(w.commit(), FailedPrecondition);
  assert.equal((await f.store.status("closed")).offset, 3);
});

Deno.test("truncate(0) restarts the ingest", async () => {
  await using f = await openStore();
  const w = await f.store.writer({ ref: "trunc" });
  await w.write(encoder.encode("discard me"));
  await w.truncate(0);
  assert.equal(w.offset, 0);
  await w.write(encoder.encode("keep"));
  const info = await w.commit();
  assert.equal(info.digest, sha256(encoder.encode("keep")));
  assert.deepEqual(await f.store.readBlob(info.digest), encoder.encode("keep"));
});

Deno.test("writer() rejects an empty ref and a different size or digest than the ingest started with", async () => {
  await using f = await openStore();
  await assert.rejects(f.store.writer({ ref: "" }), InvalidArgument);
  const w = await f.store.writer({
    ref: "fixed",
    expected: { size: 10, digest: sha256(encoder.encode("x")) },
  });
  await w.close();
  await assert.rejects(
    f.store.writer({ ref: "fixed", expected: { size: 11 } }),
    FailedPrecondition,
  );
  await assert.rejects(
    f.store.writer({ ref: "fixed", expected: { digest: sha256(encoder.encode("y")) } }),
    FailedPrecondition,
  );
  const same = await f.store.writer({ ref: "fixed", expected: { size: 10 } });
  assert.equal(same.status().expected, sha256(encoder.encode("x")));
  await same.close();
});

Deno.test("writer() records a verified blob file left without a record, then reports AlreadyExists", async () => {
  await using f = await openStore();
  const data = encoder.encode("orphan");
  const digest = sha256(data);
  const path = f.store.blobPath(digest);
  await Deno.mkdir(join(path, ".."), { recursive: true });
  await Deno.writeFile(path, data);
  await assert.rejects(f.store.info(digest), NotFound);
  await assert.rejects(f.store.writer({ ref: "orphan", expected: { digest } }), AlreadyExists);
  assert.equal((await f.store.info(digest)).size, data.length);
});

Deno.test("writer() removes a corrupt blob file left without a record and ingests again", async () => {
  await using f = await openStore();
  const data = encoder.encode("real bytes");
  const digest = sha256(data);
  const path = f.store.blobPath(digest);
  await Deno.mkdir(join(path, ".."), { recursive: true });
  await Deno.writeFile(path, encoder.encode("corrupt"));
  const w = await f.store.writer({ ref: "corrupt", expected: { digest } });
  assert.equal(await exists(path), false);
  await w.write(data);
  await w.commit();
  assert.deepEqual(await Deno.readFile(path), data);
});

Deno.test("commit() with invalid labels fails with InvalidArgument and leaves the writer open", async () => {
  await using f = await openStore();
  const w = await f.store.writer({ ref: "labels" });
  await w.write(encoder.encode("x"));
  await assert.rejects(w.commit({ labels: { k: "v".repeat(4096) } }), InvalidArgument);
  await assert.rejects(w.commit({ expected: "sha256:abc" }), InvalidArgument);
  const info = await w.commit({ labels: { k: "v".repeat(4095) } });
  assert.equal(info.labels.k?.length, 4095);
});

Deno.test("writer() hashes with the expected digest's algorithm (sha512)", async () => {
  await using f = await openStore();
  const data = encoder.encode("sha512 content");
  const digest = `sha512:${createHash("sha512").update(data).digest("hex")}`;
  const w = await f.store.writer({ ref: "512", expected: { digest } });
  await w.write(data);
  assert.equal(w.digest(), digest);
  const info = await w.commit();
  assert.equal(info.digest, digest);
  assert.equal(f.store.blobPath(digest), join(f.store.root, "blobs", "sha512", digest.slice(7)));
  assert.deepEqual(await f.store.readBlob(digest), data);
});

Deno.test("listIngests() lists and filters ingests and abort() removes them", async () => {
  await using f = await openStore();
  for (const ref of ["layer-a", "layer-b", "config-c"]) {
    const w = await f.store.writer({ ref });
    await w.write(encoder.encode(ref));
    await w.close();
  }
  assert.deepEqual((await f.store.listIngests()).map((s) => s.ref), [
    "config-c",
    "layer-a",
    "layer-b",
  ]);
  assert.deepEqual((await f.store.listIngests(["ref~=^layer-"])).map((s) => s.ref), [
    "layer-a",
    "layer-b",
  ]);
  assert.deepEqual((await f.store.listIngests(["ref==config-c"])).map((s) => s.offset), [8]);

  await f.store.abort("layer-a");
  await assert.rejects(f.store.status("layer-a"), NotFound);
  await assert.rejects(f.store.abort("layer-a"), NotFound);
  assert.deepEqual((await f.store.listIngests()).map((s) => s.ref), ["config-c", "layer-b"]);

  const held = await f.store.writer({ ref: "layer-b" });
  await assert.rejects(f.store.abort("layer-b"), Unavailable);
  await held.close();
  await f.store.abort("layer-b");
  assert.deepEqual((await f.store.listIngests()).map((s) => s.ref), ["config-c"]);
});

Deno.test("writeBlob() stores bytes and chunks, and an existing blob is success", async () => {
  await using f = await openStore();
  const data = pattern(3_000_000);
  async function* chunks(): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < data.length; i += 65536) yield data.subarray(i, i + 65536);
  }
  const info = await f.store.writeBlob("chunks", chunks(), {
    expected: { digest: sha256(data), size: data.length },
    labels: { source: "chunks" },
  });
  assert.equal(info.digest, sha256(data));
  assert.deepEqual(await f.store.readBlob(info.digest), data);

  const again = await f.store.writeBlob("bytes", data, {
    expected: { digest: sha256(data) },
    labels: { source: "bytes" },
  });
  assert.deepEqual(again.labels, { source: "chunks" });
  const unverified = await f.store.writeBlob("bytes-2", data, {});
  assert.equal(unverified.digest, sha256(data));
  await assert.rejects(f.store.status("bytes-2"), NotFound);

  await assert.rejects(
    f.store.writeBlob("bad", encoder.encode("nope"), {
      expected: { digest: sha256(encoder.encode("yes")) },
    }),
    FailedPrecondition,
  );
  await assert.rejects(f.store.status("bad"), NotFound);
});

Deno.test("writeBlob() resumes a partial ingest of the same expected digest", async () => {
  await using f = await openStore();
  const data = pattern(200_000);
  const expected = { digest: sha256(data), size: data.length };
  const w = await f.store.writer({ ref: "partial", expected });
  await w.write(data.subarray(0, 70_000));
  await w.close();
  async function* chunks(): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < data.length; i += 30_000) yield data.subarray(i, i + 30_000);
  }
  const info = await f.store.writeBlob("partial", chunks(), { expected });
  assert.equal(info.digest, sha256(data));
  assert.deepEqual(await f.store.readBlob(info.digest), data);
});
