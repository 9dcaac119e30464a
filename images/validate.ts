/**
 * Parsing and structural validation of manifests, indexes, image configs and descriptors. Every
 * problem is an {@linkcode InvalidArgument} whose message names the offending field path, such as
 * `Cannot parse manifest: "layers[2].digest" is not a valid digest: "sha256:xyz"`.
 *
 * @module
 */

import { InvalidArgument, NotImplemented } from "../errors.ts";
import { isValidDigest } from "./digest.ts";
import { isIndexType, isManifestType } from "./media_types.ts";
import type { Descriptor, ImageConfig, Index, Manifest } from "./types.ts";

type Json = Record<string, unknown>;

/** Thrown inside this module with the problem only; the exported functions add their prefix. */
class Problem extends Error {}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  if (v === undefined) return "undefined";
  const s = JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function join(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

function optionalString(obj: Json, key: string, path: string): void {
  const v = obj[key];
  if (v !== undefined && typeof v !== "string") {
    throw new Problem(`"${join(path, key)}" must be a string: ${show(v)}`);
  }
}

function requiredString(obj: Json, key: string, path: string, nonEmpty: boolean): void {
  const v = obj[key];
  const p = join(path, key);
  if (v === undefined) throw new Problem(`"${p}" is missing`);
  if (typeof v !== "string" || (nonEmpty && v === "")) {
    throw new Problem(`"${p}" must be a ${nonEmpty ? "non-empty " : ""}string: ${show(v)}`);
  }
}

function optionalStringArray(obj: Json, key: string, path: string): void {
  const v = obj[key];
  if (v === undefined) return;
  const p = join(path, key);
  if (!Array.isArray(v)) throw new Problem(`"${p}" must be an array of strings: ${show(v)}`);
  v.forEach((item, i) => {
    if (typeof item !== "string") throw new Problem(`"${p}[${i}]" must be a string: ${show(item)}`);
  });
}

function optionalStringMap(obj: Json, key: string, path: string): void {
  const v = obj[key];
  if (v === undefined) return;
  const p = join(path, key);
  if (!isObject(v)) throw new Problem(`"${p}" must be a map of strings: ${show(v)}`);
  for (const [k, item] of Object.entries(v)) {
    if (typeof item !== "string") {
      throw new Problem(`"${p}" must be a map of strings: value of "${k}" is ${show(item)}`);
    }
  }
}

function checkPlatform(v: unknown, path: string): void {
  if (!isObject(v)) throw new Problem(`"${path}" must be an object: ${show(v)}`);
  requiredString(v, "os", path, false);
  requiredString(v, "architecture", path, false);
  optionalString(v, "variant", path);
  optionalString(v, "os.version", path);
  optionalStringArray(v, "os.features", path);
}

function checkDigest(v: unknown, path: string): void {
  if (v === undefined) throw new Problem(`"${path}" is missing`);
  if (typeof v !== "string" || !isValidDigest(v)) {
    throw new Problem(`"${path}" is not a valid digest: ${show(v)}`);
  }
}

function checkDescriptor(v: unknown, path: string): void {
  if (!isObject(v)) throw new Problem(`"${path || "descriptor"}" must be an object: ${show(v)}`);
  requiredString(v, "mediaType", path, true);
  checkDigest(v.digest, join(path, "digest"));
  const size = v.size;
  if (size === undefined) throw new Problem(`"${join(path, "size")}" is missing`);
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
    throw new Problem(`"${join(path, "size")}" must be a non-negative integer: ${show(size)}`);
  }
  optionalStringArray(v, "urls", path);
  optionalStringMap(v, "annotations", path);
  optionalString(v, "data", path);
  optionalString(v, "artifactType", path);
  if (v.platform !== undefined) checkPlatform(v.platform, join(path, "platform"));
}

function checkDescriptorList(obj: Json, key: string): void {
  const v = obj[key];
  if (v === undefined || v === null) {
    obj[key] = [];
    return;
  }
  if (!Array.isArray(v)) throw new Problem(`"${key}" must be an array: ${show(v)}`);
  v.forEach((d, i) => checkDescriptor(d, `${key}[${i}]`));
}

function checkSchemaVersion(obj: Json): void {
  if (obj.schemaVersion === undefined) throw new Problem(`"schemaVersion" is missing`);
  if (obj.schemaVersion !== 2) {
    throw new Problem(`"schemaVersion" must be 2: ${show(obj.schemaVersion)}`);
  }
}

function decode(bytes: Uint8Array | string, what: string): unknown {
  const text = typeof bytes === "string" ? bytes : new TextDecoder().decode(bytes);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InvalidArgument(`Cannot parse ${what}: invalid JSON: ${(err as Error).message}`);
  }
}

function decodeObject(bytes: Uint8Array | string, what: string): Json {
  const doc = decode(bytes, what);
  if (!isObject(doc)) {
    throw new InvalidArgument(`Cannot parse ${what}: document is not a JSON object: ${show(doc)}`);
  }
  return doc;
}

