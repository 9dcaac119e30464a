/**
 * Mounts as containerd describes them (`{type, source, target?, options}`) and the helpers to
 * use them on Linux: option parsing, mounting a list onto a directory (with containerd's
 * compaction of long overlay `lowerdir=` options), unmounting, temporary mounts, and the
 * read-only checks and transformations the snapshotters and appliers rely on.
 *
 * Mounting needs root (`CAP_SYS_ADMIN`) and `--allow-ffi`.
 *
 * @example Look at a snapshot's files through a temporary read-only mount
 * ```ts
 * import { readOnlyMounts, withTempMount } from "@strata/strata/mount";
 * const mounts = [{
 * type: "overlay",
 * source: "overlay",
 * options: ["workdir=/s/3/work", "upperdir=/s/3/fs", "lowerdir=/s/2/fs:/s/1/fs"],
 * }];
 * await withTempMount(readOnlyMounts(mounts), async (root) => {
 * for await (const entry of Deno.readDir(root)) console.log(entry.name);
 * });
 * ```
 *
 * @module
 */
export type * from "./types.ts";
export * from "./mount.ts";
