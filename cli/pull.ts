import { pullImage } from "../transfer/pull.ts";
import { pushImage } from "../transfer/push.ts";
import { humanSize, intOption } from "./_command.ts";
import type { Command } from "./_command.ts";
import { findImage, platformOption } from "./_images.ts";
import { progressPrinter } from "./_progress.ts";
import { progressMode, REGISTRY_OPTIONS, registryOptions } from "./_registry.ts";
import { syncFsOption, UNPACK_OPTIONS } from "./unpack.ts";

/** `strata pull`: fetch an image from a registry and unpack it as layers arrive. */
export const pullCommand: Command = {
  name: "pull",
  summary: "Pull an image from a registry and unpack it (downloads run ahead of extraction)",
  usage: "pull [OPTIONS] REF",
  options: {
    ...REGISTRY_OPTIONS,
    platform: {
      type: "string",
      multiple: true,
      arg: "P",
      help: "Platform to pull and unpack (default: this host's)",
    },
    "all-platforms": {
      type: "boolean",
      help: "Fetch every platform of an index (unpack only --platform or this host's)",
    },
    ...UNPACK_OPTIONS,
    "no-unpack": { type: "boolean", help: "Only fetch the content; do not unpack" },
    "max-concurrent-downloads": {
      type: "string",
      arg: "N",
      help: "Layer downloads at once (default 3)",
    },
  },
  args: [1, 1],
  async run(ctx, values, [ref]) {
    const client = await ctx.client();
    // With --all-platforms, --platform names the platform to unpack.
    const platform = platformOption({ ...values, "all-platforms": undefined }) ?? client.platform;
    const mode = progressMode(ctx, values);
    const printer = progressPrinter(mode, ctx.out);
    const started = performance.now();
    let result;
    try {
      result = await pullImage(client, ref!, {
        ...await registryOptions(ctx, values),
        platform,
        allPlatforms: Boolean(values["all-platforms"]),
        unpack: !values["no-unpack"],
        ...(typeof values.snapshotter === "string" ? { snapshotter: values.snapshotter } : {}),
        syncFs: syncFsOption(ctx, values),
        checkPlatform: !values["no-platform-check"],
        ...(values["no-parallel"] ? { parallel: false } : {}),
        onProgress: (e) => printer.event(e),
      });
    } finally {
      printer.done();
    }
    const secs = ((performance.now() - started) / 1000).toFixed(2);
    if (mode === "json") {
      return ctx.out(JSON.stringify({
        name: result.image.name,
        target: result.image.target,
        unpack: result.unpack,
        downloaded: result.downloaded,
        seconds: Number(secs),
      }));
    }
    if (values.quiet) return ctx.out(result.image.name);
    const unpacked = result.unpack
      ? `, unpacked into ${result.unpack.snapshotter} as ${result.unpack.chainId}`
      : "";
    ctx.out(
      `pulled ${result.image.name} (${result.image.target.digest}): ${result.downloaded.count} blobs, ${
        humanSize(result.downloaded.bytes)
      } downloaded in ${secs}s${unpacked}`,
    );
  },
};

/** `strata push`: send a stored image to a registry. */
export const pushCommand: Command = {
  name: "push",
  summary: "Push a stored image to a registry",
  usage: "push [OPTIONS] IMAGE [REMOTE-REF]",
  options: {
    ...REGISTRY_OPTIONS,
    platform: {
      type: "string",
      multiple: true,
      arg: "P",
      help: "Push only this platform's manifest (default: the whole image)",
    },
    "max-concurrent-uploads": {
      type: "string",
      arg: "N",
      help: "Blob uploads at once (default 3)",
    },
  },
  args: [1, 2],
  async run(ctx, values, [name, remote]) {
    const client = await ctx.client();
    const record = findImage(client, name!);
    const platform = platformOption(values);
    const uploads = intOption(values, "max-concurrent-uploads", 1, 64);
    const mode = progressMode(ctx, values);
    const printer = progressPrinter(mode, ctx.out);
    let result;
    try {
      result = await pushImage(client, record.name, {
        ...await registryOptions(ctx, values),
        ...(remote !== undefined ? { remote } : {}),
        ...(platform ? { platform } : {}),
        ...(uploads !== undefined ? { maxConcurrentUploads: uploads } : {}),
        onProgress: (e) => printer.event(e),
      });
    } finally {
      printer.done();
    }
    if (mode === "json") return ctx.out(JSON.stringify(result));
    if (values.quiet) return ctx.out(result.target.digest);
    ctx.out(
      `pushed ${result.ref} (${result.target.digest}): ${result.uploaded} uploaded, ${result.existed} already there`,
    );
  },
};
