import type { Platform } from "../images/types.ts";
import type { Mount } from "../mount/types.ts";

/** The kind of a snapshot (containerd's `Kind`; JSON and `String()` forms are capitalised there). */
export type Kind = "view" | "active" | "committed";

/** What a snapshotter knows about one snapshot. */
export interface SnapshotInfo {
  /** The kind. */
  kind: Kind;
  /** The key (active, view) or name (committed). */
  name: string;
  /** The committed parent's name; absent for none. */
  parent?: string;
  /** Labels; empty values are never stored. */
  labels: Record<string, string>;
  /** When the snapshot was created. */
  created: Date;
  /** When the snapshot last changed. */
  updated: Date;
}

/** Disk resources a snapshot uses (allocated bytes and distinct inodes). */
export interface Usage {
  /** Allocated bytes (`st_blocks * 512` over distinct inodes). */
  size: number;
  /** Number of distinct inodes. */
  inodes: number;
}

/** Options of {@linkcode Snapshotter.prepare} and {@linkcode Snapshotter.view}. */
export interface SnapshotCreateOptions {
  /** The committed snapshot to start from; none means an empty directory. */
  parent?: string;
  /** Labels of the new snapshot. */
  labels?: Record<string, string>;
}

/** Options of {@linkcode Snapshotter.commit}. */
export interface SnapshotCommitOptions {
  /** Labels of the committed snapshot (the active's labels are not inherited). */
  labels?: Record<string, string>;
  /** Parent to set when the active snapshot has none (the `rebase` capability). */
  parent?: string;
  /**
   * The disk usage of the active snapshot as {@linkcode Snapshotter.usage} measured it after the
   * last write to it: stored as it is instead of walking the snapshot again inside the commit
   * (checked: two non-negative integers). The unpacker measures a layer while the layer's
   * `syncfs` runs, so that the commit after the sync is short. A value measured before a later
   * write stores a wrong usage.
   */
  usage?: Usage;
}

/** Options of {@linkcode Snapshotter.update}. */
export interface SnapshotUpdateOptions {
  /** `labels` (replace all) or `labels.<key>` (set one; an empty value removes it). */
  fieldpaths?: string[];
}

/** Capabilities a snapshotter may declare. */
export type Capability = "rebase";

/**
 * A snapshotter with containerd's contract: keys and names share one space per snapshotter; only
 * committed snapshots can be parents; errors are Strata's typed errors as containerd's storage
 * layer returns them.
 */
export interface Snapshotter {
  /** The snapshotter's name (`overlayfs`, `native`). */
  readonly name: string;
  /** Capabilities, such as `rebase`. */
  readonly capabilities: readonly Capability[];
  /**
   * The platforms whose images this snapshotter can unpack.
   *
   * @returns The platforms (an `os` with architecture `*`-free entries; see each implementation).
   */
  supportedPlatforms(): Platform[];
  /**
   * Information about a snapshot of any kind.
   *
   * @param key The key or name.
   */
  stat(key: string): Promise<SnapshotInfo>;
  /**
   * Updates labels (only labels are mutable).
   *
   * @param info The snapshot's name and the labels to set.
   * @param options Field paths.
   */
  update(
    info: { name: string; labels: Record<string, string> },
    options?: SnapshotUpdateOptions,
  ): Promise<SnapshotInfo>;
  /**
   * Disk usage: live for active, stored at commit for committed, zero for views.
   *
   * @param key The key or name.
   */
  usage(key: string): Promise<Usage>;
  /**
   * The mounts of an active or view snapshot.
   *
   * @param key The key.
   */
  mounts(key: string): Promise<Mount[]>;
  /**
   * Creates an active (writable) snapshot.
   *
   * @param key The new key.
   * @param options Parent and labels.
   */
  prepare(key: string, options?: SnapshotCreateOptions): Promise<Mount[]>;
  /**
   * Creates a read-only view.
   *
   * @param key The new key.
   * @param options Parent and labels.
   */
  view(key: string, options?: SnapshotCreateOptions): Promise<Mount[]>;
  /**
   * Commits an active snapshot under a new name; the active key is gone afterwards.
   *
   * @param name The committed name.
   * @param key The active key.
   * @param options Labels and a rebase parent.
   */
  commit(name: string, key: string, options?: SnapshotCommitOptions): Promise<void>;
  /**
   * Removes a snapshot (children first).
   *
   * @param key The key or name.
   */
  remove(key: string): Promise<void>;
  /**
   * Lists snapshots matching any of the filters, in lexicographic order of their names.
   *
   * @param filters containerd filter strings over `kind`, `name`, `parent`, `labels.<k>`.
   */
  list(filters?: string[]): Promise<SnapshotInfo[]>;
  /**
   * Calls `fn` for each snapshot matching any of the filters, in lexicographic order.
   *
   * @param fn The callback.
   * @param filters Filter strings.
   */
  walk(fn: (info: SnapshotInfo) => void | Promise<void>, filters?: string[]): Promise<void>;
  /** Removes directories of removed snapshots and crashed creations. */
  cleanup(): Promise<void>;
  /** Releases resources; idempotent. */
  close(): Promise<void>;
}
