/**
 * Benchmark fixtures: real multi-layer OCI images, built offline with umoci from local directories
 * (or taken from `shared/tools/make-fixtures.sh` output or any OCI layout), then normalised with
 * skopeo into a single-image OCI layout and an oci-archive tar. Everything is cached.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { basename, dirname, join, resolve } from "node:path";
import { FailedPrecondition, InvalidArgument, NotFound } from "../errors.ts";
import { mustRun, run } from "./_proc.ts";
import { exists } from "./_util.ts";

/** The tag every normalised fixture carries. */
export const FIXTURE_TAG = "bench";

/** The base name fixtures are imported under into a strata root. */
export const BASE_NAME = "bench.local/strata-bench";

/** The name of a fixture imported under {@linkcode BASE_NAME}. */
export const IMAGE_NAME = `${BASE_NAME}:${FIXTURE_TAG}`;

/** A ready fixture. */
export interface Fixture {
  /** A short name for tables: `umoci`, or the source tag (`app`, `many`). */
  name: string;
  /** A one-line description of where the image came from. */
  source: string;
  /** An OCI layout directory holding exactly the one image, tagged {@linkcode FIXTURE_TAG}. */
  layout: string;
  /** The same image as an oci-archive tar (written by skopeo). */
  archive: string;
  /** Bytes of the archive file. */
  archiveBytes: number;
  /** Bytes of the image's blobs: manifest, config and layers. */
  blobBytes: number;
  /** The image's blob digests: manifest, config, then layers. */
  blobs: string[];
  /** The layers' compressed sizes, bottom first. */
  layerBytes: number[];
  /** The layer media type of the first layer. */
  layerMediaType: string;
  /** The layers' uncompressed digests (the config's diff IDs), bottom first. */
  diffIds: string[];
  /** Files, directories and links in the image's layers, when known (umoci fixtures). */
  entries?: number;
  /** Bytes of the source trees, when known (umoci fixtures). */
  treeBytes?: number;
  /** Whether this run built the fixture (`false`: it came from the cache). */
  built: boolean;
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

async function readJson(path: string): Promise<unknown> {
  return JSON.parse(await Deno.readTextFile(path));
}

function blobPath(layout: string, digest: string): string {
  const [alg, hex] = digest.split(":");
  return join(layout, "blobs", alg ?? "", hex ?? "");
}

/**
 * Sums the blob sizes of the single image in a normalised layout.
 *
 * @param layout The layout directory.
 * @returns Total blob bytes, the digests, layer sizes and the first layer's media type.
 */
async function measureLayout(
  layout: string,
): Promise<
  {
    blobBytes: number;
    blobs: string[];
    layerBytes: number[];
    layerMediaType: string;
    diffIds: string[];
  }
> {
  const index = await readJson(join(layout, "index.json")) as { manifests?: Descriptor[] };
  const top = index.manifests?.[0];
  if (!top) throw new FailedPrecondition(`Cannot read fixture "${layout}": index.json is empty`);
  const manifest = await readJson(blobPath(layout, top.digest)) as {
    config?: Descriptor;
    layers?: Descriptor[];
    manifests?: Descriptor[];
  };
  if (!manifest.config || !manifest.layers) {
    throw new FailedPrecondition(
      `Cannot read fixture "${layout}": "${top.digest}" is not an image manifest`,
    );
  }
  const layerBytes = manifest.layers.map((l) => l.size);
  const blobBytes = top.size + manifest.config.size + layerBytes.reduce((a, b) => a + b, 0);
  const blobs = [top.digest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)];
  const config = await readJson(blobPath(layout, manifest.config.digest)) as {
    rootfs?: { diff_ids?: string[] };
  };
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== layerBytes.length) {
    throw new FailedPrecondition(
      `Cannot read fixture "${layout}": ${layerBytes.length} layers but ${diffIds.length} diff IDs`,
    );
  }
  return {
    blobBytes,
    blobs,
    layerBytes,
    layerMediaType: manifest.layers[0]?.mediaType ?? "",
    diffIds,
  };
}

/**
 * Copies `SRC:TAG` into a fresh single-image layout and an oci-archive tar under `dir`.
 *
 * @param ref The source, `oci:DIR:TAG`.
 * @param dir The fixture directory.
 */
