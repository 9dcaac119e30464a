import assert from "node:assert/strict";
import { AlreadyExists, InvalidArgument, NotFound } from "../../errors.ts";
import { ImageStore } from "../../images/store.ts";
import type { Descriptor } from "../../images/types.ts";
import { MetadataDb } from "../../metadata/db.ts";

const INDEX = "application/vnd.oci.image.index.v1+json";
const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const DA = "sha256:" + "a".repeat(64);
const DB = "sha256:" + "b".repeat(64);

function target(digest = DA, extra: Partial<Descriptor> = {}): Descriptor {
  return { mediaType: INDEX, digest, size: 1234, ...extra };
}

async function withStore(fn: (store: ImageStore, root: string) => void | Promise<void>) {
  const root = await Deno.makeTempDir({ prefix: "strata-images-" });
  const db = MetadataDb.open(root);
  try {
    await fn(new ImageStore(db), root);
  } finally {
    db.close();
    await Deno.remove(root, { recursive: true });
  }
}

/** Waits until the clock has moved on, so that a later write gets a later timestamp. */
async function tick(): Promise<void> {
  const start = Date.now();
  while (Date.now() - start < 2) await new Promise((resolve) => setTimeout(resolve, 1));
}

function invalid(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof InvalidArgument, `not InvalidArgument: ${err}`);
    assert.match(err.message, pattern);
    return true;
  });
}

Deno.test("ImageStore.create() stores a record and get() returns it", async () => {
  await withStore((store) => {
    const created = store.create({
      name: "docker.io/library/alpine:3.20",
      target: target(DA, {
        annotations: { "org.opencontainers.image.ref.name": "3.20", empty: "" },
        platform: { os: "linux", architecture: "amd64" },
        urls: ["https://example.com"],
      }),
      labels: { team: "infra", gone: "" },
    });
    assert.equal(created.name, "docker.io/library/alpine:3.20");
    assert.deepEqual(created.target, {
      mediaType: INDEX,
      digest: DA,
      size: 1234,
      annotations: { "org.opencontainers.image.ref.name": "3.20" },
    });
    assert.deepEqual(created.labels, { team: "infra" });
    assert.ok(created.createdAt instanceof Date);
    assert.equal(created.createdAt.getTime(), created.updatedAt.getTime());
    assert.deepEqual(store.get("docker.io/library/alpine:3.20"), created);
    const plain = store.create({ name: "x@sha256:1/y", target: target(DB) });
    assert.deepEqual(plain.target, { mediaType: INDEX, digest: DB, size: 1234 });
    assert.deepEqual(plain.labels, {});
  });
});

Deno.test("ImageStore.create() refuses an existing name with AlreadyExists", async () => {
  await withStore((store) => {
    store.create({ name: "a", target: target() });
    assert.throws(
      () => store.create({ name: "a", target: target(DB) }),
      (err) =>
        err instanceof AlreadyExists &&
        err.message === 'Cannot create image "a": it already exists',
    );
    assert.equal(store.get("a").target.digest, DA);
  });
});

Deno.test("ImageStore.create() validates name, labels and target", async () => {
  await withStore((store) => {
    invalid(() => store.create({ name: "", target: target() }), /the name must not be empty/);
    invalid(
      () => store.create({ name: "a", target: target("sha256:abc") }),
      /^Cannot create image "a": invalid target digest "sha256:abc"$/,
    );
    invalid(
      () => store.create({ name: "a", target: target(DA, { size: 0 }) }),
      /target size must be a positive integer: 0/,
    );
    invalid(
      () => store.create({ name: "a", target: target(DA, { size: -5 }) }),
      /target size must be a positive integer: -5/,
    );
    invalid(
      () => store.create({ name: "a", target: target(DA, { mediaType: "" }) }),
      /target media type must be set/,
    );
    invalid(
      () => store.create({ name: "a", target: undefined as unknown as Descriptor }),
      /the target is missing/,
    );
    // Key and value together may use 4096 bytes, counted in UTF-8.
    store.create({ name: "ok", target: target(), labels: { k: "v".repeat(4095) } });
    invalid(
      () => store.create({ name: "a", target: target(), labels: { k: "v".repeat(4096) } }),
      /label "k" is too long: key and value are 4097 bytes, the limit is 4096/,
    );
    invalid(
      () => store.create({ name: "a", target: target(), labels: { k: "é".repeat(2048) } }),
      /4097 bytes/,
    );
    assert.deepEqual(store.list().map((i) => i.name), ["ok"]);
  });
});

