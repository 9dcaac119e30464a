/**
 * Unpacking images into snapshotters: the orchestrator that turns an image's layers into a chain
 * of committed snapshots, with containerd's keys, labels and failure rules.
 *
 * @example Unpack an image
 * ```ts ignore
 * import { Client } from "@strata/strata";
 * import { unpackImage } from "@strata/strata/unpack";
 * const client = Client.open();
 * await unpackImage(client, client.images.get("docker.io/library/alpine:latest"));
 * ```
 *
 * @module
 */
export * from "./unpack.ts";
export * from "./check.ts";
