/**
 * Platform specifiers and matching with the semantics of `github.com/containerd/platforms`:
 * normalisation, parsing of `os[(version+features)]/arch/variant`, formatting, the host's default
 * platform, and the match comparers (`Only`, `OnlyStrict`, `OnlyOS`, `Ordered`, `Any`, `All`).
 *
 * Windows OS versions are matched with containerd's rule: the major and minor versions must be
 * equal; below build 20348 (Windows Server 2022) the build must be equal too; from there on a host
 * accepts containers from the newest LTSC build older than itself (20348 at least) up to its own.
 *
 * @module
 */

import { InvalidArgument } from "../errors.ts";
import type { MatchComparer, Platform } from "./types.ts";

const KNOWN_OS: ReadonlySet<string> = new Set([
  "aix",
  "android",
  "darwin",
  "dragonfly",
  "freebsd",
  "hurd",
  "illumos",
  "ios",
  "js",
  "linux",
  "nacl",
  "netbsd",
  "openbsd",
  "plan9",
  "solaris",
  "windows",
  "zos",
]);

const KNOWN_ARCH: ReadonlySet<string> = new Set([
  "386",
  "amd64",
  "amd64p32",
  "arm",
  "armbe",
  "arm64",
  "arm64be",
  "ppc64",
  "ppc64le",
  "loong64",
  "mips",
  "mipsle",
  "mips64",
  "mips64le",
  "mips64p32",
  "mips64p32le",
  "ppc",
  "riscv",
  "riscv64",
  "s390",
  "s390x",
  "sparc",
  "sparc64",
  "wasm",
]);

/**
 * The arm64 variants that have a fallback vector, each as a list of `[major, highest minor]`
 * ranges walked from the highest minor down to 0. An arm64 variant missing here has no vector.
 */
const ARM64_RANGES: ReadonlyMap<string, ReadonlyArray<readonly [number, number]>> = arm64Ranges();

function arm64Ranges(): Map<string, Array<[number, number]>> {
  const ranges = new Map<string, Array<[number, number]>>();
  ranges.set("v8", [[8, 0]]);
  for (let minor = 0; minor <= 9; minor++) ranges.set(`v8.${minor}`, [[8, minor]]);
  ranges.set("v9", [[9, 0], [8, 5]]);
  for (let minor = 0; minor <= 7; minor++) {
    ranges.set(`v9.${minor}`, [[9, minor], [8, Math.min(minor + 5, 9)]]);
  }
  return ranges;
}

const COMPONENT = /^[A-Za-z0-9_.-]+$/;
const OS_COMPONENT = /^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?$/;

/** Windows Server 2022, the first LTSC with a stable container ABI. */
const LTSC2022 = 20348;
/** The LTSC builds with a stable container ABI, ascending. */
const COMPAT_LTSC_BUILDS: readonly number[] = [LTSC2022, 26100];

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function hostOs(): string {
  return Deno.build.os.toLowerCase();
}

function normalizeOs(os: string): string {
  if (os === "") return hostOs();
  const lower = os.toLowerCase();
  return lower === "macos" ? "darwin" : lower;
}

function normalizeArch(architecture: string, variant: string): [string, string] {
  let arch = architecture.toLowerCase();
  let v = variant.toLowerCase();
  switch (arch) {
    case "i386":
      arch = "386";
      v = "";
      break;
    case "x86_64":
    case "x86-64":
    case "amd64":
      arch = "amd64";
      if (v === "v1") v = "";
      break;
    case "aarch64":
    case "arm64":
      arch = "arm64";
      if (v === "8" || v === "v8" || v === "v8.0") v = "";
      else if (v === "9" || v === "9.0" || v === "v9.0") v = "v9";
      break;
    case "armhf":
      arch = "arm";
      v = "v7";
      break;
    case "armel":
      arch = "arm";
      v = "v6";
      break;
    case "arm":
      if (v === "" || v === "7") v = "v7";
      else if (v === "5" || v === "6" || v === "8") v = `v${v}`;
      break;
  }
  return [arch, v];
}

