/**
 * Leases: named sets of resources (blobs, ingests, snapshots, images) that garbage collection
 * keeps while the lease lives, with containerd's expiry label, the `withLease` helper that wraps
 * work in flight, and a content store wrapper that pins what it writes.
 *
 * @example Keep a snapshot while preparing it
 * ```ts
 * import { MetadataDb } from "@strata/strata/metadata";
 * import { LeaseManager, withLease } from "@strata/strata/leases";
 *
 * const db = MetadataDb.open(await Deno.makeTempDir());
 * const leases = new LeaseManager(db);
 * await withLease(leases, (lease) => {
 *   leases.addResource(lease.id, { type: "snapshots/native", id: "extract-1" });
 *   return Promise.resolve();
 * });
 * db.close();
 * ```
 *
 * @module
 */
export * from "./leases.ts";
export * from "./content.ts";
