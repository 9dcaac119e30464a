import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { main } from "../../cli.ts";
import { type CommandContext, parseCommandArgs } from "../../cli/_command.ts";
import { pruneCommand } from "../../cli/prune.ts";
import { Client } from "../../client.ts";
import { collectGarbage, type GcReport, INGEST_EXPIRY_MS } from "../../gc/mod.ts";
import { importArchive, type ImportResult } from "../../images/archive/import.ts";
import { chainIds, resolveManifest } from "../../images/manifest.ts";
import { expiryOf, LABEL_GC_EXPIRE, LABEL_GC_FLAT, LeaseManager } from "../../leases/mod.ts";
import { buildSample, type Sample } from "../../sample/build.ts";
import { makeTempDir } from "../_peers.ts";

const SNAPSHOTTERS = ["native", "overlayfs"] as const;

interface Fixture extends AsyncDisposable {
  root: string;
  client: Client;
  sample: Sample;
  imported: ImportResult;
  /** The image's own blobs: manifest, config, layers. */
  blobs: string[];
}

/** A root with the sample imported and, unless told otherwise, unpacked into both snapshotters. */
async function setup(options: { unpack?: boolean } = {}): Promise<Fixture> {
  const tmp = await makeTempDir({ prefix: "strata-gc-" });
  const sample = await buildSample(join(tmp.path, "layout"));
  const root = join(tmp.path, "root");
  const client = Client.open({ root });
  const imported = await importArchive(client, sample.layout);
  const { manifest } = await resolveManifest(client.content, imported.images[0]!.target);
  const blobs = [
    sample.manifest.digest,
    manifest.config.digest,
    ...manifest.layers.map((l) => l.digest),
  ];
  if (options.unpack ?? true) {
    for (const sn of SNAPSHOTTERS) await client.getImage(sample.name).unpack(sn, { syncFs: false });
  }
  return {
    root,
    client,
    sample,
    imported,
    blobs,
    async [Symbol.asyncDispose]() {
      client.close();
      await tmp.stop();
    },
  };
}

function sha256(bytes: Uint8Array): string {
  return "sha256:" + createHash("sha256").update(bytes).digest("hex");
}

async function putBlob(
  client: Client,
  text: string,
  labels: Record<string, string> = {},
): Promise<string> {
  const bytes = new TextEncoder().encode(text);
  const digest = sha256(bytes);
  await client.content.writeBlob(`test-${digest}`, bytes, {
    expected: { digest, size: bytes.length },
    labels,
  });
  return digest;
}

async function digests(client: Client): Promise<string[]> {
  return (await client.content.list()).map((i) => i.digest);
}

async function snapshotNames(client: Client, name: string): Promise<string[]> {
  return (await (await client.snapshotter(name)).list()).map((s) => s.name);
}