/** Builds a platform, leaving out empty optional fields. */
function makePlatform(
  os: string,
  architecture: string,
  variant: string,
  from: Pick<Platform, "os.version" | "os.features">,
): Platform {
  const p: Platform = { os, architecture };
  if (variant !== "") p.variant = variant;
  if (from["os.version"] !== undefined && from["os.version"] !== "") {
    p["os.version"] = from["os.version"];
  }
  if (from["os.features"] !== undefined && from["os.features"].length > 0) {
    p["os.features"] = [...from["os.features"]];
  }
  return p;
}

function sortedUnique(values: readonly string[]): string[] {
  const sorted = [...values].sort(compareStrings);
  return sorted.filter((v, i) => i === 0 || v !== sorted[i - 1]);
}

/**
 * Normalises a platform as containerd does: the OS is lowercased (empty means the host OS, `macos`
 * means `darwin`), architecture aliases are resolved (`x86_64` → `amd64`, `aarch64` → `arm64`,
 * `armhf` → `arm/v7`, ...), canonical variants are applied (`amd64/v1` and `arm64/v8` lose their
 * variant, `arm` always gets one, `v7` by default) and OS features are sorted and de-duplicated.
 *
 * Empty `variant`, `os.version` and `os.features` are left out of the result.
 *
 * @example Normalise an alias
 * ```ts
 * import { normalizePlatform } from "./platforms.ts";
 *
 * const p = normalizePlatform({ os: "Linux", architecture: "aarch64", variant: "v8" });
 * console.log(p);
 * ```
 *
 * @param p The platform to normalise; it is not modified.
 * @returns A new, normalised platform.
 */
export function normalizePlatform(p: Platform): Platform {
  const [architecture, variant] = normalizeArch(p.architecture, p.variant ?? "");
  const out = makePlatform(normalizeOs(p.os), architecture, variant, p);
  if (out["os.features"] !== undefined) out["os.features"] = sortedUnique(out["os.features"]);
  return out;
}

/**
 * Reports whether two platforms are the same once normalised: same OS, architecture, variant and
 * OS version, and the same set of OS features.
 *
 * @example Compare an alias with its canonical form
 * ```ts
 * import { platformsEqual } from "./platforms.ts";
 *
 * console.log(platformsEqual(
 *   { os: "linux", architecture: "x86_64" },
 *   { os: "linux", architecture: "amd64", variant: "v1" },
 * ));
 * ```
 *
 * @param a The first platform.
 * @param b The second platform.
 * @returns `true` when both describe the same platform.
 */
export function platformsEqual(a: Platform, b: Platform): boolean {
  const na = normalizePlatform(a);
  const nb = normalizePlatform(b);
  const fa = na["os.features"] ?? [];
  const fb = nb["os.features"] ?? [];
  return na.os === nb.os && na.architecture === nb.architecture &&
    (na.variant ?? "") === (nb.variant ?? "") &&
    (na["os.version"] ?? "") === (nb["os.version"] ?? "") &&
    fa.length === fb.length && fa.every((f, i) => f === fb[i]);
}

let cachedCpuVariant: string | undefined;

/** Maps a `/proc/cpuinfo` "CPU architecture" value (or a uname machine suffix) to a variant. */
function variantFromCpuArchitecture(value: string): string {
  switch (value.toLowerCase()) {
    case "8":
    case "aarch64":
      return "v8";
    case "7":
    case "7m":
    case "?(12)":
    case "?(13)":
    case "?(14)":
    case "?(15)":
    case "?(16)":
    case "?(17)":
      return "v7";
    case "6":
    case "6tej":
      return "v6";
    case "5":
    case "5t":
    case "5te":
    case "5tej":
      return "v5";
    case "4":
    case "4t":
      return "v4";
    case "3":
      return "v3";
    default:
      return "unknown";
  }
}

