import assert from "node:assert/strict";
import { InvalidArgument } from "../../errors.ts";
import {
  familiarReference,
  formatReference,
  formatRemoteReference,
  normalizeReference,
  parseNormalizedReference,
  parseReference,
  parseRemoteReference,
  type Reference,
  referenceName,
  referenceObject,
  remoteDigest,
  remoteHostname,
} from "../../images/reference.ts";

const F64 = "f".repeat(64);
const DIGEST = `sha256:${F64}`;
const HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";

function ref(domain: string, path: string, tag?: string, digest?: string): Reference {
  const r: Reference = { domain, path };
  if (tag !== undefined) r.tag = tag;
  if (digest !== undefined) r.digest = digest;
  return r;
}

function assertInvalid(fn: () => unknown, input: string, reason: string): void {
  assert.throws(
    fn,
    (err: unknown) =>
      err instanceof InvalidArgument &&
      err.message.startsWith(`Cannot parse reference "${input}": `) &&
      err.message.includes(reason),
    `${input} should fail with ${reason}`,
  );
}

Deno.test("parseReference() parses valid references without normalising them", () => {
  const table: [string, Reference][] = [
    ["alpine", ref("", "alpine")],
    ["test_com", ref("", "test_com")],
    ["test.com:tag", ref("", "test.com", "tag")],
    ["test.com:5000", ref("", "test.com", "5000")],
    ["localhost:5000", ref("", "localhost", "5000")],
    ["foo/bar", ref("foo", "bar")],
    ["Foo/bar", ref("Foo", "bar")],
    ["test.com/repo:tag", ref("test.com", "repo", "tag")],
    ["test:5000/repo", ref("test:5000", "repo")],
    ["test:5000/repo:tag", ref("test:5000", "repo", "tag")],
    [`test:5000/repo@${DIGEST}`, ref("test:5000", "repo", undefined, DIGEST)],
    [`test:5000/repo:tag@${DIGEST}`, ref("test:5000", "repo", "tag", DIGEST)],
    ["lowercase:Uppercase", ref("", "lowercase", "Uppercase")],
    [
      `${"a/".repeat(127)}a:tag-puts-this-over-max`,
      ref("a", `${"a/".repeat(126)}a`, "tag-puts-this-over-max"),
    ],
    [
      "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
      ref("sub-dom1.foo.com", "bar/baz/quux", "some-long-tag"),
    ],
    [
      "b.gcr.io/test.example.com/my-app:test.example.com",
      ref("b.gcr.io", "test.example.com/my-app", "test.example.com"),
    ],
    ["xn--n3h.com/myimage:xn--n3h.com", ref("xn--n3h.com", "myimage", "xn--n3h.com")],
    ["foo_bar.com:8080", ref("", "foo_bar.com", "8080")],
    ["foo/foo_bar.com:8080", ref("foo", "foo_bar.com", "8080")],
    ["192.168.1.1:5000/repo:5050", ref("192.168.1.1:5000", "repo", "5050")],
    ["[2001:db8::1]/repo", ref("[2001:db8::1]", "repo")],
    [`[2001:db8::1]:5000/repo:tag@${DIGEST}`, ref("[2001:db8::1]:5000", "repo", "tag", DIGEST)],
    ["[::1]:5000/repo", ref("[::1]:5000", "repo")],
    ["docker---rules/dock__er/a.b_c", ref("docker---rules", "dock__er/a.b_c")],
    [`example.com/${"a".repeat(255)}:tag`, ref("example.com", "a".repeat(255), "tag")],
    ["repo:_Tag.1-x", ref("", "repo", "_Tag.1-x")],
    [`repo:${"t".repeat(128)}`, ref("", "repo", "t".repeat(128))],
    [
      `repo@sha512:${"0".repeat(128)}`,
      ref("", "repo", undefined, `sha512:${"0".repeat(128)}`),
    ],
  ];
  for (const [input, want] of table) {
    assert.deepEqual(parseReference(input), want, input);
  }
});

