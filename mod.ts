/**
 * Strata: a daemonless, Deno-native image toolkit with containerd's semantics. It imports OCI and
 * Docker images into a content-addressed store and an image store that several processes can
 * share, selects manifests by platform, and exports images as OCI layouts.
 *
 * @example Import an OCI layout and list the images
 * ```ts ignore
 * import { Client, importArchive } from "@strata/strata";
 * const client = Client.open({ root: "/var/lib/strata" });
 * await importArchive(client, "./layout");
 * for (const image of client.images.list()) console.log(image.name, image.target.digest);
 * client.close();
 * ```
 *
 * @module
 */
export * from "./client.ts";
export * from "./errors.ts";
export * from "./content/mod.ts";
export * from "./images/mod.ts";
export * from "./metadata/mod.ts";
export * from "./mount/mod.ts";
export * from "./snapshotters/mod.ts";
export * from "./diff/mod.ts";
export * from "./unpack/mod.ts";
export * from "./leases/mod.ts";
export * from "./gc/mod.ts";
export * from "./remotes/mod.ts";
export * from "./transfer/mod.ts";