/** Finds the first `key: value` line of `/proc/cpuinfo` whose key equals `key`, ignoring case. */
function cpuinfoField(cpuinfo: string, key: string): string | undefined {
  for (const line of cpuinfo.split("\n")) {
    const parts = line.split(":");
    if (parts.length > 1 && parts[0]?.trim().toLowerCase() === key.toLowerCase()) {
      return parts[1]?.trim() ?? "";
    }
  }
  return undefined;
}

/** Detects the ARM variant of the host (`v8`, `v7`, ...); empty on other architectures. */
function hostCpuVariant(arch: string): string {
  if (arch !== "arm" && arch !== "arm64") return "";
  if (cachedCpuVariant !== undefined) return cachedCpuVariant;
  let cpuinfo = "";
  try {
    cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
  } catch {
    // No /proc (not Linux, or no read permission): fall back to the architecture below.
  }
  let value = cpuinfoField(cpuinfo, "CPU architecture");
  if (value === undefined) {
    // Deno only runs on 64-bit ARM, whose machine name is aarch64.
    value = arch === "arm64" ? "8" : "";
  }
  if (arch === "arm" && value === "7") {
    const model = cpuinfoField(cpuinfo, "model name");
    if (model !== undefined && model.toLowerCase().startsWith("armv6-compatible")) value = "6";
  }
  cachedCpuVariant = value === "" ? "" : variantFromCpuArchitecture(value);
  return cachedCpuVariant;
}

/**
 * Returns the host's platform: `Deno.build.os` and `Deno.build.arch` normalised (`x86_64` →
 * `amd64`, `aarch64` → `arm64`), with the CPU variant from `/proc/cpuinfo` on ARM (`v8` on arm64).
 * Other architectures have no variant. On Windows the OS version is the host's release.
 *
 * @example Print the host platform
 * ```ts
 * import { defaultPlatformSpec } from "./platforms.ts";
 *
 * console.log(defaultPlatformSpec());
 * ```
 *
 * @returns The host platform.
 */
export function defaultPlatformSpec(): Platform {
  const [architecture] = normalizeArch(Deno.build.arch, "");
  const os = hostOs();
  const p: Platform = { os, architecture };
  const variant = hostCpuVariant(architecture);
  if (variant !== "") p.variant = variant;
  if (os === "windows") {
    try {
      const release = Deno.osRelease().match(/^\d+\.\d+\.\d+/);
      if (release !== null) p["os.version"] = release[0];
    } catch {
      // Without the "sys" permission the version stays unknown, which matches any version.
    }
  }
  return p;
}

/**
 * Returns the host's platform as a string, formatted with {@linkcode formatPlatformAll}.
 *
 * @example Print the host platform
 * ```ts
 * import { defaultPlatformString } from "./platforms.ts";
 *
 * console.log(defaultPlatformString());
 * ```
 *
 * @returns The host platform, such as `linux/amd64` or `linux/arm64/v8`.
 */
export function defaultPlatformString(): string {
  return formatPlatformAll(defaultPlatformSpec());
}

function decodeOsOption(specifier: string, value: string): string {
  if (!value.includes("%")) return value;
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c !== 0x25) {
      bytes.push(c);
      continue;
    }
    const hex = value.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) {
      throw new InvalidArgument(
        `Cannot parse platform "${specifier}": invalid percent-encoding in "${value}"`,
      );
    }
    bytes.push(parseInt(hex, 16));
    i += 2;
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

function encodeOsOption(value: string): string {
  let out = "";
  for (const c of value) {
    switch (c) {
      case "%":
        out += "%25";
        break;
      case "+":
        out += "%2B";
        break;
      case "(":
        out += "%28";
        break;
      case ")":
        out += "%29";
        break;
      case "/":
        out += "%2F";
        break;
      default:
        out += c;
    }
  }
  return out;
}