Deno.test("parseReference() rejects invalid references with the reason", () => {
  const table: [string, string][] = [
    ["", "repository name must have at least one component"],
    [":justtag", "invalid reference format"],
    [`@${DIGEST}`, "invalid reference format"],
    ["aa/asdf$$^/aa", "invalid reference format"],
    ["-docker", "invalid reference format"],
    ["docker-/docker", "invalid reference format"],
    ["dock..er/docker", "invalid reference format"],
    ["____/____", "invalid reference format"],
    ["a/b/", "invalid reference format"],
    ["docker///docker", "invalid reference format"],
    ["[2001:db8::1]", "invalid reference format"],
    ["[2001:db8::1]:5000", "invalid reference format"],
    ["[fe80::1%eth0]:5000/repo", "invalid reference format"],
    ["https://github.com/docker/docker", "invalid reference format"],
    ["Uppercase:tag", "repository name must be lowercase"],
    ["test:5000/Uppercase/lowercase:tag", "repository name must be lowercase"],
    ["foo/Bar", "repository name must be lowercase"],
    [`domain/${"a".repeat(256)}:tag`, "repository name must not be more than 255 characters"],
    ["repo:", `invalid tag ""`],
    ["repo:-tag", `invalid tag "-tag"`],
    [`repo:${"t".repeat(129)}`, "invalid tag"],
    ["repo:a+b", `invalid tag "a+b"`],
    ["repo@sha256:abc", `invalid digest "sha256:abc"`],
    ["repo@sha256", `invalid digest "sha256"`],
    [`repo@sha256:${"f".repeat(34)}`, "invalid sha256 length 34, want 64"],
    [`repo@sha256:${F64.toUpperCase()}`, "want lowercase hex"],
    [`validname@invaliddigest:${F64}`, `unsupported digest algorithm "invaliddigest"`],
    [`repo@md5:${"0".repeat(32)}`, `unsupported digest algorithm "md5"`],
    [HEX64, "repository name cannot be a 64-character hexadecimal string"],
  ];
  for (const [input, reason] of table) assertInvalid(() => parseReference(input), input, reason);
});

Deno.test("parseNormalizedReference() applies Docker Hub normalisation", () => {
  const table: [string, Reference][] = [
    ["alpine", ref("docker.io", "library/alpine")],
    ["alpine:3.20", ref("docker.io", "library/alpine", "3.20")],
    [`alpine@${DIGEST}`, ref("docker.io", "library/alpine", undefined, DIGEST)],
    ["library/debian", ref("docker.io", "library/debian")],
    ["docker/docker", ref("docker.io", "docker/docker")],
    ["docker.io/debian", ref("docker.io", "library/debian")],
    ["docker.io/library/debian:12", ref("docker.io", "library/debian", "12")],
    ["index.docker.io/debian", ref("docker.io", "library/debian")],
    ["index.docker.io/docker/docker", ref("docker.io", "docker/docker")],
    ["localhost/debian", ref("localhost", "debian")],
    ["localhost:5000/a/b", ref("localhost:5000", "a/b")],
    ["LOCALDOMAIN/debian", ref("LOCALDOMAIN", "debian")],
    ["127.0.0.1:5000/library/debian", ref("127.0.0.1:5000", "library/debian")],
    ["192.168.0.1:80", ref("docker.io", "library/192.168.0.1", "80")],
    ["[fc00::1]:5000/docker", ref("[fc00::1]:5000", "docker")],
    ["ghcr.io/owner/app:v1", ref("ghcr.io", "owner/app", "v1")],
    [`docker.io/${HEX64}`, ref("docker.io", `library/${HEX64}`)],
    ["foo_bar.com/x", ref("", "foo_bar.com/x")],
  ];
  for (const [input, want] of table) {
    assert.deepEqual(parseNormalizedReference(input), want, input);
  }
});

Deno.test("parseNormalizedReference() rejects invalid names with the reason", () => {
  const table: [string, string][] = [
    ["", "at least one component"],
    [HEX64, "64-character hexadecimal"],
    ["Alpine", "repository name must be lowercase"],
    ["docker/Docker", "repository name must be lowercase"],
    ["docker.io/docker/Docker", "repository name must be lowercase"],
    ["-docker.io/docker/docker", "invalid reference format"],
    ["docker.io/docker///docker", "invalid reference format"],
    ["fc00::1:5000/debian", "invalid reference format"],
    ["[2001:db8:3:4::192.0.2.33]:5000/debian", "invalid reference format"],
    [`${"n_".repeat(130)}x/docker`, "must not be more than 255 characters"],
    ["alpine:bad tag", "invalid tag"],
  ];
  for (const [input, reason] of table) {
    assertInvalid(() => parseNormalizedReference(input), input, reason);
  }
});

Deno.test("normalizeReference() adds latest and keeps only the digest when both are present", () => {
  const table: [string, string][] = [
    ["alpine", "docker.io/library/alpine:latest"],
    ["alpine:3.20", "docker.io/library/alpine:3.20"],
    [`alpine@${DIGEST}`, `docker.io/library/alpine@${DIGEST}`],
    [`alpine:3.20@${DIGEST}`, `docker.io/library/alpine@${DIGEST}`],
    ["localhost:5000/a/b", "localhost:5000/a/b:latest"],
    ["index.docker.io/user/app:1", "docker.io/user/app:1"],
    ["docker.io/library/redis:latest", "docker.io/library/redis:latest"],
    ["quay.io/org/img", "quay.io/org/img:latest"],
  ];
  for (const [input, want] of table) assert.equal(normalizeReference(input), want, input);
  assertInvalid(() => normalizeReference("Alpine"), "Alpine", "must be lowercase");
});