/** Options for {@linkcode parseManifest}, {@linkcode parseIndex} and {@linkcode parseImageConfig}. */
export interface ParseOptions {
  /** The digest of the document, named in error messages when given. */
  digest?: string | undefined;
}

function subject(kind: string, options: ParseOptions): string {
  return options.digest === undefined ? kind : `${kind} "${options.digest}"`;
}

function run(what: string, fn: () => void, action = "parse"): void {
  try {
    fn();
  } catch (err) {
    if (err instanceof Problem) {
      throw new InvalidArgument(`Cannot ${action} ${what}: ${err.message}`);
    }
    throw err;
  }
}

function present(v: unknown): boolean {
  if (v === undefined || v === null) return false;
  if (Array.isArray(v)) return v.length > 0;
  return true;
}

function checkDocumentType(
  doc: Json,
  expect: "manifest" | "index" | undefined,
  declaredType: string | undefined,
  what: string,
): void {
  if (present(doc.fsLayers)) {
    throw new NotImplemented(`Cannot parse ${what}: schema 1 not supported`);
  }
  const selfType = typeof doc.mediaType === "string" ? doc.mediaType : "";
  const declared = declaredType === undefined ? "" : ` (declared media type "${declaredType}")`;
  if (expect === "manifest" && (present(doc.manifests) || isIndexType(selfType))) {
    throw new InvalidArgument(`Cannot parse ${what}: expected manifest but found index${declared}`);
  }
  if (
    expect === "index" &&
    (present(doc.config) || present(doc.layers) || isManifestType(selfType))
  ) {
    throw new InvalidArgument(`Cannot parse ${what}: expected index but found manifest${declared}`);
  }
}

function expectedKind(
  declaredType: string | undefined,
  want: "manifest" | "index",
  what: string,
): "manifest" | "index" {
  if (declaredType === undefined) return want;
  const ok = want === "manifest" ? isManifestType(declaredType) : isIndexType(declaredType);
  if (!ok) {
    throw new InvalidArgument(
      `Cannot parse ${what}: "${declaredType}" is not ${
        want === "manifest" ? "a manifest" : "an index"
      } media type`,
    );
  }
  return want;
}

/**
 * Checks that a value has the shape of an OCI descriptor: a non-empty `mediaType`, a valid
 * `digest`, a non-negative integer `size`, and well-formed optional `urls`, `annotations`, `data`,
 * `artifactType` and `platform`.
 *
 * @example
 * ```ts
 * import { validateDescriptor } from "@strata/strata/images";
 * const d: unknown = { mediaType: "application/octet-stream", digest: "sha256:" + "0".repeat(64), size: 1 };
 * validateDescriptor(d);
 * console.log(d.digest);
 * ```
 *
 * @param d The value to check.
 * @param field The field path of the value in its document, used in messages (default none).
 * @throws {InvalidArgument} When a field is missing or malformed; the message names its path.
 */
export function validateDescriptor(d: unknown, field?: string): asserts d is Descriptor {
  run("descriptor", () => checkDescriptor(d, field ?? ""), "validate");
}

/**
 * Checks a manifest or index document against its declared media type before parsing, as
 * containerd's `validateMediaType`: the bytes must be JSON, must not be a schema 1 manifest (a
 * non-empty `fsLayers`), a declared manifest must not carry `manifests` or declare itself an index,
 * and a declared index must not carry `config` or `layers` or declare itself a manifest.
 *
 * @example
 * ```ts
 * import { validateMediaType } from "@strata/strata/images";
 * validateMediaType(new TextEncoder().encode('{"manifests":[]}'), "application/vnd.oci.image.index.v1+json");
 * ```
 *
 * @param bytes The document.
 * @param declaredType The media type the document was referenced with.
 * @throws {InvalidArgument} When the document is not JSON or does not fit the declared type.
 * @throws {NotImplemented} When the document is a Docker schema 1 manifest.
 */
export function validateMediaType(bytes: Uint8Array | string, declaredType: string): void {
  const expect = isManifestType(declaredType)
    ? "manifest"
    : isIndexType(declaredType)
    ? "index"
    : undefined;
  const what = expect ?? "document";
  checkDocumentType(decodeObject(bytes, what), expect, declaredType, what);
}

/**
 * Parses and validates an image manifest (OCI or Docker schema 2). A missing or `null` `layers`
 * becomes an empty list.
 *
 * @example
 * ```ts
 * import { parseManifest } from "@strata/strata/images";
 * const zero = "sha256:" + "0".repeat(64);
 * const m = parseManifest(JSON.stringify({
 *   schemaVersion: 2,
 *   config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: zero, size: 2 },
 *   layers: [],
 * }));
 * console.log(m.config.digest);
 * ```
 *
 * @param bytes The manifest document.
 * @param declaredMediaType The media type it was referenced with, which must be a manifest type;
 *   the document is checked against the manifest kind either way (see
 *   {@linkcode validateMediaType}).
 * @param options The document's digest, for messages.
 * @returns The manifest.
 * @throws {InvalidArgument} When the document is not a valid manifest; the message names the field.
 * @throws {NotImplemented} When the document is a Docker schema 1 manifest.
 */