/**
 * Parses a platform specifier such as `linux`, `arm64`, `linux/amd64`, `linux/arm/v7` or
 * `windows(10.0.17763+win32k)/amd64`, as containerd's `platforms.Parse`.
 *
 * - One part: a known OS gets the host architecture; otherwise it is read as an architecture and
 *   gets the host OS (an unknown one is an error).
 * - Two parts: `os/arch`; `arm` (or `armhf`) parses with an empty variant.
 * - Three parts: `os/arch/variant`; `arm64/v8` keeps `v8`.
 *
 * The OS is normalised and the architecture aliases resolved, but the result is not fully
 * normalised (see {@linkcode normalizePlatform}); matching normalises both sides anyway. OS
 * version and features may be percent-encoded.
 *
 * @example Parse specifiers
 * ```ts
 * import { parsePlatform } from "./platforms.ts";
 *
 * console.log(parsePlatform("linux/arm64/v8"));
 * console.log(parsePlatform("windows(10.0.17763)/amd64"));
 * ```
 *
 * @param specifier The platform specifier.
 * @returns The parsed platform.
 * @throws {InvalidArgument} When the specifier contains a wildcard, has more than three parts, has
 * an invalid component or names an unknown OS or architecture on its own.
 */
export function parsePlatform(specifier: string): Platform {
  if (specifier.includes("*")) {
    throw new InvalidArgument(`Cannot parse platform "${specifier}": wildcards are not supported`);
  }
  const parts = specifier.split("/");
  if (parts.length > 3) {
    throw new InvalidArgument(
      `Cannot parse platform "${specifier}": too many components, want at most os/arch/variant`,
    );
  }
  const first = parts[0] ?? "";
  const osMatch = OS_COMPONENT.exec(first);
  if (osMatch === null) {
    throw new InvalidArgument(
      `Cannot parse platform "${specifier}": invalid OS component "${first}", want os[(version[+feature]...)]`,
    );
  }
  for (const part of parts.slice(1)) {
    if (!COMPONENT.test(part)) {
      throw new InvalidArgument(
        `Cannot parse platform "${specifier}": invalid component "${part}", want [A-Za-z0-9_.-]+`,
      );
    }
  }
  const os = normalizeOs(osMatch[1] ?? "");
  const extra: Pick<Platform, "os.version" | "os.features"> = {};
  extra["os.version"] = decodeOsOption(specifier, osMatch[2] ?? "");
  const rawFeatures = osMatch[3] ?? "";
  if (rawFeatures !== "") {
    const features: string[] = [];
    for (const raw of rawFeatures.slice(1).split("+")) {
      if (raw.trim() === "") {
        throw new InvalidArgument(`Cannot parse platform "${specifier}": empty OS feature`);
      }
      const feature = decodeOsOption(specifier, raw.trim());
      if (feature !== "") features.push(feature);
    }
    extra["os.features"] = features;
  }

  if (parts.length === 1) {
    if (KNOWN_OS.has(os)) {
      const host = defaultPlatformSpec();
      const variant = host.architecture === "arm" && host.variant !== "v7"
        ? host.variant ?? ""
        : "";
      return makePlatform(os, host.architecture, variant, extra);
    }
    const [arch, variant] = normalizeArch(first, "");
    if (KNOWN_ARCH.has(arch)) {
      return makePlatform(hostOs(), arch, arch === "arm" && variant === "v7" ? "" : variant, extra);
    }
    throw new InvalidArgument(
      `Cannot parse platform "${specifier}": unknown operating system or architecture`,
    );
  }
  if (parts.length === 2) {
    const [arch, variant] = normalizeArch(parts[1] ?? "", "");
    return makePlatform(os, arch, arch === "arm" && variant === "v7" ? "" : variant, extra);
  }
  const [arch, variant] = normalizeArch(parts[1] ?? "", parts[2] ?? "");
  return makePlatform(os, arch, arch === "arm64" && variant === "" ? "v8" : variant, extra);
}

