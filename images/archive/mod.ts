/**
 * Import and export of image archives: OCI image layouts (directory or tar) and `docker save`
 * archives.
 *
 * @example Import an OCI layout, then export it again
 * ```ts ignore
 * import { Client } from "@strata/strata";
 * import { exportArchive, importArchive } from "@strata/strata/images";
 * const client = Client.open();
 * const { images } = await importArchive(client, "./layout");
 * const out = await Deno.open("out.tar", { write: true, create: true });
 * await exportArchive(client, images, async (c) => { await out.write(c); });
 * ```
 *
 * @module
 */
export * from "./import.ts";
export * from "./export.ts";
export type { ArchiveStores } from "./_stores.ts";
export { ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME } from "./_stores.ts";
