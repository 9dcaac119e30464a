import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { FailedPrecondition } from "../errors.ts";

/** A row as returned by a query: column name to value. */
export type Row = Record<string, SQLInputValue>;

/**
 * One schema migration: the version it brings the database to and the SQL that gets it there.
 * Migrations run in order, each in its own transaction, and are recorded in `PRAGMA user_version`.
 */
export interface Migration {
  /** The schema version after this migration ran (1, 2, ...). */
  version: number;
  /** The statements to run. */
  sql: string;
}

/** The schema, one migration per version. Later areas append; nothing is ever edited in place. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE content (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}'
      );
      CREATE TABLE images (
        name TEXT PRIMARY KEY,
        target_media_type TEXT NOT NULL,
        target_digest TEXT NOT NULL,
        target_size INTEGER NOT NULL,
        target_annotations TEXT NOT NULL DEFAULT '{}',
        labels TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      );
      CREATE INDEX images_target ON images (target_digest);
    `,
  },
  {
    version: 2,
    sql: `
      CREATE TABLE snapshot_ids (
        snapshotter TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL
      );
      CREATE TABLE snapshots (
        snapshotter TEXT NOT NULL,
        name TEXT NOT NULL,
        id INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('view', 'active', 'committed')),
        parent TEXT,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        inodes INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (snapshotter, name),
        UNIQUE (snapshotter, id)
      );
      CREATE INDEX snapshots_parent ON snapshots (snapshotter, parent);
    `,
  },
  {
    version: 3,
    sql: `
      CREATE TABLE leases (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}'
      );
      CREATE TABLE lease_resources (
        lease_id TEXT NOT NULL REFERENCES leases (id) ON DELETE CASCADE,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (lease_id, type, id)
      );
      CREATE INDEX lease_resources_object ON lease_resources (type, id);
    `,
  },
];

/** Options for {@linkcode MetadataDb.open}. */
export interface OpenDatabaseOptions {
  /** How long a writer waits for another process's lock, in milliseconds (default 30000). */
  busyTimeoutMs?: number;
}

/**
 * Switches to the WAL journal. SQLite answers "database is locked" at once, without calling the
 * busy handler, when another process is switching a new database at the same moment, so this
 * retries until the busy timeout.
 */
function setWalMode(db: DatabaseSync, timeoutMs: number): void {
  const deadline = Date.now() + timeoutMs;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let wait = 1;; wait = Math.min(wait * 2, 100)) {
    try {
      db.exec("PRAGMA journal_mode=WAL");
      return;
    } catch (err) {
      if (!/database is locked/.test(String(err)) || Date.now() >= deadline) throw err;
      Atomics.wait(pause, 0, 0, wait);
    }
  }
}

/**
 * The SQLite database of one Strata root (`<root>/metadata.db`): WAL journal, `synchronous=FULL`,
 * a busy timeout so several processes can share a root, and a versioned schema.
 *
 * @example Open a root's database and read its schema version
 * ```ts
 * import { MetadataDb } from "@strata/strata/metadata";
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * console.log(db.schemaVersion);
 * db.close();
 * ```
 */
export class MetadataDb {
  #db: DatabaseSync;
  #depth = 0;

  private constructor(db: DatabaseSync) {
    this.#db = db;
  }

  /**
   * Opens (creating when missing) the database of `root` and brings its schema up to date.
   *
   * @param root The Strata root directory.
   * @param options Busy timeout.
   * @returns The open database.
   */
  static open(root: string, options: OpenDatabaseOptions = {}): MetadataDb {
    mkdirSync(root, { recursive: true });
    const timeoutMs = options.busyTimeoutMs ?? 30_000;
    const db = new DatabaseSync(join(root, "metadata.db"), { timeout: timeoutMs });
    setWalMode(db, timeoutMs);
    db.exec("PRAGMA synchronous=FULL");
    db.exec("PRAGMA foreign_keys=ON");
    const meta = new MetadataDb(db);
    meta.#migrate();
    return meta;
  }

  /** The schema version recorded in the database. */
  get schemaVersion(): number {
    const row = this.#db.prepare("PRAGMA user_version").get() as { user_version: number };
    return row.user_version;
  }

  #migrate(): void {
    const latest = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;
    if (this.schemaVersion > latest) {
      throw new FailedPrecondition(
        `Cannot open metadata database: schema version ${this.schemaVersion} is newer than this Strata (${latest})`,
      );
    }
    for (const m of MIGRATIONS) {
      this.transaction(() => {
        // Re-read inside the write lock: another process may have migrated meanwhile.
        if (this.schemaVersion >= m.version) return;
        this.#db.exec(m.sql);
        this.#db.exec(`PRAGMA user_version = ${m.version}`);
      });
    }
  }

  /**
   * Runs `fn` in one write transaction (`BEGIN IMMEDIATE`), committing when it returns and rolling
   * back when it throws. Nested calls join the outer transaction.
   *
   * @param fn The work to do.
   * @returns What `fn` returned.
   */
  transaction<T>(fn: () => T): T {
    if (this.#depth > 0) {
      this.#depth++;
      try {
        return fn();
      } finally {
        this.#depth--;
      }
    }
    this.#db.exec("BEGIN IMMEDIATE");
    this.#depth = 1;
    try {
      const result = fn();
      this.#db.exec("COMMIT");
      return result;
    } catch (err) {
      this.#db.exec("ROLLBACK");
      throw err;
    } finally {
      this.#depth = 0;
    }
  }

  /**
   * Runs a statement and returns every row.
   *
   * @param sql The statement, with `?` placeholders.
   * @param params The values for the placeholders.
   * @returns The rows.
   */
  all(sql: string, ...params: SQLInputValue[]): Row[] {
    return this.#db.prepare(sql).all(...params) as Row[];
  }

  /**
   * Runs a statement and returns its first row, if any.
   *
   * @param sql The statement, with `?` placeholders.
   * @param params The values for the placeholders.
   * @returns The first row or `undefined`.
   */
  get(sql: string, ...params: SQLInputValue[]): Row | undefined {
    return this.#db.prepare(sql).get(...params) as Row | undefined;
  }

  /**
   * Runs a statement that changes data.
   *
   * @param sql The statement, with `?` placeholders.
   * @param params The values for the placeholders.
   * @returns How many rows changed.
   */
  run(sql: string, ...params: SQLInputValue[]): number {
    return Number(this.#db.prepare(sql).run(...params).changes);
  }

  /** Closes the database. */
  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}