/**
 * Formats a platform as `os/arch/variant`, leaving out empty parts; `unknown` when the OS is empty.
 *
 * @example Format a platform
 * ```ts
 * import { formatPlatform } from "./platforms.ts";
 *
 * console.log(formatPlatform({ os: "linux", architecture: "arm", variant: "v7" }));
 * ```
 *
 * @param p The platform.
 * @returns The specifier.
 */
export function formatPlatform(p: Platform): string {
  if (p.os === "") return "unknown";
  return [p.os, p.architecture, p.variant ?? ""].filter((s) => s !== "").join("/");
}

/**
 * Formats a platform like {@linkcode formatPlatform}, but with the OS version and features:
 * `os(version+feature1+feature2)/arch/variant`. Features are sorted and de-duplicated, empty ones
 * dropped; `%`, `+`, `(`, `)` and `/` in the version and features are percent-encoded.
 *
 * @example Format a Windows platform
 * ```ts
 * import { formatPlatformAll } from "./platforms.ts";
 *
 * console.log(formatPlatformAll({
 *   os: "windows",
 *   architecture: "amd64",
 *   "os.version": "10.0.17763",
 *   "os.features": ["win32k"],
 * }));
 * ```
 *
 * @param p The platform.
 * @returns The full specifier, which {@linkcode parsePlatform} reads back.
 */
export function formatPlatformAll(p: Platform): string {
  if (p.os === "") return "unknown";
  const version = encodeOsOption(p["os.version"] ?? "");
  const features = sortedUnique(p["os.features"] ?? [])
    .filter((f) => f !== "")
    .map(encodeOsOption)
    .join("+");
  let os = p.os;
  if (version !== "" || features !== "") {
    os += `(${version}${features !== "" ? `+${features}` : ""})`;
  }
  return [os, p.architecture, p.variant ?? ""].filter((s) => s !== "").join("/");
}

interface WindowsVersion {
  major: number;
  minor: number;
  build: number;
}

function parseWindowsVersion(version: string): WindowsVersion {
  const zero = { major: 0, minor: 0, build: 0 };
  const parts = version.split(".");
  if (parts.length < 3) return zero;
  const [major, minor, build] = parts.map((s) => /^[0-9]+$/.test(s) ? Number(s) : NaN);
  if (
    major === undefined || minor === undefined || build === undefined ||
    !(major <= 0xff) || !(minor <= 0xff) || !(build <= 0xffff)
  ) {
    return zero;
  }
  return { major, minor, build };
}

/** Reports whether a Windows host of version `host` can run a container of version `ctr`. */
function windowsCompatible(host: WindowsVersion, ctr: WindowsVersion): boolean {
  if (host.major !== ctr.major || host.minor !== ctr.minor) return false;
  if (host.build < LTSC2022) return host.build === ctr.build;
  let oldest = LTSC2022;
  for (let i = COMPAT_LTSC_BUILDS.length - 1; i >= 0; i--) {
    const ltsc = COMPAT_LTSC_BUILDS[i] ?? LTSC2022;
    if (host.build > ltsc) {
      oldest = ltsc;
      break;
    }
  }
  return oldest <= ctr.build && ctr.build <= host.build;
}

/** Returns a check of candidate OS versions for `os`; only Windows versions are compared. */
function osVersionMatcher(os: string, version: string | undefined): (v: string) => boolean {
  if (os !== "windows") return () => true;
  const host = parseWindowsVersion(version ?? "");
  if (host.major === 0 && host.minor === 0 && host.build === 0) return () => true;
  return (v) => v === "" || windowsCompatible(host, parseWindowsVersion(v));
}

