import type { Client } from "../client.ts";
import { InvalidArgument, isNotFound } from "../errors.ts";
import {
  type ImageRecord,
  type MatchComparer,
  normalizeReference,
  onlyPlatform,
  orderedPlatforms,
  parsePlatform,
} from "../images/mod.ts";
import { list, type Values } from "./_command.ts";

/**
 * Finds an image by the name a user typed: the exact stored name first, then its normalised
 * reference form (`alpine` is `docker.io/library/alpine:latest`).
 */
export function findImage(client: Client, name: string): ImageRecord {
  try {
    return client.images.get(name);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    let normal: string | undefined;
    try {
      normal = normalizeReference(name);
    } catch {
      throw err;
    }
    if (normal === name) throw err;
    return client.images.get(normal);
  }
}

/** Builds a platform matcher from repeatable `--platform` values; `undefined` when none. */
export function platformOption(values: Values): MatchComparer | undefined {
  const specs = list(values.platform);
  if (specs.length === 0) return undefined;
  if (values["all-platforms"]) {
    throw new InvalidArgument("Cannot combine --platform and --all-platforms");
  }
  const ps = specs.map((s) => parsePlatform(s));
  return ps.length === 1 ? onlyPlatform(ps[0]!) : orderedPlatforms(ps);
}
