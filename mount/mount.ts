import { posix, resolve } from "node:path";
import { tmpdir } from "node:os";
import * as sys from "../sys/mod.ts";
import {
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  NotImplemented,
  Unavailable,
} from "../errors.ts";
import type { Mount } from "./types.ts";
import {
  byteLength,
  type CompactedOverlay,
  compactLowerdir,
  FLAG_OPTIONS,
  lowerdirOptions,
  pageSize,
  PROPAGATION_OPTIONS,
  rootPath,
} from "./_options.ts";

/** Mount options split into mount(2) flags, filesystem data and requests Strata cannot serve. */
export interface ParsedMountOptions {
  /** `MS_*` flags from the known flag options (`ro`, `nosuid`, `rbind`, ...). */
  flags: number;
  /** Everything else, in order, for the filesystem data string (`lowerdir=...`, `mode=755`). */
  data: string[];
  /** Propagation flags (`MS_PRIVATE`, `MS_SHARED`, ... with `MS_REC` for the `r` forms). */
  propagation?: number;
  /** Whether `loop` was given (a loop device is requested). */
  loop?: boolean;
  /** The `uidmap=` value, an idmapped mount request. */
  uidmap?: string;
  /** The `gidmap=` value, an idmapped mount request. */
  gidmap?: string;
}

/**
 * Splits fstab-style mount options into `MS_*` flags and filesystem data, as containerd does on
 * Linux: known flag options (`ro`, `rw`, `bind`, `rbind`, `nosuid`/`suid`, `nodev`/`dev`,
 * `noexec`/`exec`, `noatime`/`atime`, `nodiratime`/`diratime`, `relatime`/`norelatime`,
 * `strictatime`/`nostrictatime`, `sync`/`async`, `dirsync`, `remount`, `mand`/`nomand`,
 * `defaults`) set or clear flags in order; propagation options (`private`, `rshared`, ...) are
 * collected apart; everything else goes to `data`.
 *
 * @example
 * ```ts
 * import { parseMountOptions } from "@strata/strata/mount";
 * const { flags, data } = parseMountOptions(["ro", "nosuid", "mode=755"]);
 * console.log(flags, data);
 * ```
 *
 * @param options The options.
 * @returns The flags, the data options and any propagation, loop or idmap request.
 * @throws {InvalidArgument} For `X-containerd.*` options (they must be consumed before mounting).
 */
export function parseMountOptions(options: readonly string[]): ParsedMountOptions {
  const parsed: ParsedMountOptions = { flags: 0, data: [] };
  for (const option of options) {
    if (option.startsWith("X-containerd.")) {
      throw new InvalidArgument(
        `Cannot parse mount option "${option}": X-containerd options must be handled before mounting`,
      );
    }
    const change = FLAG_OPTIONS.get(option);
    if (change !== undefined) {
      parsed.flags = change.clear ? parsed.flags & ~change.flag : parsed.flags | change.flag;
      continue;
    }
    const propagation = PROPAGATION_OPTIONS.get(option);
    if (propagation !== undefined) {
      parsed.propagation = propagation;
    } else if (option === "loop") {
      parsed.loop = true;
    } else if (option.startsWith("uidmap=")) {
      parsed.uidmap = option.slice("uidmap=".length);
    } else if (option.startsWith("gidmap=")) {
      parsed.gidmap = option.slice("gidmap=".length);
    } else {
      parsed.data.push(option);
    }
  }
  return parsed;
}

/**
 * Reports whether a mount is read-only, as containerd's `Mount.ReadOnly()`: only the last
 * `/`-segment of the type counts; `erofs` always is; `overlay` is when an option is `ro` or no
 * option starts with `upperdir=`; other types are when an option is `ro`.
 *
 * @example
 * ```ts
 * import { isReadOnly } from "@strata/strata/mount";
 * console.log(isReadOnly({ type: "overlay", source: "overlay", options: ["lowerdir=/a:/b"] }));
 * ```
 *
 * @param mount The mount.
 * @returns `true` when mounting it gives a read-only file system.
 */
