/**
 * The image store: named records pointing at a target descriptor, kept in the metadata database
 * (containerd's `core/metadata/images.go`).
 *
 * @module
 */

import { checkLabels } from "../metadata/labels.ts";
import { AlreadyExists, InvalidArgument, NotFound } from "../errors.ts";
import type { MetadataDb, Row } from "../metadata/db.ts";
import { parseFilters, recordAdaptor } from "../metadata/filters.ts";
import { isValidDigest } from "./digest.ts";
import type { Descriptor, ImageRecord } from "./types.ts";

/** The largest size of a label, key and value together, in UTF-8 bytes. */

/** What is given to create or replace an image record. */
export interface ImageInput {
  /** The image's name; any non-empty string. */
  name: string;
  /** The target; only `mediaType`, `digest`, `size` and `annotations` are stored. */
  target: Descriptor;
  /** Labels; empty values are dropped. */
  labels?: Record<string, string> | undefined;
}

/** What is given to {@linkcode ImageStore.update}; fields not named by the field paths are ignored. */
export interface ImageUpdate {
  /** The name of the image to update. */
  name: string;
  /** The new target, or the source of `annotations` updates. */
  target?: Descriptor | undefined;
  /** The new labels, or the source of `labels.<key>` updates. */
  labels?: Record<string, string> | undefined;
}

/** Options for {@linkcode ImageStore.update}. */
export interface UpdateImageOptions {
  /**
   * What to change: `labels`, `labels.<key>`, `annotations`, `annotations.<key>` (of the target),
   * `target` (replaced as a whole). An empty value for a single key deletes it. Absent or empty:
   * replace everything but the creation time.
   */
  fieldpaths?: readonly string[] | undefined;
}

/** Options for {@linkcode ImageStore.delete}. */
export interface DeleteImageOptions {
  /** Delete only when the stored target has this digest. */
  target?: string | undefined;
}

interface Stored {
  name: string;
  target: Descriptor;
  labels: Record<string, string>;
}

function withoutEmpty(map: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(map ?? {})) if (v !== "") out[k] = v;
  return out;
}

function storedTarget(target: Descriptor): Descriptor {
  const out: Descriptor = { mediaType: target.mediaType, digest: target.digest, size: target.size };
  const annotations = withoutEmpty(target.annotations);
  if (Object.keys(annotations).length > 0) out.annotations = annotations;
  return out;
}

/** Checks an image as containerd's `validateImage` and returns what is stored of it. */
function prepare(image: ImageUpdate, action: string): Stored {
  if (typeof image.name !== "string" || image.name === "") {
    throw new InvalidArgument(`Cannot ${action} image: the name must not be empty`);
  }
  const fail = (why: string): never => {
    throw new InvalidArgument(`Cannot ${action} image "${image.name}": ${why}`);
  };
  const labels = checkLabels(image.labels ?? {}, `Cannot ${action} image "${image.name}"`);
  const t: Partial<Descriptor> | undefined = image.target;
  if (t === undefined || t === null) return fail("the target is missing");
  if (typeof t.digest !== "string" || !isValidDigest(t.digest)) {
    fail(`invalid target digest ${JSON.stringify(t.digest)}`);
  }
  if (typeof t.size !== "number" || !Number.isSafeInteger(t.size) || t.size <= 0) {
    fail(`the target size must be a positive integer: ${JSON.stringify(t.size)}`);
  }
  if (typeof t.mediaType !== "string" || t.mediaType === "") {
    fail("the target media type must be set");
  }
  return { name: image.name, target: storedTarget(image.target!), labels };
}

function fromRow(row: Row): ImageRecord {
  const target: Descriptor = {
    mediaType: String(row.target_media_type),
    digest: String(row.target_digest),
    size: Number(row.target_size),
  };
  const annotations = JSON.parse(String(row.target_annotations)) as Record<string, string>;
  if (Object.keys(annotations).length > 0) target.annotations = annotations;
  return {
    name: String(row.name),
    target,
    labels: JSON.parse(String(row.labels)) as Record<string, string>,
    createdAt: new Date(String(row.created_at)),
    updatedAt: new Date(String(row.updated_at)),
  };
}

/**
 * The image store of a Strata root. Every method runs in its own database transaction, so several
 * stores (in one or several processes) can share a root.
 *
 * @example Create, read and delete an image record
 * ```ts
 * import { MetadataDb } from "../metadata/db.ts";
 * import { ImageStore } from "./store.ts";
 * const db = MetadataDb.open(await Deno.makeTempDir());
 * const store = new ImageStore(db);
 * store.create({
 *   name: "docker.io/library/alpine:3.20",
 *   target: { mediaType: "application/vnd.oci.image.index.v1+json", digest: "sha256:" + "a".repeat(64), size: 9218 },
 * });
 * console.log(store.get("docker.io/library/alpine:3.20").target.digest);
 * store.delete("docker.io/library/alpine:3.20");
 * db.close();
 * ```
 */
export class ImageStore {
  #db: MetadataDb;

  /**
   * Creates a store over a metadata database.
   *
   * @param db The root's metadata database.
   */
  constructor(db: MetadataDb) {
    this.#db = db;
  }

