import assert from "node:assert/strict";
import { InvalidArgument, NotFound, Unavailable } from "../../errors.ts";
import type { ContentInfo } from "../../content/mod.ts";
import { openStore, pattern, sha256 } from "./_helpers.ts";

const encoder = new TextEncoder();

const MALFORMED = [
  "sha256:abc",
  "md5:d41d8cd98f00b204e9800998ecf8427e",
  `sha256:${"A".repeat(64)}`,
  "a".repeat(64),
  "",
];

Deno.test("info(), delete(), readBlob(), update(), stream() and writer() reject malformed digests with InvalidArgument", async () => {
  await using f = await openStore();
  for (const digest of MALFORMED) {
    await assert.rejects(f.store.info(digest), InvalidArgument, digest);
    await assert.rejects(f.store.delete(digest), InvalidArgument, digest);
    await assert.rejects(f.store.readBlob(digest), InvalidArgument, digest);
    await assert.rejects(f.store.readRange(digest, { offset: 0, length: 1 }), InvalidArgument);
    await assert.rejects(f.store.update(digest, {}), InvalidArgument, digest);
    assert.throws(() => f.store.stream(digest), InvalidArgument, digest);
    assert.throws(() => f.store.blobPath(digest), InvalidArgument, digest);
    await assert.rejects(
      f.store.writer({ ref: "r", expected: { digest } }),
      InvalidArgument,
      digest,
    );
  }
  assert.deepEqual(await f.store.listIngests(), []);
});

Deno.test("info(), readBlob(), delete() and update() report NotFound for a missing blob", async () => {
  await using f = await openStore();
  const digest = sha256(encoder.encode("missing"));
  await assert.rejects(f.store.info(digest), NotFound);
  await assert.rejects(f.store.readBlob(digest), NotFound);
  await assert.rejects(f.store.readRange(digest, { offset: 0, length: 1 }), NotFound);
  await assert.rejects(f.store.delete(digest), NotFound);
  await assert.rejects(f.store.update(digest, { a: "b" }), NotFound);
  assert.throws(() => f.store.stream(digest), NotFound);
  await assert.rejects(f.store.status("nothing"), NotFound);
});

Deno.test("update() replaces all labels or the ones named by fieldpaths", async () => {
  await using f = await openStore();
  const { digest, createdAt } = await f.store.writeBlob("x", encoder.encode("labels"), {
    labels: { a: "1", b: "2" },
  });
  let info = await f.store.update(digest, { c: "3" }, { fieldpaths: ["labels.c"] });
  assert.deepEqual(info.labels, { a: "1", b: "2", c: "3" });
  info = await f.store.update(digest, { a: "" }, { fieldpaths: ["labels.a"] });
  assert.deepEqual(info.labels, { b: "2", c: "3" });
  info = await f.store.update(digest, {}, { fieldpaths: ["labels.b"] });
  assert.deepEqual(info.labels, { c: "3" });
  info = await f.store.update(digest, { x: "1", y: "" }, { fieldpaths: ["labels"] });
  assert.deepEqual(info.labels, { x: "1" });
  info = await f.store.update(digest, { z: "9" });
  assert.deepEqual(info.labels, { z: "9" });
  assert.deepEqual((await f.store.info(digest)).labels, { z: "9" });
  assert.deepEqual((await f.store.info(digest)).createdAt, createdAt);
  assert.ok(info.updatedAt >= createdAt);

  await assert.rejects(f.store.update(digest, {}, { fieldpaths: ["size"] }), InvalidArgument);
  await assert.rejects(
    f.store.update(digest, { k: "v".repeat(4096) }, { fieldpaths: ["labels.k"] }),
    InvalidArgument,
  );
  await assert.rejects(
    f.store.update(digest, { ["k".repeat(4000)]: "v".repeat(97) }),
    InvalidArgument,
  );
  assert.deepEqual((await f.store.info(digest)).labels, { z: "9" });
  info = await f.store.update(digest, { k: "v".repeat(4095) }, { fieldpaths: ["labels.k"] });
  assert.equal(info.labels.k?.length, 4095);
});

