import { chmodSync } from "node:fs";
import { join, resolve } from "node:path";
import type { MetadataDb } from "../metadata/db.ts";
import type { Platform } from "../images/types.ts";
import type { Mount } from "../mount/types.ts";
import { FailedPrecondition, NotImplemented } from "../errors.ts";
import * as sys from "../sys/mod.ts";
import type {
  Capability,
  Kind,
  SnapshotCommitOptions,
  SnapshotCreateOptions,
  SnapshotInfo,
  Snapshotter,
  SnapshotUpdateOptions,
  Usage,
} from "./types.ts";
import { SnapshotStorage, type StoredSnapshot } from "./storage.ts";
import { checkUsage, diskUsage, diskUsageAsync } from "./_usage.ts";
import {
  checkDType,
  inUserNamespace,
  mappedRootId,
  needsUserXattr,
  overlayHasIndexParameter,
  trialOverlayMount,
} from "./_overlay_check.ts";

/** The label the overlay snapshotter adds (never stores) with `upperdirLabel`: the upper dir. */
export const OVERLAY_UPPERDIR_LABEL = "containerd.io/snapshot/overlay.upperdir";

const UID_MAPPING_LABEL = "containerd.io/snapshot/uidmapping";
const GID_MAPPING_LABEL = "containerd.io/snapshot/gidmapping";

/** Architectures (with the variants a platform matcher compares exactly) overlay declares. */
const OVERLAY_ARCHITECTURES: readonly { architecture: string; variants: readonly string[] }[] = [
  { architecture: "amd64", variants: [""] },
  { architecture: "arm64", variants: [""] },
  { architecture: "arm", variants: ["v5", "v6", "v7", "v8"] },
  { architecture: "386", variants: [""] },
  { architecture: "ppc64le", variants: [""] },
  { architecture: "s390x", variants: [""] },
  { architecture: "riscv64", variants: [""] },
  { architecture: "mips64le", variants: [""] },
  { architecture: "loong64", variants: [""] },
];

/**
 * The platforms the overlay snapshotter supports: Linux images of any architecture (overlayfs
 * stacks files and never runs them). As a list: `linux` with amd64, arm64, arm (v5-v8), 386,
 * ppc64le, s390x, riscv64, mips64le and loong64.
 */
export const OVERLAY_PLATFORMS: readonly Platform[] = OVERLAY_ARCHITECTURES.flatMap((
  { architecture, variants },
) =>
  variants.map((variant): Platform =>
    variant === "" ? { os: "linux", architecture } : { os: "linux", architecture, variant }
  )
);

/** Options of {@linkcode OverlaySnapshotter.open}. */
export interface OverlaySnapshotterOptions {
  /** Extra overlay mount options, placed after `lowerdir=` (never applied to bind mounts). */
  mountOptions?: string[];
  /** Delete directories of removed snapshots at once instead of in {@linkcode OverlaySnapshotter.cleanup}. */
  syncRemove?: boolean;
  /** Add `containerd.io/snapshot/overlay.upperdir` (the upper dir) to returned information. */
  upperdirLabel?: boolean;
}

/**
 * containerd's overlay snapshotter (Linux): each snapshot has an upper directory
 * `<root>/snapshots/<id>/fs` (and a `work` directory when active); mounts stack the parents'
 * upper directories as overlay lower layers, newest first. Committing keeps the directory in
 * place. Removal is asynchronous by default: the record goes at once, the directory in
 * {@linkcode OverlaySnapshotter.cleanup}.
 *
 * Mounts (P = parent ids, immediate parent first): no parent gives a bind mount of the own upper
 * (`rw` when active, `ro` for a view); a view of one parent a read-only bind of the parent's
 * upper; otherwise an overlay with `workdir=`, `upperdir=` (active only), `lowerdir=` and then the
 * computed options (configured ones, `userxattr` in a user namespace, `index=off` when the
 * kernel has the `index` parameter).
 *
 * @example Prepare a snapshot on a committed parent and read its mounts
 * ```ts
 * import { MetadataDb } from "@strata/strata/metadata";
 * import { OverlaySnapshotter } from "@strata/strata/snapshotters";
 *
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * const sn = await OverlaySnapshotter.open(`${root}/snapshots/overlayfs`, db);
 * await sn.prepare("base-extract");
 * await sn.commit("base", "base-extract");
 * console.log(await sn.prepare("container", { parent: "base" }));
 * await sn.close();
 * db.close();
 * ```
 */
