import assert from "node:assert/strict";
import { InvalidArgument } from "../../errors.ts";
import {
  allPlatforms,
  anyPlatform,
  defaultPlatformMatcher,
  defaultPlatformSpec,
  defaultPlatformString,
  defaultStrictPlatformMatcher,
  formatPlatform,
  formatPlatformAll,
  normalizePlatform,
  onlyOsPlatform,
  onlyPlatform,
  onlyStrictPlatform,
  orderedPlatforms,
  parsePlatform,
  platformMatcher,
  platformsEqual,
} from "../../images/platforms.ts";
import type { MatchComparer, Platform } from "../../images/types.ts";

const HOST_OS = Deno.build.os;
const HOST_ARCH = Deno.build.arch === "x86_64"
  ? "amd64"
  : Deno.build.arch === "aarch64"
  ? "arm64"
  : Deno.build.arch;

/** Shorthand: parses `os/arch[/variant]` without host defaults. */
function p(spec: string, extra: Partial<Platform> = {}): Platform {
  const [os = "", architecture = "", variant] = spec.split("/");
  const out: Platform = { os, architecture, ...extra };
  if (variant !== undefined) out.variant = variant;
  return out;
}

function sortBy(m: MatchComparer, platforms: Platform[]): string[] {
  return [...platforms]
    .sort((a, b) => (m.less(a, b) ? -1 : m.less(b, a) ? 1 : 0))
    .map(formatPlatformAll);
}

Deno.test("normalizePlatform() applies containerd's aliases and canonical variants", () => {
  const table: [Platform, Platform][] = [
    [p("Linux/AMD64"), p("linux/amd64")],
    [p("macos/arm64"), p("darwin/arm64")],
    [p("linux/i386/v7"), p("linux/386")],
    [p("linux/x86_64"), p("linux/amd64")],
    [p("linux/x86-64/v1"), p("linux/amd64")],
    [p("linux/amd64/v3"), p("linux/amd64/v3")],
    [p("linux/aarch64"), p("linux/arm64")],
    [p("linux/arm64/8"), p("linux/arm64")],
    [p("linux/arm64/v8"), p("linux/arm64")],
    [p("linux/arm64/v8.0"), p("linux/arm64")],
    [p("linux/arm64/v8.2"), p("linux/arm64/v8.2")],
    [p("linux/arm64/9"), p("linux/arm64/v9")],
    [p("linux/arm64/v9.0"), p("linux/arm64/v9")],
    [p("linux/armhf"), p("linux/arm/v7")],
    [p("linux/armel"), p("linux/arm/v6")],
    [p("linux/arm"), p("linux/arm/v7")],
    [p("linux/arm/7"), p("linux/arm/v7")],
    [p("linux/arm/5"), p("linux/arm/v5")],
    [p("linux/arm/6"), p("linux/arm/v6")],
    [p("linux/arm/8"), p("linux/arm/v8")],
    [p("linux/ARM/V6"), p("linux/arm/v6")],
    [p("linux/s390x"), p("linux/s390x")],
    [p("/amd64"), p(`${HOST_OS}/amd64`)],
    [
      p("windows/amd64", { "os.version": "10.0.17763", "os.features": ["b", "a", "b"] }),
      p("windows/amd64", { "os.version": "10.0.17763", "os.features": ["a", "b"] }),
    ],
  ];
  for (const [input, want] of table) {
    assert.deepEqual(normalizePlatform(input), want, formatPlatformAll(input));
  }
});

Deno.test("normalizePlatform() does not modify its argument", () => {
  const input = p("linux/aarch64", { "os.features": ["b", "a"] });
  normalizePlatform(input);
  assert.deepEqual(input, p("linux/aarch64", { "os.features": ["b", "a"] }));
});

