// Mount handling of diff compare: reading mounts read-only (bind sources directly), and
// recognising an overlay whose upper layer can be walked alone.

import { posix } from "node:path";
import { type Mount, readOnlyMounts, singleBindSource, withTempMount } from "../mount/mod.ts";

/**
 * Calls `fn` with a read-only view of `mounts`: an empty temporary directory for no mounts, the
 * source of a single bind mount as it is, else a temporary read-only mount.
 */
export async function withReadOnlyRoot<T>(
  mounts: readonly Mount[],
  fn: (root: string) => Promise<T>,
): Promise<T> {
  if (mounts.length === 0) {
    const empty = await Deno.makeTempDir({ prefix: "strata-diff-empty-" });
    try {
      return await fn(empty);
    } finally {
      await Deno.remove(empty);
    }
  }
  const source = singleBindSource(mounts);
  if (source !== undefined) return await fn(source);
  return await withTempMount(readOnlyMounts(mounts), fn);
}

/** The upper layer of an overlay stack, found by {@linkcode overlayUpper}. */
export interface OverlayUpper {
  /** The directory holding the changes (the overlay's upperdir, or its top lowerdir). */
  upperdir: string;
  /** Whether the overlay uses `user.overlay.*` xattrs. */
  userxattr: boolean;
}

function option(options: readonly string[], key: string): string | undefined {
  let value: string | undefined;
  for (const o of options) if (o.startsWith(`${key}=`)) value = o.slice(key.length + 1);
  return value;
}

function splitLowerdir(value: string): string[] | undefined {
  // Escaped separators (`\:`) are not worth parsing here: such stacks use the double walk.
  if (value.includes("\\") || value === "") return undefined;
  return value.split(":").map((dir) => posix.normalize(dir));
}

/** The layer directories of mounts, top first; `undefined` when they are not a plain stack. */
function layerStack(mounts: readonly Mount[]): string[] | undefined {
  if (mounts.length === 0) return [];
  const bind = singleBindSource(mounts);
  if (bind !== undefined) return [posix.normalize(bind)];
  const [mount] = mounts;
  if (mounts.length !== 1 || mount === undefined || mount.type !== "overlay") return undefined;
  if (mount.target !== undefined && posix.normalize(`/${mount.target}`) !== "/") return undefined;
  const lower = option(mount.options, "lowerdir");
  const layers = lower === undefined ? undefined : splitLowerdir(lower);
  if (layers === undefined) return undefined;
  const upper = option(mount.options, "upperdir");
  return upper === undefined ? layers : [posix.normalize(upper), ...layers];
}

function moduleParameter(name: string): boolean {
  try {
    return Deno.readTextFileSync(`/sys/module/overlay/parameters/${name}`).trim() === "Y";
  } catch {
    return false;
  }
}

/** Whether the overlay may hold metacopy or redirect entries, which the upperdir walk cannot read. */
function mayRedirect(options: readonly string[]): boolean {
  const metacopy = option(options, "metacopy");
  const redirect = option(options, "redirect_dir");
  if (metacopy === "on") return true;
  if (redirect !== undefined && redirect !== "off" && redirect !== "nofollow") return true;
  if (metacopy === undefined && moduleParameter("metacopy")) return true;
  if (redirect === undefined && moduleParameter("redirect_dir")) return true;
  return false;
}

/**
 * Finds the fast path of diff compare: `upper` is a single overlay mount whose layers are one
 * directory on top of exactly the layers of `lower` (an empty list, a single bind mount or an
 * overlay without upperdir). Overlays that may use metacopy or redirect_dir are refused.
 *
 * @returns The top directory and the xattr mode, or `undefined` when there is no fast path.
 */
export function overlayUpper(
  lower: readonly Mount[],
  upper: readonly Mount[],
): OverlayUpper | undefined {
  const [mount] = upper;
  if (upper.length !== 1 || mount === undefined || mount.type !== "overlay") return undefined;
  const upperLayers = layerStack(upper);
  const lowerLayers = layerStack(lower);
  if (upperLayers === undefined || lowerLayers === undefined) return undefined;
  if (upperLayers.length !== lowerLayers.length + 1) return undefined;
  if (lowerLayers.some((dir, i) => upperLayers[i + 1] !== dir)) return undefined;
  if (mayRedirect(mount.options)) return undefined;
  return { upperdir: upperLayers[0]!, userxattr: mount.options.includes("userxattr") };
}
