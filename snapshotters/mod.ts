/**
 * Snapshotters with containerd's contract: the interface, the storage of their records in the
 * metadata database, the native (copying) and overlay snapshotters, and a registry by name.
 *
 * @example Prepare and commit a snapshot with the native snapshotter
 * ```ts
 * import { MetadataDb } from "@strata/strata/metadata";
 * import { openSnapshotter } from "@strata/strata/snapshotters";
 *
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * const sn = await openSnapshotter("native", { root, db });
 * await sn.prepare("extract");
 * await sn.commit("layer-1", "extract");
 * console.log((await sn.list()).map((info) => info.name));
 * await sn.close();
 * db.close();
 * ```
 *
 * @module
 */
export * from "./types.ts";
export * from "./storage.ts";
export * from "./registry.ts";
export * from "./native.ts";
export * from "./overlay.ts";