Deno.test("platformsEqual() compares normalised platforms", () => {
  assert.equal(platformsEqual(p("linux/x86_64"), p("linux/amd64/v1")), true);
  assert.equal(platformsEqual(p("linux/arm"), p("linux/arm/v7")), true);
  assert.equal(
    platformsEqual(p("linux/amd64", { "os.features": ["a", "b"] }), {
      ...p("linux/amd64"),
      "os.features": ["b", "a"],
    }),
    true,
  );
  assert.equal(platformsEqual(p("linux/arm/v6"), p("linux/arm/v7")), false);
  assert.equal(platformsEqual(p("linux/amd64"), p("windows/amd64")), false);
  assert.equal(
    platformsEqual(p("windows/amd64", { "os.version": "1" }), p("windows/amd64")),
    false,
  );
});

Deno.test("parsePlatform() reads one-part specifiers as an OS or an architecture", () => {
  const host = defaultPlatformSpec();
  const hostVariant = host.architecture === "arm" && host.variant !== "v7"
    ? { variant: host.variant ?? "" }
    : {};
  const table: [string, Platform][] = [
    ["linux", { os: "linux", architecture: HOST_ARCH, ...hostVariant }],
    ["Windows", { os: "windows", architecture: HOST_ARCH, ...hostVariant }],
    ["macos", { os: "darwin", architecture: HOST_ARCH, ...hostVariant }],
    ["amd64", p(`${HOST_OS}/amd64`)],
    ["x86_64", p(`${HOST_OS}/amd64`)],
    ["i386", p(`${HOST_OS}/386`)],
    ["aarch64", p(`${HOST_OS}/arm64`)],
    ["arm", p(`${HOST_OS}/arm`)],
    ["armhf", p(`${HOST_OS}/arm`)],
    ["armel", p(`${HOST_OS}/arm/v6`)],
    ["s390x", p(`${HOST_OS}/s390x`)],
    ["riscv64", p(`${HOST_OS}/riscv64`)],
  ];
  for (const [input, want] of table) {
    assert.deepEqual(parsePlatform(input), want, input);
  }
});

Deno.test("parsePlatform() reads os/arch and os/arch/variant", () => {
  const table: [string, Platform][] = [
    ["linux/amd64", p("linux/amd64")],
    ["Linux/X86_64", p("linux/amd64")],
    ["darwin/arm64", p("darwin/arm64")],
    ["macos/arm64", p("darwin/arm64")],
    ["linux/aarch64", p("linux/arm64")],
    ["linux/arm", p("linux/arm")],
    ["linux/armhf", p("linux/arm")],
    ["linux/armel", p("linux/arm/v6")],
    ["linux/i386", p("linux/386")],
    ["plan9/weird", p("plan9/weird")],
    ["unknownos/unknownarch", p("unknownos/unknownarch")],
    ["linux/arm/v7", p("linux/arm/v7")],
    ["linux/arm/7", p("linux/arm/v7")],
    ["linux/arm/v6", p("linux/arm/v6")],
    ["linux/arm64/v8", p("linux/arm64/v8")],
    ["linux/arm64/8", p("linux/arm64/v8")],
    ["linux/aarch64/v8.0", p("linux/arm64/v8")],
    ["linux/arm64/v8.2", p("linux/arm64/v8.2")],
    ["linux/arm64/v9.0", p("linux/arm64/v9")],
    ["linux/amd64/v1", p("linux/amd64")],
    ["linux/amd64/v3", p("linux/amd64/v3")],
    ["linux/i386/whatever", p("linux/386")],
  ];
  for (const [input, want] of table) {
    assert.deepEqual(parsePlatform(input), want, input);
  }
});

Deno.test("parsePlatform() reads and percent-decodes OS version and features", () => {
  const table: [string, Platform][] = [
    ["windows(10.0.17763)/amd64", p("windows/amd64", { "os.version": "10.0.17763" })],
    [
      "windows(10.0.17763+win32k)/amd64",
      p("windows/amd64", { "os.version": "10.0.17763", "os.features": ["win32k"] }),
    ],
    ["linux(+b+a)/arm64", p("linux/arm64", { "os.features": ["b", "a"] })],
    ["linux()/amd64", p("linux/amd64")],
    [
      "windows(10.0%2B1%2Fx+f%28x%29+%25)/amd64",
      p("windows/amd64", { "os.version": "10.0+1/x", "os.features": ["f(x)", "%"] }),
    ],
    ["linux(caf%C3%A9)/amd64", p("linux/amd64", { "os.version": "café" })],
  ];
  for (const [input, want] of table) {
    assert.deepEqual(parsePlatform(input), want, input);
  }
});