export function isReadOnly(mount: Mount): boolean {
  const type = mount.type.slice(mount.type.lastIndexOf("/") + 1);
  if (type === "erofs") return true;
  const options = mount.options.flatMap((option) => option.split(","));
  if (options.includes("ro")) return true;
  if (type === "overlay") return !options.some((option) => option.startsWith("upperdir="));
  return false;
}

/**
 * Turns mounts into read-only ones, as containerd's `WithReadonlyTempMount`: an overlay loses
 * `workdir=`, `uidmap=` and `gidmap=`, and its `upperdir=U` becomes the top lower layer
 * (`lowerdir=U:...`); other mounts lose every `rw` and `ro` option and get `ro` appended.
 * The input is not changed.
 *
 * @example
 * ```ts
 * import { readOnlyMounts } from "@strata/strata/mount";
 * const [mount] = readOnlyMounts([{ type: "bind", source: "/src", options: ["rw", "rbind"] }]);
 * console.log(mount?.options);
 * ```
 *
 * @param mounts The mounts.
 * @returns New mounts that mount read-only.
 */
export function readOnlyMounts(mounts: readonly Mount[]): Mount[] {
  return mounts.map((mount) => {
    const copy: Mount = { ...mount, options: [...mount.options] };
    if (mount.type === "overlay") {
      copy.options = readOnlyOverlayOptions(mount.options);
    } else {
      copy.options = mount.options.filter((option) => option !== "rw" && option !== "ro");
      copy.options.push("ro");
    }
    return copy;
  });
}

function readOnlyOverlayOptions(options: readonly string[]): string[] {
  let upper: string | undefined;
  const out: string[] = [];
  for (const option of options) {
    if (option.startsWith("upperdir=")) {
      upper = option.slice("upperdir=".length);
    } else if (
      !option.startsWith("workdir=") && !option.startsWith("uidmap=") &&
      !option.startsWith("gidmap=")
    ) {
      out.push(option);
    }
  }
  if (upper === undefined) return out;
  const index = out.findIndex((option) => option.startsWith("lowerdir="));
  if (index < 0) {
    out.push(`lowerdir=${upper}`);
  } else {
    out[index] = `lowerdir=${upper}:${out[index]!.slice("lowerdir=".length)}`;
  }
  return out;
}

/**
 * The source directory of a mount list that is a single bind mount, so a caller can read or
 * write it directly instead of mounting it (the native snapshotter then needs no privileges).
 * A read-only bind is returned too: callers that write must check {@linkcode isReadOnly}.
 *
 * @example
 * ```ts
 * import { singleBindSource } from "@strata/strata/mount";
 * console.log(singleBindSource([{ type: "bind", source: "/snap/1/fs", options: ["rw", "rbind"] }]));
 * ```
 *
 * @param mounts The mounts.
 * @returns The bind source, or `undefined` when the list is anything else.
 */
export function singleBindSource(mounts: readonly Mount[]): string | undefined {
  if (mounts.length !== 1) return undefined;
  const [mount] = mounts;
  if (mount === undefined || mount.type !== "bind") return undefined;
  if (mount.target !== undefined && posix.normalize(`/${mount.target}`) !== "/") return undefined;
  return mount.source;
}

/**
 * Mounts each mount in order onto `target`, or onto its `target` sub-directory (joined inside
 * `target`, symlinks resolved within it). Stops at the first error without undoing earlier mounts
 * (use {@linkcode unmountMounts} or {@linkcode withTempMount}).
 *
 * A bind mount with `ro` is mounted and then remounted read-only. An overlay whose options come
 * close to the one-page mount(2) limit gets its `lowerdir=` rewritten relative to the lowerdirs'
 * common parent directory (containerd's compaction): the directory is opened and the lowerdirs
 * are passed as `/proc/self/fd/<fd>/<rest>`. When even that is too long, plain relative paths are
 * passed and mount(2) runs with that directory as the working directory: the process changes
 * directory, calls mount(2) and changes back, all synchronously, so no other JavaScript of this
 * isolate runs meanwhile (Workers or other threads of the process must not rely on the working
 * directory while such a mount happens).
 *
 * @example
 * ```ts
 * import { mountAll, unmountMounts } from "@strata/strata/mount";
 * const mounts = [{ type: "bind", source: "/srv/data", options: ["ro", "rbind"] }];
 * await mountAll(mounts, "/mnt/data");
 * await unmountMounts(mounts, "/mnt/data");
 * ```
 *
 * @param mounts The mounts, parents before children.
 * @param target The directory to mount on.
 * @returns When every mount is done.
 * @throws {InvalidArgument} When options are invalid or an overlay's options are too long.
 * @throws {NotImplemented} For loop devices, idmapped mounts and FUSE types.
 * @throws {FailedPrecondition} When the kernel refuses (no privilege, unsupported file system).
 */
