// Trees of unpacked images, recorded and compared the same way by the unpack tests and the
// integration tests: Strata's views, containerd's views, and flattened applies.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import type { Client } from "../client.ts";
import { type Mount, withTempMount } from "../mount/mod.ts";
import { type Containerd, runOk } from "./_peers.ts";
import { diffTrees, snapshotTree, type TreeEntry } from "./_tree.ts";

/** The pseudo xattr carrying an entry's mtime with nanoseconds, so that `diffTrees` compares it. */
export const NS = "(mtime ns)";
/** What a directory's mtime becomes when it was set while unpacking rather than by the image. */
export const UNPACK_TIME = "(set while unpacking)";
/** Whole seconds before this module loaded: every image the tests build is made after it. */
const SINCE = Math.floor(Date.now() / 1000) - 1;

/**
 * Records a tree like `snapshotTree`, plus each mtime in nanoseconds (`find -printf %T@`). A
 * directory whose mtime is later than {@linkcode SINCE} and has a fraction of a second was changed
 * while unpacking (an entry added or deleted below it by a layer that does not list it): no image
 * time has fractions here (the sample's are whole seconds, umoci rounds to seconds), so its mtime
 * is replaced by {@linkcode UNPACK_TIME}: two unpacks agree on it without agreeing on the clock.
 */
export async function treeWithNanos(dir: string): Promise<Map<string, TreeEntry>> {
  const tree = await snapshotTree(dir);
  const out = (await runOk(["find", dir, "-printf", "%P\\0%T@\\0"])).stdout.split("\0");
  for (let i = 0; i + 1 < out.length; i += 2) {
    const entry = tree.get(out[i] === "" ? "." : out[i]!);
    if (entry === undefined) continue;
    const ns = out[i + 1]!;
    const [sec = "0", frac = "0"] = ns.split(".");
    const unpackTime = entry.type === "dir" && Number(sec) >= SINCE && /[1-9]/.test(frac);
    if (unpackTime) entry.mtime = -1;
    entry.xattrs = { ...entry.xattrs, [NS]: unpackTime ? UNPACK_TIME : ns };
  }
  return tree;
}

/**
 * Compares two trees, ignoring the root directory itself (a temp dir or a snapshot dir).
 * `unpackTimeInB` names a known reason why a directory of `b` may carry the unpack time where the
 * same directory of `a` has the image's time; those directories are not compared on mtime.
 * `minEntries` guards against comparing two nearly empty trees.
 */
export function assertSameTree(
  a: Map<string, TreeEntry>,
  b: Map<string, TreeEntry>,
  what: string,
  options: { unpackTimeInB?: string; minEntries: number },
): void {
  const bb = new Map(b);
  if (options.unpackTimeInB !== undefined) {
    for (const [path, x] of a) {
      const y = b.get(path);
      if (x.type !== "dir" || y?.type !== "dir") continue;
      if (x.xattrs?.[NS] !== UNPACK_TIME && y.xattrs?.[NS] === UNPACK_TIME) {
        bb.set(path, { ...y, mtime: x.mtime, xattrs: { ...y.xattrs, [NS]: x.xattrs?.[NS] ?? "" } });
      }
    }
  }
  const diffs = diffTrees(a, bb, { ignorePaths: ["."] });
  assert.deepEqual(
    diffs,
    [],
    `${what}: ${diffs.length} differences:\n${diffs.slice(0, 40).join("\n")}`,
  );
  assert.ok(
    a.size > options.minEntries,
    `${what}: the tree is nearly empty (${a.size} entries)`,
  );
}

/**
 * Strata's overlay applier gives a directory that a layer does not list but changes (an implied
 * parent in the upper dir) the lower directory's attributes, mtime included, and restores them
 * after the layer; deleting or native applies (and containerd) leave such a directory with the
 * time of the change.
 */
export const OVERLAY_KEEPS_IMPLIED_PARENT_TIME =
  "strata's overlay upper keeps the lower mtime of implied parents";
/**
 * containerd's native snapshotter copies the parent snapshot directory before its children, so
 * every directory that the top layer does not list gets the time of the copy.
 */
export const CONTAINERD_NATIVE_COPY_LOSES_DIR_TIMES =
  "containerd's native snapshotter copies directories before their contents";

/** Mounts a read-only view of Strata's `chainId` and records its tree. */
export async function strataTree(
  client: Client,
  sn: string,
  chainId: string,
): Promise<Map<string, TreeEntry>> {
  const snapshotter = await client.snapshotter(sn);
  const key = `test-view-${randomUUID()}`;
  const mounts = await snapshotter.view(key, { parent: chainId });
  try {
    return await withTempMount(mounts, (dir) => treeWithNanos(dir));
  } finally {
    await snapshotter.remove(key);
  }
}

/** Parses `ctr snapshots view --mounts` output (Go field names) into mounts. */
export function parseCtrMounts(stdout: string): Mount[] {
  const raw = JSON.parse(stdout) as { Type: string; Source: string; Options?: string[] }[];
  return raw.map((m) => ({ type: m.Type, source: m.Source, options: m.Options ?? [] }));
}

/** Committed snapshot names in one of containerd's snapshotters, sorted. */
export async function ctrSnapshotNames(ctrd: Containerd, sn: string): Promise<string[]> {
  const out = (await ctrd.ctrOk(["snapshots", "--snapshotter", sn, "ls"])).stdout;
  return out.trim().split("\n").slice(1).map((l) => l.split(/\s+/)[0]!).filter((n) => n !== "")
    .sort();
}

/**
 * Mounts a view of containerd's snapshot `chainId` and records its tree. A view that no lease
 * holds is garbage to containerd's GC, which may run at any moment (for example after `ctr images
 * import` dropped its lease), so the view is made a GC root at once, and made again if the GC won.
 */
export async function containerdTree(
  ctrd: Containerd,
  sn: string,
  chainId: string,
): Promise<Map<string, TreeEntry>> {
  const ctr = (args: string[]) => ctrd.ctr(["snapshots", "--snapshotter", sn, ...args]);
  for (let attempt = 1;; attempt++) {
    const key = `strata-test-view-${randomUUID()}`;
    const view = await ctr(["view", "--mounts", key, chainId]);
    if (view.code !== 0) throw new Error(`Cannot make a containerd view: ${view.stderr}`);
    const label = await ctr(["label", key, "containerd.io/gc.root=strata-test"]);
    if (label.code !== 0) {
      if (attempt < 5 && /not found/.test(label.stderr)) continue;
      throw new Error(`Cannot label containerd view "${key}": ${label.stderr}`);
    }
    try {
      return await withTempMount(parseCtrMounts(view.stdout), (dir) => treeWithNanos(dir));
    } finally {
      await ctr(["rm", key]);
    }
  }
}
