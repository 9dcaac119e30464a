import { join } from "node:path";
import type { MetadataDb } from "../metadata/db.ts";
import { NotFound } from "../errors.ts";
import type { Snapshotter } from "./types.ts";
import { NativeSnapshotter } from "./native.ts";

/** Options of {@linkcode openSnapshotter}. */
export interface OpenSnapshotterOptions {
  /** The Strata root; the snapshotter lives in `<root>/snapshots/<name>`. */
  root: string;
  /** The root's metadata database. */
  db: MetadataDb;
}

const NAMES = ["overlayfs", "native"] as const;

/**
 * Names of the snapshotters Strata knows, in order of preference.
 *
 * @example
 * ```ts
 * import { snapshotterNames } from "./registry.ts";
 * console.log(snapshotterNames());
 * ```
 *
 * @returns `["overlayfs", "native"]`.
 */
export function snapshotterNames(): string[] {
  return [...NAMES];
}

/**
 * The snapshotter used when none is named: `overlayfs` on Linux, `native` elsewhere.
 *
 * @example
 * ```ts
 * import { defaultSnapshotterName } from "./registry.ts";
 * console.log(defaultSnapshotterName());
 * ```
 *
 * @returns The snapshotter's name.
 */
export function defaultSnapshotterName(): string {
  return Deno.build.os === "linux" ? "overlayfs" : "native";
}

/**
 * Opens a snapshotter by name in `<root>/snapshots/<name>`.
 *
 * @example Open the native snapshotter of a root
 * ```ts
 * import { MetadataDb } from "../metadata/db.ts";
 * import { openSnapshotter } from "./registry.ts";
 *
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * const sn = await openSnapshotter("native", { root, db });
 * console.log(sn.name);
 * await sn.close();
 * db.close();
 * ```
 *
 * @param name `overlayfs` or `native`.
 * @param options The Strata root and its database.
 * @returns The open snapshotter.
 * @throws {NotFound} When no snapshotter has that name.
 */
export async function openSnapshotter(
  name: string,
  options: OpenSnapshotterOptions,
): Promise<Snapshotter> {
  const dir = join(options.root, "snapshots", name);
  switch (name) {
    case "overlayfs": {
      const { OverlaySnapshotter } = await import("./overlay.ts");
      return await OverlaySnapshotter.open(dir, options.db);
    }
    case "native":
      return new NativeSnapshotter(dir, options.db);
    default:
      throw new NotFound(
        `Cannot open snapshotter "${name}": unknown, the known ones are ${
          NAMES.map((n) => `"${n}"`).join(", ")
        }`,
      );
  }
}