/** Reports whether every feature in `wanted` is in `offered`; both sorted and de-duplicated. */
function featuresSubset(wanted: readonly string[], offered: readonly string[]): boolean {
  if (wanted.length > offered.length) return false;
  let j = 0;
  for (const feature of wanted) {
    let found = false;
    for (; j < offered.length; j++) {
      const have = offered[j] ?? "";
      if (feature === have) {
        found = true;
        j++;
        break;
      }
      if (feature < have) return false;
    }
    if (!found) return false;
  }
  return true;
}

type Match = (p: Platform) => boolean;

/** containerd's `NewMatcher`: exact OS/arch/variant, Windows version rule, feature subset. */
function exactMatcher(p: Platform): Match {
  const want = normalizePlatform(p);
  const wantFeatures = want["os.features"] ?? [];
  const windows = want.os === "windows";
  const versionOk = osVersionMatcher(want.os, want["os.version"]);
  return (candidate) => {
    let c = candidate;
    if (windows && c["os.features"]?.includes("win32k")) {
      const features = [...c["os.features"]];
      features.splice(features.indexOf("win32k"), 1);
      c = { ...c, "os.features": features };
    }
    const n = normalizePlatform(c);
    if (
      n.os !== want.os || n.architecture !== want.architecture ||
      (n.variant ?? "") !== (want.variant ?? "") || !versionOk(c["os.version"] ?? "")
    ) {
      return false;
    }
    return featuresSubset(n["os.features"] ?? [], wantFeatures);
  };
}

function withoutFeatures(p: Platform): Platform {
  const { "os.features": _features, ...rest } = p;
  return rest;
}

function featureCount(p: Platform): number {
  return p["os.features"]?.length ?? 0;
}

function orderedComparer(matchers: readonly Match[]): MatchComparer {
  function less(a: Platform, b: Platform): boolean {
    for (const m of matchers) {
      const am = m(a);
      const bm = m(b);
      if (am && !bm) return true;
      if (am && bm && featureCount(a) !== featureCount(b)) {
        return featureCount(a) > featureCount(b);
      }
      if (am || bm) return false;
    }
    if (featureCount(a) > 0 || featureCount(b) > 0) {
      return less(withoutFeatures(a), withoutFeatures(b));
    }
    return false;
  }
  return {
    match: (p) => matchers.some((m) => m(p)),
    less,
  };
}

/** containerd's `platformVector`: `p` (normalised) followed by the platforms it can also run. */
function platformVector(p: Platform): Platform[] {
  const variant = p.variant ?? "";
  const derive = (architecture: string, v: string): Platform =>
    makePlatform(p.os, architecture, v, p);
  // Numeric levels above this are not real CPU levels; capping them keeps the vector small.
  const maxLevel = 64;
  const level = /^v?[0-9]+$/.test(variant)
    ? Math.min(Number(variant.replace(/^v/, "")), maxLevel)
    : NaN;
  switch (p.architecture) {
    case "amd64": {
      const vector = [p];
      for (let n = level - 1; n >= 1; n--) vector.push(derive("amd64", `v${n}`));
      vector.push(derive("386", ""));
      return vector;
    }
    case "arm": {
      const vector = [p];
      for (let n = level - 1; n >= 5; n--) vector.push(derive("arm", `v${n}`));
      return vector;
    }
    case "arm64": {
      const v = variant === "" ? "v8" : variant;
      const ranges = ARM64_RANGES.get(v);
      if (ranges === undefined) return [];
      const vector: Platform[] = [];
      for (const [major, highest] of ranges) {
        for (let minor = highest; minor >= 0; minor--) {
          vector.push(derive("arm64", minor === 0 ? `v${major}` : `v${major}.${minor}`));
        }
      }
      // Every arm64 v8.x and v9.x also runs 32-bit arm up to v8.
      return [...vector, ...platformVector(derive("arm", "v8"))];
    }
    default:
      return [p];
  }
}