async function normalise(ref: string, dir: string): Promise<void> {
  const layout = join(dir, "layout");
  const archive = join(dir, "image.tar");
  await Deno.remove(layout, { recursive: true }).catch(() => {});
  await Deno.remove(archive).catch(() => {});
  await mustRun(["skopeo", "--insecure-policy", "copy", "-q", ref, `oci:${layout}:${FIXTURE_TAG}`]);
  await mustRun([
    "skopeo",
    "--insecure-policy",
    "copy",
    "-q",
    `oci:${layout}:${FIXTURE_TAG}`,
    `oci-archive:${archive}:${FIXTURE_TAG}`,
  ]);
}

async function countTree(paths: string[]): Promise<{ entries: number; bytes: number }> {
  const r = await mustRun(["du", "-s", "--apparent-size", "--block-size=1", ...paths]);
  const bytes = r.stdout.trim().split("\n").map((l) => Number(l.split(/\s+/)[0]))
    .reduce((a, b) => a + b, 0);
  const f = await mustRun(["sh", "-c", 'find "$@" | wc -l', "find", ...paths]);
  return { entries: Number(f.stdout.trim()), bytes };
}

/** Copies the tree `path` to the same path under `rootfs`, keeping owners, modes and times. */
async function copyInto(path: string, rootfs: string): Promise<void> {
  const parent = join(rootfs, dirname(path));
  await Deno.mkdir(parent, { recursive: true });
  await mustRun(["cp", "-a", path, parent + "/"]);
}

/** Options for {@linkcode umociFixture}. */
export interface UmociFixtureOptions {
  /** Directories copied (at their own path) into layer 1. */
  layer1: string[];
  /** Directories copied (at their own path) into layer 2. */
  layer2: string[];
  /** Progress messages. */
  log: (line: string) => void;
}

/**
 * Builds (or reuses) a two-layer image with umoci: an empty base, then layer 1 holding copies of
 * `layer1`'s directories, then layer 2 holding `layer2`'s, each at its own path in the rootfs.
 *
 * @example
 * ```ts ignore
 * const f = await umociFixture("/tmp/fx", { layer1: ["/usr/lib/gcc"], layer2: ["/usr/include"], log: console.error });
 * ```
 *
 * @param cache The cache directory; the fixture goes in a subdirectory keyed by the sources.
 * @param options The source directories and a logger.
 * @returns The fixture.
 */
