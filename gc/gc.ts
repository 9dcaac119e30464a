import { join } from "node:path";
import type { ContentStore, IngestStatus } from "../content/mod.ts";
import { isNotFound, Unavailable } from "../errors.ts";
import { isValidDigest } from "../images/digest.ts";
import { expiryOf, isExpired, LABEL_GC_FLAT } from "../leases/leases.ts";
import type { MetadataDb, Row } from "../metadata/db.ts";
import { snapshotterNames } from "../snapshotters/registry.ts";
import { SnapshotStorage } from "../snapshotters/storage.ts";
import type { Kind, Snapshotter } from "../snapshotters/types.ts";

/** Content and snapshot label: the object is a GC root. */
export const LABEL_GC_ROOT = "containerd.io/gc.root";
/** Label prefix of a reference to a blob (`.<name>` or `/<name>` may follow). */
export const LABEL_GC_REF_CONTENT = "containerd.io/gc.ref.content";
/** Label prefix of a reference to a snapshot: `containerd.io/gc.ref.snapshot.<snapshotter>`. */
export const LABEL_GC_REF_SNAPSHOT_PREFIX = "containerd.io/gc.ref.snapshot.";
/** Label prefix of a reference to an image by name. */
export const LABEL_GC_REF_IMAGE = "containerd.io/gc.ref.image";
/** An ingest nobody wrote to for this long, and that no live lease holds, is stale: 24 hours. */
export const INGEST_EXPIRY_MS: number = 24 * 60 * 60 * 1000;
/** A blob file without a record (a crash inside a commit) is removed once it is this old: 1 hour. */
export const ORPHAN_BLOB_GRACE_MS: number = 60 * 60 * 1000;

/** What {@linkcode collectGarbage} needs: a client's root, database, content and snapshotters. */
export interface GcTarget {
  /** The root directory (snapshotters live in `<root>/snapshots/<name>`). */
  root: string;
  /** The root's metadata database. */
  db: MetadataDb;
  /** The content store. */
  content: ContentStore;
  /** Opens a snapshotter by name. */
  snapshotter(name?: string): Promise<Snapshotter>;
}

/** Options for {@linkcode collectGarbage}. */
export interface GcOptions {
  /** Only report what would be removed. */
  dryRun?: boolean;
}

/** A blob that was (or would be) removed. */
export interface GcBlob {
  /** Its digest. */
  digest: string;
  /** Its size in bytes. */
  size: number;
  /** `true` for a blob file that had no record (left by a crash inside a commit). */
  orphan?: boolean;
}

/** A snapshot that was (or would be) removed. */
export interface GcSnapshot {
  /** The snapshotter. */
  snapshotter: string;
  /** The key or name. */
  name: string;
  /** Its kind. */
  kind: Kind;
  /** Its stored size in bytes (measured at commit; 0 for active snapshots and views). */
  size: number;
}

/** An ingest that was (or would be) aborted. */
export interface GcIngest {
  /** The ingest's ref. */
  ref: string;
  /** Bytes written to it. */
  size: number;
  /** When it last received data. */
  updatedAt: Date;
  /** Why it is stale: no write for 24 hours, or the lease holding it expired. */
  reason: "stale" | "lease-expired";
}

/** A lease that was (or would be) removed. */
export interface GcLease {
  /** The lease's id. */
  id: string;
  /** When it expired. */
  expiredAt: Date;
}

/** What {@linkcode collectGarbage} removed, or would remove in a dry run. */
export interface GcReport {
  /** Whether this was a dry run (nothing removed). */
  dryRun: boolean;
  /** Expired leases. */
  leases: GcLease[];
  /** Expired images that nothing references. */
  images: string[];
  /** Unreferenced blobs, by digest. */
  content: GcBlob[];
  /** Unreferenced snapshots, children before parents. */
  snapshots: GcSnapshot[];
  /** Stale ingests, by ref. */
  ingests: GcIngest[];
  /** Bytes freed: blobs, ingests and the stored size of committed snapshots. */
  bytes: number;
  /** Problems that did not stop the collection (a snapshotter's cleanup that failed, ...). */
  warnings: string[];
}

interface Labelled {
  labels: Record<string, string>;
}

