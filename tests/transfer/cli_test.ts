// `strata pull` and `strata push` as a user runs them: progress modes, exit codes, credentials
// from --user, Strata's config and Docker's config.json, and a push that skopeo reads back.

import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../../cli.ts";
import { makeTempDir, peerTest, runOk } from "../_peers.ts";
import { pushToRegistry, startRegistry } from "../_registry.ts";
import { hostPlatform, writeTestLayout } from "./_images.ts";

const NEEDS = { tools: ["docker-registry", "skopeo"], root: true };

interface Ran {
  code: number;
  out: string[];
  err: string;
}

async function strata(args: string[]): Promise<Ran> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { stdout: (l) => out.push(l), stderr: (l) => err.push(l) });
  return { code, out, err: err.join("\n") };
}

peerTest("strata pull prints plain progress, JSON events, or only the name", NEEDS, async () => {
  await using tmp = await makeTempDir({ prefix: "strata-pull-cli-" });
  const layout = await writeTestLayout(join(tmp.path, "layout"), {
    tag: "v1",
    platforms: [{ platform: hostPlatform(), seed: 201 }],
  });
  await using registry = await startRegistry();
  await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/app:v1`);
  const ref = `${registry.host}/app:v1`;
  const root = (n: string) => ["--root", join(tmp.path, n)];

  const plain = await strata([
    ...root("a"),
    "pull",
    "--snapshotter",
    "overlayfs",
    "--progress",
    "plain",
    ref,
  ]);
  assert.equal(plain.code, 0, plain.err);
  assert.ok(plain.out.includes(`${ref}: resolving`), plain.out.join("\n"));
  for (const digest of layout.manifests[0]!.layers) {
    const hex = digest.slice(7, 19);
    assert.ok(plain.out.some((l) => l.startsWith(`layer ${hex}: downloaded`)), hex);
    assert.ok(plain.out.some((l) => l.startsWith(`layer ${hex}: extracted`)), hex);
  }
  assert.match(plain.out.at(-1)!, new RegExp(`^pulled ${ref} \\(${layout.digest}\\): 5 blobs`));

  const json = await strata([...root("b"), "--json", "pull", "--snapshotter", "native", ref]);
  assert.equal(json.code, 0, json.err);
  const events = json.out.map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(events[0]!.status, "resolving");
  assert.ok(events.some((e) => e.kind === "layer" && e.status === "extracted"));
  const summary = events.at(-1)!;
  assert.equal((summary.target as { digest: string }).digest, layout.digest);
  assert.equal((summary.unpack as { snapshotter: string }).snapshotter, "native");

  const quiet = await strata([...root("c"), "pull", "-q", "--no-unpack", ref]);
  assert.equal(quiet.code, 0, quiet.err);
  assert.deepEqual(quiet.out, [ref]);
});

peerTest(
  "strata pull exits with distinct codes for a bad ref, a missing tag, refused auth",
  NEEDS,
  async () => {
    await using tmp = await makeTempDir({ prefix: "strata-pull-cli-" });
    const user = "cli";
    const password = "s3cret-Pa55";
    await using open = await startRegistry();
    await using secured = await startRegistry({ htpasswd: { user, password } });
    const layout = await writeTestLayout(join(tmp.path, "layout"), {
      tag: "v1",
      platforms: [{ platform: hostPlatform(), seed: 211 }],
    });
    await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${secured.host}/app:v1`, {
      creds: `${user}:${password}`,
    });
    const root = ["--root", join(tmp.path, "root")];

    const bad = await strata([...root, "pull", "UPPER/Case:v1"]);
    assert.equal(bad.code, 2, bad.err);

    const missing = await strata([...root, "pull", `${open.host}/nothing:v1`]);
    assert.equal(missing.code, 3, missing.err);
    assert.match(missing.err, /nothing/);

    const refused = await strata([
      ...root,
      "pull",
      "--user",
      `${user}:wrong-Pa55`,
      `${secured.host}/app:v1`,
    ]);
    assert.equal(refused.code, 8, refused.err);
    assert.ok(!refused.err.includes("wrong-Pa55"));

    // Credentials from Strata's config, then from Docker's config.json.
    const config = join(tmp.path, "config.toml");
    await Deno.writeTextFile(
      config,
      `[registry.auths."${secured.host}"]\nusername = "${user}"\npassword = "${password}"\n`,
    );
    const viaConfig = await strata([
      ...root,
      "--config",
      config,
      "pull",
      "-q",
      "--no-unpack",
      `${secured.host}/app:v1`,
    ]);
    assert.equal(viaConfig.code, 0, viaConfig.err);

    const dockerDir = join(tmp.path, "docker");
    await Deno.mkdir(dockerDir);
    await Deno.writeTextFile(
      join(dockerDir, "config.json"),
      JSON.stringify({ auths: { [secured.host]: { auth: btoa(`${user}:${password}`) } } }),
    );
    const cmd = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../../cli.ts", import.meta.url).pathname,
        "--root",
        join(tmp.path, "root2"),
        "pull",
        "-q",
        "--no-unpack",
        `${secured.host}/app:v1`,
      ],
      env: { DOCKER_CONFIG: dockerDir },
      stdout: "piped",
      stderr: "piped",
    });
    const out = await cmd.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  },
);