export async function umociFixture(cache: string, options: UmociFixtureOptions): Promise<Fixture> {
  const layer1 = options.layer1.map((p) => resolve(p));
  const layer2 = options.layer2.map((p) => resolve(p));
  for (const p of [...layer1, ...layer2]) {
    if (!(await exists(p))) throw new NotFound(`Cannot build the fixture: "${p}" does not exist`);
  }
  const key = createHash("sha256").update(JSON.stringify({ layer1, layer2 })).digest("hex")
    .slice(0, 12);
  const dir = join(cache, `umoci-${key}`);
  const meta = join(dir, "fixture.json");
  const source = `umoci: empty base + layer 1 (${layer1.join(", ")}) + layer 2 (${
    layer2.join(", ")
  })`;
  let built = false;
  let counts: { entries: number; bytes: number };
  if (await exists(meta)) {
    counts = await readJson(meta) as { entries: number; bytes: number };
  } else {
    const t0 = performance.now();
    options.log(`building fixture in ${dir} (umoci; this takes a minute or two)`);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.mkdir(dir, { recursive: true });
    const build = join(dir, "build");
    const bundle = join(dir, "bundle");
    const rootless = Deno.uid() === 0 ? [] : ["--rootless"];
    await mustRun(["umoci", "init", "--layout", build]);
    await mustRun(["umoci", "new", "--image", `${build}:empty`]);
    await mustRun(["umoci", "unpack", ...rootless, "--image", `${build}:empty`, bundle]);
    const rootfs = join(bundle, "rootfs");
    for (const p of layer1) await copyInto(p, rootfs);
    await mustRun(["umoci", "repack", "--refresh-bundle", "--image", `${build}:l1`, bundle]);
    for (const p of layer2) await copyInto(p, rootfs);
    await mustRun(["umoci", "repack", "--image", `${build}:${FIXTURE_TAG}`, bundle]);
    await Deno.remove(bundle, { recursive: true });
    await normalise(`oci:${build}:${FIXTURE_TAG}`, dir);
    await Deno.remove(build, { recursive: true });
    counts = await countTree([...layer1, ...layer2]);
    await Deno.writeTextFile(meta, JSON.stringify({ source, ...counts }, null, 2) + "\n");
    built = true;
    options.log(`fixture built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  return {
    ...(await describe(dir, "umoci", source, built)),
    entries: counts.entries,
    treeBytes: counts.bytes,
  };
}

/**
 * Uses an existing OCI layout `DIR:TAG` (for example `make-fixtures.sh` output), normalised into a
 * cached single-image layout and archive.
 *
 * @example
 * ```ts ignore
 * const f = await layoutFixture("/tmp/fx", "/srv/fixtures/layout:app", { log: console.error });
 * ```
 *
 * @param cache The cache directory.
 * @param spec `DIR:TAG`.
 * @param options A logger.
 * @returns The fixture.
 */
export async function layoutFixture(
  cache: string,
  spec: string,
  options: { log: (line: string) => void },
): Promise<Fixture> {
  const at = spec.lastIndexOf(":");
  if (at <= 0 || at === spec.length - 1) {
    throw new InvalidArgument(`Cannot use layout "${spec}": expected DIR:TAG`);
  }
  const layout = resolve(spec.slice(0, at));
  const tag = spec.slice(at + 1);
  if (!(await exists(join(layout, "index.json")))) {
    throw new NotFound(`Cannot use layout "${layout}": it has no index.json`);
  }
  // Key the cache on the source's index, so that a rebuilt source is normalised again.
  const index = await Deno.readFile(join(layout, "index.json"));
  const key = createHash("sha256").update(layout).update(tag).update(index).digest("hex")
    .slice(0, 12);
  const dir = join(cache, `layout-${basename(dirname(layout))}-${tag}-${key}`);
  let built = false;
  if (!(await exists(join(dir, "image.tar")))) {
    options.log(`normalising ${layout}:${tag} into ${dir}`);
    await Deno.mkdir(dir, { recursive: true });
    await normalise(`oci:${layout}:${tag}`, dir);
    built = true;
  }
  return await describe(dir, tag, `OCI layout ${layout}:${tag}`, built);
}

/**
 * The `make-fixtures` fixture: `make-fixtures.sh` output under `cache/make-fixtures`, built first
 * when missing (slow: debootstrap from the Debian mirror).
 *
 * @example
 * ```ts ignore
 * const f = await makeFixturesFixture("/tmp/fx", "app", { log: console.error });
 * ```
 *
 * @param cache The cache directory.
 * @param tag The tag to use (`base`, `app` or `many`).
 * @param options The script's path and a logger.
 * @returns The fixture.
 */
export async function makeFixturesFixture(
  cache: string,
  tag: string,
  options: { script: string; log: (line: string) => void },
): Promise<Fixture> {
  const out = join(cache, "make-fixtures");
  if (!(await exists(join(out, "layout", "index.json")))) {
    options.log(`running ${options.script} ${out} (debootstrap; slow)`);
    const r = await run(["bash", options.script, out]);
    if (r.code !== 0) {
      throw new FailedPrecondition(
        `Cannot build fixtures with "${options.script}": exit code ${r.code}: ${r.stderr.trim()}`,
      );
    }
  }
  return await layoutFixture(cache, `${join(out, "layout")}:${tag}`, options);
}

/**
 * The fixture a `--layout` spec of the make-fixtures kind names: `DIR:TAG` is existing
 * `make-fixtures.sh` output (or any OCI layout), a bare `TAG` the copy cached under `cache`
 * (built with `options.script` when missing).
 *
 * @example
 * ```ts ignore
 * const f = await makeFixturesSpec("/tmp/fx", "/var/tmp/strata-fixtures/layout:app", {
 *   script: "make-fixtures.sh",
 *   log: console.error,
 * });
 * ```
 *
 * @param cache The cache directory.
 * @param spec `DIR:TAG` or `TAG`.
 * @param options The script's path and a logger.
 * @returns The fixture.
 */
export async function makeFixturesSpec(
  cache: string,
  spec: string,
  options: { script: string; log: (line: string) => void },
): Promise<Fixture> {
  return spec.includes(":")
    ? await layoutFixture(cache, spec, options)
    : await makeFixturesFixture(cache, spec, options);
}

/**
 * `fixtures` plus, for each entry of `options.double`, that fixture with its layers listed
 * several times ({@linkcode doubledFixture}): `NAME` lists them twice, `NAME:N` N times.
 *
 * @example
 * ```ts ignore
 * const all = await withDoubles("/tmp/fx", [app, many], { double: ["app", "app:8"], log: console.error });
 * ```
 *
 * @param cache The cache directory.
 * @param fixtures The fixtures.
 * @param options The names to repeat (`NAME` or `NAME:N`) and a logger.
 * @returns The fixtures, then the repeated ones.
 * @throws {InvalidArgument} When a name is not one of the fixtures or N is not an integer >= 2.
 */
export async function withDoubles(
  cache: string,
  fixtures: Fixture[],
  options: { double: string[]; log: (line: string) => void },
): Promise<Fixture[]> {
  const out = [...fixtures];
  for (const spec of options.double) {
    const [name, count] = spec.split(":");
    const f = fixtures.find((x) => x.name === name);
    if (f === undefined) {
      throw new InvalidArgument(
        `Cannot double fixture "${name}": expected one of ${fixtures.map((x) => x.name)}`,
      );
    }
    const times = count === undefined ? 2 : Number(count);
    if (!Number.isInteger(times) || times < 2) {
      throw new InvalidArgument(
        `Cannot repeat fixture "${name}" ${count} times: expected an integer of at least 2`,
      );
    }
    out.push(await doubledFixture(cache, f, { ...options, times }));
  }
  return out;
}

async function describe(
  dir: string,
  name: string,
  source: string,
  built: boolean,
): Promise<Fixture> {
  const layout = join(dir, "layout");
  const archive = join(dir, "image.tar");
  const m = await measureLayout(layout);
  return {
    name,
    source,
    layout,
    archive,
    archiveBytes: (await Deno.stat(archive)).size,
    ...m,
    built,
  };
}

/**
 * A fixture twice (or `options.times`) as big as `fixture`: the same image with its layers listed
 * twice (layers `1..n, 1..n`, so every layer is applied again on top of the first copy), written
 * as an OCI layout sharing the blobs (hard links) and normalised like any layout. Its name is
 * `<name>-x2` (`<name>-x<times>`).
 *
 * @example
 * ```ts ignore
 * const big = await doubledFixture("/tmp/fx", app, { log: console.error });
 * ```
 *
 * @param cache The cache directory.
 * @param fixture The fixture to double.
 * @param options A logger, and how many times to list the layers (default 2).
 * @returns The doubled fixture.
 */
export async function doubledFixture(
  cache: string,
  fixture: Fixture,
  options: { log: (line: string) => void; times?: number },
): Promise<Fixture> {
  const times = options.times ?? 2;
  const name = `${fixture.name}-x${times}`;
  const src = fixture.layout;
  const dir = join(cache, `source-${name}-${basename(dirname(src))}`);
  const blobs = join(dir, "blobs", "sha256");
  const blob = (digest: string) => join(src, "blobs", "sha256", digest.slice("sha256:".length));
  const index = JSON.parse(await Deno.readTextFile(join(src, "index.json")));
  const manifestDesc = index.manifests[0];
  const manifest = JSON.parse(await Deno.readTextFile(blob(manifestDesc.digest)));
  const config = JSON.parse(await Deno.readTextFile(blob(manifest.config.digest)));
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.mkdir(blobs, { recursive: true });
  for (const layer of manifest.layers) {
    const to = join(blobs, layer.digest.slice("sha256:".length));
    if (!(await exists(to))) await Deno.link(blob(layer.digest), to);
  }
  const put = async (value: unknown): Promise<{ digest: string; size: number }> => {
    const bytes = new TextEncoder().encode(JSON.stringify(value));
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    await Deno.writeFile(join(blobs, digest.slice("sha256:".length)), bytes);
    return { digest, size: bytes.length };
  };
  const repeat = <T>(list: T[]): T[] => Array.from({ length: times }, () => list).flat();
  config.rootfs.diff_ids = repeat(config.rootfs.diff_ids);
  delete config.history;
  manifest.layers = repeat(manifest.layers);
  manifest.config = { ...manifest.config, ...(await put(config)) };
  const m = await put(manifest);
  await Deno.writeTextFile(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{
        mediaType: manifestDesc.mediaType,
        ...m,
        annotations: { "org.opencontainers.image.ref.name": name },
      }],
    }),
  );
  await Deno.writeTextFile(
    join(dir, "oci-layout"),
    JSON.stringify({ imageLayoutVersion: "1.0.0" }),
  );
  return await layoutFixture(cache, `${dir}:${name}`, options);
}