export class OverlaySnapshotter implements Snapshotter {
  /** Always `"overlayfs"`. */
  readonly name: string = "overlayfs";
  /** `["rebase"]`, except in a user namespace (rebased whiteouts need `mknod`). */
  readonly capabilities: readonly Capability[];
  #root: string;
  #db: MetadataDb;
  #storage: SnapshotStorage;
  #mountOptions: readonly string[];
  #syncRemove: boolean;
  #upperdirLabel: boolean;
  #closed = false;

  private constructor(
    root: string,
    db: MetadataDb,
    mountOptions: readonly string[],
    options: OverlaySnapshotterOptions,
    userns: boolean,
  ) {
    this.#root = root;
    this.#db = db;
    this.#storage = new SnapshotStorage(db, "overlayfs");
    this.#mountOptions = mountOptions;
    this.#syncRemove = options.syncRemove ?? false;
    this.#upperdirLabel = options.upperdirLabel ?? false;
    this.capabilities = userns ? [] : ["rebase"];
  }

  /**
   * Opens (creating when missing) the overlay snapshotter in `root`: makes `root` and
   * `root/snapshots` (mode 0700), checks that the file system reports `d_type`, and computes the
   * overlay mount options once.
   *
   * @param root The snapshotter's directory, e.g. `<strataRoot>/snapshots/overlayfs`.
   * @param db The Strata root's metadata database (not closed by {@linkcode close}).
   * @param options Extra mount options, synchronous removal, the upperdir label.
   * @returns The snapshotter.
   * @throws {NotImplemented} When not on Linux.
   * @throws {FailedPrecondition} When the file system lacks `d_type`.
   */
  static async open(
    root: string,
    db: MetadataDb,
    options: OverlaySnapshotterOptions = {},
  ): Promise<OverlaySnapshotter> {
    if (Deno.build.os !== "linux") {
      throw new NotImplemented(
        `Cannot open the overlayfs snapshotter: overlayfs needs Linux, this is "${Deno.build.os}"`,
      );
    }
    const dir = resolve(root);
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    checkDType(dir);
    const snapshots = join(dir, "snapshots");
    try {
      Deno.mkdirSync(snapshots, { mode: 0o700 });
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
    const configured = options.mountOptions ?? [];
    const mountOptions = [...configured];
    if (!hasOption(configured, "userxattr") && await needsUserXattr(dir)) {
      mountOptions.push("userxattr");
    }
    if (!hasOption(configured, "index") && overlayHasIndexParameter()) {
      mountOptions.push("index=off");
    }
    return new OverlaySnapshotter(dir, db, mountOptions, options, inUserNamespace());
  }

  /** The snapshotter's directory (absolute). */
  get root(): string {
    return this.#root;
  }

  /** The overlay mount options computed at open (configured, `userxattr`, `index=off`). */
  get mountOptions(): readonly string[] {
    return this.#mountOptions;
  }

  /**
   * Linux on every architecture; see {@linkcode OVERLAY_PLATFORMS}.
   *
   * @returns A copy of {@linkcode OVERLAY_PLATFORMS}.
   */
  supportedPlatforms(): Platform[] {
    return OVERLAY_PLATFORMS.map((platform) => ({ ...platform }));
  }

  /**
   * Information about a snapshot of any kind.
   *
   * @param key The key or name.
   * @returns Kind, name, parent, labels and times.
   * @throws {NotFound} When the snapshot does not exist.
   */
  stat(key: string): Promise<SnapshotInfo> {
    return this.#run("stat snapshot", () => {
      const { id, info } = this.#storage.getInfo(key);
      return this.#withLabel(info, id);
    });
  }

  /**
   * Updates labels; see {@linkcode SnapshotStorage.updateInfo}.
   *
   * @param info The snapshot's name and labels.
   * @param options Field paths.
   * @returns The updated information.
   */
  update(
    info: { name: string; labels: Record<string, string> },
    options: SnapshotUpdateOptions = {},
  ): Promise<SnapshotInfo> {
    return this.#run("update snapshot", () =>
      this.#db.transaction(() => {
        const fieldpaths = options.fieldpaths;
        const updated = this.#storage.updateInfo(
          info,
          fieldpaths === undefined ? {} : { fieldpaths },
        );
        if (!this.#upperdirLabel) return updated;
        return this.#withLabel(updated, this.#storage.getInfo(info.name).id);
      }));
  }

  /**
   * Disk usage: live for an active snapshot (its upper directory only), stored at commit for a
   * committed one, zero for a view. The walk of an active snapshot lets the event loop run every
   * few thousand entries.
   *
   * @param key The key or name.
   * @returns Allocated bytes and distinct inodes.
   * @throws {NotFound} When the snapshot does not exist.
   */
  async usage(key: string): Promise<Usage> {
    const { id, info, usage } = await this.#run(
      "get usage of snapshot",
      () => this.#storage.getInfo(key),
    );
    return info.kind === "active" ? await diskUsageAsync(this.#upper(id)) : usage;
  }

  /**
   * The mounts of an active snapshot or a view.
   *
   * @param key The key.
   * @returns One mount.
   * @throws {NotFound} When the snapshot does not exist.
   * @throws {FailedPrecondition} When it is committed.
   */
  mounts(key: string): Promise<Mount[]> {
    return this.#run("get mounts of snapshot", () => this.#mounts(this.#storage.getSnapshot(key)));
  }

  /**
   * Creates an active snapshot.
   *
   * @param key The new key.
   * @param options Parent and labels.
   * @returns One mount.
   */
  prepare(key: string, options: SnapshotCreateOptions = {}): Promise<Mount[]> {
    return this.#run("prepare snapshot", () => this.#create("active", key, options));
  }

  /**
   * Creates a read-only view.
   *
   * @param key The new key.
   * @param options Parent and labels.
   * @returns One mount.
   */
  view(key: string, options: SnapshotCreateOptions = {}): Promise<Mount[]> {
    return this.#run("create view", () => this.#create("view", key, options));
  }

  /**
   * Commits active `key` as `name` with the disk usage of its upper directory (measured inside
   * the commit unless `options.usage` gives it); the directory (and its `work` directory) stays
   * in place under the same id.
   *
   * @param name The committed name.
   * @param key The active key.
   * @param options Labels of the committed snapshot, a parent for a parentless active, and the
   *   usage measured after the last write.
   * @throws {NotFound} When `key` does not exist.
   * @throws {AlreadyExists} When `name` exists.
   * @throws {FailedPrecondition} When `key` is not active.
   * @throws {InvalidArgument} When `options.usage` holds negative or fractional numbers.
   */
  commit(name: string, key: string, options: SnapshotCommitOptions = {}): Promise<void> {
    return this.#run("commit snapshot", () =>
      this.#db.transaction(() => {
        if (options.usage !== undefined) checkUsage(options.usage, `commit snapshot "${key}"`);
        const { id } = this.#storage.getInfo(key);
        const usage = options.usage === undefined ? diskUsage(this.#upper(id)) : {
          size: options.usage.size,
          inodes: options.usage.inodes,
        };
        this.#storage.commitActive(key, name, {
          usage,
          ...(options.labels === undefined ? {} : { labels: options.labels }),
          ...(options.parent === undefined ? {} : { parent: options.parent }),
        });
      }));
  }

  /**
   * Removes a snapshot's record; its directory is deleted now with `syncRemove`, else by
   * {@linkcode cleanup}. The key can be used again at once.
   *
   * @param key The key or name.
   * @throws {NotFound} When the snapshot does not exist.
   * @throws {FailedPrecondition} When it has children.
   */
  remove(key: string): Promise<void> {
    return this.#run("remove snapshot", () => {
      const orphans = this.#db.transaction(() => {
        this.#storage.remove(key);
        return this.#syncRemove ? this.#orphans() : [];
      });
      // Like containerd, failures here do not fail the removal: cleanup() tries again.
      for (const dir of orphans) {
        try {
          Deno.removeSync(dir, { recursive: true });
        } catch {
          // Left for cleanup().
        }
      }
    });
  }

  /**
   * Lists snapshots matching any of the filters, in lexicographic order.
   *
   * @param filters containerd filter strings.
   * @returns The matching snapshots.
   */
  list(filters: string[] = []): Promise<SnapshotInfo[]> {
    return this.#run("list snapshots", () => {
      const infos = this.#storage.list(filters);
      if (!this.#upperdirLabel) return infos;
      const ids = new Map([...this.#storage.idMap()].map(([id, name]) => [name, id]));
      return infos.map((info) => {
        const id = ids.get(info.name);
        return id === undefined ? info : this.#withLabel(info, id);
      });
    });
  }

  /**
   * Calls `fn` for each snapshot matching any of the filters, in lexicographic order; the
   * upperdir label is added after filtering, so filters cannot match it.
   *
   * @param fn The callback; it may call back into the snapshotter.
   * @param filters containerd filter strings.
   */
  async walk(
    fn: (info: SnapshotInfo) => void | Promise<void>,
    filters: string[] = [],
  ): Promise<void> {
    const infos = await this.list(filters);
    for (const info of infos) await fn(info);
  }

  /**
   * Deletes every directory under `snapshots/` that belongs to no snapshot: those of removed
   * snapshots and temporary `new-*` directories of interrupted creations.
   *
   * @throws {FailedPrecondition} When a directory cannot be deleted (the others still are).
   */
  cleanup(): Promise<void> {
    return this.#run("clean up snapshots", () => {
      const orphans = this.#db.transaction(() => this.#orphans());
      const failures: string[] = [];
      for (const dir of orphans) {
        try {
          Deno.removeSync(dir, { recursive: true });
        } catch (err) {
          if (!(err instanceof Deno.errors.NotFound)) {
            failures.push(`"${dir}": ${err instanceof Error ? err.message : String(err)}`);
          }
        }
      }
      if (failures.length > 0) {
        throw new FailedPrecondition(
          `Cannot clean up overlayfs snapshots: cannot delete ${failures.join(", ")}`,
        );
      }
    });
  }

  /** Marks the snapshotter closed (the database belongs to the caller); idempotent. */
  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  #upper(id: number): string {
    return join(this.#root, "snapshots", String(id), "fs");
  }

  #work(id: number): string {
    return join(this.#root, "snapshots", String(id), "work");
  }

  #withLabel(info: SnapshotInfo, id: number): SnapshotInfo {
    if (!this.#upperdirLabel) return info;
    return { ...info, labels: { ...info.labels, [OVERLAY_UPPERDIR_LABEL]: this.#upper(id) } };
  }

  /** Directories under `snapshots/` whose name is not the id of a record (call in a transaction). */
  #orphans(): string[] {
    const ids = this.#storage.idMap();
    const dir = join(this.#root, "snapshots");
    const orphans: string[] = [];
    for (const entry of Deno.readDirSync(dir)) {
      if (/^[1-9][0-9]*$/.test(entry.name) && ids.has(Number(entry.name))) continue;
      orphans.push(join(dir, entry.name));
    }
    return orphans;
  }

  #mounts(s: StoredSnapshot): Mount[] {
    const parents = s.parentIds;
    if (parents.length === 0) {
      return [{
        type: "bind",
        source: this.#upper(s.id),
        options: [s.kind === "view" ? "ro" : "rw", "rbind"],
      }];
    }
    const options: string[] = [];
    if (s.kind === "active") {
      options.push(`workdir=${this.#work(s.id)}`, `upperdir=${this.#upper(s.id)}`);
    } else if (parents.length === 1) {
      return [{ type: "bind", source: this.#upper(parents[0]!), options: ["ro", "rbind"] }];
    }
    options.push(`lowerdir=${parents.map((id) => this.#upper(id)).join(":")}`);
    options.push(...this.#mountOptions);
    return [{ type: "overlay", source: "overlay", options }];
  }

  #create(kind: Kind, key: string, options: SnapshotCreateOptions): Mount[] {
    const snapshots = join(this.#root, "snapshots");
    let final: string | undefined;
    try {
      return this.#db.transaction(() => {
        const temp = Deno.makeTempDirSync({ dir: snapshots, prefix: "new-" });
        try {
          const fs = join(temp, "fs");
          Deno.mkdirSync(fs, { mode: 0o755 });
          chmodSync(fs, 0o755);
          if (kind === "active") {
            Deno.mkdirSync(join(temp, "work"), { mode: 0o711 });
            chmodSync(join(temp, "work"), 0o711);
          }
          const created = this.#storage.createSnapshot(kind, key, {
            ...(options.parent === undefined ? {} : { parent: options.parent }),
            ...(options.labels === undefined ? {} : { labels: options.labels }),
          });
          this.#chownUpper(fs, created, options.labels ?? {});
          const target = join(snapshots, String(created.id));
          // A directory with a fresh id belongs to no record: a crash after a rename whose
          // transaction never committed. Replace it.
          try {
            Deno.removeSync(target, { recursive: true });
          } catch (err) {
            if (!(err instanceof Deno.errors.NotFound)) throw err;
          }
          Deno.renameSync(temp, target);
          final = target;
          return this.#mounts(created);
        } catch (err) {
          try {
            Deno.removeSync(temp, { recursive: true });
          } catch {
            // Renamed already, or left for cleanup().
          }
          throw err;
        }
      });
    } catch (err) {
      if (final !== undefined) {
        try {
          Deno.removeSync(final, { recursive: true });
        } catch {
          // Left for cleanup().
        }
      }
      throw err;
    }
  }

  /** Gives the new upper root the owner of container root (idmap labels) or of the parent's. */
  #chownUpper(fs: string, created: StoredSnapshot, labels: Record<string, string>): void {
    let uid = -1;
    let gid = -1;
    const uidMapping = labels[UID_MAPPING_LABEL];
    const gidMapping = labels[GID_MAPPING_LABEL];
    if (uidMapping !== undefined) uid = mappedRootId(UID_MAPPING_LABEL, uidMapping);
    if (gidMapping !== undefined) gid = mappedRootId(GID_MAPPING_LABEL, gidMapping);
    const parent = created.parentIds[0];
    if ((uid === -1 || gid === -1) && parent !== undefined) {
      const st = sys.statx(sys.AT_FDCWD, this.#upper(parent), 0);
      uid = st.uid;
      gid = st.gid;
    }
    if (uid !== -1 && gid !== -1) {
      sys.fchownat(sys.AT_FDCWD, fs, uid, gid, sys.AT_SYMLINK_NOFOLLOW);
    }
  }

  #run<T>(action: string, fn: () => T): Promise<T> {
    if (this.#closed) {
      return Promise.reject(
        new FailedPrecondition(`Cannot ${action}: the overlayfs snapshotter is closed`),
      );
    }
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(err);
    }
  }
}

