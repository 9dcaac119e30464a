import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { ContentStore } from "../../content/mod.ts";
import { AlreadyExists, InvalidArgument, NotFound, NotImplemented } from "../../errors.ts";
import {
  DEFAULT_LEASE_EXPIRATION_MS,
  expiryOf,
  isExpired,
  LABEL_GC_EXPIRE,
  type Lease,
  leasedContentStore,
  LeaseManager,
  randomLeaseId,
  withLease,
} from "../../leases/mod.ts";
import { MetadataDb } from "../../metadata/db.ts";
import { Client } from "../../client.ts";
import { importArchive } from "../../images/archive/import.ts";
import { chainIds } from "../../images/manifest.ts";
import { buildSample } from "../../sample/build.ts";
import { makeTempDir } from "../_peers.ts";

const DIGEST = "sha256:" + "a".repeat(64);

function sha256(bytes: Uint8Array): string {
  return "sha256:" + createHash("sha256").update(bytes).digest("hex");
}

async function openDb(): Promise<{ db: MetadataDb; root: string } & AsyncDisposable> {
  const tmp = await makeTempDir();
  const db = MetadataDb.open(tmp.path);
  return {
    db,
    root: tmp.path,
    async [Symbol.asyncDispose]() {
      db.close();
      await tmp.stop();
    },
  };
}