export function mountAll(mounts: readonly Mount[], target: string): Promise<void> {
  try {
    const root = resolve(target);
    for (const mount of mounts) mountOne(mount, rootPath(root, mount.target));
    return Promise.resolve();
  } catch (err) {
    return Promise.reject(err);
  }
}

function mountOne(mount: Mount, target: string): void {
  const what = `${mount.type} "${mount.source}" at "${target}"`;
  if (mount.type.startsWith("fuse.") || mount.type.startsWith("fuse3.")) {
    throw new NotImplemented(`Cannot mount ${what}: FUSE mounts are not supported`);
  }
  const parsed = parseMountOptions(mount.options);
  if (parsed.loop === true) {
    throw new NotImplemented(`Cannot mount ${what}: loop devices are not supported`);
  }
  if (parsed.uidmap !== undefined || parsed.gidmap !== undefined) {
    throw new NotImplemented(`Cannot mount ${what}: idmapped mounts are not supported`);
  }
  const propagationTypes = sys.MS_SHARED | sys.MS_PRIVATE | sys.MS_SLAVE | sys.MS_UNBINDABLE;
  const flags = parsed.flags & ~propagationTypes;
  const limit = pageSize();
  let data = parsed.data;
  let dataString = data.join(",");
  let compacted: CompactedOverlay | undefined;
  if (mount.type === "overlay" && byteLength(dataString) >= limit - 512) {
    compacted = compactLowerdir(data);
    if (compacted !== undefined) {
      data = lowerdirOptions(compacted, "");
      dataString = data.join(",");
    }
  }
  // The kernel copies one page and terminates it, so the string plus its NUL must fit.
  const size = byteLength(dataString);
  if (size >= limit) {
    throw new InvalidArgument(
      `Cannot mount ${mount.type} at "${target}": mount options are too long (${size} bytes, the limit is ${
        limit - 1
      })`,
    );
  }
  // A remount without new data changes only flags: no first call (moby/moby#34077).
  if ((flags & sys.MS_REMOUNT) === 0 || dataString !== "") {
    try {
      if (compacted === undefined) {
        sys.mount(mount.source, target, mount.type, flags, dataString === "" ? null : dataString);
      } else {
        mountRelative(mount, target, flags, compacted, limit);
      }
    } catch (err) {
      throw mountError(`Cannot mount ${what}`, err);
    }
  }
  if (parsed.propagation !== undefined) {
    try {
      sys.mount(null, target, null, parsed.propagation | sys.MS_SILENT, null);
    } catch (err) {
      throw mountError(`Cannot change the propagation of "${target}"`, err);
    }
  }
  const bindReadOnly = sys.MS_BIND | sys.MS_RDONLY;
  if ((flags & bindReadOnly) === bindReadOnly) {
    try {
      sys.mount(null, target, null, flags | sys.MS_REMOUNT, null);
    } catch (err) {
      throw mountError(`Cannot remount "${target}" read-only`, err);
    }
  }
}

/**
 * Mounts an overlay whose lowerdirs are relative to `compacted.dir`. The directory is opened and
 * the lowerdirs go through `/proc/self/fd/<fd>/`, which changes no process state; only when that
 * form is still too long does the process change its working directory to `compacted.dir`
 * around the synchronous mount(2) call (no JavaScript runs in between) and pass plain relative
 * lowerdirs, as containerd does on a dedicated thread.
 */
