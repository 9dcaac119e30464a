// Private helpers of the overlay snapshotter: what the host supports (user namespaces, the
// overlay module's `index` parameter, userxattr), the d_type check and trial overlay mounts.

import { join } from "node:path";
import { FailedPrecondition, InvalidArgument } from "../errors.ts";
import { mountAll, unmountAll } from "../mount/mod.ts";
import * as sys from "../sys/mod.ts";

/**
 * Whether this process runs in a user namespace other than the initial one: the initial one maps
 * every id to itself (`0 0 4294967295` in `/proc/self/uid_map`).
 */
export function inUserNamespace(): boolean {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/self/uid_map");
  } catch {
    return false;
  }
  const lines = text.trim().split("\n");
  if (lines.length !== 1) return true;
  const fields = lines[0]!.trim().split(/\s+/);
  return !(fields[0] === "0" && fields[1] === "0" && fields[2] === "4294967295");
}

/** Whether the loaded overlay module has an `index` parameter (so `index=off` is understood). */
export function overlayHasIndexParameter(): boolean {
  try {
    Deno.statSync("/sys/module/overlay/parameters/index");
    return true;
  } catch {
    return false;
  }
}

/** Whether the running kernel's release is at least `major.minor`. */
export function kernelAtLeast(major: number, minor: number): boolean {
  const match = /^(\d+)\.(\d+)/.exec(Deno.osRelease());
  if (match === null) return false;
  const [have, haveMinor] = [Number(match[1]), Number(match[2])];
  return have > major || (have === major && haveMinor >= minor);
}

/** The file-system type of the mount holding `path`, from `/proc/self/mountinfo`. */
export function fileSystemType(path: string): string | undefined {
  let text: string;
  let real: string;
  try {
    text = Deno.readTextFileSync("/proc/self/mountinfo");
    real = Deno.realPathSync(path);
  } catch {
    return undefined;
  }
  let best: { point: string; type: string } | undefined;
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    const separator = fields.indexOf("-");
    const point = fields[4];
    const type = fields[separator + 1];
    if (separator < 0 || point === undefined || type === undefined) continue;
    const decoded = point.replace(
      /\\([0-7]{3})/g,
      (_, octal: string) => String.fromCharCode(parseInt(octal, 8)),
    );
    const inside = decoded === "/" || real === decoded || real.startsWith(decoded + "/");
    // Later lines are mounted on top of earlier ones, so the last longest match wins.
    if (inside && (best === undefined || decoded.length >= best.point.length)) {
      best = { point: decoded, type };
    }
  }
  return best?.type;
}

/**
 * Fails unless the file system of `dir` reports file types in directory entries (`d_type`):
 * overlayfs needs them. A file is created so that there is an entry to look at. (Deno's own
 * `readDir` cannot tell: it falls back to lstat for `DT_UNKNOWN` entries.)
 *
 * @throws {FailedPrecondition} When the file system lacks `d_type`.
 */
export function checkDType(dir: string): void {
  const probe = Deno.makeTempFileSync({ dir, prefix: "d_type-check-" });
  try {
    const name = probe.slice(probe.lastIndexOf("/") + 1);
    const fd = sys.open(dir, sys.O_RDONLY | sys.O_DIRECTORY | sys.O_CLOEXEC);
    let type: string | undefined;
    try {
      type = sys.readDirFd(fd).find((entry) => entry.name === name)?.type;
    } finally {
      sys.close(fd);
    }
    if (type === "unknown") {
      throw new FailedPrecondition(
        `Cannot use overlayfs at "${dir}": the file system does not report file types in directory entries (it lacks d_type; reformat XFS with ftype=1)`,
      );
    }
  } finally {
    Deno.removeSync(probe);
  }
}

/**
 * Mounts a throwaway overlay with two lowerdirs (plus `extra` options) in a temporary directory
 * under `dir`, then unmounts it and removes the directory.
 *
 * @returns `undefined` on success, else the error of the failed mount.
 */
export async function trialOverlayMount(
  dir: string,
  extra: readonly string[],
): Promise<unknown> {
  const temp = await Deno.makeTempDir({ dir, prefix: "multiple-lowerdir-check-" });
  try {
    for (const name of ["lower1", "lower2", "upper", "work", "merged"]) {
      await Deno.mkdir(join(temp, name), { mode: 0o755 });
    }
    const merged = join(temp, "merged");
    try {
      await mountAll([{
        type: "overlay",
        source: "overlay",
        options: [
          `lowerdir=${join(temp, "lower2")}:${join(temp, "lower1")}`,
          `upperdir=${join(temp, "upper")}`,
          `workdir=${join(temp, "work")}`,
          ...extra,
        ],
      }], merged);
    } catch (err) {
      return err;
    }
    await unmountAll(merged);
    return undefined;
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
}

/**
 * Whether overlay mounts under `root` need `userxattr`: only in a user namespace, never on tmpfs,
 * always from Linux 5.11, else when a trial mount with `userxattr` works.
 */
export async function needsUserXattr(root: string): Promise<boolean> {
  if (!inUserNamespace()) return false;
  if (fileSystemType(root) === "tmpfs") return false;
  if (kernelAtLeast(5, 11)) return true;
  return await trialOverlayMount(root, ["userxattr"]) === undefined;
}

/** The host id that container id 0 maps to in a `ctr:host:size[,...]` mapping label. */
export function mappedRootId(label: string, value: string): number {
  for (const entry of value.split(",")) {
    const parts = entry.split(":");
    const [container, host, size] = parts.map((part) => /^\d+$/.test(part) ? Number(part) : NaN);
    if (parts.length !== 3 || [container, host, size].some((n) => n === undefined || isNaN(n))) {
      throw new InvalidArgument(
        `Cannot parse label "${label}": "${entry}" is not "containerID:hostID:size"`,
      );
    }
    if (container === 0 && size! > 0) return host!;
  }
  throw new InvalidArgument(`Cannot use label "${label}": "${value}" does not map container id 0`);
}