Deno.test("list() and walk() select blobs with filters", async () => {
  await using f = await openStore();
  const a = await f.store.writeBlob("a", encoder.encode("a"), { labels: { team: "infra" } });
  const b = await f.store.writeBlob("b", encoder.encode("bb"), { labels: { team: "web" } });
  const c = await f.store.writeBlob("c", encoder.encode("ccc"), {
    labels: { "containerd.io/gc.root": "x" },
  });
  const digests = (infos: ContentInfo[]) => infos.map((i) => i.digest).sort();

  assert.deepEqual(digests(await f.store.list()), [a.digest, b.digest, c.digest].sort());
  assert.deepEqual(digests(await f.store.list(["labels.team"])), [a.digest, b.digest].sort());
  assert.deepEqual(digests(await f.store.list(["labels.team==infra"])), [a.digest]);
  assert.deepEqual(
    digests(await f.store.list(["labels.team!=infra"])),
    [b.digest, c.digest].sort(),
  );
  assert.deepEqual(digests(await f.store.list(["labels.team~=^w"])), [b.digest]);
  assert.deepEqual(
    digests(await f.store.list(["labels.team==infra", 'labels."containerd.io/gc.root"'])),
    [a.digest, c.digest].sort(),
  );
  assert.deepEqual(digests(await f.store.list([`digest==${b.digest}`])), [b.digest]);
  assert.deepEqual(digests(await f.store.list(["size==3"])), [c.digest]);
  assert.deepEqual(digests(await f.store.list(["labels.team==infra,size==2"])), []);
  await assert.rejects(f.store.list(["labels.team=="]), InvalidArgument);

  const seen: string[] = [];
  await f.store.walk(async (info) => {
    await Promise.resolve();
    seen.push(info.digest);
  }, ["labels.team"]);
  assert.deepEqual(seen.sort(), [a.digest, b.digest].sort());
});

Deno.test("delete() removes the record and the file", async () => {
  await using f = await openStore();
  const info = await f.store.writeBlob("d", encoder.encode("delete me"), {});
  const path = f.store.blobPath(info.digest);
  await f.store.delete(info.digest);
  await assert.rejects(f.store.info(info.digest), NotFound);
  await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
  await assert.rejects(f.store.delete(info.digest), NotFound);
  assert.deepEqual(await f.store.list(), []);
  const again = await f.store.writeBlob("d", encoder.encode("delete me"), {});
  assert.equal(again.digest, info.digest);
});

Deno.test("readRange() reads part of a blob, clamped at its end", async () => {
  await using f = await openStore();
  const data = pattern(2_500_000);
  const { digest } = await f.store.writeBlob("range", data, {});
  assert.deepEqual(
    await f.store.readRange(digest, { offset: 1_000_000, length: 1234 }),
    data.subarray(1_000_000, 1_001_234),
  );
  assert.deepEqual(
    await f.store.readRange(digest, { offset: data.length - 10, length: 100 }),
    data.subarray(data.length - 10),
  );
  assert.equal((await f.store.readRange(digest, { offset: data.length, length: 5 })).length, 0);
  await assert.rejects(
    f.store.readRange(digest, { offset: data.length + 1, length: 1 }),
    InvalidArgument,
  );
  await assert.rejects(f.store.readRange(digest, { offset: -1, length: 1 }), InvalidArgument);
});

Deno.test("stream() yields the blob in chunks from an offset", async () => {
  await using f = await openStore();
  const data = pattern(2_500_000);
  const { digest } = await f.store.writeBlob("stream", data, {});
  const whole = await Array.fromAsync(f.store.stream(digest));
  assert.deepEqual(whole.map((c) => c.length), [1 << 20, 1 << 20, data.length - (2 << 20)]);
  assert.deepEqual(concat(whole), data);

  const part = await Array.fromAsync(f.store.stream(digest, { offset: 100, chunkSize: 1_000_000 }));
  assert.deepEqual(part.map((c) => c.length), [1_000_000, 1_000_000, 499_900]);
  assert.deepEqual(concat(part), data.subarray(100));
  assert.deepEqual(await Array.fromAsync(f.store.stream(digest, { offset: data.length })), []);
  assert.throws(() => f.store.stream(digest, { chunkSize: 0 }), InvalidArgument);
});

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

Deno.test("usage() sums the sizes and counts the blobs", async () => {
  await using f = await openStore();
  assert.deepEqual(await f.store.usage(), { size: 0, count: 0 });
  await f.store.writeBlob("a", pattern(1000), {});
  await f.store.writeBlob("b", pattern(2345), {});
  await f.store.writeBlob("c", pattern(1000), {});
  assert.deepEqual(await f.store.usage(), { size: 3345, count: 2 });
});

Deno.test("two ContentStore instances on one root see each other's commits and locks", async () => {
  await using one = await openStore();
  await using two = await openStore(one.root);
  const data = encoder.encode("shared");
  const info = await one.store.writeBlob("shared", data, { labels: { k: "v" } });
  assert.deepEqual((await two.store.info(info.digest)).labels, { k: "v" });
  assert.deepEqual(await two.store.readBlob(info.digest), data);
  await two.store.update(info.digest, { k: "w" });
  assert.deepEqual((await one.store.info(info.digest)).labels, { k: "w" });

  const w = await one.store.writer({ ref: "busy" });
  await assert.rejects(two.store.writer({ ref: "busy" }), Unavailable);
  await w.write(data);
  await w.close();
  assert.equal((await two.store.status("busy")).offset, data.length);
  const resumed = await two.store.writer({ ref: "busy" });
  await resumed.write(encoder.encode("!"));
  const committed = await resumed.commit();
  assert.equal(committed.digest, sha256(encoder.encode("shared!")));
  assert.equal((await one.store.info(committed.digest)).size, 7);

  await two.store.delete(info.digest);
  await assert.rejects(one.store.info(info.digest), NotFound);
});