/** The snapshot directories a snapshotter has on disk. */
async function snapshotDirs(root: string, name: string): Promise<string[]> {
  try {
    return (await Array.fromAsync(Deno.readDir(join(root, "snapshots", name, "snapshots"))))
      .map((e) => e.name).sort();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
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

const sorted = (xs: Iterable<string>) => [...xs].sort();

async function strata(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { stdout: (l) => out.push(l), stderr: (l) => err.push(l) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** Runs `strata prune ARGS` on a root (the command object, as `cli.ts` runs it). */
async function prune(root: string, args: string[]): Promise<{ code: number; out: string }> {
  const out: string[] = [];
  const client = Client.open({ root });
  try {
    const parsed = parseCommandArgs("strata", pruneCommand, args, (l) => out.push(l));
    assert.ok(parsed);
    const ctx: CommandContext = {
      client: () => Promise.resolve(client),
      json: false,
      out: (l) => void out.push(l),
      err: (l) => void out.push(l),
      write: () => Promise.resolve(),
      config: {},
    };
    const code = (await pruneCommand.run(ctx, parsed.values, parsed.positionals)) ?? 0;
    return { code, out: out.join("\n") };
  } finally {
    client.close();
  }
}

Deno.test("collectGarbage() keeps an imported and unpacked image: its blobs and both chains", async () => {
  await using f = await setup();
  const chain = chainIds(f.sample.diffIds);
  const before = {
    native: await snapshotNames(f.client, "native"),
    overlayfs: await snapshotNames(f.client, "overlayfs"),
  };
  assert.deepEqual(sorted(before.native), sorted(chain));
  const report = await collectGarbage(f.client);
  // Only the layout's index goes: the image record points at the manifest, as with ctr import.
  assert.deepEqual(report.content.map((b) => b.digest), [f.imported.index.digest]);
  assert.deepEqual(report.snapshots, []);
  assert.deepEqual(report.images, []);
  assert.deepEqual(report.leases, [], "import and unpack deleted their leases");
  assert.deepEqual(sorted(await digests(f.client)), sorted(f.blobs));
  for (const sn of SNAPSHOTTERS) {
    assert.deepEqual(await snapshotNames(f.client, sn), before[sn]);
    assert.equal(await f.client.getImage(f.sample.name).isUnpacked(sn), true);
  }
  // A second run finds nothing.
  const again = await collectGarbage(f.client);
  assert.equal(again.content.length + again.snapshots.length + again.ingests.length, 0);
  assert.equal(again.bytes, 0);
});

Deno.test("strata prune --dry-run lists exactly what prune then removes after images rm", async () => {
  await using f = await setup();
  await collectGarbage(f.client);
  const chain = chainIds(f.sample.diffIds);
  const rm = await strata(["--root", f.root, "images", "rm", f.sample.name]);
  assert.equal(rm.code, 0, rm.err);

  const dry = await prune(f.root, ["--dry-run", "--json"]);
  assert.equal(dry.code, 0, dry.out);
  const planned = JSON.parse(dry.out) as GcReport;
  assert.equal(planned.dryRun, true);
  assert.deepEqual(sorted(planned.content.map((b) => b.digest)), sorted(f.blobs));
  for (const sn of SNAPSHOTTERS) {
    const names = planned.snapshots.filter((s) => s.snapshotter === sn).map((s) => s.name);
    assert.deepEqual(names, [...chain].reverse(), `${sn}: the whole chain, children first`);
  }
  const sizes = planned.content.reduce((n, b) => n + b.size, 0) +
    planned.snapshots.reduce((n, s) => n + s.size, 0);
  assert.equal(planned.bytes, sizes);
  // Nothing was removed by the dry run.
  assert.deepEqual(sorted(await digests(f.client)), sorted(f.blobs));
  for (const sn of SNAPSHOTTERS) {
    assert.deepEqual(sorted(await snapshotNames(f.client, sn)), sorted(chain));
  }
  const text = await prune(f.root, ["--dry-run"]);
  assert.match(text.out, /^TYPE +ID +SIZE$/m);
  for (const d of f.blobs) assert.match(text.out, new RegExp(`^content +${d} `, "m"));
  assert.match(text.out, new RegExp(`^snapshot +native/${chain[0]}`, "m"));
  assert.match(text.out, /^Would remove 4 blobs, 4 snapshots \(/m);

  const real = await prune(f.root, ["--json"]);
  assert.equal(real.code, 0, real.out);
  const done = JSON.parse(real.out) as GcReport;
  assert.equal(done.dryRun, false);
  assert.deepEqual(done.content, planned.content);
  assert.deepEqual(done.snapshots, planned.snapshots);
  assert.deepEqual(await digests(f.client), []);
  for (const sn of SNAPSHOTTERS) {
    assert.deepEqual(await snapshotNames(f.client, sn), []);
    assert.deepEqual(await snapshotDirs(f.root, sn), [], `${sn}: directories removed`);
  }
  for (const d of f.blobs) assert.equal(await exists(f.client.content.blobPath(d)), false);
  const nothing = await prune(f.root, []);
  assert.equal(nothing.out, "Nothing to remove");
});

Deno.test("collectGarbage() follows gc.root, gc.ref.* and gc.bref.* labels, expiry and flat leases", async () => {
  await using f = await setup({ unpack: false });
  const { client } = f;
  const sn = await client.snapshotter("native");
  const c2 = await putBlob(client, "c2: referenced by a snapshot label");
  await sn.prepare("a-active");
  await sn.commit("snap-a", "a-active", { labels: { "containerd.io/gc.ref.content": c2 } });
  const c1 = await putBlob(client, "c1", {
    "containerd.io/gc.ref.snapshot.native/extra": "snap-a",
  });
  const expiredImageBlob = await putBlob(client, "target of an expired image");
  const referencedExpiredBlob = await putBlob(client, "target of a referenced expired image");
  const futureBlob = await putBlob(client, "target of an image that expires later");
  const past = { [LABEL_GC_EXPIRE]: "2001-01-01T00:00:00Z" };
  const target = (digest: string) => ({ mediaType: "application/octet-stream", digest, size: 1 });
  client.images.create({ name: "expired", target: target(expiredImageBlob), labels: past });
  client.images.create({
    name: "expired-but-referenced",
    target: target(referencedExpiredBlob),
    labels: past,
  });
  client.images.create({
    name: "future",
    target: target(futureBlob),
    labels: { [LABEL_GC_EXPIRE]: "2999-01-01T00:00:00Z" },
  });
  const root = await putBlob(client, "root", {
    "containerd.io/gc.root": "true",
    "containerd.io/gc.ref.content.x": c1,
    "containerd.io/gc.ref.image": "expired-but-referenced",
  });
  const backRef = await putBlob(client, "kept while c1 is", {
    "containerd.io/gc.bref.content": c1,
  });
  const unreferenced = await putBlob(client, "nobody wants me");
  const backRefToGarbage = await putBlob(client, "follows garbage", {
    "containerd.io/gc.bref.content.l": unreferenced,
  });
  const flatChild = await putBlob(client, "referenced by a flat-leased blob");
  const flat = await putBlob(client, "flat", { "containerd.io/gc.ref.content/m": flatChild });
  const leases = new LeaseManager(client.db);
  const flatLease = leases.create({ labels: { [LABEL_GC_FLAT]: "true" } });
  leases.addResource(flatLease.id, { type: "content", id: flat });
  await sn.prepare("p-active");
  await sn.commit("snap-parent", "p-active");
  await sn.prepare("r-active", { parent: "snap-parent" });
  await sn.commit("snap-root", "r-active", { labels: { "containerd.io/gc.root": "yes" } });
  await sn.prepare("orphan-active", { parent: "snap-parent" });

  // A blob file without a record, as a crash inside a commit leaves it: young, so it may still
  // be a commit in progress, and it stays (it is removed once its ctime is an hour old).
  const orphan = sha256(new TextEncoder().encode("orphan"));
  await Deno.writeTextFile(client.content.blobPath(orphan), "orphan");

  const report = await collectGarbage(client);
  assert.equal(await exists(client.content.blobPath(orphan)), true);
  assert.deepEqual(
    sorted(report.content.map((b) => b.digest)),
    sorted([
      f.imported.index.digest,
      expiredImageBlob,
      unreferenced,
      backRefToGarbage,
      flatChild,
    ]),
  );
  assert.deepEqual(report.images, ["expired"]);
  assert.deepEqual(report.snapshots.map((s) => [s.name, s.kind]), [["orphan-active", "active"]]);
  const kept = await digests(client);
  for (
    const d of [root, c1, c2, backRef, flat, referencedExpiredBlob, futureBlob, ...f.blobs]
  ) assert.ok(kept.includes(d), `${d} kept`);
  assert.deepEqual(client.images.list().map((i) => i.name).sort(), [
    "expired-but-referenced",
    "future",
    f.sample.name,
  ]);
  assert.deepEqual(sorted(await snapshotNames(client, "native")), [
    "snap-a",
    "snap-parent",
    "snap-root",
  ]);
});

Deno.test("collectGarbage() keeps what a lease pins until the lease is deleted, children first", async () => {
  await using f = await setup({ unpack: false });
  const { client } = f;
  const sn = await client.snapshotter("native");
  const leases = new LeaseManager(client.db);
  const lease = leases.create({ expiration: 3_600_000 });
  const pinned = await putBlob(client, "pinned");
  leases.addResource(lease.id, { type: "content", id: pinned });
  let parent: string | undefined;
  for (const name of ["s1", "s2", "s3"]) {
    const [m] = await sn.prepare(`${name}-active`, parent ? { parent } : {});
    await Deno.writeTextFile(join(m!.source, name), name);
    await sn.commit(name, `${name}-active`);
    parent = name;
  }
  await sn.prepare("s4-active", { parent: "s3" });
  leases.addResource(lease.id, { type: "snapshots/native", id: "s2" });

  const first = await collectGarbage(client);
  assert.deepEqual(first.snapshots.map((s) => s.name), ["s4-active", "s3"]);
  assert.ok(!first.content.some((b) => b.digest === pinned));
  assert.deepEqual(await snapshotNames(client, "native"), ["s1", "s2"]);
  assert.ok((await digests(client)).includes(pinned));
  assert.deepEqual(first.leases, []);
  assert.equal((await snapshotDirs(f.root, "native")).length, 2, "directories of s3 and s4 gone");

  leases.delete(lease.id);
  const second = await collectGarbage(client);
  assert.deepEqual(second.snapshots.map((s) => s.name), ["s2", "s1"]);
  assert.ok(second.content.some((b) => b.digest === pinned));
  assert.deepEqual(await snapshotNames(client, "native"), []);
  assert.deepEqual(await snapshotDirs(f.root, "native"), []);
  assert.ok(!(await digests(client)).includes(pinned));
});

Deno.test("collectGarbage() ignores and removes an expired lease; a live one stays", async () => {
  await using f = await setup({ unpack: false });
  const { client } = f;
  const leases = new LeaseManager(client.db);
  const expired = leases.create({ id: "expired", expiration: -1000 });
  const live = leases.create({ id: "live", expiration: 3_600_000 });
  const a = await putBlob(client, "pinned by the expired lease");
  const b = await putBlob(client, "pinned by the live lease");
  leases.addResource(expired.id, { type: "content", id: a });
  leases.addResource(live.id, { type: "content", id: b });
  const sn = await client.snapshotter("overlayfs");
  await sn.prepare("extract-expired");
  leases.addResource(expired.id, { type: "snapshots/overlayfs", id: "extract-expired" });

  const report = await collectGarbage(client);
  assert.deepEqual(report.leases, [{ id: "expired", expiredAt: expiryOf(expired.labels)! }]);
  assert.ok(report.content.some((x) => x.digest === a));
  assert.ok(!report.content.some((x) => x.digest === b));
  assert.deepEqual(report.snapshots.map((s) => s.name), ["extract-expired"]);
  assert.deepEqual(leases.list().map((l) => l.id), ["live"]);
  assert.deepEqual(await snapshotDirs(f.root, "overlayfs"), []);
});

/** Starts `_crash_child.ts`, waits for its JSON line, kills it with SIGKILL. */
async function crashChild(
  root: string,
  expiration: string,
): Promise<{ lease?: string; ref: string; digest?: string; key?: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./_crash_child.ts", import.meta.url).pathname, root, expiration],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let text = "";
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  child.kill("SIGKILL");
  await child.status;
  await reader.cancel().catch(() => {});
  assert.ok(text.includes("\n"), "the child reported its work");
  return JSON.parse(text.split("\n")[0]!);
}

Deno.test("collectGarbage() removes a SIGKILLed process's leftovers once its lease expires", async () => {
  await using f = await setup({ unpack: false });
  const { client } = f;
  const longLived = await crashChild(f.root, "3600000");
  const shortLived = await crashChild(f.root, "1000");
  const leases = new LeaseManager(client.db);

  // Wait (without asserting on time) until the short lease is past its expiry.
  const expiry = expiryOf(leases.get(shortLived.lease!).labels)!.getTime();
  while (Date.now() <= expiry) await new Promise((r) => setTimeout(r, expiry + 20 - Date.now()));

  const report = await collectGarbage(client);
  assert.deepEqual(report.leases.map((l) => l.id), [shortLived.lease]);
  assert.deepEqual(report.ingests.map((i) => [i.ref, i.reason, i.size]), [
    [shortLived.ref, "lease-expired", 100_000],
  ]);
  assert.ok(report.content.some((b) => b.digest === shortLived.digest));
  assert.deepEqual(report.snapshots.map((s) => s.name), [shortLived.key]);
  // The killed process's objects are gone; the other one's lease still protects its objects.
  assert.deepEqual((await client.content.listIngests()).map((s) => s.ref), [longLived.ref]);
  const kept = await digests(client);
  assert.ok(kept.includes(longLived.digest!));
  assert.ok(!kept.includes(shortLived.digest!));
  assert.deepEqual(await snapshotNames(client, "native"), [longLived.key]);
  assert.equal((await snapshotDirs(f.root, "native")).length, 1);
  assert.deepEqual(leases.list().map((l) => l.id), [longLived.lease]);
});

Deno.test("collectGarbage() aborts an ingest that got no data for 24 hours, unless a writer holds it", async () => {
  await using f = await setup({ unpack: false });
  const { client } = f;
  const crashed = await crashChild(f.root, "none");
  const fresh = await collectGarbage(client);
  assert.deepEqual(fresh.ingests, [], "a young ingest is kept");

  // The state a crashed writer leaves once a day has passed: its `updatedat` file and data are old
  // (set on disk, since the collector uses the real clock).
  const aged = async (ref: string) => {
    const dir = join(
      client.content.root,
      "ingest",
      createHash("sha256").update(ref).digest("hex"),
    );
    const old = new Date(Date.now() - INGEST_EXPIRY_MS - 3_600_000);
    await Deno.writeTextFile(join(dir, "updatedat"), old.toISOString());
    await Deno.utime(join(dir, "data"), old, old);
  };
  await aged(crashed.ref);
  // A writer of this process that is still open, equally old: it is not stale while held.
  const writer = await client.content.writer({ ref: "held-open" });
  await writer.write(new Uint8Array(10));
  await writer.close();
  const held = await client.content.writer({ ref: "held-open" });
  await aged("held-open");

  const dry = await collectGarbage(client, { dryRun: true });
  assert.deepEqual(sorted(dry.ingests.map((i) => i.ref)), sorted([crashed.ref, "held-open"]));
  const report = await collectGarbage(client);
  assert.deepEqual(report.ingests.map((i) => [i.ref, i.reason, i.size]), [
    [crashed.ref, "stale", 100_000],
  ]);
  assert.equal(report.bytes, 100_000 + report.content.reduce((n, b) => n + b.size, 0));
  assert.deepEqual((await client.content.listIngests()).map((s) => s.ref), ["held-open"]);
  await held.close();
});

/** Runs `_loop_child.ts` while pruning the same root in a loop; returns the child's output. */
async function pruneWhile(
  client: Client,
  args: string[],
): Promise<{ code: number; out: string; err: string; prunes: number }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./_loop_child.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let finished = false;
  const output = child.output().finally(() => (finished = true));
  let prunes = 0;
  while (!finished) {
    await collectGarbage(client);
    prunes++;
  }
  const o = await output;
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr), prunes };
}

Deno.test("a prune running concurrently with unpacks never breaks them", async () => {
  await using f = await setup({ unpack: false });
  const iterations = 6;
  const ran = await pruneWhile(f.client, ["unpack", f.root, f.sample.name, `${iterations}`]);
  assert.equal(ran.code, 0, ran.err);
  assert.equal(ran.out.trim(), `done ${iterations}`);
  assert.ok(ran.prunes > 0);
  // The image still unpacks and prunes cleanly afterwards.
  for (const sn of SNAPSHOTTERS) await f.client.getImage(f.sample.name).unpack(sn);
  const report = await collectGarbage(f.client);
  assert.deepEqual(report.snapshots, []);
  assert.deepEqual(new LeaseManager(f.client.db).list(), [], "every unpack deleted its lease");
});

Deno.test("a prune running concurrently with imports never removes a blob they need", async () => {
  await using f = await setup({ unpack: false });
  f.client.images.delete(f.sample.name);
  const iterations = 8;
  const ran = await pruneWhile(f.client, ["import", f.root, f.sample.layout, `${iterations}`]);
  assert.equal(ran.code, 0, ran.err);
  assert.equal(ran.out.trim(), `done ${iterations}`);
  assert.deepEqual(new LeaseManager(f.client.db).list(), [], "every import deleted its lease");
});