Deno.test("familiarReference() strips docker.io/ and library/", () => {
  const table: [string, string][] = [
    ["docker.io/library/alpine:latest", "alpine:latest"],
    ["docker.io/library/alpine", "alpine"],
    ["alpine", "alpine"],
    [`docker.io/library/alpine:3@${DIGEST}`, `alpine:3@${DIGEST}`],
    ["docker.io/user/app:1", "user/app:1"],
    ["docker.io/library/a/b", "library/a/b"],
    ["index.docker.io/library/debian", "debian"],
    ["ghcr.io/library/app:1", "ghcr.io/library/app:1"],
    ["localhost:5000/a", "localhost:5000/a"],
  ];
  for (const [input, want] of table) assert.equal(familiarReference(input), want, input);
});

Deno.test("formatReference(), referenceName() and referenceObject() rebuild the parts", () => {
  const table: [Reference, string, string, string][] = [
    [
      ref("docker.io", "library/alpine", "3"),
      "docker.io/library/alpine:3",
      "docker.io/library/alpine",
      "3",
    ],
    [ref("", "alpine"), "alpine", "alpine", ""],
    [ref("r.io", "a", undefined, DIGEST), `r.io/a@${DIGEST}`, "r.io/a", `@${DIGEST}`],
    [ref("r.io", "a", "t", DIGEST), `r.io/a:t@${DIGEST}`, "r.io/a", `t@${DIGEST}`],
  ];
  for (const [input, full, name, object] of table) {
    assert.equal(formatReference(input), full);
    assert.equal(referenceName(input), name);
    assert.equal(referenceObject(input), object);
    if (input.domain !== "") assert.deepEqual(parseReference(full), input);
  }
});

Deno.test("parseRemoteReference() splits containerd refs into locator and object", () => {
  const table: [string, string, string, string, string][] = [
    // input, locator, object, hostname, digest
    ["docker.io/library/redis:latest", "docker.io/library/redis", "latest", "docker.io", ""],
    ["docker.io/library/redis", "docker.io/library/redis", "", "docker.io", ""],
    ["ubuntu", "ubuntu", "", "ubuntu", ""],
    ["localhost:5000/a/b:1.0", "localhost:5000/a/b", "1.0", "localhost:5000", ""],
    [
      `docker.io/library/redis@${DIGEST}`,
      "docker.io/library/redis",
      `@${DIGEST}`,
      "docker.io",
      DIGEST,
    ],
    [`r.io/a:t@${DIGEST}`, "r.io/a", `t@${DIGEST}`, "r.io", DIGEST],
    ["r.io/a@sha256:abc", "r.io/a", "@sha256:abc", "r.io", "sha256:abc"],
    ["r.io//a/./b/:t", "r.io/a/b", "t", "r.io", ""],
    ["r.io/a%2Fb:t", "r.io/a/b", "t", "r.io", ""],
    ["[::1]:5000/repo:t", "[::1]:5000/repo", "t", "[::1]:5000", ""],
  ];
  for (const [input, locator, object, hostname, digest] of table) {
    const r = parseRemoteReference(input);
    assert.deepEqual(r, { locator, object }, input);
    assert.equal(remoteHostname(r), hostname, input);
    assert.equal(remoteDigest(r), digest, input);
  }
});

Deno.test("parseRemoteReference() rejects schemes, missing hosts and unsafe paths", () => {
  const table: [string, string][] = [
    ["redis:latest", `invalid host "redis:latest"`],
    ["https://docker.io/library/redis", "a scheme is not allowed"],
    ["/library/redis", "hostname required"],
    ["", "hostname required"],
    [":5000/a", "hostname required"],
    ["docker.io/../evil.io/x:1", `".." path elements are not allowed`],
    ["docker.io/a/..", `".." path elements are not allowed`],
    ["user@docker.io/a", "user information is not allowed"],
    ["docker.io/a b", "invalid character"],
    ["docker.io/a?x=1", "invalid character"],
    ["docker.io/a%zz", "invalid percent-encoding"],
  ];
  for (const [input, reason] of table) {
    assertInvalid(() => parseRemoteReference(input), input, reason);
  }
});

Deno.test("formatRemoteReference() joins locator and object as containerd's Spec.String", () => {
  assert.equal(
    formatRemoteReference({ locator: "docker.io/library/redis", object: "" }),
    "docker.io/library/redis",
  );
  assert.equal(formatRemoteReference({ locator: "r.io/a", object: "7" }), "r.io/a:7");
  assert.equal(
    formatRemoteReference({ locator: "r.io/a", object: `@${DIGEST}` }),
    `r.io/a@${DIGEST}`,
  );
  assert.equal(
    formatRemoteReference({ locator: "r.io/a", object: `t@${DIGEST}` }),
    `r.io/a:t@${DIGEST}`,
  );
  for (const s of ["docker.io/library/redis:7", `r.io/a:t@${DIGEST}`, `r.io/a@${DIGEST}`]) {
    assert.equal(formatRemoteReference(parseRemoteReference(s)), s);
  }
});