interface SnapshotRow extends Labelled {
  snapshotter: string;
  name: string;
  kind: Kind;
  parent: string | undefined;
  size: number;
}

interface LeaseRow extends Labelled {
  id: string;
  expired: boolean;
  resources: { type: string; id: string }[];
}

function parseLabels(row: Row): Record<string, string> {
  try {
    const parsed: unknown = JSON.parse(String(row.labels ?? "{}"));
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
      return parsed as Record<string, string>;
    }
  } catch {
    // A corrupt labels column reads as no labels.
  }
  return {};
}

const contentNode = (digest: string) => `c ${digest}`;
const imageNode = (name: string) => `i ${name}`;
const ingestNode = (ref: string) => `g ${ref}`;
const snapshotNode = (snapshotter: string, name: string) => `s ${snapshotter}/${name}`;

function hasPrefix(key: string, prefix: string): boolean {
  if (!key.startsWith(prefix)) return false;
  const next = key[prefix.length];
  return next === undefined || next === "." || next === "/";
}

/**
 * The nodes that GC labels point at: `containerd.io/gc.<kind>.content[.x|/x]` (a digest),
 * `containerd.io/gc.<kind>.snapshot.<snapshotter>[/x]` (a key in that snapshotter) and
 * `containerd.io/gc.<kind>.image[.x|/x]` (an image name), where kind is `ref` or `bref`.
 */
function labelTargets(labels: Record<string, string>, kind: "ref" | "bref"): string[] {
  const base = `containerd.io/gc.${kind}.`;
  const out: string[] = [];
  for (const [key, value] of Object.entries(labels)) {
    if (!key.startsWith(base) || value === "") continue;
    if (hasPrefix(key, `${base}content`)) {
      if (isValidDigest(value)) out.push(contentNode(value));
    } else if (key.startsWith(`${base}snapshot.`)) {
      const snapshotter = key.slice(`${base}snapshot.`.length).split("/")[0]!;
      if (snapshotter !== "") out.push(snapshotNode(snapshotter, value));
    } else if (hasPrefix(key, `${base}image`)) {
      out.push(imageNode(value));
    }
  }
  return out;
}

/** Everything the collector looks at, read in one transaction. */
interface State {
  leases: LeaseRow[];
  images: Map<string, Labelled & { target: string }>;
  content: Map<string, Labelled & { size: number }>;
  snapshots: Map<string, SnapshotRow>;
}

function readState(db: MetadataDb, now: Date): State {
  const resources = new Map<string, { type: string; id: string }[]>();
  for (const row of db.all("SELECT lease_id, type, id FROM lease_resources ORDER BY type, id")) {
    const list = resources.get(String(row.lease_id)) ?? [];
    list.push({ type: String(row.type), id: String(row.id) });
    resources.set(String(row.lease_id), list);
  }
  const leases = db.all("SELECT id, labels FROM leases ORDER BY id").map((row) => {
    const labels = parseLabels(row);
    const id = String(row.id);
    return { id, labels, expired: isExpired(labels, now), resources: resources.get(id) ?? [] };
  });
  const images = new Map<string, Labelled & { target: string }>();
  for (const row of db.all("SELECT name, target_digest, labels FROM images")) {
    images.set(String(row.name), { target: String(row.target_digest), labels: parseLabels(row) });
  }
  const content = new Map<string, Labelled & { size: number }>();
  for (const row of db.all("SELECT digest, size, labels FROM content")) {
    content.set(String(row.digest), { size: Number(row.size), labels: parseLabels(row) });
  }
  const snapshots = new Map<string, SnapshotRow>();
  for (
    const row of db.all("SELECT snapshotter, name, kind, parent, labels, size FROM snapshots")
  ) {
    const s: SnapshotRow = {
      snapshotter: String(row.snapshotter),
      name: String(row.name),
      kind: String(row.kind) as Kind,
      parent: row.parent === null || row.parent === undefined ? undefined : String(row.parent),
      labels: parseLabels(row),
      size: Number(row.size ?? 0),
    };
    snapshots.set(snapshotNode(s.snapshotter, s.name), s);
  }
  return { leases, images, content, snapshots };
}