peerTest("strata push sends an imported image that skopeo inspects", NEEDS, async () => {
  await using tmp = await makeTempDir({ prefix: "strata-push-cli-" });
  const layout = await writeTestLayout(join(tmp.path, "layout"), {
    tag: "v1",
    platforms: [{ platform: hostPlatform(), seed: 221 }],
  });
  await using registry = await startRegistry();
  const root = ["--root", join(tmp.path, "root")];
  const imported = await strata([
    ...root,
    "import",
    "--base-name",
    "example.com/app",
    layout.layout,
  ]);
  assert.equal(imported.code, 0, imported.err);
  const remote = `${registry.host}/from-cli:v1`;
  const pushed = await strata([
    ...root,
    "push",
    "--progress",
    "plain",
    "example.com/app:v1",
    remote,
  ]);
  assert.equal(pushed.code, 0, pushed.err);
  assert.match(pushed.out.at(-1)!, /^pushed .*: 5 uploaded, 0 already there$/);
  const inspected = JSON.parse(
    (await runOk(["skopeo", "inspect", "--tls-verify=false", `docker://${remote}`])).stdout,
  ) as { Digest: string };
  assert.equal(inspected.Digest, layout.digest);

  const missing = await strata([...root, "push", "example.com/none:v1", remote]);
  assert.equal(missing.code, 3);
});

peerTest(
  "strata pull on a terminal redraws one line per blob in place",
  { ...NEEDS, tools: [...NEEDS.tools, "script"] },
  async () => {
    await using tmp = await makeTempDir({ prefix: "strata-pull-cli-" });
    const layout = await writeTestLayout(join(tmp.path, "layout"), {
      tag: "v1",
      platforms: [{ platform: hostPlatform(), seed: 231 }],
    });
    await using registry = await startRegistry();
    await pushToRegistry(`oci:${layout.layout}:v1`, `docker://${registry.host}/app:v1`);
    const cli = new URL("../../cli.ts", import.meta.url).pathname;
    const command = [
      Deno.execPath(),
      "run",
      "-A",
      cli,
      "--root",
      join(tmp.path, "root"),
      "pull",
      `${registry.host}/app:v1`,
    ].map((a) => `'${a}'`).join(" ");
    // `script` gives the command a pseudo-terminal, as a user's shell would.
    const out = await runOk(["script", "-qec", command, "/dev/null"], {
      env: { COLUMNS: "120", LINES: "40", TERM: "xterm" },
    });
    const text = out.stdout;
    const cursorUp = new RegExp(`${String.fromCharCode(27)}\\[\\d+A`);
    assert.match(text, cursorUp, "cursor moved up to redraw");
    for (const digest of layout.manifests[0]!.layers) {
      assert.match(text, new RegExp(`layer ${digest.slice(7, 19)}\\s+extracted`));
    }
    assert.match(text, /elapsed: [\d.]+s\s+total: /);
    assert.match(text, /pulled .* 5 blobs/);
  },
);