Deno.test("parsePlatform() rejects bad specifiers with InvalidArgument and a reason", () => {
  const table: [string, string][] = [
    ["", "invalid OS component"],
    ["linux/*", "wildcards are not supported"],
    ["*", "wildcards are not supported"],
    ["linux/amd64/v8/extra", "too many components"],
    ["linux/arm/v7/x/y", "too many components"],
    ["linux//amd64", `invalid component ""`],
    ["linux/amd64/", `invalid component ""`],
    ["linux/amd 64", `invalid component "amd 64"`],
    ["lin ux/amd64", "invalid OS component"],
    ["linux(/amd64", "invalid OS component"],
    ["linux(1++a)/amd64", "invalid OS component"],
    ["linux(1+)/amd64", "invalid OS component"],
    ["linux(%zz)/amd64", "invalid percent-encoding"],
    ["linux(+a%2)/amd64", "invalid percent-encoding"],
    ["foo", "unknown operating system or architecture"],
    ["amd64(1.0)", "unknown operating system or architecture"],
  ];
  for (const [input, reason] of table) {
    assert.throws(
      () => parsePlatform(input),
      (err: unknown) =>
        err instanceof InvalidArgument &&
        err.message.startsWith(`Cannot parse platform "${input}": `) &&
        err.message.includes(reason),
      input,
    );
  }
});

Deno.test("formatPlatform() joins the non-empty parts", () => {
  const table: [Platform, string][] = [
    [p("linux/amd64"), "linux/amd64"],
    [p("linux/arm/v7"), "linux/arm/v7"],
    [p("linux/arm64/"), "linux/arm64"],
    [p("linux/"), "linux"],
    [p("/amd64"), "unknown"],
    [p("windows/amd64", { "os.version": "10.0.17763" }), "windows/amd64"],
  ];
  for (const [input, want] of table) assert.equal(formatPlatform(input), want);
});

Deno.test("formatPlatformAll() adds OS version and sorted, de-duplicated, encoded features", () => {
  const table: [Platform, string][] = [
    [p("linux/amd64"), "linux/amd64"],
    [p("/amd64", { "os.version": "1" }), "unknown"],
    [p("windows/amd64", { "os.version": "10.0.17763" }), "windows(10.0.17763)/amd64"],
    [
      p("windows/amd64", { "os.version": "10.0.17763", "os.features": ["win32k"] }),
      "windows(10.0.17763+win32k)/amd64",
    ],
    [p("linux/arm64/v8", { "os.features": ["b", "a", "", "b"] }), "linux(+a+b)/arm64/v8"],
    [p("linux/amd64", { "os.features": [""] }), "linux/amd64"],
    [p("linux/amd64", { "os.features": [] }), "linux/amd64"],
    [
      p("windows/amd64", { "os.version": "1+2/3", "os.features": ["a(b)%"] }),
      "windows(1%2B2%2F3+a%28b%29%25)/amd64",
    ],
  ];
  for (const [input, want] of table) assert.equal(formatPlatformAll(input), want);
});

Deno.test("formatPlatformAll() output parses back to the same platform", () => {
  const inputs: Platform[] = [
    p("windows/amd64", { "os.version": "10.0+1/(x)", "os.features": ["a+b", "c%d"] }),
    p("linux/arm/v6", { "os.features": ["x"] }),
    p("linux/arm64/v8.2"),
  ];
  for (const input of inputs) {
    assert.deepEqual(parsePlatform(formatPlatformAll(input)), input);
  }
});