/** The node a lease resource pins, if its type is one GC knows. */
function resourceNode(resource: { type: string; id: string }): string | undefined {
  if (resource.type === "content") return contentNode(resource.id);
  if (resource.type === "ingests") return ingestNode(resource.id);
  if (resource.type === "images") return imageNode(resource.id);
  if (resource.type.startsWith("snapshots/")) {
    return snapshotNode(resource.type.slice("snapshots/".length), resource.id);
  }
  return undefined;
}

interface Marking {
  marked: Set<string>;
  staleIngests: GcIngest[];
}

function mark(state: State, ingests: IngestStatus[], now: Date): Marking {
  // Back references: the labelled object lives as long as the object its label names.
  const backRefs = new Map<string, string[]>();
  const addBackRefs = (node: string, labels: Record<string, string>) => {
    for (const target of labelTargets(labels, "bref")) {
      const list = backRefs.get(target) ?? [];
      list.push(node);
      backRefs.set(target, list);
    }
  };
  for (const [digest, c] of state.content) addBackRefs(contentNode(digest), c.labels);
  for (const [node, s] of state.snapshots) addBackRefs(node, s.labels);
  for (const [name, image] of state.images) addBackRefs(imageNode(name), image.labels);

  const ingestByRef = new Map(ingests.map((status) => [status.ref, status]));
  const refs = (node: string, follow: boolean): string[] => {
    const kind = node[0];
    const id = node.slice(2);
    if (kind === "i") {
      const image = state.images.get(id);
      if (image === undefined) return [];
      const target = contentNode(image.target);
      return follow ? [target, ...labelTargets(image.labels, "ref")] : [target];
    }
    if (kind === "c") {
      const c = state.content.get(id);
      return c === undefined || !follow ? [] : labelTargets(c.labels, "ref");
    }
    if (kind === "s") {
      const s = state.snapshots.get(node);
      if (s === undefined) return [];
      // A parent is always kept: a snapshot cannot exist without it.
      const parent = s.parent === undefined ? [] : [snapshotNode(s.snapshotter, s.parent)];
      return follow ? [...parent, ...labelTargets(s.labels, "ref")] : parent;
    }
    if (kind === "g") {
      const expected = ingestByRef.get(id)?.expected;
      return expected === undefined ? [] : [contentNode(expected)];
    }
    return [];
  };

  const marked = new Set<string>();
  const followed = new Set<string>();
  const queue: [string, boolean][] = [];
  const root = (node: string, follow = true) => queue.push([node, follow]);

  // Roots: unexpired leases and what they pin ...
  const leasedIngests = new Map<string, boolean>(); // ref -> held by a live lease
  for (const lease of state.leases) {
    for (const resource of lease.resources) {
      if (resource.type === "ingests") {
        leasedIngests.set(resource.id, (leasedIngests.get(resource.id) ?? false) || !lease.expired);
      }
      if (lease.expired) continue;
      const node = resourceNode(resource);
      if (node !== undefined) root(node, lease.labels[LABEL_GC_FLAT] === undefined);
    }
  }
  // ... images that have not expired ...
  for (const [name, image] of state.images) {
    if (!isExpired(image.labels, now)) root(imageNode(name));
  }
  // ... blobs and snapshots labelled as roots ...
  for (const [digest, c] of state.content) {
    if (c.labels[LABEL_GC_ROOT] !== undefined) root(contentNode(digest));
  }
  for (const [node, s] of state.snapshots) {
    if (s.labels[LABEL_GC_ROOT] !== undefined) root(node);
  }
  // ... and ingests that are not stale.
  const staleIngests: GcIngest[] = [];
  for (const status of ingests) {
    const live = leasedIngests.get(status.ref);
    let reason: GcIngest["reason"] | undefined;
    if (live === false) reason = "lease-expired";
    else if (live === undefined && now.getTime() - status.updatedAt.getTime() > INGEST_EXPIRY_MS) {
      reason = "stale";
    }
    if (reason === undefined) {
      root(ingestNode(status.ref));
    } else {
      staleIngests.push({
        ref: status.ref,
        size: status.offset,
        updatedAt: status.updatedAt,
        reason,
      });
    }
  }

  for (let item = queue.pop(); item !== undefined; item = queue.pop()) {
    const [node, follow] = item;
    marked.add(node);
    if (follow) {
      if (followed.has(node)) continue;
      followed.add(node);
      for (const next of backRefs.get(node) ?? []) queue.push([next, true]);
    }
    for (const next of refs(node, follow)) {
      if (follow ? !followed.has(next) : !marked.has(next)) queue.push([next, follow]);
    }
  }
  return { marked, staleIngests: staleIngests.filter((i) => !marked.has(ingestNode(i.ref))) };
}

