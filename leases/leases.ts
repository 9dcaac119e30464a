import { randomBytes } from "node:crypto";
import process from "node:process";
import { AlreadyExists, InvalidArgument, isNotFound, NotFound, NotImplemented } from "../errors.ts";
import { isValidDigest } from "../images/digest.ts";
import type { MetadataDb, Row } from "../metadata/db.ts";
import { parseFilters, recordAdaptor } from "../metadata/filters.ts";
import { checkLabels } from "../metadata/labels.ts";

/** Lease and image label: when the object stops being a GC root (RFC 3339). */
export const LABEL_GC_EXPIRE = "containerd.io/gc.expire";
/** Lease label: pin only the listed objects, not what they reference. */
export const LABEL_GC_FLAT = "containerd.io/gc.flat";
/** How long the leases of {@linkcode withLease} live by default: 24 hours, as containerd's. */
export const DEFAULT_LEASE_EXPIRATION_MS: number = 24 * 60 * 60 * 1000;

/** A lease: a named set of resources that garbage collection keeps while the lease lives. */
export interface Lease {
  /** The lease's id. */
  id: string;
  /** When the lease was created. */
  createdAt: Date;
  /** Labels, such as {@linkcode LABEL_GC_EXPIRE}. */
  labels: Record<string, string>;
}

/**
 * A resource a lease pins. Types: `content` (id: a digest), `ingests` (id: an ingest ref),
 * `images` (id: an image name) and `snapshots/<snapshotter>` (id: a snapshot key or name). The
 * object need not exist yet: pinning before creating is how work in flight stays safe.
 */
export interface LeaseResource {
  /** The resource type. */
  type: string;
  /** The resource's id within its type. */
  id: string;
}

/** Options for {@linkcode LeaseManager.create}. */
export interface CreateLeaseOptions {
  /** The id; default a random one (see {@linkcode randomLeaseId}). */
  id?: string;
  /** Labels of the lease. */
  labels?: Record<string, string>;
  /**
   * Milliseconds from now until the lease expires; sets {@linkcode LABEL_GC_EXPIRE}. May be
   * negative (an already expired lease). Default: no expiry.
   */
  expiration?: number;
}

/** Options for {@linkcode withLease}. */
export interface WithLeaseOptions {
  /** Milliseconds until the lease expires (default 24 hours). */
  expiration?: number;
  /** Extra labels of the lease. */
  labels?: Record<string, string>;
}

const ID = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const MAX_ID_LENGTH = 76;

function checkId(id: string, action: string): void {
  if (typeof id !== "string" || id === "") {
    throw new InvalidArgument(`${action}: the lease id is empty`);
  }
  if (id.length > MAX_ID_LENGTH || !ID.test(id)) {
    throw new InvalidArgument(
      `${action}: invalid lease id "${id}" (letters, digits, ".", "_" and "-", starting with a letter or digit, at most ${MAX_ID_LENGTH} characters)`,
    );
  }
}

/**
 * Checks a lease resource as containerd does: known types only, a digest for `content`.
 *
 * @example
 * ```ts
 * import { checkLeaseResource } from "@strata/strata/leases";
 * checkLeaseResource({ type: "snapshots/native", id: "layer-1" }, "Cannot pin");
 * ```
 *
 * @param resource The resource.
 * @param action What is being done, for the message.
 * @returns Nothing; throws when the resource is invalid.
 * @throws {InvalidArgument} For an empty id, a `content` id that is not a digest, or an empty
 *   snapshotter name.
 * @throws {NotImplemented} For an unknown type.
 */
export function checkLeaseResource(resource: LeaseResource, action: string): void {
  const { type, id } = resource;
  if (typeof id !== "string" || id === "") {
    throw new InvalidArgument(`${action}: resource of type "${type}" has an empty id`);
  }
  if (type === "content") {
    if (!isValidDigest(id)) {
      throw new InvalidArgument(`${action}: content resource "${id}" is not a valid digest`);
    }
  } else if (type === "ingests" || type === "images") {
    // Any non-empty id.
  } else if (typeof type === "string" && type.startsWith("snapshots/")) {
    if (type === "snapshots/") {
      throw new InvalidArgument(`${action}: snapshot resource "${id}" names no snapshotter`);
    }
  } else {
    throw new NotImplemented(`${action}: unsupported resource type "${type}"`);
  }
}

/**
 * When a lease or image with these labels expires: the time in {@linkcode LABEL_GC_EXPIRE}, or
 * `undefined` when the label is absent or cannot be parsed (containerd ignores such values).
 *
 * @example
 * ```ts
 * import { expiryOf } from "@strata/strata/leases";
 * console.log(expiryOf({ "containerd.io/gc.expire": "2030-01-01T00:00:00Z" }));
 * ```
 *
 * @param labels The labels.
 * @returns The expiry time, if any.
 */
