import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { applyLayer } from "../diff/apply.ts";
import { FailedPrecondition, InvalidArgument, NotFound } from "../errors.ts";
import { imageLayers } from "../images/manifest.ts";
import {
  type Command,
  type CommandContext,
  type OptionSpec,
  printableName,
  type Values,
} from "./_command.ts";
import { findImage, platformOption } from "./_images.ts";

/** Whether to syncfs: `--sync-fs`/`--no-sync-fs`, else `[unpack] sync_fs`, else the default. */
export function syncFsOption(ctx: CommandContext, values: Values): boolean {
  if (values["sync-fs"] && values["no-sync-fs"]) {
    throw new InvalidArgument("Cannot combine --sync-fs and --no-sync-fs");
  }
  if (values["sync-fs"]) return true;
  if (values["no-sync-fs"]) return false;
  const section = ctx.config.unpack as Record<string, unknown> | undefined;
  const configured = section?.sync_fs;
  if (configured !== undefined) {
    if (typeof configured !== "boolean") {
      throw new InvalidArgument('Cannot read config: "[unpack] sync_fs" must be true or false');
    }
    return configured;
  }
  return DEFAULT_SYNC_FS;
}

/** The default of `--sync-fs` (see the README for the measurements behind it). */
export const DEFAULT_SYNC_FS = true;

/** The options `unpack` and `pull` share: where and how layers are unpacked. */
export const UNPACK_OPTIONS: Record<string, OptionSpec> = {
  snapshotter: {
    type: "string",
    arg: "NAME",
    help: "overlayfs or native (default: overlayfs on Linux; env STRATA_SNAPSHOTTER)",
  },
  "sync-fs": { type: "boolean", help: "syncfs(2) each layer before committing it (default)" },
  "no-sync-fs": { type: "boolean", help: "Do not syncfs; faster, but a power cut may lose data" },
  "no-platform-check": {
    type: "boolean",
    help: "Unpack even when the snapshotter does not support the image's platform",
  },
  "no-parallel": {
    type: "boolean",
    help: "Apply one layer at a time (default: overlayfs on several CPUs applies layers at once)",
  },
};

/** `strata unpack`: unpack an image into a snapshotter. */
export const unpackCommand: Command = {
  name: "unpack",
  summary: "Unpack an image's layers into a snapshotter (a chain of committed snapshots)",
  usage: "unpack [OPTIONS] IMAGE",
  options: {
    ...UNPACK_OPTIONS,
    platform: { type: "string", multiple: true, arg: "P", help: "Platform to unpack" },
    quiet: { type: "boolean", short: "q", help: "Print only the chain ID" },
  },
  args: [1, 1],
  async run(ctx, values, [name]) {
    const client = await ctx.client();
    const record = findImage(client, name!);
    const platform = platformOption(values);
    const image = client.getImage(record.name, platform ? { platform } : {});
    const started = performance.now();
    const result = await image.unpack(
      typeof values.snapshotter === "string" ? values.snapshotter : undefined,
      {
        syncFs: syncFsOption(ctx, values),
        checkPlatform: !values["no-platform-check"],
        parallel: !values["no-parallel"],
        onLayer(e) {
          if (values.quiet || ctx.json) return;
          if (e.state === "extracting") return;
          const note = e.skipped
            ? ` (${e.skipped} entries not applied; strata apply --json lists why)`
            : "";
          ctx.out(`${e.state === "exists" ? "exists   " : "extracted"} ${e.blob.digest}${note}`);
        },
      },
    );
    if (ctx.json) return ctx.out(JSON.stringify(result, null, 2));
    if (values.quiet) return ctx.out(result.chainId);
    const secs = ((performance.now() - started) / 1000).toFixed(2);
    ctx.out(`unpacked ${record.name} into ${result.snapshotter}: ${result.chainId} (${secs}s)`);
  },
};

/** `strata rootfs`: a flattened root filesystem in a directory, like `umoci unpack`. */
export const rootfsCommand: Command = {
  name: "rootfs",
  summary: "Write an image's flattened root filesystem into an empty directory",
  usage: "rootfs [--platform P] [--sync-fs] IMAGE DIR",
  options: {
    platform: { type: "string", multiple: true, arg: "P", help: "Platform to use" },
    "sync-fs": { type: "boolean", help: "syncfs(2) the directory's filesystem at the end" },
  },
  args: [2, 2],
  async run(ctx, values, [name, dir]) {
    const client = await ctx.client();
    const record = findImage(client, name!);
    const platform = platformOption(values) ?? client.platform;
    const layers = await imageLayers(client.content, record.target, { platform });
    await Deno.mkdir(dir!, { recursive: true });
    for await (const _ of Deno.readDir(dir!)) {
      throw new FailedPrecondition(`Cannot write a root filesystem into "${dir}": it is not empty`);
    }
    let skipped = 0;
    for (const [i, layer] of layers.entries()) {
      const r = await applyLayer(client.content.stream(layer.blob.digest), dir!, {
        expectedDiffId: layer.diffId,
        expectedDigest: layer.blob.digest,
        syncFs: Boolean(values["sync-fs"]) && i === layers.length - 1,
      });
      skipped += r.skipped.length;
    }
    if (skipped > 0) ctx.err(`${skipped} entries could not be applied without privileges`);
    ctx.out(dir!);
  },
};

/** `strata apply`: apply one layer file to a directory. */
export const applyCommand: Command = {
  name: "apply",
  summary: "Apply a layer (tar, tar.gz or tar.zst) to a directory; prints its diff ID",
  usage: "apply [OPTIONS] LAYER|- DIR",
  options: {
    overlay: {
      type: "boolean",
      help: "DIR is an overlay upperdir: write overlay whiteouts instead of deleting",
    },
    "expected-diff-id": { type: "string", arg: "D", help: "Fail unless the diff ID is D" },
    "sync-fs": { type: "boolean", help: "syncfs(2) the directory's filesystem afterwards" },
  },
  args: [2, 2],
  async run(ctx, values, [layer, dir]) {
    let source: AsyncIterable<Uint8Array> | URL;
    if (layer === "-") {
      source = Deno.stdin.readable;
    } else {
      // The file itself: a big compressed one is decompressed on a worker thread.
      source = pathToFileURL(resolve(layer!));
      try {
        await Deno.stat(source);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) {
          throw new NotFound(`Cannot apply "${layer}": it does not exist`);
        }
        throw err;
      }
    }
    const result = await applyLayer(source, dir!, {
      whiteouts: values.overlay ? "overlay" : "delete",
      syncFs: Boolean(values["sync-fs"]),
      ...(typeof values["expected-diff-id"] === "string"
        ? { expectedDiffId: values["expected-diff-id"] }
        : {}),
    });
    for (const s of result.skipped) ctx.err(`skipped ${printableName(s.path)}: ${s.reason}`);
    if (ctx.json) return ctx.out(JSON.stringify(result, null, 2));
    ctx.out(result.diffId);
  },
};