Deno.test("ImageStore.get() throws NotFound for a missing image", async () => {
  await withStore((store) => {
    assert.throws(
      () => store.get("nope"),
      (err) => err instanceof NotFound && err.message === 'Cannot find image "nope"',
    );
  });
});

Deno.test("ImageStore.list() sorts by name and applies filters", async () => {
  await withStore((store) => {
    store.create({ name: "docker.io/library/redis:7", target: target(DB), labels: { tier: "db" } });
    store.create({
      name: "docker.io/library/alpine:3.20",
      target: target(DA, { annotations: { "org.opencontainers.image.ref.name": "3.20" } }),
      labels: { tier: "base", "a.b": "dotted" },
    });
    store.create({
      name: "ghcr.io/x/tool:1",
      target: { mediaType: MANIFEST, digest: DA, size: 99 },
    });
    const names = (filters?: string[]) => store.list(filters).map((i) => i.name);
    assert.deepEqual(names(), [
      "docker.io/library/alpine:3.20",
      "docker.io/library/redis:7",
      "ghcr.io/x/tool:1",
    ]);
    assert.deepEqual(names(["name==docker.io/library/redis:7"]), ["docker.io/library/redis:7"]);
    assert.deepEqual(names([`target.digest==${DA}`]), [
      "docker.io/library/alpine:3.20",
      "ghcr.io/x/tool:1",
    ]);
    assert.deepEqual(names([`target.mediatype==${MANIFEST}`]), ["ghcr.io/x/tool:1"]);
    assert.deepEqual(names(["labels.tier"]), [
      "docker.io/library/alpine:3.20",
      "docker.io/library/redis:7",
    ]);
    assert.deepEqual(names(["labels.tier!=db"]), [
      "docker.io/library/alpine:3.20",
      "ghcr.io/x/tool:1",
    ]);
    assert.deepEqual(names(['labels."a.b"==dotted']), ["docker.io/library/alpine:3.20"]);
    assert.deepEqual(names(['annotations."org.opencontainers.image.ref.name"==3.20']), [
      "docker.io/library/alpine:3.20",
    ]);
    assert.deepEqual(names(["name~=^ghcr", "labels.tier==db"]), [
      "docker.io/library/redis:7",
      "ghcr.io/x/tool:1",
    ]);
    assert.deepEqual(names(["name~=^docker,labels.tier==db"]), ["docker.io/library/redis:7"]);
    assert.throws(() => store.list(["name=="]), InvalidArgument);
  });
});

Deno.test("ImageStore.update() without field paths replaces everything but createdAt", async () => {
  await withStore(async (store) => {
    const before = store.create({
      name: "a",
      target: target(DA, { annotations: { x: "1" } }),
      labels: { keep: "no" },
    });
    await tick();
    const after = store.update({ name: "a", target: target(DB), labels: { fresh: "yes" } });
    assert.deepEqual(after.target, target(DB));
    assert.deepEqual(after.labels, { fresh: "yes" });
    assert.equal(after.createdAt.getTime(), before.createdAt.getTime());
    assert.ok(after.updatedAt.getTime() > before.updatedAt.getTime());
    assert.deepEqual(store.get("a"), after);
    invalid(() => store.update({ name: "a" }), /^Cannot update image "a": the target is missing$/);
  });
});

Deno.test("ImageStore.update() with field paths changes only what they name", async () => {
  await withStore((store) => {
    store.create({
      name: "a",
      target: target(DA, { annotations: { keep: "1", drop: "2" } }),
      labels: { l1: "a", l2: "b", "x.y": "z" },
    });
    let r = store.update({ name: "a", labels: { l1: "A", l3: "C" } }, {
      fieldpaths: ["labels.l1", "labels.l2", "labels.x.y"],
    });
    assert.deepEqual(r.labels, { l1: "A" });
    assert.deepEqual(r.target.annotations, { keep: "1", drop: "2" });
    r = store.update({ name: "a", labels: { only: "this" } }, { fieldpaths: ["labels"] });
    assert.deepEqual(r.labels, { only: "this" });
    r = store.update({ name: "a", target: target(DB, { annotations: { drop: "", add: "3" } }) }, {
      fieldpaths: ["annotations.drop", "annotations.add"],
    });
    assert.equal(r.target.digest, DA);
    assert.deepEqual(r.target.annotations, { keep: "1", add: "3" });
    r = store.update({ name: "a", target: target(DB, { annotations: { n: "1" } }) }, {
      fieldpaths: ["annotations"],
    });
    assert.equal(r.target.digest, DA);
    assert.deepEqual(r.target.annotations, { n: "1" });
    r = store.update({ name: "a", target: { mediaType: MANIFEST, digest: DB, size: 7 } }, {
      fieldpaths: ["target"],
    });
    assert.deepEqual(r.target, { mediaType: MANIFEST, digest: DB, size: 7 });
    assert.deepEqual(r.labels, { only: "this" });
    assert.deepEqual(store.get("a"), r);
  });
});

