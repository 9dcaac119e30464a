/**
 * Garbage collection with containerd's rules: mark from leases, images and `gc.root` labels
 * through the `containerd.io/gc.ref.*` labels, then remove unreferenced blobs and snapshots,
 * stale ingests, expired leases and expired images.
 *
 * @example Prune a root
 * ```ts
 * import { Client } from "@strata/strata";
 * import { collectGarbage } from "@strata/strata/gc";
 *
 * const client = Client.open({ root: await Deno.makeTempDir() });
 * const report = await collectGarbage(client);
 * console.log(`${report.bytes} bytes freed`);
 * client.close();
 * ```
 *
 * @module
 */
export * from "./gc.ts";