export function parseManifest(
  bytes: Uint8Array | string,
  declaredMediaType?: string,
  options: ParseOptions = {},
): Manifest {
  const what = subject("manifest", options);
  const expect = expectedKind(declaredMediaType, "manifest", what);
  const doc = decodeObject(bytes, what);
  checkDocumentType(doc, expect, declaredMediaType, what);
  run(what, () => {
    checkSchemaVersion(doc);
    optionalString(doc, "mediaType", "");
    optionalString(doc, "artifactType", "");
    if (doc.config === undefined) throw new Problem(`"config" is missing`);
    checkDescriptor(doc.config, "config");
    checkDescriptorList(doc, "layers");
    if (doc.subject !== undefined) checkDescriptor(doc.subject, "subject");
    optionalStringMap(doc, "annotations", "");
  });
  return doc as unknown as Manifest;
}

/**
 * Parses and validates an image index (OCI index or Docker manifest list). A missing or `null`
 * `manifests` becomes an empty list.
 *
 * @example
 * ```ts
 * import { parseIndex } from "@strata/strata/images";
 * const idx = parseIndex('{"schemaVersion":2,"manifests":[]}');
 * console.log(idx.manifests.length);
 * ```
 *
 * @param bytes The index document.
 * @param declaredMediaType The media type it was referenced with, which must be an index type;
 *   the document is checked against the index kind either way (see
 *   {@linkcode validateMediaType}).
 * @param options The document's digest, for messages.
 * @returns The index.
 * @throws {InvalidArgument} When the document is not a valid index; the message names the field.
 * @throws {NotImplemented} When the document is a Docker schema 1 manifest.
 */
export function parseIndex(
  bytes: Uint8Array | string,
  declaredMediaType?: string,
  options: ParseOptions = {},
): Index {
  const what = subject("index", options);
  const expect = expectedKind(declaredMediaType, "index", what);
  const doc = decodeObject(bytes, what);
  checkDocumentType(doc, expect, declaredMediaType, what);
  run(what, () => {
    checkSchemaVersion(doc);
    optionalString(doc, "mediaType", "");
    optionalString(doc, "artifactType", "");
    checkDescriptorList(doc, "manifests");
    if (doc.subject !== undefined) checkDescriptor(doc.subject, "subject");
    optionalStringMap(doc, "annotations", "");
  });
  return doc as unknown as Index;
}

/**
 * Parses and validates an image config (OCI or Docker): `os` and `architecture` strings,
 * `rootfs.type` equal to `layers` and `rootfs.diff_ids` valid digests (missing or `null` becomes
 * an empty list), plus the types of the optional platform fields, `created`, `author`, `config`
 * and `history`.
 *
 * @example
 * ```ts
 * import { parseImageConfig } from "@strata/strata/images";
 * const c = parseImageConfig('{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":[]}}');
 * console.log(c.os);
 * ```
 *
 * @param bytes The config document.
 * @param options The document's digest, for messages.
 * @returns The config.
 * @throws {InvalidArgument} When the document is not a valid image config; the message names the
 *   field.
 */
export function parseImageConfig(
  bytes: Uint8Array | string,
  options: ParseOptions = {},
): ImageConfig {
  const what = subject("image config", options);
  const doc = decodeObject(bytes, what);
  run(what, () => {
    requiredString(doc, "os", "", false);
    requiredString(doc, "architecture", "", false);
    optionalString(doc, "variant", "");
    optionalString(doc, "os.version", "");
    optionalStringArray(doc, "os.features", "");
    optionalString(doc, "created", "");
    optionalString(doc, "author", "");
    if (doc.config === null) delete doc.config;
    if (doc.config !== undefined && !isObject(doc.config)) {
      throw new Problem(`"config" must be an object: ${show(doc.config)}`);
    }
    if (doc.history === null) delete doc.history;
    if (doc.history !== undefined) {
      if (!Array.isArray(doc.history)) {
        throw new Problem(`"history" must be an array: ${show(doc.history)}`);
      }
      doc.history.forEach((h, i) => {
        if (!isObject(h)) throw new Problem(`"history[${i}]" must be an object: ${show(h)}`);
      });
    }
    const rootfs = doc.rootfs;
    if (rootfs === undefined) throw new Problem(`"rootfs" is missing`);
    if (!isObject(rootfs)) throw new Problem(`"rootfs" must be an object: ${show(rootfs)}`);
    if (rootfs.type !== "layers") {
      throw new Problem(
        rootfs.type === undefined
          ? `"rootfs.type" is missing`
          : `"rootfs.type" must be "layers": ${show(rootfs.type)}`,
      );
    }
    if (rootfs.diff_ids === undefined || rootfs.diff_ids === null) rootfs.diff_ids = [];
    if (!Array.isArray(rootfs.diff_ids)) {
      throw new Problem(`"rootfs.diff_ids" must be an array: ${show(rootfs.diff_ids)}`);
    }
    rootfs.diff_ids.forEach((d, i) => checkDigest(d, `rootfs.diff_ids[${i}]`));
  });
  return doc as unknown as ImageConfig;
}