  #row(name: string): Row | undefined {
    return this.#db.get("SELECT * FROM images WHERE name = ?", name);
  }

  /**
   * Returns an image record.
   *
   * @param name The image's name.
   * @returns The record.
   * @throws {NotFound} When there is no image of that name.
   */
  get(name: string): ImageRecord {
    const row = this.#row(name);
    if (row === undefined) throw new NotFound(`Cannot find image "${name}"`);
    return fromRow(row);
  }

  /**
   * Lists image records, sorted by name. Filter fields: `name`, `target.digest`,
   * `target.mediatype`, `labels.<key>`, `annotations.<key>` (see `parseFilters`).
   *
   * @param filters Filter strings; several are alternatives, none lists everything.
   * @returns The matching records.
   * @throws {InvalidArgument} When a filter cannot be parsed.
   */
  list(filters: readonly string[] = []): ImageRecord[] {
    const filter = parseFilters(filters);
    return this.#db.all("SELECT * FROM images ORDER BY name").map(fromRow).filter((image) =>
      filter.match(recordAdaptor(
        {
          name: image.name,
          "target.digest": image.target.digest,
          "target.mediatype": image.target.mediaType,
        },
        { labels: image.labels, annotations: image.target.annotations ?? {} },
      ))
    );
  }

  #insert(image: Stored): ImageRecord {
    const now = new Date().toISOString();
    this.#db.run(
      `INSERT INTO images (name, target_media_type, target_digest, target_size, target_annotations,
        labels, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      image.name,
      image.target.mediaType,
      image.target.digest,
      image.target.size,
      JSON.stringify(image.target.annotations ?? {}),
      JSON.stringify(image.labels),
      now,
      now,
    );
    return this.get(image.name);
  }

  #write(image: Stored): ImageRecord {
    this.#db.run(
      `UPDATE images SET target_media_type = ?, target_digest = ?, target_size = ?,
        target_annotations = ?, labels = ?, updated_at = ? WHERE name = ?`,
      image.target.mediaType,
      image.target.digest,
      image.target.size,
      JSON.stringify(image.target.annotations ?? {}),
      JSON.stringify(image.labels),
      new Date().toISOString(),
      image.name,
    );
    return this.get(image.name);
  }

  /**
   * Creates an image record; its creation and update times are now.
   *
   * @param image The name, target and labels.
   * @returns The stored record.
   * @throws {AlreadyExists} When an image of that name exists.
   * @throws {InvalidArgument} When the name is empty, a label is longer than 4096 bytes, or the
   *   target has an invalid digest, a size that is not positive, or no media type.
   */
  create(image: ImageInput): ImageRecord {
    const stored = prepare(image, "create");
    return this.#db.transaction(() => {
      if (this.#row(stored.name) !== undefined) {
        throw new AlreadyExists(`Cannot create image "${stored.name}": it already exists`);
      }
      return this.#insert(stored);
    });
  }

  /**
   * Updates an image record; the creation time is kept and the update time becomes now.
   *
   * @param image The name of the image and the new values.
   * @param options The field paths to change; none replaces everything.
   * @returns The stored record.
   * @throws {NotFound} When there is no image of that name.
   * @throws {InvalidArgument} When a field path is not supported or the result is invalid (see
   *   {@linkcode ImageStore.create}).
   */
  update(image: ImageUpdate, options: UpdateImageOptions = {}): ImageRecord {
    if (image.name === "") {
      throw new InvalidArgument("Cannot update image: the name must not be empty");
    }
    return this.#db.transaction(() => {
      const row = this.#row(image.name);
      if (row === undefined) throw new NotFound(`Cannot update image "${image.name}": not found`);
      const current = fromRow(row);
      const paths = options.fieldpaths ?? [];
      let next: Stored;
      if (paths.length === 0) {
        next = prepare(image, "update");
      } else {
        const labels = { ...current.labels };
        let target: Descriptor = { ...current.target };
        let annotations: Record<string, string> = { ...current.target.annotations };
        for (const path of paths) {
          if (path.startsWith("labels.")) {
            const key = path.slice("labels.".length);
            labels[key] = image.labels?.[key] ?? "";
          } else if (path.startsWith("annotations.")) {
            const key = path.slice("annotations.".length);
            annotations[key] = image.target?.annotations?.[key] ?? "";
          } else if (path === "labels") {
            for (const k of Object.keys(labels)) delete labels[k];
            Object.assign(labels, image.labels ?? {});
          } else if (path === "annotations") {
            annotations = { ...image.target?.annotations };
          } else if (path === "target") {
            if (image.target === undefined) {
              throw new InvalidArgument(
                `Cannot update image "${image.name}": field path "target" needs a target`,
              );
            }
            target = image.target;
            annotations = { ...image.target.annotations };
          } else {
            throw new InvalidArgument(
              `Cannot update image "${image.name}": unsupported field path "${path}"`,
            );
          }
        }
        next = prepare({ name: image.name, target: { ...target, annotations }, labels }, "update");
      }
      return this.#write(next);
    });
  }

  /**
   * Creates an image record or, when one of that name exists, replaces everything in it but the
   * creation time (the create-or-update step of a pull).
   *
   * @param image The name, target and labels.
   * @returns The stored record.
   * @throws {InvalidArgument} As {@linkcode ImageStore.create}.
   */
  upsert(image: ImageInput): ImageRecord {
    const stored = prepare(image, "store");
    return this.#db.transaction(() =>
      this.#row(stored.name) === undefined ? this.#insert(stored) : this.#write(stored)
    );
  }

  /**
   * Deletes an image record. The blobs it references are left to garbage collection.
   *
   * @param name The image's name.
   * @param options A target digest the stored record must have.
   * @throws {NotFound} When there is no image of that name, or its target digest differs from
   *   `options.target`.
   */
  delete(name: string, options: DeleteImageOptions = {}): void {
    this.#db.transaction(() => {
      const row = this.#row(name);
      if (row === undefined) throw new NotFound(`Cannot delete image "${name}": not found`);
      if (options.target !== undefined && row.target_digest !== options.target) {
        throw new NotFound(
          `Cannot delete image "${name}": its target is "${row.target_digest}", not "${options.target}"`,
        );
      }
      this.#db.run("DELETE FROM images WHERE name = ?", name);
    });
  }
}