Deno.test("onlyPlatform() on amd64 accepts 386 but not higher amd64 levels", () => {
  const m = onlyPlatform(p("linux/amd64"));
  for (const ok of ["linux/amd64", "linux/amd64/v1", "linux/x86_64", "linux/386", "linux/i386"]) {
    assert.equal(m.match(p(ok)), true, ok);
  }
  for (const bad of ["linux/amd64/v2", "linux/amd64/v3", "linux/arm64", "windows/amd64"]) {
    assert.equal(m.match(p(bad)), false, bad);
  }
});

Deno.test("onlyPlatform() on amd64/v3 accepts lower levels in order, then 386", () => {
  const m = onlyPlatform(p("linux/amd64/v3"));
  assert.equal(m.match(p("linux/amd64/v4")), false);
  assert.deepEqual(
    sortBy(m, [
      p("linux/386"),
      p("linux/arm64"),
      p("linux/amd64"),
      p("linux/amd64/v3"),
      p("linux/amd64/v2"),
    ]),
    ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386", "linux/arm64"],
  );
});

Deno.test("onlyPlatform() on arm/vN accepts vN down to v5", () => {
  const table: [string, string[], string[]][] = [
    ["linux/arm/v8", ["linux/arm/v8", "linux/arm/v7", "linux/arm", "linux/arm/v5"], [
      "linux/arm64",
    ]],
    ["linux/arm/v7", ["linux/arm/v7", "linux/arm", "linux/arm/v6", "linux/arm/v5"], [
      "linux/arm/v8",
      "linux/arm64",
    ]],
    ["linux/arm", ["linux/arm/v6", "linux/arm/v5", "linux/armhf"], ["linux/arm/v8"]],
    ["linux/arm/v6", ["linux/arm/v6", "linux/arm/v5", "linux/armel"], [
      "linux/arm/v7",
      "linux/arm",
    ]],
    ["linux/arm/v5", ["linux/arm/v5"], ["linux/arm/v6", "linux/arm"]],
  ];
  for (const [host, accepted, rejected] of table) {
    const m = onlyPlatform(p(host));
    for (const ok of accepted) assert.equal(m.match(p(ok)), true, `${host} accepts ${ok}`);
    for (const bad of rejected) assert.equal(m.match(p(bad)), false, `${host} rejects ${bad}`);
  }
});

Deno.test("onlyPlatform() on arm64 accepts 32-bit arm v8 to v5", () => {
  const m = onlyPlatform(p("linux/arm64"));
  for (
    const ok of [
      "linux/arm64",
      "linux/arm64/v8",
      "linux/aarch64",
      "linux/arm/v8",
      "linux/arm/v7",
      "linux/arm",
      "linux/arm/v6",
      "linux/arm/v5",
    ]
  ) {
    assert.equal(m.match(p(ok)), true, ok);
  }
  for (const bad of ["linux/arm64/v8.1", "linux/arm64/v9", "linux/amd64", "darwin/arm64"]) {
    assert.equal(m.match(p(bad)), false, bad);
  }
});

Deno.test("onlyPlatform() on arm64/v8.x and v9.x follows the arm64 variant tables", () => {
  const table: [string, string[], string[]][] = [
    ["linux/arm64/v8.2", ["linux/arm64/v8.2", "linux/arm64/v8.1", "linux/arm64", "linux/arm/v7"], [
      "linux/arm64/v8.3",
      "linux/arm64/v9",
    ]],
    ["linux/arm64/v9.0", [
      "linux/arm64/v9",
      "linux/arm64/v9.0",
      "linux/arm64/v8.5",
      "linux/arm64/v8.1",
      "linux/arm64/v8",
      "linux/arm/v5",
    ], ["linux/arm64/v8.6", "linux/arm64/v9.1"]],
    ["linux/arm64/v9.2", ["linux/arm64/v9.1", "linux/arm64/v9", "linux/arm64/v8.7"], [
      "linux/arm64/v8.8",
      "linux/arm64/v9.3",
    ]],
    ["linux/arm64/v9.5", ["linux/arm64/v8.9", "linux/arm64/v9.4"], ["linux/arm64/v9.6"]],
    ["linux/arm64/v9.7", ["linux/arm64/v9.7", "linux/arm64/v8.9"], ["linux/arm64/v9.8"]],
  ];
  for (const [host, accepted, rejected] of table) {
    const m = onlyPlatform(p(host));
    for (const ok of accepted) assert.equal(m.match(p(ok)), true, `${host} accepts ${ok}`);
    for (const bad of rejected) assert.equal(m.match(p(bad)), false, `${host} rejects ${bad}`);
  }
});