Deno.test("LeaseManager.create() stores id, labels and an RFC 3339 expiry label", async () => {
  await using t = await openDb();
  const leases = new LeaseManager(t.db);
  const before = Date.now();
  const lease = leases.create({ id: "my-lease", labels: { team: "infra" }, expiration: 60_000 });
  assert.equal(lease.id, "my-lease");
  assert.equal(lease.labels.team, "infra");
  const expire = lease.labels[LABEL_GC_EXPIRE]!;
  assert.match(expire, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  const at = new Date(expire).getTime();
  assert.ok(at >= before + 60_000 && at <= Date.now() + 60_000, `expiry ${expire}`);
  assert.deepEqual(leases.get("my-lease"), lease);
  assert.equal(isExpired(lease.labels), false);

  const plain = leases.create({ id: "plain" });
  assert.deepEqual(plain.labels, {}, "no expiration, no label");
  assert.deepEqual(leases.list().map((l) => l.id), ["my-lease", "plain"]);
  assert.deepEqual(leases.list(["labels.team==infra"]).map((l) => l.id), ["my-lease"]);
  assert.deepEqual(leases.list(["id==plain"]).map((l) => l.id), ["plain"]);

  assert.throws(() => leases.create({ id: "my-lease" }), AlreadyExists);
  assert.throws(() => leases.create({ id: "" }), InvalidArgument);
  assert.throws(() => leases.create({ id: "-bad" }), InvalidArgument);
  assert.throws(() => leases.create({ id: "has space" }), InvalidArgument);
  assert.throws(() => leases.create({ id: "x".repeat(77) }), InvalidArgument);
  assert.throws(() => leases.create({ expiration: Number.NaN }), InvalidArgument);
  assert.throws(() => leases.get("nope"), NotFound);
});

Deno.test("LeaseManager.create() without an id picks a random containerd-style id", async () => {
  await using t = await openDb();
  const leases = new LeaseManager(t.db);
  const a = leases.create();
  const b = leases.create();
  assert.match(a.id, /^\d+-[A-Za-z0-9_-]{4}$/);
  assert.notEqual(a.id, b.id);
  assert.match(randomLeaseId(), /^\d+-[A-Za-z0-9_-]{4}$/);
});

Deno.test("LeaseManager resources: add, list, delete, validation and cascade on delete", async () => {
  await using t = await openDb();
  const leases = new LeaseManager(t.db);
  const { id } = leases.create({ id: "l1" });
  leases.addResource(id, { type: "content", id: DIGEST });
  leases.addResource(id, { type: "content", id: DIGEST }); // idempotent
  leases.addResource(id, { type: "ingests", id: "pull-1" });
  leases.addResource(id, { type: "snapshots/native", id: "extract-1 sha256:x" });
  leases.addResource(id, { type: "images", id: "docker.io/library/alpine:latest" });
  assert.deepEqual(leases.listResources(id), [
    { type: "content", id: DIGEST },
    { type: "images", id: "docker.io/library/alpine:latest" },
    { type: "ingests", id: "pull-1" },
    { type: "snapshots/native", id: "extract-1 sha256:x" },
  ]);
  leases.deleteResource(id, { type: "ingests", id: "pull-1" });
  leases.deleteResource(id, { type: "ingests", id: "never-added" }); // ignored
  assert.equal(leases.listResources(id).length, 3);

  assert.throws(() => leases.addResource(id, { type: "content", id: "not-a-digest" }), (e) => {
    assert.ok(e instanceof InvalidArgument);
    assert.match(
      e.message,
      /^Cannot add a resource to lease "l1": content resource "not-a-digest"/,
    );
    return true;
  });
  assert.throws(() => leases.addResource(id, { type: "containers", id: "c1" }), NotImplemented);
  assert.throws(() => leases.addResource(id, { type: "snapshots/", id: "k" }), InvalidArgument);
  assert.throws(() => leases.addResource(id, { type: "ingests", id: "" }), InvalidArgument);
  assert.throws(() => leases.addResource("missing", { type: "ingests", id: "x" }), NotFound);
  assert.throws(() => leases.deleteResource("missing", { type: "ingests", id: "x" }), NotFound);
  assert.throws(() => leases.listResources("missing"), NotFound);

  // addResources() is all or nothing.
  assert.throws(
    () => leases.addResources(id, [{ type: "ingests", id: "ok" }, { type: "bogus", id: "x" }]),
    NotImplemented,
  );
  assert.ok(!leases.listResources(id).some((r) => r.id === "ok"));

  leases.delete(id);
  assert.throws(() => leases.delete(id), NotFound);
  assert.deepEqual(t.db.all("SELECT * FROM lease_resources"), [], "resources went with it");
});

Deno.test("expiryOf() and isExpired() read containerd.io/gc.expire and ignore bad values", () => {
  const past = { [LABEL_GC_EXPIRE]: "2001-02-03T04:05:06Z" };
  assert.equal(expiryOf(past)?.toISOString(), "2001-02-03T04:05:06.000Z");
  assert.equal(isExpired(past), true);
  assert.equal(isExpired({ [LABEL_GC_EXPIRE]: "2999-01-01T00:00:00+02:00" }), false);
  assert.equal(isExpired(past, new Date("2000-01-01T00:00:00Z")), false);
  for (const bad of ["yesterday", "2001-02-03", "2001-02-03T04:05:06", ""]) {
    assert.equal(expiryOf({ [LABEL_GC_EXPIRE]: bad }), undefined, bad);
    assert.equal(isExpired({ [LABEL_GC_EXPIRE]: bad }), false, bad);
  }
  assert.equal(isExpired({}), false);
});

Deno.test("withLease() runs the work under a 24h lease and deletes it, also on failure", async () => {
  await using t = await openDb();
  const leases = new LeaseManager(t.db);
  let seen: Lease | undefined;
  const value = await withLease(leases, (lease) => {
    seen = lease;
    assert.deepEqual(leases.list().map((l) => l.id), [lease.id], "the lease exists meanwhile");
    return Promise.resolve(42);
  });
  assert.equal(value, 42);
  assert.match(seen!.id, /^\d+-[A-Za-z0-9_-]{4}$/);
  const expiry = expiryOf(seen!.labels)!.getTime() - seen!.createdAt.getTime();
  assert.ok(Math.abs(expiry - DEFAULT_LEASE_EXPIRATION_MS) < 60_000, `expiry in ${expiry} ms`);
  assert.deepEqual(leases.list(), [], "deleted afterwards");

  await assert.rejects(
    withLease(leases, () => Promise.reject(new Error("boom")), { expiration: 1000 }),
    /boom/,
  );
  assert.deepEqual(leases.list(), [], "deleted after a failure too");

  // A lease that garbage collection removed meanwhile is not an error.
  await withLease(leases, (lease) => {
    leases.delete(lease.id);
    return Promise.resolve();
  });
});

Deno.test("leasedContentStore() pins blobs and writers' ingests before they are written or looked at", async () => {
  await using t = await openDb();
  const leases = new LeaseManager(t.db);
  const content = new ContentStore(join(t.root, "content"), t.db);
  const { id } = leases.create({ id: "import" });
  const leased = leasedContentStore(content, leases, id);
  const pinned = () => leases.listResources(id);

  const a = new TextEncoder().encode("blob a");
  await leased.writeBlob("ref-a", a, { expected: { digest: sha256(a), size: a.length } });
  // writeBlob's ingest lives only during the call: the blob is pinned, not the ingest.
  assert.deepEqual(pinned(), [{ type: "content", id: sha256(a) }]);

  // A writer with no expected digest pins the digest it commits, before committing.
  const b = new TextEncoder().encode("blob b");
  const w = await leased.writer({ ref: "ref-b" });
  await w.write(b);
  assert.ok(
    pinned().some((r) => r.type === "ingests" && r.id === "ref-b"),
    "writer pins its ingest",
  );
  assert.ok(!pinned().some((r) => r.id === sha256(b)));
  const info = await w.commit();
  assert.equal(info.digest, sha256(b));
  assert.ok(pinned().some((r) => r.type === "content" && r.id === sha256(b)));

  // Looking a blob up pins it even when it does not exist (yet).
  await assert.rejects(leased.info(DIGEST), NotFound);
  assert.ok(pinned().some((r) => r.type === "content" && r.id === DIGEST));
  // Everything else goes straight to the store.
  assert.equal(leased.root, content.root);
  assert.deepEqual(await leased.readBlob(sha256(a)), a);
  assert.ok(leased instanceof ContentStore);
});

Deno.test("Image.unpack() works under a lease pinning its blobs, chain and extract snapshots", async () => {
  await using tmp = await makeTempDir();
  const sample = await buildSample(join(tmp.path, "layout"));
  const client = Client.open({ root: join(tmp.path, "root") });
  try {
    await importArchive(client, sample.layout);
    const leases = new LeaseManager(client.db);
    assert.deepEqual(leases.list(), [], "the import deleted its lease");
    const seen: { lease: Lease; resources: { type: string; id: string }[] }[] = [];
    await client.getImage(sample.name).unpack("native", {
      syncFs: false,
      onLayer(e) {
        if (e.state !== "extracted") return;
        const [lease, ...more] = leases.list();
        assert.ok(lease);
        assert.deepEqual(more, []);
        seen.push({ lease, resources: leases.listResources(lease.id) });
      },
    });
    assert.equal(seen.length, 2);
    const { lease, resources } = seen[1]!;
    assert.equal(seen[0]!.lease.id, lease.id, "one lease for the whole unpack");
    assert.ok(expiryOf(lease.labels), "the lease expires");
    const ids = (type: string) => resources.filter((r) => r.type === type).map((r) => r.id);
    const chain = chainIds(sample.diffIds);
    for (const c of chain) assert.ok(ids("snapshots/native").includes(c), `chain ${c} pinned`);
    const extract = ids("snapshots/native").filter((k) => k.startsWith("extract-"));
    assert.equal(extract.length, 2, "each layer's active snapshot was pinned before prepare");
    assert.ok(extract.some((k) => k.endsWith(` ${chain[1]}`)));
    assert.ok(ids("content").includes(sample.manifest.digest));
    assert.equal(ids("content").length, 4, "manifest, config and both layers");
    assert.deepEqual(leases.list(), [], "deleted at the end");
  } finally {
    client.close();
  }
});