/**
 * Returns containerd's exact matcher (`NewMatcher`) for one platform: both sides are normalised,
 * OS, architecture and variant must be equal, Windows OS versions must be compatible and the
 * candidate's OS features must be a subset of `p`'s. It expresses no preference: `less` is always
 * `false`.
 *
 * @example Match aliases
 * ```ts
 * import { platformMatcher } from "./platforms.ts";
 *
 * const m = platformMatcher({ os: "linux", architecture: "arm64" });
 * console.log(m.match({ os: "linux", architecture: "aarch64", variant: "v8" }));
 * ```
 *
 * @param p The platform to match.
 * @returns A match comparer without ordering.
 */
export function platformMatcher(p: Platform): MatchComparer {
  const match = exactMatcher(p);
  return { match, less: () => false };
}

/**
 * Returns a comparer matching `p` and the platforms it can also run, most preferred first
 * (containerd's `Only`):
 *
 * - `amd64/vN`: `amd64/vN` down to `amd64` (v1), then `386`;
 * - `arm/vN`: `arm/vN` down to `arm/v5`;
 * - `arm64` (v8): `arm64`, then `arm/v8` down to `arm/v5`; `arm64/v8.x`: `v8.x` down to `v8`, then
 *   32-bit arm; `arm64/v9.x`: `v9.x` down to `v9`, then `v8.(x+5, at most 9)` down to `v8`, then
 *   32-bit arm. An arm64 variant outside v8–v8.9 and v9–v9.7 matches nothing;
 * - other architectures: only themselves.
 *
 * @example Accept 386 images on an amd64 host
 * ```ts
 * import { onlyPlatform } from "./platforms.ts";
 *
 * const m = onlyPlatform({ os: "linux", architecture: "amd64" });
 * console.log(m.match({ os: "linux", architecture: "386" }));
 * ```
 *
 * @param p The platform.
 * @returns A match comparer that prefers closer platforms.
 */
export function onlyPlatform(p: Platform): MatchComparer {
  return orderedPlatforms(platformVector(normalizePlatform(p)));
}

/**
 * Returns a comparer matching only `p` itself, with no fallbacks (containerd's `OnlyStrict`):
 * `amd64` does not accept `386`, `arm/v7` does not accept `arm/v6`.
 *
 * @example Reject 386 on amd64
 * ```ts
 * import { onlyStrictPlatform } from "./platforms.ts";
 *
 * const m = onlyStrictPlatform({ os: "linux", architecture: "amd64" });
 * console.log(m.match({ os: "linux", architecture: "386" }));
 * ```
 *
 * @param p The platform.
 * @returns A match comparer.
 */
export function onlyStrictPlatform(p: Platform): MatchComparer {
  return orderedPlatforms([normalizePlatform(p)]);
}

/**
 * Returns a comparer matching any architecture of `p`'s OS, as long as the OS version (Windows
 * rule) and OS features match (containerd's `OnlyOS`). `less` puts matching platforms first, then
 * those with `p`'s exact architecture.
 *
 * @example Accept any Linux platform
 * ```ts
 * import { onlyOsPlatform } from "./platforms.ts";
 *
 * const m = onlyOsPlatform({ os: "linux", architecture: "amd64" });
 * console.log(m.match({ os: "linux", architecture: "s390x" }));
 * ```
 *
 * @param p The platform whose OS is wanted.
 * @returns A match comparer.
 */
export function onlyOsPlatform(p: Platform): MatchComparer {
  const want = normalizePlatform(p);
  const wantFeatures = want["os.features"] ?? [];
  const versionOk = osVersionMatcher(want.os, want["os.version"]);
  const arch = orderedComparer([exactMatcher(want)]);
  function match(candidate: Platform): boolean {
    const n = normalizePlatform(candidate);
    return n.os === want.os && versionOk(candidate["os.version"] ?? "") &&
      featuresSubset(n["os.features"] ?? [], wantFeatures);
  }
  return {
    match,
    less(a, b) {
      const am = match(a);
      if (!am) return false;
      if (!match(b)) return true;
      return arch.less(a, b);
    },
  };
}