Deno.test("onlyPlatform() orders arm64/v9 candidates from v9 down to 32-bit arm", () => {
  const m = onlyPlatform(p("linux/arm64/v9.0"));
  assert.deepEqual(
    sortBy(m, [
      p("linux/arm/v5"),
      p("linux/arm64/v8.1"),
      p("linux/amd64"),
      p("linux/arm64"),
      p("linux/arm64/v9"),
      p("linux/arm/v7"),
      p("linux/arm64/v8.5"),
    ]),
    [
      "linux/arm64/v9",
      "linux/arm64/v8.5",
      "linux/arm64/v8.1",
      "linux/arm64",
      "linux/arm/v7",
      "linux/arm/v5",
      "linux/amd64",
    ],
  );
});

Deno.test("onlyPlatform() with an arm64 variant outside the tables matches nothing", () => {
  for (const variant of ["v10", "v9.8", "v8.10", "v7"]) {
    const m = onlyPlatform(p(`linux/arm64/${variant}`));
    assert.equal(m.match(p(`linux/arm64/${variant}`)), false, variant);
    assert.equal(m.match(p("linux/arm/v7")), false, variant);
    assert.equal(m.match(p("linux/arm64")), false, variant);
  }
});

Deno.test("onlyPlatform() on other architectures accepts only the exact platform", () => {
  const m = onlyPlatform(p("linux/386"));
  assert.equal(m.match(p("linux/i386")), true);
  assert.equal(m.match(p("linux/amd64")), false);
  const s = onlyPlatform(p("linux/s390x"));
  assert.equal(s.match(p("linux/s390x")), true);
  assert.equal(s.match(p("linux/ppc64le")), false);
});

Deno.test("onlyStrictPlatform() has no fallbacks but accepts aliases", () => {
  const amd = onlyStrictPlatform(p("linux/amd64"));
  assert.equal(amd.match(p("linux/x86_64")), true);
  assert.equal(amd.match(p("linux/386")), false);
  const arm = onlyStrictPlatform(p("linux/arm/v7"));
  assert.equal(arm.match(p("linux/arm")), true);
  assert.equal(arm.match(p("linux/arm/v6")), false);
  const arm64 = onlyStrictPlatform(p("linux/arm64"));
  assert.equal(arm64.match(p("linux/aarch64/v8")), true);
  assert.equal(arm64.match(p("linux/arm/v7")), false);
});

Deno.test("platformMatcher() requires candidate OS features to be a subset", () => {
  const m = platformMatcher(p("linux/amd64", { "os.features": ["b", "a"] }));
  const accepted: string[][] = [[], ["a"], ["b"], ["b", "a"], ["a", "a"]];
  const rejected: string[][] = [["c"], ["a", "c"], ["a", "b", "c"], ["0"]];
  for (const f of accepted) {
    assert.equal(m.match(p("linux/amd64", { "os.features": f })), true, f.join("+"));
  }
  for (const f of rejected) {
    assert.equal(m.match(p("linux/amd64", { "os.features": f })), false, f.join("+"));
  }
  const plain = platformMatcher(p("linux/amd64"));
  assert.equal(plain.match(p("linux/amd64", { "os.features": ["a"] })), false);
  assert.equal(plain.match(p("linux/amd64")), true);
  assert.equal(m.less(p("linux/amd64"), p("linux/arm64")), false);
});