export function expiryOf(labels: Record<string, string>): Date | undefined {
  const value = labels[LABEL_GC_EXPIRE];
  if (value === undefined) return undefined;
  // RFC 3339: a date, "T", a time with optional fraction, and a zone.
  if (!/^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$/.test(value)) {
    return undefined;
  }
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/**
 * Whether labels carry a {@linkcode LABEL_GC_EXPIRE} time that has passed.
 *
 * @example
 * ```ts
 * import { isExpired } from "@strata/strata/leases";
 * console.log(isExpired({ "containerd.io/gc.expire": "2000-01-01T00:00:00Z" }));
 * ```
 *
 * @param labels The labels of a lease or an image.
 * @param now The current time (default now).
 * @returns `true` when expired.
 */
export function isExpired(labels: Record<string, string>, now: Date = new Date()): boolean {
  const expiry = expiryOf(labels);
  return expiry !== undefined && expiry.getTime() <= now.getTime();
}

/**
 * A random lease id in containerd's format: `<nanoseconds>-<base64url of 3 random bytes>`.
 *
 * @example
 * ```ts
 * import { randomLeaseId } from "@strata/strata/leases";
 * console.log(randomLeaseId());
 * ```
 *
 * @returns The id.
 */
export function randomLeaseId(): string {
  const ns = BigInt(Date.now()) * 1_000_000n + process.hrtime.bigint() % 1_000_000n;
  // base64url may end in "-" or "_"; such an id is still valid here (only the start is checked).
  return `${ns}-${randomBytes(3).toString("base64url")}`;
}

function rowToLease(row: Row): Lease {
  let labels: Record<string, string> = {};
  try {
    const parsed: unknown = JSON.parse(String(row.labels ?? "{}"));
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
      labels = parsed as Record<string, string>;
    }
  } catch {
    // A corrupt labels column reads as no labels.
  }
  return { id: String(row.id), createdAt: new Date(String(row.created_at)), labels };
}

/**
 * containerd's lease manager over a root's metadata database: leases with labels (an expiry
 * among them) and the resources each pins. Garbage collection keeps whatever an unexpired lease
 * pins, and what that references. Deleting a lease deletes no object; its objects become
 * collectable when nothing else keeps them.
 *
 * @example Pin a blob while working on it
 * ```ts
 * import { MetadataDb } from "@strata/strata/metadata";
 * import { LeaseManager } from "@strata/strata/leases";
 *
 * const db = MetadataDb.open(await Deno.makeTempDir());
 * const leases = new LeaseManager(db);
 * const lease = leases.create({ expiration: 60_000 });
 * leases.addResource(lease.id, { type: "content", id: "sha256:" + "0".repeat(64) });
 * console.log(leases.listResources(lease.id));
 * leases.delete(lease.id);
 * db.close();
 * ```
 */
export class LeaseManager {
  #db: MetadataDb;

  /**
   * Creates a manager over a metadata database.
   *
   * @param db The root's metadata database.
   */
  constructor(db: MetadataDb) {
    this.#db = db;
  }