/**
 * Returns a comparer matching any of `platforms`, preferring them in the given order
 * (containerd's `Ordered`). Among platforms matched by the same entry, the one with more OS
 * features comes first; when no entry matches either, OS features are ignored and the check is
 * repeated.
 *
 * @example Prefer arm64 over amd64
 * ```ts
 * import { orderedPlatforms } from "./platforms.ts";
 *
 * const m = orderedPlatforms([
 *   { os: "linux", architecture: "arm64" },
 *   { os: "linux", architecture: "amd64" },
 * ]);
 * console.log(m.less({ os: "linux", architecture: "arm64" }, { os: "linux", architecture: "amd64" }));
 * ```
 *
 * @param platforms The acceptable platforms, most preferred first.
 * @returns A match comparer.
 */
export function orderedPlatforms(platforms: readonly Platform[]): MatchComparer {
  return orderedComparer(platforms.map(exactMatcher));
}

/**
 * Returns a comparer matching any of `platforms` with no order among them (containerd's `Any`):
 * `less` only puts matching platforms before non-matching ones (and, when both match, the one with
 * more OS features first).
 *
 * @example Accept two platforms
 * ```ts
 * import { anyPlatform } from "./platforms.ts";
 *
 * const m = anyPlatform([
 *   { os: "linux", architecture: "arm64" },
 *   { os: "linux", architecture: "amd64" },
 * ]);
 * console.log(m.match({ os: "linux", architecture: "amd64" }));
 * ```
 *
 * @param platforms The acceptable platforms.
 * @returns A match comparer.
 */
export function anyPlatform(platforms: readonly Platform[]): MatchComparer {
  const matchers = platforms.map(exactMatcher);
  function less(a: Platform, b: Platform): boolean {
    let am = false;
    let bm = false;
    for (const m of matchers) {
      am ||= m(a);
      bm ||= m(b);
      if (am && bm) {
        if (featureCount(a) !== featureCount(b)) return featureCount(a) > featureCount(b);
        break;
      }
    }
    if (!am && !bm && (featureCount(a) > 0 || featureCount(b) > 0)) {
      return less(withoutFeatures(a), withoutFeatures(b));
    }
    return am && !bm;
  }
  return { match: (p) => matchers.some((m) => m(p)), less };
}

/**
 * A comparer matching every platform with no preference (containerd's `All`); sorting with it
 * keeps the document order.
 *
 * @example Match anything
 * ```ts
 * import { allPlatforms } from "./platforms.ts";
 *
 * console.log(allPlatforms.match({ os: "plan9", architecture: "mips" }));
 * ```
 */
export const allPlatforms: MatchComparer = {
  match: () => true,
  less: () => false,
};

/**
 * Returns the host's default comparer: {@linkcode onlyPlatform} of {@linkcode defaultPlatformSpec}.
 *
 * @example Check an image platform against the host
 * ```ts
 * import { defaultPlatformMatcher } from "./platforms.ts";
 *
 * console.log(defaultPlatformMatcher().match({ os: "linux", architecture: "amd64" }));
 * ```
 *
 * @returns A match comparer for the host.
 */
export function defaultPlatformMatcher(): MatchComparer {
  return onlyPlatform(defaultPlatformSpec());
}

/**
 * Returns the host's strict comparer: {@linkcode onlyStrictPlatform} of
 * {@linkcode defaultPlatformSpec}.
 *
 * @example Check an image platform strictly against the host
 * ```ts
 * import { defaultStrictPlatformMatcher } from "./platforms.ts";
 *
 * console.log(defaultStrictPlatformMatcher().match({ os: "linux", architecture: "386" }));
 * ```
 *
 * @returns A strict match comparer for the host.
 */
export function defaultStrictPlatformMatcher(): MatchComparer {
  return onlyStrictPlatform(defaultPlatformSpec());
}