function mountRelative(
  mount: Mount,
  target: string,
  flags: number,
  compacted: CompactedOverlay,
  limit: number,
): void {
  let fd: number;
  try {
    fd = sys.open(compacted.dir, sys.O_PATH | sys.O_DIRECTORY | sys.O_CLOEXEC);
  } catch (err) {
    throw mountError(`Cannot open "${compacted.dir}" to mount with relative lowerdirs`, err);
  }
  try {
    const viaFd = lowerdirOptions(compacted, `/proc/self/fd/${fd}/`).join(",");
    if (byteLength(viaFd) < limit) {
      sys.mount(mount.source, target, mount.type, flags, viaFd);
    } else {
      const relative = lowerdirOptions(compacted, "").join(",");
      withWorkingDirectory(fd, () => sys.mount(mount.source, target, mount.type, flags, relative));
    }
  } finally {
    sys.close(fd);
  }
}

/**
 * Runs a synchronous call with the directory of `dirfd` as the process's working directory, then
 * restores the old one through a descriptor (so even a deleted working directory comes back).
 */
function withWorkingDirectory(dirfd: number, call: () => void): void {
  const previous = sys.open(".", sys.O_PATH | sys.O_DIRECTORY | sys.O_CLOEXEC);
  try {
    Deno.chdir(`/proc/self/fd/${dirfd}`);
    try {
      call();
    } finally {
      Deno.chdir(`/proc/self/fd/${previous}`);
    }
  } finally {
    sys.close(previous);
  }
}

/** Wraps a failed mount(2) or umount2(2) in a typed error with the errno in the message. */
function mountError(action: string, err: unknown): unknown {
  if (!(err instanceof sys.SysError)) return err;
  const message = `${action}: ${err.message}`;
  switch (err.code) {
    case "ENOENT":
    case "ENOTDIR":
      return new NotFound(message, { cause: err });
    case "EPERM":
    case "EACCES":
    case "EROFS":
    case "ENODEV":
    case "ENOTBLK":
    case "ENXIO":
      return new FailedPrecondition(message, { cause: err });
    case "EBUSY":
      return new Unavailable(message, { cause: err });
    case "EINVAL":
    case "ENAMETOOLONG":
    case "ELOOP":
    case "E2BIG":
      return new InvalidArgument(message, { cause: err });
    default:
      return err;
  }
}

/** Options of {@linkcode unmount} and {@linkcode unmountAll}. */
export interface UnmountOptions {
  /** umount2(2) flags such as `MNT_DETACH` (default none). */
  flags?: number;
}

/**
 * Unmounts `target` once, retrying up to 50 times with 50 ms pauses while it is busy.
 *
 * @example
 * ```ts
 * import { unmount } from "@strata/strata/mount";
 * await unmount("/mnt/data");
 * ```
 *
 * @param target The mount point.
 * @param options umount2(2) flags.
 * @returns When the mount is gone.
 * @throws {Unavailable} When it stays busy.
 * @throws {InvalidArgument} When `target` is not a mount point (`EINVAL`).
 */
export async function unmount(target: string, options: UnmountOptions = {}): Promise<void> {
  const flags = options.flags ?? 0;
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      sys.umount2(target, flags);
      return;
    } catch (err) {
      if (!sys.isErrno(err, "EBUSY")) throw mountError(`Cannot unmount "${target}"`, err);
    }
    await new Promise((done) => setTimeout(done, 50));
  }
  throw new Unavailable(`Cannot unmount "${target}": it is still busy after 50 attempts`);
}

/**
 * Unmounts everything stacked on `target` (repeats until it is no mount point). Does nothing for
 * an empty or missing path.
 *
 * @example
 * ```ts
 * import { unmountAll } from "@strata/strata/mount";
 * await unmountAll("/mnt/data");
 * ```
 *
 * @param target The mount point.
 * @param options umount2(2) flags.
 * @returns When no mount is left on `target`.
 * @throws {Unavailable} When a mount stays busy.
 */