/** Whether `options` has `key`, bare or as `key=...`. */
function hasOption(options: readonly string[], key: string): boolean {
  return options.some((option) => option === key || option.startsWith(`${key}=`));
}

/**
 * Checks that overlayfs works under `root`: the file system reports `d_type`, and a trial overlay
 * mount with two lower directories (and `userxattr` when needed) in a temporary directory under
 * `root` succeeds. `root` is created (mode 0700) when missing. The snapshotter does not call this
 * itself; it is for tools that want to know before choosing a snapshotter.
 *
 * @example
 * ```ts
 * import { supported } from "@strata/strata/snapshotters";
 * await supported(await Deno.makeTempDir());
 * ```
 *
 * @param root The directory overlay snapshots would live in.
 * @returns When overlayfs works there.
 * @throws {NotImplemented} When not on Linux.
 * @throws {FailedPrecondition} When the file system lacks `d_type` or the kernel refuses the mount.
 */
export async function supported(root: string): Promise<void> {
  if (Deno.build.os !== "linux") {
    throw new NotImplemented(
      `Cannot use overlayfs at "${root}": overlayfs needs Linux, this is "${Deno.build.os}"`,
    );
  }
  const dir = resolve(root);
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  checkDType(dir);
  const extra = await needsUserXattr(dir) ? ["userxattr"] : [];
  const err = await trialOverlayMount(dir, extra);
  if (err !== undefined) {
    const cause = err instanceof Error && err.cause instanceof sys.SysError ? err.cause : err;
    throw new FailedPrecondition(
      `Cannot use overlayfs at "${root}": the kernel refused an overlay mount: ${
        cause instanceof Error ? cause.message : String(cause)
      }`,
      { cause: err },
    );
  }
}