Deno.test("platformMatcher() ignores the OS version outside Windows", () => {
  const m = platformMatcher(p("linux/amd64", { "os.version": "5.15" }));
  assert.equal(m.match(p("linux/amd64", { "os.version": "6.1" })), true);
});

Deno.test("platformMatcher() matches Windows versions with the LTSC compatibility rule", () => {
  const table: [string, string, boolean][] = [
    ["10.0.17763", "10.0.17763", true],
    ["10.0.17763", "10.0.17763.1234", true],
    ["10.0.17763", "", true],
    ["10.0.17763", "10.0.17764", false],
    ["10.0.17763", "10.0.20348", false],
    ["10.0.17763", "6.3.17763", false],
    ["10.0.20348", "10.0.17763", false],
    ["10.0.20348", "10.0.20348", true],
    ["10.0.20348", "10.0.26100", false],
    ["10.0.22621", "10.0.20348", true],
    ["10.0.26100", "10.0.20348", true],
    ["10.0.26100", "10.0.25398", true],
    ["10.0.26100", "10.0.26100", true],
    ["10.0.26200", "10.0.20348", false],
    ["10.0.26200", "10.0.26100", true],
    ["", "10.0.17763", true],
    ["garbage", "10.0.17763", true],
  ];
  for (const [host, image, want] of table) {
    const m = platformMatcher(p("windows/amd64", { "os.version": host }));
    assert.equal(m.match(p("windows/amd64", { "os.version": image })), want, `${host} ${image}`);
  }
});

Deno.test("platformMatcher() ignores win32k on Windows candidates only", () => {
  const win = platformMatcher(p("windows/amd64"));
  assert.equal(win.match(p("windows/amd64", { "os.features": ["win32k"] })), true);
  assert.equal(win.match(p("windows/amd64", { "os.features": ["other"] })), false);
  const linux = platformMatcher(p("linux/amd64"));
  assert.equal(linux.match(p("linux/amd64", { "os.features": ["win32k"] })), false);
});

Deno.test("onlyOsPlatform() matches any architecture of the OS and prefers the exact one", () => {
  const m = onlyOsPlatform(p("linux/amd64", { "os.features": ["a"] }));
  assert.equal(m.match(p("linux/s390x")), true);
  assert.equal(m.match(p("Linux/arm64", { "os.features": ["a"] })), true);
  assert.equal(m.match(p("linux/arm64", { "os.features": ["b"] })), false);
  assert.equal(m.match(p("windows/amd64")), false);
  assert.deepEqual(
    sortBy(m, [p("windows/amd64"), p("linux/arm64"), p("linux/amd64"), p("linux/386")]),
    ["linux/amd64", "linux/arm64", "linux/386", "windows/amd64"],
  );
  const win = onlyOsPlatform(p("windows/amd64", { "os.version": "10.0.17763" }));
  assert.equal(win.match(p("windows/arm64", { "os.version": "10.0.17763" })), true);
  assert.equal(win.match(p("windows/arm64", { "os.version": "10.0.20348" })), false);
});

Deno.test("orderedPlatforms() prefers platforms in the given order", () => {
  const m = orderedPlatforms([p("linux/arm64"), p("linux/amd64"), p("linux/arm/v7")]);
  assert.equal(m.match(p("linux/s390x")), false);
  assert.equal(m.match(p("linux/arm/v6")), false);
  assert.deepEqual(
    sortBy(m, [p("linux/s390x"), p("linux/arm"), p("linux/amd64"), p("linux/aarch64")]),
    ["linux/aarch64", "linux/amd64", "linux/arm", "linux/s390x"],
  );
});