export async function unmountAll(target: string, options: UnmountOptions = {}): Promise<void> {
  if (target === "") return;
  try {
    Deno.statSync(target);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
  }
  while (true) {
    try {
      await unmount(target, options);
    } catch (err) {
      if (err instanceof InvalidArgument && sys.isErrno(err.cause, "EINVAL")) return;
      throw err;
    }
  }
}

/**
 * Unmounts mounts made by {@linkcode mountAll} on `target`, in reverse order, each with
 * {@linkcode unmountAll}. Like containerd, only a failure of the last mount in the list (the
 * first one unmounted) is reported; the others are ignored.
 *
 * @example
 * ```ts
 * import { mountAll, unmountMounts } from "@strata/strata/mount";
 * const mounts = [{ type: "bind", source: "/srv/data", options: ["rbind"] }];
 * await mountAll(mounts, "/mnt/data");
 * await unmountMounts(mounts, "/mnt/data");
 * ```
 *
 * @param mounts The mounts that were mounted.
 * @param target The directory they were mounted on.
 * @returns When done.
 */
export async function unmountMounts(mounts: readonly Mount[], target: string): Promise<void> {
  const root = resolve(target);
  for (let i = mounts.length - 1; i >= 0; i--) {
    try {
      await unmountAll(rootPath(root, mounts[i]!.target));
    } catch (err) {
      if (i === mounts.length - 1) throw err;
    }
  }
}

/** Options of {@linkcode withTempMount}. */
export interface TempMountOptions {
  /** Where the temporary mount point is made (default: the OS temporary directory). */
  location?: string;
}

/**
 * Mounts `mounts` on a fresh temporary directory, calls `fn` with it, then always unmounts (in
 * reverse order) and removes the directory without recursion, so a failed unmount can never
 * delete snapshot data. `volatile` and `fsync=volatile` are dropped from overlay mounts (a
 * volatile overlay cannot be mounted twice with the same upper and work directories).
 *
 * @example
 * ```ts
 * import { withTempMount } from "@strata/strata/mount";
 * const mounts = [{ type: "bind", source: "/srv/data", options: ["ro", "rbind"] }];
 * const names = await withTempMount(mounts, async (root) => {
 * const found: string[] = [];
 * for await (const entry of Deno.readDir(root)) found.push(entry.name);
 * return found;
 * });
 * console.log(names);
 * ```
 *
 * @param mounts The mounts.
 * @param fn Receives the mount point.
 * @param options The location of the temporary directory.
 * @returns What `fn` returned.
 * @throws When `fn` or the cleanup fails; `fn`'s error is rethrown as is, and when the cleanup
 * fails too, an `AggregateError` carries both.
 */
export async function withTempMount<T>(
  mounts: readonly Mount[],
  fn: (root: string) => T | Promise<T>,
  options: TempMountOptions = {},
): Promise<T> {
  const location = options.location ?? tmpdir();
  const root = await Deno.makeTempDir({ dir: location, prefix: "strata-mount-" });
  const stripped = mounts.map((mount) =>
    mount.type === "overlay"
      ? {
        ...mount,
        options: mount.options.filter((option) =>
          option !== "volatile" && option !== "fsync=volatile"
        ),
      }
      : mount
  );
  let result: T;
  try {
    await mountAll(stripped, root);
    result = await fn(root);
  } catch (err) {
    const cleanup = await cleanupTempMount(stripped, root);
    if (cleanup === undefined) throw err;
    throw new AggregateError(
      [err, cleanup],
      `Cannot use temporary mount "${root}": ${errorText(err)}; cleanup failed too: ${
        errorText(cleanup)
      }`,
    );
  }
  const cleanup = await cleanupTempMount(stripped, root);
  if (cleanup !== undefined) throw cleanup;
  return result;
}

async function cleanupTempMount(mounts: readonly Mount[], root: string): Promise<unknown> {
  try {
    await unmountMounts(mounts, root);
    await Deno.remove(root);
    return undefined;
  } catch (err) {
    return err;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
