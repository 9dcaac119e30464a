import { checkLabels, MAX_LABEL_BYTES } from "../metadata/labels.ts";
import type { MetadataDb, Row } from "../metadata/db.ts";
import { parseFilters, recordAdaptor } from "../metadata/filters.ts";
import { AlreadyExists, FailedPrecondition, InvalidArgument, NotFound } from "../errors.ts";
import type { Kind, SnapshotInfo, Usage } from "./types.ts";

/** Largest key + value of one label, in bytes (containerd's limit). */
export const MAX_SNAPSHOT_LABEL_BYTES: number = MAX_LABEL_BYTES;

/** What a snapshotter needs to lay out an active or view snapshot. */
export interface StoredSnapshot {
  /** The snapshot's id, unique per snapshotter and never reused. */
  id: number;
  /** `active` or `view`. */
  kind: Kind;
  /** Ids of the ancestors, immediate parent first, root-most last. */
  parentIds: number[];
}

/** A snapshot's id, information and stored usage, as {@linkcode SnapshotStorage.getInfo} returns. */
export interface StoredInfo {
  /** The snapshot's id. */
  id: number;
  /** Kind, name, parent, labels and times. */
  info: SnapshotInfo;
  /** Usage stored at commit; zero for active and view snapshots. */
  usage: Usage;
}

/** Options of {@linkcode SnapshotStorage.createSnapshot}. */
export interface CreateSnapshotOptions {
  /** The committed snapshot to start from; absent or `""` for none. */
  parent?: string;
  /** Labels of the new record (empty values are dropped). */
  labels?: Record<string, string>;
}

/** Options of {@linkcode SnapshotStorage.commitActive}. */
export interface CommitActiveOptions {
  /** Disk usage of the active snapshot, stored with the committed record. */
  usage: Usage;
  /** Labels of the committed record (the active's labels are not inherited). */
  labels?: Record<string, string>;
  /** Parent to set when the active has none (rebase); a different parent is an error. */
  parent?: string;
  /** Commit only if `key` still has this id (the usage was measured on that snapshot). */
  id?: number;
}

/** Options of {@linkcode SnapshotStorage.remove}. */
export interface RemoveSnapshotOptions {
  /** Remove the record only if it still has this id (a record re-created meanwhile is kept). */
  id?: number;
}

/** What {@linkcode SnapshotStorage.remove} removed. */
export interface RemovedSnapshot {
  /** The removed record's id. */
  id: number;
  /** The removed record's kind. */
  kind: Kind;
}

/**
 * containerd's `core/snapshots/storage` over the shared SQLite database: the records of one
 * snapshotter (keys and names in one space, ids from `snapshot_ids` that are never reused, parents
 * by name). Every mutating call is one write transaction; reads are single statements, so a
 * callback of {@linkcode SnapshotStorage.walkInfo} may call back into the storage.
 *
 * @example Create, commit and list snapshots
 * ```ts
 * import { MetadataDb } from "../metadata/db.ts";
 * import { SnapshotStorage } from "./storage.ts";
 *
 * const db = MetadataDb.open(await Deno.makeTempDir());
 * const storage = new SnapshotStorage(db, "example");
 * const { id } = storage.createSnapshot("active", "extract");
 * storage.commitActive("extract", "layer-1", { usage: { size: 0, inodes: 1 } });
 * console.log(id, storage.list().map((info) => info.name));
 * db.close();
 * ```
 */
export class SnapshotStorage {
  #db: MetadataDb;
  #snapshotter: string;

  /**
   * Makes the storage of one snapshotter.
   *
   * @param db The root's metadata database.
   * @param snapshotter The snapshotter's name (the records' namespace).
   */
  constructor(db: MetadataDb, snapshotter: string) {
    this.#db = db;
    this.#snapshotter = snapshotter;
  }

  /** The snapshotter whose records this storage holds. */
  get snapshotter(): string {
    return this.#snapshotter;
  }