Deno.test("orderedPlatforms() prefers more OS features, then ignores features when unmatched", () => {
  const m = orderedPlatforms([p("linux/amd64", { "os.features": ["a", "b"] }), p("linux/arm64")]);
  const two = p("linux/amd64", { "os.features": ["a", "b"] });
  const one = p("linux/amd64", { "os.features": ["a"] });
  assert.equal(m.less(two, one), true);
  assert.equal(m.less(one, two), false);
  const plain = orderedPlatforms([p("linux/amd64"), p("linux/arm64")]);
  const featured = p("linux/amd64", { "os.features": ["x"] });
  assert.equal(plain.match(featured), false);
  // arm64 matches as it is, so it beats the featured amd64 that matches nothing.
  assert.equal(plain.less(featured, p("linux/arm64")), false);
  assert.equal(plain.less(p("linux/arm64"), featured), true);
  // Neither matches: features are stripped and the featured amd64 then ranks first.
  assert.equal(plain.less(featured, p("linux/s390x")), true);
  assert.equal(plain.less(p("linux/s390x"), featured), false);
});

Deno.test("anyPlatform() puts matching platforms first without ordering them", () => {
  const m = anyPlatform([p("linux/arm64"), p("linux/amd64")]);
  assert.equal(m.match(p("linux/amd64")), true);
  assert.equal(m.match(p("linux/386")), false);
  assert.equal(m.less(p("linux/amd64"), p("linux/arm64")), false);
  assert.equal(m.less(p("linux/arm64"), p("linux/amd64")), false);
  assert.equal(m.less(p("linux/amd64"), p("linux/s390x")), true);
  assert.equal(m.less(p("linux/s390x"), p("linux/amd64")), false);
  assert.deepEqual(
    sortBy(m, [p("linux/s390x"), p("linux/amd64"), p("linux/ppc64le"), p("linux/arm64")]),
    ["linux/amd64", "linux/arm64", "linux/s390x", "linux/ppc64le"],
  );
});

Deno.test("anyPlatform() breaks ties on OS features and strips them when unmatched", () => {
  const m = anyPlatform([p("linux/amd64", { "os.features": ["a"] }), p("linux/arm64")]);
  assert.equal(m.less(p("linux/amd64", { "os.features": ["a"] }), p("linux/arm64")), true);
  assert.equal(m.less(p("linux/arm64"), p("linux/amd64", { "os.features": ["a"] })), false);
  const plain = anyPlatform([p("linux/amd64")]);
  assert.equal(plain.less(p("linux/amd64", { "os.features": ["z"] }), p("linux/s390x")), true);
});

Deno.test("allPlatforms matches everything and keeps document order", () => {
  assert.equal(allPlatforms.match(p("plan9/mips")), true);
  assert.equal(allPlatforms.match(p("/")), true);
  assert.deepEqual(
    sortBy(allPlatforms, [p("linux/s390x"), p("linux/amd64"), p("windows/arm64")]),
    ["linux/s390x", "linux/amd64", "windows/arm64"],
  );
});

Deno.test("defaultPlatformSpec() describes the host", () => {
  const spec = defaultPlatformSpec();
  assert.equal(spec.os, HOST_OS);
  assert.equal(spec.architecture, HOST_ARCH);
  if (HOST_ARCH === "arm64") assert.match(spec.variant ?? "", /^v\d/);
  if (HOST_ARCH === "amd64") assert.equal(spec.variant, undefined);
  assert.equal(defaultPlatformString(), formatPlatformAll(spec));
});

Deno.test("defaultPlatformMatcher() is Only(host) and the strict one has no fallbacks", () => {
  const host = defaultPlatformSpec();
  assert.equal(defaultPlatformMatcher().match(host), true);
  assert.equal(defaultStrictPlatformMatcher().match(host), true);
  if (HOST_ARCH === "amd64") {
    assert.equal(defaultPlatformMatcher().match(p(`${HOST_OS}/386`)), true);
    assert.equal(defaultStrictPlatformMatcher().match(p(`${HOST_OS}/386`)), false);
  }
  if (HOST_ARCH === "arm64") {
    assert.equal(defaultPlatformMatcher().match(p(`${HOST_OS}/arm/v7`)), true);
    assert.equal(defaultStrictPlatformMatcher().match(p(`${HOST_OS}/arm/v7`)), false);
  }
});
