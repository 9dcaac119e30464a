import { chmodSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { MetadataDb } from "../metadata/db.ts";
import type { Platform } from "../images/types.ts";
import type { Mount } from "../mount/types.ts";
import { FailedPrecondition } from "../errors.ts";
import {
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  fchmodat,
  isErrno,
  readDirAt,
  S_IFDIR,
  S_IFMT,
  statx,
} from "../sys/mod.ts";
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
import { SnapshotStorage } from "./storage.ts";
import { copyDir } from "./_copy.ts";
import { checkUsage, diskUsage, diskUsageAsync } from "./_usage.ts";

/** Operating systems whose images the native snapshotter declares it can hold. */
const NATIVE_OSES = ["linux", "windows", "darwin", "freebsd"] as const;

/** Architectures (with the variants a platform matcher compares exactly) it declares. */
const NATIVE_ARCHITECTURES: readonly { architecture: string; variants: readonly string[] }[] = [
  { architecture: "amd64", variants: ["", "v2", "v3", "v4"] },
  { architecture: "arm64", variants: [""] },
  { architecture: "arm", variants: ["v5", "v6", "v7", "v8"] },
  { architecture: "386", variants: [""] },
  { architecture: "ppc64le", variants: [""] },
  { architecture: "s390x", variants: [""] },
  { architecture: "riscv64", variants: [""] },
];

/**
 * The platforms the native snapshotter supports: it copies plain files, so any OS on any
 * architecture. As a platform list: every pair of linux, windows, darwin, freebsd with amd64
 * (v1-v4), arm64, arm (v5-v8), 386, ppc64le, s390x and riscv64.
 */
export const NATIVE_PLATFORMS: readonly Platform[] = NATIVE_OSES.flatMap((os) =>
  NATIVE_ARCHITECTURES.flatMap(({ architecture, variants }) =>
    variants.map((variant): Platform =>
      variant === "" ? { os, architecture } : { os, architecture, variant }
    )
  )
);

/** Options of the {@linkcode NativeSnapshotter} constructor. */
export interface NativeSnapshotterOptions {
  /** Receives what a copy tolerated (xattrs, owners or devices it could not copy). */
  onWarning?: (message: string) => void;
  /** fsync each copied file (default `false`: durability comes from one syncfs before commit). */
  fsync?: boolean;
}

/**
 * containerd's native snapshotter: every snapshot is a complete directory, `<root>/snapshots/<id>`;
 * preparing on a parent copies the parent's directory in full. Works without mount privileges:
 * its mounts are single bind mounts whose source can be written directly.
 *
 * Crash safety: prepare records the active snapshot first (one transaction), copies the parent
 * into `snapshots/new-<id>` outside the transaction, then renames it to `snapshots/<id>`. A crash
 * mid-copy leaves an active record whose `<id>` directory is missing: it cannot be committed
 * (commit fails with `FailedPrecondition`), and `remove()` deletes the record and the `new-<id>`
 * directory. `cleanup()` removes every directory that belongs to no record (`rm-*`, `new-*`,
 * orphans).
 *
 * @example Prepare, write and commit a snapshot
 * ```ts
 * import { MetadataDb } from "../metadata/db.ts";
 * import { NativeSnapshotter } from "./native.ts";
 *
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * const sn = new NativeSnapshotter(`${root}/snapshots/native`, db);
 * const [mount] = await sn.prepare("extract");
 * await Deno.writeTextFile(`${mount!.source}/hello`, "hi");
 * await sn.commit("layer-1", "extract");
 * console.log(await sn.usage("layer-1"));
 * await sn.close();
 * db.close();
 * ```
 */
export class NativeSnapshotter implements Snapshotter {
  /** Always `"native"`. */
  readonly name: string = "native";
  /** None: the native snapshotter cannot rebase (every snapshot is a copy of its parent). */
  readonly capabilities: readonly Capability[] = [];
  #root: string;
  #db: MetadataDb;
  #storage: SnapshotStorage;
  #options: NativeSnapshotterOptions;
  #closed = false;

  /**
   * Opens (creating when missing) the native snapshotter in `root`.
   *
   * @param root The snapshotter's own directory, e.g. `<strataRoot>/snapshots/native`.
   * @param db The Strata root's metadata database.
   * @param options Warning receiver and per-file fsync.
   */
  constructor(root: string, db: MetadataDb, options: NativeSnapshotterOptions = {}) {
    this.#root = resolve(root);
    this.#db = db;
    this.#storage = new SnapshotStorage(db, "native");
    this.#options = options;
    for (const dir of [this.#root, join(this.#root, "snapshots")]) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      chmodSync(dir, 0o700);
    }
  }

  /** The snapshotter's directory (absolute). */
  get root(): string {
    return this.#root;
  }

  /**
   * Every OS on the common architectures; see {@linkcode NATIVE_PLATFORMS}.
   *
   * @returns A copy of {@linkcode NATIVE_PLATFORMS}.
   */
  supportedPlatforms(): Platform[] {
    return NATIVE_PLATFORMS.map((p) => ({ ...p }));
  }

  /**
   * Information about a snapshot of any kind.
   *
   * @param key The key or name.
   * @returns Kind, name, parent, labels and times.
   * @throws {NotFound} When the snapshot does not exist.
   */
  stat(key: string): Promise<SnapshotInfo> {
    return this.#run("stat snapshot", () => this.#storage.getInfo(key).info);
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
    return this.#run("update snapshot", () => {
      const fieldpaths = options.fieldpaths;
      return this.#storage.updateInfo(info, fieldpaths === undefined ? {} : { fieldpaths });
    });
  }

  /**
   * Disk usage: the whole directory of an active snapshot (a full copy, so parents included),
   * the value stored at commit for a committed one, zero for a view. The walk of an active
   * snapshot lets the event loop run every few thousand entries.
   *
   * @param key The key or name.
   * @returns Allocated bytes and inodes.
   * @throws {NotFound} When the snapshot does not exist.
   */
  async usage(key: string): Promise<Usage> {
    const { id, info, usage } = await this.#run(
      "get usage of snapshot",
      () => this.#storage.getInfo(key),
    );
    if (info.kind !== "active") return usage;
    try {
      return await diskUsageAsync(this.#dir(id));
    } catch (err) {
      throw this.#missingError(err, id, key, "get usage of");
    }
  }

  /**
   * The bind mount of an active snapshot (read-write) or a view (read-only; a view with a parent
   * shows the parent's directory).
   *
   * @param key The key.
   * @returns One bind mount.
   * @throws {NotFound} When the snapshot does not exist.
   * @throws {FailedPrecondition} When it is committed.
   */
  mounts(key: string): Promise<Mount[]> {
    return this.#run("get mounts of snapshot", () => {
      const s = this.#storage.getSnapshot(key);
      return this.#mounts(s.id, s.kind, s.parentIds);
    });
  }

  /**
   * Creates an active snapshot: an empty `0755` directory, or a full copy of the parent.
   *
   * @param key The new key.
   * @param options Parent and labels.
   * @returns The snapshot's mounts.
   */
  prepare(key: string, options: SnapshotCreateOptions = {}): Promise<Mount[]> {
    return this.#run("prepare snapshot", () => this.#create("active", key, options));
  }

  /**
   * Creates a view: with a parent, no directory (the mount is the parent's, read-only); without
   * one, an empty read-only directory.
   *
   * @param key The new key.
   * @param options Parent and labels.
   * @returns The snapshot's mounts.
   */
  view(key: string, options: SnapshotCreateOptions = {}): Promise<Mount[]> {
    return this.#run("create view", () => this.#create("view", key, options));
  }

  /**
   * Commits active `key` as `name`, storing its disk usage (measured here unless
   * `options.usage` gives it); its directory stays where it is.
   *
   * @param name The committed name.
   * @param key The active key.
   * @param options Labels of the committed snapshot, a parent for a parentless active, and the
   *   usage measured after the last write.
   * @throws {NotFound} When `key` does not exist.
   * @throws {AlreadyExists} When `name` exists.
   * @throws {FailedPrecondition} When `key` is not active, or its directory is missing (a prepare
   *   that crashed while copying).
   * @throws {InvalidArgument} When `options.usage` holds negative or fractional numbers.
   */
  commit(name: string, key: string, options: SnapshotCommitOptions = {}): Promise<void> {
    return this.#run("commit snapshot", () => {
      if (options.usage !== undefined) checkUsage(options.usage, `commit snapshot "${key}"`);
      const { id, info } = this.#storage.getInfo(key);
      let usage: Usage = { size: 0, inodes: 0 };
      if (info.kind === "active") {
        try {
          if (options.usage === undefined) {
            usage = diskUsage(this.#dir(id));
          } else {
            // The directory must be there (a prepare that crashed while copying has none).
            statx(AT_FDCWD, this.#dir(id), 0);
            usage = { size: options.usage.size, inodes: options.usage.inodes };
          }
        } catch (err) {
          throw this.#missingError(err, id, key, "commit");
        }
      }
      // The usage is measured outside the write transaction; the id guard makes sure the record
      // committed is the one measured.
      this.#storage.commitActive(key, name, {
        usage,
        id,
        ...(options.labels === undefined ? {} : { labels: options.labels }),
        ...(options.parent === undefined ? {} : { parent: options.parent }),
      });
    });
  }

  /**
   * Removes a snapshot: the record and a rename of its directory to `rm-<id>` in one transaction,
   * then the directory is deleted.
   *
   * @param key The key or name.
   * @throws {NotFound} When the snapshot does not exist.
   * @throws {FailedPrecondition} When it has children.
   */
  remove(key: string): Promise<void> {
    return this.#run("remove snapshot", () => {
      let renamed: { from: string; to: string } | undefined;
      let id: number;
      try {
        id = this.#db.transaction(() => {
          const removed = this.#storage.remove(key);
          const from = this.#dir(removed.id);
          const to = join(this.#root, "snapshots", `rm-${removed.id}`);
          try {
            Deno.renameSync(from, to);
            renamed = { from, to };
          } catch (err) {
            if (!(err instanceof Deno.errors.NotFound)) throw err;
          }
          return removed.id;
        });
      } catch (err) {
        if (renamed !== undefined) {
          try {
            Deno.renameSync(renamed.to, renamed.from);
          } catch {
            // It stays as rm-<id>; cleanup() keeps it while the record lives.
          }
        }
        throw err;
      }
      removeTree(join(this.#root, "snapshots", `rm-${id}`));
      // The temporary directory of a prepare that crashed while copying.
      removeTree(join(this.#root, "snapshots", `new-${id}`));
    });
  }

  /**
   * Lists snapshots matching any of the filters, in lexicographic order.
   *
   * @param filters containerd filter strings.
   * @returns The matching snapshots.
   */
  list(filters: string[] = []): Promise<SnapshotInfo[]> {
    return this.#run("list snapshots", () => this.#storage.list(filters));
  }

  /**
   * Calls `fn` for each snapshot matching any of the filters, in lexicographic order.
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
   * Deletes directories under `snapshots/` that belong to no snapshot: `rm-*` left by an
   * interrupted remove, `new-*` of records that no longer exist, and orphan `<id>` directories.
   * A `new-<id>` or `rm-<id>` whose record exists is kept (a prepare copying right now, in any
   * process, or a remove whose transaction failed and could not rename the directory back).
   */
  cleanup(): Promise<void> {
    return this.#run("clean up snapshots", () => {
      const dir = join(this.#root, "snapshots");
      // List before reading the ids: a directory is only created after its record is committed,
      // so every directory listed here whose record is live shows up in the id map.
      const names = [...Deno.readDirSync(dir)].map((entry) => entry.name);
      const ids = this.#storage.idMap();
      for (const name of names) {
        const m = /^(?:new-|rm-)?([0-9]+)$/.exec(name);
        if (m !== null && ids.has(Number(m[1]))) continue;
        removeTree(join(dir, name));
      }
    });
  }

  /** Marks the snapshotter closed (the database belongs to the caller); idempotent. */
  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  #dir(id: number): string {
    return join(this.#root, "snapshots", String(id));
  }

  #mounts(id: number, kind: Kind, parentIds: number[]): Mount[] {
    const parent = parentIds[0];
    if (kind === "view" && parent !== undefined) {
      return [{ type: "bind", source: this.#dir(parent), options: ["rbind", "ro"] }];
    }
    return [{
      type: "bind",
      source: this.#dir(id),
      options: ["rbind", kind === "active" ? "rw" : "ro"],
    }];
  }

  /** `err` as it is, or (the snapshot's directory is missing) the `FailedPrecondition` saying so. */
  #missingError(err: unknown, id: number, key: string, action: string): unknown {
    if (!isErrno(err, "ENOENT")) return err;
    return new FailedPrecondition(
      `Cannot ${action} snapshot "${key}": its directory "${
        this.#dir(id)
      }" is missing (a prepare was interrupted; remove the snapshot)`,
    );
  }

  #create(kind: Kind, key: string, options: SnapshotCreateOptions): Mount[] {
    const created = this.#storage.createSnapshot(kind, key, {
      ...(options.parent === undefined ? {} : { parent: options.parent }),
      ...(options.labels === undefined ? {} : { labels: options.labels }),
    });
    const parent = created.parentIds[0];
    if (kind === "view" && parent !== undefined) {
      return this.#mounts(created.id, kind, created.parentIds);
    }
    const temp = join(this.#root, "snapshots", `new-${created.id}`);
    try {
      if (parent === undefined) {
        Deno.mkdirSync(temp, { mode: 0o755 });
        chmodSync(temp, 0o755);
      } else {
        const { warnings } = copyDir(this.#dir(parent), temp, {
          ...(this.#options.fsync === undefined ? {} : { fsync: this.#options.fsync }),
        });
        for (const warning of warnings) this.#options.onWarning?.(warning);
      }
      Deno.renameSync(temp, this.#dir(created.id));
    } catch (err) {
      try {
        this.#storage.remove(key, { id: created.id });
      } catch {
        // Removed meanwhile by someone else.
      }
      removeTree(temp);
      throw err;
    }
    return this.#mounts(created.id, kind, created.parentIds);
  }

  #run<T>(action: string, fn: () => T): Promise<T> {
    if (this.#closed) {
      return Promise.reject(
        new FailedPrecondition(`Cannot ${action}: the native snapshotter is closed`),
      );
    }
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(err);
    }
  }
}

/**
 * Deletes a tree; a missing one is fine. Directories without write permission (copied from an
 * image as a non-root user) are made writable first. What still cannot be deleted stays for
 * cleanup().
 */
function removeTree(path: string): void {
  try {
    Deno.removeSync(path, { recursive: true });
    return;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    if (!(err instanceof Deno.errors.PermissionDenied)) return;
  }
  try {
    makeWritable(path);
    Deno.removeSync(path, { recursive: true });
  } catch {
    // Left for cleanup().
  }
}

function makeWritable(dir: string): void {
  if ((statx(AT_FDCWD, dir, AT_SYMLINK_NOFOLLOW).mode & S_IFMT) !== S_IFDIR) return;
  fchmodat(AT_FDCWD, dir, 0o700, 0);
  for (const entry of readDirAt(AT_FDCWD, dir)) {
    if (entry.type === "dir" || entry.type === "unknown") makeWritable(join(dir, entry.name));
  }
}