Deno.test("ImageStore.update() rejects unknown paths, missing images and invalid results", async () => {
  await withStore((store) => {
    store.create({ name: "a", target: target() });
    invalid(
      () => store.update({ name: "a" }, { fieldpaths: ["name"] }),
      /^Cannot update image "a": unsupported field path "name"$/,
    );
    invalid(
      () => store.update({ name: "a" }, { fieldpaths: ["createdat"] }),
      /unsupported field path "createdat"/,
    );
    invalid(
      () => store.update({ name: "a" }, { fieldpaths: ["target"] }),
      /field path "target" needs a target/,
    );
    invalid(
      () =>
        store.update({ name: "a", target: target(DA, { size: 0 }) }, { fieldpaths: ["target"] }),
      /target size must be a positive integer/,
    );
    invalid(
      () =>
        store.update({ name: "a", labels: { k: "v".repeat(5000) } }, { fieldpaths: ["labels.k"] }),
      /label "k" is too long/,
    );
    invalid(() => store.update({ name: "", target: target() }), /the name must not be empty/);
    assert.throws(
      () => store.update({ name: "b", target: target() }),
      (err) => err instanceof NotFound && err.message === 'Cannot update image "b": not found',
    );
    assert.deepEqual(store.get("a").target, target());
  });
});

Deno.test("ImageStore.upsert() creates, then replaces while keeping createdAt", async () => {
  await withStore(async (store) => {
    const first = store.upsert({ name: "a", target: target(), labels: { v: "1" } });
    assert.deepEqual(first.labels, { v: "1" });
    await tick();
    const second = store.upsert({ name: "a", target: target(DB), labels: { w: "2" } });
    assert.equal(second.target.digest, DB);
    assert.deepEqual(second.labels, { w: "2" });
    assert.equal(second.createdAt.getTime(), first.createdAt.getTime());
    assert.ok(second.updatedAt.getTime() > first.updatedAt.getTime());
    invalid(() => store.upsert({ name: "a", target: target("x") }), /invalid target digest "x"/);
    assert.equal(store.get("a").target.digest, DB);
  });
});

Deno.test("ImageStore.delete() removes a record, optionally only for a given target", async () => {
  await withStore((store) => {
    store.create({ name: "a", target: target(DA) });
    assert.throws(
      () => store.delete("a", { target: DB }),
      (err) =>
        err instanceof NotFound &&
        err.message === `Cannot delete image "a": its target is "${DA}", not "${DB}"`,
    );
    assert.equal(store.get("a").target.digest, DA);
    store.delete("a", { target: DA });
    assert.throws(() => store.get("a"), NotFound);
    store.create({ name: "b", target: target(DA) });
    store.delete("b");
    assert.deepEqual(store.list(), []);
    assert.throws(
      () => store.delete("b"),
      (err) => err instanceof NotFound && err.message === 'Cannot delete image "b": not found',
    );
  });
});

Deno.test("ImageStore instances on the same root see each other's writes", async () => {
  await withStore((store, root) => {
    const other = MetadataDb.open(root);
    try {
      const peer = new ImageStore(other);
      store.create({ name: "a", target: target(), labels: { by: "first" } });
      assert.deepEqual(peer.get("a").labels, { by: "first" });
      peer.update({ name: "a", labels: { by: "second" } }, { fieldpaths: ["labels.by"] });
      assert.deepEqual(store.get("a").labels, { by: "second" });
      assert.throws(() => peer.create({ name: "a", target: target() }), AlreadyExists);
      peer.delete("a");
      assert.throws(() => store.get("a"), NotFound);
    } finally {
      other.close();
    }
  });
});