  /**
   * Creates an active or view record. The parent is checked before the key: a missing parent is
   * `NotFound` and a parent that is not committed is `InvalidArgument`, even when the key exists.
   *
   * @param kind `active` or `view`.
   * @param key The new key.
   * @param options Parent and labels.
   * @returns The new record's id, kind and ancestor ids (immediate parent first).
   * @throws {InvalidArgument} For another kind, an empty key, a parent that is not committed or an
   *   oversized label.
   * @throws {NotFound} When the parent does not exist.
   * @throws {AlreadyExists} When a snapshot of any kind has the key.
   */
  createSnapshot(kind: Kind, key: string, options: CreateSnapshotOptions = {}): StoredSnapshot {
    const action = `Cannot create ${kind} snapshot "${key}"`;
    if (kind !== "active" && kind !== "view") {
      throw new InvalidArgument(`${action}: the kind must be "active" or "view"`);
    }
    if (key === "") throw new InvalidArgument(`Cannot create ${kind} snapshot: the key is empty`);
    const labels = checkLabels(options.labels ?? {}, action);
    const parent = options.parent ?? "";
    return this.#db.transaction(() => {
      let parentIds: number[] = [];
      if (parent !== "") {
        const row = this.#row(parent);
        if (row === undefined) {
          throw new NotFound(`${action}: parent "${parent}" does not exist`);
        }
        if (row.kind !== "committed") {
          throw new InvalidArgument(
            `${action}: parent "${parent}" is ${row.kind}, only committed snapshots can be parents`,
          );
        }
        const rows = this.#chainRows(parent);
        parentIds = [Number(row.id), ...chainIds(rows, action)];
      }
      if (this.#row(key) !== undefined) {
        throw new AlreadyExists(`${action}: the key exists`);
      }
      const id = this.#nextId();
      const now = new Date().toISOString();
      this.#db.run(
        `INSERT INTO snapshots (snapshotter, name, id, kind, parent, labels, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
        this.#snapshotter,
        key,
        id,
        kind,
        parent === "" ? null : parent,
        JSON.stringify(labels),
        now,
        now,
      );
      return { id, kind, parentIds };
    });
  }

  /**
   * Returns what a snapshotter needs to build the mounts of an active or view snapshot.
   *
   * @param key The key.
   * @returns Id, kind and ancestor ids (immediate parent first).
   * @throws {NotFound} When the key or an ancestor does not exist.
   * @throws {FailedPrecondition} When the key names a committed snapshot.
   */
  getSnapshot(key: string): StoredSnapshot {
    const action = `Cannot get mounts of snapshot "${key}"`;
    const rows = this.#chainRows(key);
    const self = rows[0];
    if (self === undefined) throw new NotFound(`${action}: it does not exist`);
    const kind = String(self.kind) as Kind;
    if (kind !== "active" && kind !== "view") {
      throw new FailedPrecondition(`${action}: it is ${kind}, not active or a view`);
    }
    return { id: Number(self.id), kind, parentIds: chainIds(rows, action) };
  }

  /**
   * Returns a snapshot's id, information and stored usage.
   *
   * @param key The key or name.
   * @returns Id, information and usage (zero unless committed).
   * @throws {NotFound} When the snapshot does not exist.
   */
  getInfo(key: string): StoredInfo {
    const row = this.#row(key);
    if (row === undefined) throw new NotFound(`Cannot stat snapshot "${key}": it does not exist`);
    return {
      id: Number(row.id),
      info: rowToInfo(row),
      usage: { size: Number(row.size ?? 0), inodes: Number(row.inodes ?? 0) },
    };
  }

  /**
   * Updates a snapshot's labels (nothing else is mutable) and its `updated` time. Without field
   * paths, or with `labels`, the labels are replaced; `labels.<key>` sets one label, or deletes it
   * when `info.labels` has no (or an empty) value for it.
   *
   * @param info The snapshot's name and the labels to apply.
   * @param options Field paths.
   * @returns The updated information.
   * @throws {NotFound} When the snapshot does not exist.
   * @throws {InvalidArgument} For a field path other than `labels` and `labels.<key>`, or an
   *   oversized label.
   */
  updateInfo(
    info: { name: string; labels: Record<string, string> },
    options: { fieldpaths?: string[] } = {},
  ): SnapshotInfo {
    const action = `Cannot update snapshot "${info.name}"`;
    return this.#db.transaction(() => {
      const row = this.#row(info.name);
      if (row === undefined) throw new NotFound(`${action}: it does not exist`);
      const current = rowToInfo(row);
      const given = info.labels ?? {};
      let labels: Record<string, string>;
      const fieldpaths = options.fieldpaths ?? [];
      if (fieldpaths.length === 0) {
        labels = { ...given };
      } else {
        labels = { ...current.labels };
        for (const path of fieldpaths) {
          if (path.startsWith("labels.")) {
            const key = path.slice("labels.".length);
            const value = Object.hasOwn(given, key) ? given[key] : undefined;
            if (value === undefined) delete labels[key];
            else labels[key] = value;
          } else if (path === "labels") {
            labels = { ...given };
          } else {
            throw new InvalidArgument(`${action}: the field "${path}" cannot be updated`);
          }
        }
      }
      labels = checkLabels(labels, action);
      const now = new Date().toISOString();
      this.#db.run(
        "UPDATE snapshots SET labels = ?, updated_at = ? WHERE snapshotter = ? AND name = ?",
        JSON.stringify(labels),
        now,
        this.#snapshotter,
        info.name,
      );
      return { ...current, labels, updated: new Date(now) };
    });
  }

  /**
   * Turns active `key` into committed `name`, keeping its id (and so its directory). Checks, in
   * order: `name` exists, `key` missing, `key` not active, a rebase parent that differs from the
   * active's parent, then that the parent still exists and is committed.
   *
   * @param key The active key.
   * @param name The committed name.
   * @param options Usage to store, labels of the committed record, rebase parent, expected id.
   * @returns The id of the committed snapshot.
   * @throws {AlreadyExists} When `name` exists.
   * @throws {NotFound} When `key` (with `options.id`, if given) or the parent does not exist.
   * @throws {FailedPrecondition} When `key` is not active or the parent is not committed.
   * @throws {InvalidArgument} When the rebase parent differs from the active's parent, `name` is
   *   empty or a label is oversized.
   */
  commitActive(key: string, name: string, options: CommitActiveOptions): number {
    const action = `Cannot commit snapshot "${key}" as "${name}"`;
    if (name === "") throw new InvalidArgument(`${action}: the name is empty`);
    const labels = checkLabels(options.labels ?? {}, action);
    return this.#db.transaction(() => {
      if (this.#row(name) !== undefined) {
        throw new AlreadyExists(`${action}: "${name}" exists`);
      }
      const row = this.#row(key);
      if (row === undefined || (options.id !== undefined && Number(row.id) !== options.id)) {
        throw new NotFound(`${action}: "${key}" does not exist`);
      }
      if (row.kind !== "active") {
        throw new FailedPrecondition(`${action}: it is ${row.kind}, only active snapshots commit`);
      }
      let parent = row.parent === null || row.parent === undefined ? "" : String(row.parent);
      const rebase = options.parent ?? "";
      if (rebase !== "") {
        if (parent === "") {
          parent = rebase;
        } else if (parent !== rebase) {
          throw new InvalidArgument(
            `${action}: it has parent "${parent}", which differs from the requested "${rebase}"`,
          );
        }
      }
      if (parent !== "") {
        const p = this.#row(parent);
        if (p === undefined) throw new NotFound(`${action}: parent "${parent}" does not exist`);
        if (p.kind !== "committed") {
          throw new FailedPrecondition(`${action}: parent "${parent}" is ${p.kind}, not committed`);
        }
      }
      const now = new Date().toISOString();
      this.#db.run(
        `UPDATE snapshots SET name = ?, kind = 'committed', parent = ?, labels = ?, created_at = ?,
           updated_at = ?, size = ?, inodes = ?
         WHERE snapshotter = ? AND name = ?`,
        name,
        parent === "" ? null : parent,
        JSON.stringify(labels),
        now,
        now,
        Math.max(0, Math.trunc(options.usage.size)),
        Math.max(0, Math.trunc(options.usage.inodes)),
        this.#snapshotter,
        key,
      );
      return Number(row.id);
    });
  }

  /**
   * Removes a record of any kind. Called inside the caller's `db.transaction`, it joins that
   * transaction (so the caller can do more work, such as renaming a directory, all-or-nothing).
   *
   * @param key The key or name.
   * @param options Remove only if the record still has this id.
   * @returns The removed record's id and kind.
   * @throws {NotFound} When the snapshot does not exist (or has another id than `options.id`).
   * @throws {FailedPrecondition} When other snapshots have it as parent.
   */
  remove(key: string, options: RemoveSnapshotOptions = {}): RemovedSnapshot {
    return this.#db.transaction(() => {
      const action = `Cannot remove snapshot "${key}"`;
      const row = this.#row(key);
      if (row === undefined || (options.id !== undefined && Number(row.id) !== options.id)) {
        throw new NotFound(`${action}: it does not exist`);
      }
      const child = this.#db.get(
        "SELECT name FROM snapshots WHERE snapshotter = ? AND parent = ? ORDER BY name LIMIT 1",
        this.#snapshotter,
        key,
      );
      if (child !== undefined) {
        throw new FailedPrecondition(
          `${action}: it has children (for example "${String(child.name)}"), remove them first`,
        );
      }
      this.#db.run(
        "DELETE FROM snapshots WHERE snapshotter = ? AND name = ?",
        this.#snapshotter,
        key,
      );
      return { id: Number(row.id), kind: String(row.kind) as Kind };
    });
  }

  /**
   * Lists the snapshots matching any of the filters, in byte-wise lexicographic order of their
   * names. Filter fields: `kind` (`active`, `view`, `committed`), `name`, `parent` (present even
   * when empty), `labels.<key>`.
   *
   * @param filters containerd filter strings; none means all.
   * @returns The matching snapshots.
   * @throws {InvalidArgument} When a filter cannot be parsed.
   */
  list(filters: string[] = []): SnapshotInfo[] {
    const filter = parseFilters(filters);
    const rows = this.#db.all(
      "SELECT * FROM snapshots WHERE snapshotter = ? ORDER BY name",
      this.#snapshotter,
    );
    const out: SnapshotInfo[] = [];
    for (const row of rows) {
      const info = rowToInfo(row);
      const adaptor = recordAdaptor(
        { kind: info.kind, name: info.name, parent: info.parent ?? "" },
        { labels: info.labels },
      );
      if (filter.match(adaptor)) out.push(info);
    }
    return out;
  }

  /**
   * Calls `fn` for each snapshot matching any of the filters, in lexicographic order. The records
   * are read before the first call, so `fn` may use the storage (or change it).
   *
   * @param fn The callback.
   * @param filters containerd filter strings; none means all.
   * @throws {InvalidArgument} When a filter cannot be parsed.
   */
  async walkInfo(
    fn: (info: SnapshotInfo) => void | Promise<void>,
    filters: string[] = [],
  ): Promise<void> {
    for (const info of this.list(filters)) await fn(info);
  }

  /**
   * Maps every record's id to its key or name (to find directories that belong to no snapshot).
   *
   * @returns Id to key or name.
   */
  idMap(): Map<number, string> {
    const rows = this.#db.all(
      "SELECT id, name FROM snapshots WHERE snapshotter = ?",
      this.#snapshotter,
    );
    return new Map(rows.map((row) => [Number(row.id), String(row.name)]));
  }

  #row(name: string): Row | undefined {
    return this.#db.get(
      "SELECT * FROM snapshots WHERE snapshotter = ? AND name = ?",
      this.#snapshotter,
      name,
    );
  }

  /** The rows of `name` and its ancestors, `name` first. */
  #chainRows(name: string): Row[] {
    return this.#db.all(
      `WITH RECURSIVE chain(depth, name, id, kind, parent) AS (
         SELECT 0, name, id, kind, parent FROM snapshots WHERE snapshotter = ?1 AND name = ?2
         UNION ALL
         SELECT chain.depth + 1, s.name, s.id, s.kind, s.parent FROM snapshots s
           JOIN chain ON s.snapshotter = ?1 AND s.name = chain.parent
           WHERE chain.depth < 100000
       )
       SELECT depth, name, id, kind, parent FROM chain ORDER BY depth`,
      this.#snapshotter,
      name,
    );
  }

  #nextId(): number {
    const row = this.#db.get(
      `INSERT INTO snapshot_ids (snapshotter, last_id) VALUES (?, 1)
       ON CONFLICT (snapshotter) DO UPDATE SET last_id = last_id + 1
       RETURNING last_id`,
      this.#snapshotter,
    );
    return Number(row?.last_id);
  }
}

/** Ancestor ids from a recursive chain query (row 0 is the snapshot itself). */
function chainIds(rows: Row[], action: string): number[] {
  const ids: number[] = [];
  for (let i = 1; i < rows.length; i++) ids.push(Number(rows[i]!.id));
  const last = rows[rows.length - 1];
  if (last !== undefined && last.parent !== null && last.parent !== undefined) {
    throw new NotFound(`${action}: ancestor "${String(last.parent)}" does not exist`);
  }
  return ids;
}

function rowToInfo(row: Row): SnapshotInfo {
  let labels: Record<string, string> = {};
  try {
    const parsed: unknown = JSON.parse(String(row.labels ?? "{}"));
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
      labels = parsed as Record<string, string>;
    }
  } catch {
    // A corrupt labels column reads as no labels.
  }
  const parent = row.parent === null || row.parent === undefined ? "" : String(row.parent);
  const info: SnapshotInfo = {
    kind: String(row.kind) as Kind,
    name: String(row.name),
    ...(parent === "" ? {} : { parent }),
    labels,
    created: new Date(String(row.created_at)),
    updated: new Date(String(row.updated_at)),
  };
  return info;
}