/** Unmarked snapshots, deepest first, so children are removed before their parents. */
function snapshotsToRemove(state: State, marked: Set<string>): GcSnapshot[] {
  const depth = new Map<string, number>();
  const depthOf = (node: string): number => {
    const known = depth.get(node);
    if (known !== undefined) return known;
    let d = 0;
    const seen = new Set<string>();
    for (let s = state.snapshots.get(node); s?.parent !== undefined && !seen.has(s.name);) {
      seen.add(s.name);
      d++;
      s = state.snapshots.get(snapshotNode(s.snapshotter, s.parent));
    }
    depth.set(node, d);
    return d;
  };
  const out = [...state.snapshots].filter(([node]) => !marked.has(node));
  out.sort(([a, sa], [b, sb]) =>
    depthOf(b) - depthOf(a) || cmp(sa.snapshotter, sb.snapshotter) || cmp(sa.name, sb.name)
  );
  return out.map(([, s]) => ({
    snapshotter: s.snapshotter,
    name: s.name,
    kind: s.kind,
    size: s.kind === "committed" ? s.size : 0,
  }));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Blob files under `<content>/blobs/<algorithm>/` whose digest has no record, old enough. */
async function blobFiles(content: ContentStore): Promise<Map<string, { size: number }>> {
  const out = new Map<string, { size: number }>();
  const base = join(content.root, "blobs");
  let algorithms: Deno.DirEntry[];
  try {
    algorithms = await Array.fromAsync(Deno.readDir(base));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return out;
    throw err;
  }
  const cutoff = Date.now() - ORPHAN_BLOB_GRACE_MS;
  for (const alg of algorithms) {
    if (!alg.isDirectory) continue;
    let files: Deno.DirEntry[];
    try {
      files = await Array.fromAsync(Deno.readDir(join(base, alg.name)));
    } catch {
      continue;
    }
    for (const file of files) {
      const digest = `${alg.name}:${file.name}`;
      if (!file.isFile || !isValidDigest(digest)) continue;
      try {
        const st = await Deno.stat(join(base, alg.name, file.name));
        // The rename into blobs/ sets ctime: a young file may belong to a commit in progress.
        const changed = (st.ctime ?? st.mtime)?.getTime() ?? Date.now();
        if (changed < cutoff) out.set(digest, { size: st.size });
      } catch {
        // Gone meanwhile.
      }
    }
  }
  return out;
}

function removeFile(path: string): void {
  try {
    Deno.removeSync(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/**
 * containerd's garbage collection for one root: mark everything reachable from the roots, sweep
 * the rest.
 *
 * Roots are unexpired leases and what they pin (a lease labelled `containerd.io/gc.flat` pins
 * only the objects themselves), images (unless their `containerd.io/gc.expire` has passed),
 * blobs and snapshots labelled `containerd.io/gc.root`, and ingests that are not stale. An ingest
 * is stale when the only leases holding it have expired, or when no lease holds it and it got no
 * data for 24 hours. References followed: an image's target; the `containerd.io/gc.ref.content*`,
 * `containerd.io/gc.ref.snapshot.<snapshotter>*` and `containerd.io/gc.ref.image*` labels of
 * blobs, snapshots and images; a snapshot's parent; an ingest's expected digest; and back
 * references (`containerd.io/gc.bref.*`: the labelled object lives while the named one does).
 *
 * The mark and the removal of records (expired leases and images, unreferenced blobs with their
 * files, unreferenced snapshots children first) happen in one write transaction, so work that
 * pins its objects to a lease before using them is never disturbed. Afterwards stale ingests are
 * aborted (an ingest a live writer holds is skipped) and each snapshotter's `cleanup()` removes
 * the directories of the removed snapshots.
 *
 * @example Report what a prune would remove
 * ```ts
 * import { Client } from "@strata/strata";
 * import { collectGarbage } from "@strata/strata/gc";
 *
 * const client = Client.open({ root: await Deno.makeTempDir() });
 * const report = await collectGarbage(client, { dryRun: true });
 * console.log(report.content.length, report.bytes);
 * client.close();
 * ```
 *
 * @param client The client of the root (root, database, content store, snapshotters).
 * @param options `dryRun` to only report.
 * @returns What was removed (or would be).
 */
export async function collectGarbage(
  client: GcTarget,
  options: GcOptions = {},
): Promise<GcReport> {
  const dryRun = options.dryRun ?? false;
  const { db, content } = client;
  const now = new Date();
  // Read outside the transaction: an ingest or blob file that appears later is simply not seen.
  const ingests = await content.listIngests();
  const files = await blobFiles(content);

  const report = db.transaction((): GcReport => {
    const state = readState(db, now);
    const { marked, staleIngests } = mark(state, ingests, now);
    const leases: GcLease[] = state.leases.filter((l) => l.expired).map((l) => ({
      id: l.id,
      expiredAt: expiryOf(l.labels)!,
    }));
    const images = [...state.images.keys()].filter((name) => !marked.has(imageNode(name))).sort(
      cmp,
    );
    const blobs: GcBlob[] = [...state.content]
      .filter(([digest]) => !marked.has(contentNode(digest)))
      .map(([digest, c]) => ({ digest, size: c.size }));
    for (const [digest, file] of files) {
      if (!state.content.has(digest)) blobs.push({ digest, size: file.size, orphan: true });
    }
    blobs.sort((a, b) => cmp(a.digest, b.digest));
    const snapshots = snapshotsToRemove(state, marked);

    if (!dryRun) {
      for (const lease of leases) db.run("DELETE FROM leases WHERE id = ?", lease.id);
      for (const name of images) db.run("DELETE FROM images WHERE name = ?", name);
      const storages = new Map<string, SnapshotStorage>();
      for (const s of snapshots) {
        let storage = storages.get(s.snapshotter);
        if (storage === undefined) {
          storage = new SnapshotStorage(db, s.snapshotter);
          storages.set(s.snapshotter, storage);
        }
        storage.remove(s.name);
      }
      for (const blob of blobs) db.run("DELETE FROM content WHERE digest = ?", blob.digest);
      // Files last, while the write lock still keeps new records of these digests out.
      for (const blob of blobs) removeFile(content.blobPath(blob.digest));
    }
    return {
      dryRun,
      leases,
      images,
      content: blobs,
      snapshots,
      ingests: staleIngests.sort((a, b) => cmp(a.ref, b.ref)),
      bytes: 0,
      warnings: [],
    };
  });

  if (!dryRun) {
    const aborted: GcIngest[] = [];
    for (const ingest of report.ingests) {
      try {
        if (ingest.reason === "stale") {
          // Written to since it was listed: not stale any more.
          const status = await content.status(ingest.ref);
          if (Date.now() - status.updatedAt.getTime() <= INGEST_EXPIRY_MS) continue;
        }
        await content.abort(ingest.ref);
        aborted.push(ingest);
      } catch (err) {
        if (isNotFound(err) || err instanceof Unavailable) continue;
        report.warnings.push(`Cannot abort ingest "${ingest.ref}": ${(err as Error).message}`);
      }
    }
    report.ingests = aborted;
    await cleanupSnapshotters(client, report.warnings);
  }
  report.bytes = report.content.reduce((n, b) => n + b.size, 0) +
    report.ingests.reduce((n, i) => n + i.size, 0) +
    report.snapshots.reduce((n, s) => n + s.size, 0);
  return report;
}

/** Runs `cleanup()` on every known snapshotter that has a directory in the root. */
async function cleanupSnapshotters(client: GcTarget, warnings: string[]): Promise<void> {
  for (const name of snapshotterNames()) {
    try {
      await Deno.stat(join(client.root, "snapshots", name, "snapshots"));
    } catch {
      continue;
    }
    try {
      await (await client.snapshotter(name)).cleanup();
    } catch (err) {
      warnings.push(`Cannot clean up snapshotter "${name}": ${(err as Error).message}`);
    }
  }
}