  /**
   * Creates a lease.
   *
   * @param options Id, labels and expiration.
   * @returns The new lease.
   * @throws {AlreadyExists} When a lease has the id.
   * @throws {InvalidArgument} For an invalid id, an invalid expiration or an oversized label.
   */
  create(options: CreateLeaseOptions = {}): Lease {
    const id = options.id ?? randomLeaseId();
    const action = `Cannot create lease "${id}"`;
    checkId(id, "Cannot create lease");
    const labels = checkLabels({ ...options.labels }, action);
    if (options.expiration !== undefined) {
      if (!Number.isFinite(options.expiration)) {
        throw new InvalidArgument(`${action}: invalid expiration ${options.expiration}`);
      }
      labels[LABEL_GC_EXPIRE] = new Date(Date.now() + options.expiration).toISOString();
    }
    const createdAt = new Date();
    this.#db.transaction(() => {
      if (this.#db.get("SELECT id FROM leases WHERE id = ?", id) !== undefined) {
        throw new AlreadyExists(`${action}: it already exists`);
      }
      this.#db.run(
        "INSERT INTO leases (id, created_at, labels) VALUES (?, ?, ?)",
        id,
        createdAt.toISOString(),
        JSON.stringify(labels),
      );
    });
    return { id, createdAt, labels };
  }

  /**
   * Returns a lease.
   *
   * @param id The lease's id.
   * @returns The lease.
   * @throws {NotFound} When there is no such lease.
   */
  get(id: string): Lease {
    const row = this.#db.get("SELECT * FROM leases WHERE id = ?", id);
    if (row === undefined) throw new NotFound(`Cannot find lease "${id}"`);
    return rowToLease(row);
  }

  /**
   * Lists leases, sorted by id. Filter fields: `id`, `labels.<key>` (containerd syntax; several
   * filters are alternatives).
   *
   * @param filters The filters; none lists every lease.
   * @returns The matching leases.
   * @throws {InvalidArgument} When a filter cannot be parsed.
   */
  list(filters: readonly string[] = []): Lease[] {
    const filter = parseFilters(filters);
    return this.#db.all("SELECT * FROM leases ORDER BY id").map(rowToLease).filter((lease) =>
      filter.match(recordAdaptor({ id: lease.id }, { labels: lease.labels }))
    );
  }

  /**
   * Deletes a lease and its resource list (not the resources).
   *
   * @param id The lease's id.
   * @returns Nothing.
   * @throws {NotFound} When there is no such lease.
   */
  delete(id: string): void {
    const changed = this.#db.run("DELETE FROM leases WHERE id = ?", id);
    if (changed === 0) throw new NotFound(`Cannot delete lease "${id}": not found`);
  }

  /**
   * Pins a resource to a lease (idempotent). The object need not exist.
   *
   * @param id The lease's id.
   * @param resource The resource.
   * @returns Nothing.
   * @throws {NotFound} When there is no such lease.
   * @throws {InvalidArgument} For an invalid resource (see {@linkcode checkLeaseResource}).
   * @throws {NotImplemented} For an unknown resource type.
   */
  addResource(id: string, resource: LeaseResource): void {
    this.addResources(id, [resource]);
  }

  /**
   * Pins several resources to a lease in one transaction (idempotent); all or none are added.
   *
   * @param id The lease's id.
   * @param resources The resources.
   * @returns Nothing.
   * @throws {NotFound} When there is no such lease.
   * @throws {InvalidArgument} For an invalid resource (see {@linkcode checkLeaseResource}).
   * @throws {NotImplemented} For an unknown resource type.
   */
  addResources(id: string, resources: readonly LeaseResource[]): void {
    const action = `Cannot add a resource to lease "${id}"`;
    for (const resource of resources) checkLeaseResource(resource, action);
    this.#db.transaction(() => {
      if (this.#db.get("SELECT id FROM leases WHERE id = ?", id) === undefined) {
        throw new NotFound(`${action}: the lease does not exist`);
      }
      for (const resource of resources) {
        this.#db.run(
          "INSERT OR IGNORE INTO lease_resources (lease_id, type, id) VALUES (?, ?, ?)",
          id,
          resource.type,
          resource.id,
        );
      }
    });
  }

  /**
   * Unpins a resource from a lease; a resource the lease does not hold is ignored.
   *
   * @param id The lease's id.
   * @param resource The resource.
   * @returns Nothing.
   * @throws {NotFound} When there is no such lease.
   * @throws {InvalidArgument} For an invalid resource.
   * @throws {NotImplemented} For an unknown resource type.
   */
  deleteResource(id: string, resource: LeaseResource): void {
    const action = `Cannot delete a resource from lease "${id}"`;
    checkLeaseResource(resource, action);
    this.#db.transaction(() => {
      if (this.#db.get("SELECT id FROM leases WHERE id = ?", id) === undefined) {
        throw new NotFound(`${action}: the lease does not exist`);
      }
      this.#db.run(
        "DELETE FROM lease_resources WHERE lease_id = ? AND type = ? AND id = ?",
        id,
        resource.type,
        resource.id,
      );
    });
  }

  /**
   * Lists the resources a lease pins, sorted by type then id.
   *
   * @param id The lease's id.
   * @returns The resources.
   * @throws {NotFound} When there is no such lease.
   */
  listResources(id: string): LeaseResource[] {
    return this.#db.transaction(() => {
      if (this.#db.get("SELECT id FROM leases WHERE id = ?", id) === undefined) {
        throw new NotFound(`Cannot list the resources of lease "${id}": the lease does not exist`);
      }
      return this.#db.all(
        "SELECT type, id FROM lease_resources WHERE lease_id = ? ORDER BY type, id",
        id,
      ).map((row) => ({ type: String(row.type), id: String(row.id) }));
    });
  }
}

/**
 * Runs `fn` under a new lease with a random id and an expiry (24 hours by default), and deletes
 * the lease when `fn` settles, as containerd's client does around pull, import and unpack. If the
 * process dies first, the lease expires and garbage collection removes what it pinned.
 *
 * @example
 * ```ts
 * import { MetadataDb } from "@strata/strata/metadata";
 * import { LeaseManager, withLease } from "@strata/strata/leases";
 *
 * const db = MetadataDb.open(await Deno.makeTempDir());
 * const leases = new LeaseManager(db);
 * await withLease(leases, (lease) => {
 *   leases.addResource(lease.id, { type: "ingests", id: "my-download" });
 *   return Promise.resolve();
 * });
 * db.close();
 * ```
 *
 * @param manager The lease manager.
 * @param fn The work; it receives the lease.
 * @param options Expiration and labels.
 * @returns What `fn` returned.
 */
export async function withLease<T>(
  manager: LeaseManager,
  fn: (lease: Lease) => Promise<T>,
  options: WithLeaseOptions = {},
): Promise<T> {
  const lease = manager.create({
    ...(options.labels !== undefined ? { labels: options.labels } : {}),
    expiration: options.expiration ?? DEFAULT_LEASE_EXPIRATION_MS,
  });
  const release = () => {
    try {
      manager.delete(lease.id);
    } catch (err) {
      // Garbage collection removed it after it expired.
      if (!isNotFound(err)) throw err;
    }
  };
  let result: T;
  try {
    result = await fn(lease);
  } catch (err) {
    try {
      release();
    } catch {
      // The work's error matters more; the lease expires on its own.
    }
    throw err;
  }
  release();
  return result;
}
