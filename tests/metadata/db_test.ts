import assert from "node:assert/strict";
import { join } from "node:path";
import { FailedPrecondition } from "../../errors.ts";
import { MetadataDb, MIGRATIONS } from "../../metadata/db.ts";

Deno.test("MetadataDb.open() creates a WAL database at the latest schema version", async () => {
  const root = await Deno.makeTempDir();
  try {
    const db = MetadataDb.open(root);
    assert.equal(db.schemaVersion, MIGRATIONS.at(-1)!.version);
    assert.equal(db.get("PRAGMA journal_mode")?.journal_mode, "wal");
    assert.equal(db.get("PRAGMA synchronous")?.synchronous, 2); // FULL
    db.close();
    await Deno.stat(join(root, "metadata.db"));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("MetadataDb.transaction() rolls back when the work throws", async () => {
  const root = await Deno.makeTempDir();
  const db = MetadataDb.open(root);
  try {
    assert.throws(() =>
      db.transaction(() => {
        db.run(
          "INSERT INTO content (digest, size, created_at, updated_at) VALUES (?, ?, ?, ?)",
          "sha256:x",
          1,
          "t",
          "t",
        );
        throw new Error("boom");
      }), /boom/);
    assert.equal(db.all("SELECT * FROM content").length, 0);
    db.transaction(() => {
      db.transaction(() =>
        db.run(
          "INSERT INTO content (digest, size, created_at, updated_at) VALUES (?, ?, ?, ?)",
          "sha256:y",
          1,
          "t",
          "t",
        )
      );
    });
    assert.equal(db.all("SELECT * FROM content").length, 1);
  } finally {
    db.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("MetadataDb.open() refuses a database from a newer Strata", async () => {
  const root = await Deno.makeTempDir();
  try {
    const db = MetadataDb.open(root);
    db.run("PRAGMA user_version = 999");
    db.close();
    assert.throws(() => MetadataDb.open(root), FailedPrecondition);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("MetadataDb lets two processes write one root concurrently", async () => {
  const root = await Deno.makeTempDir();
  try {
    MetadataDb.open(root).close();
    const script = `
      import { MetadataDb } from ${
      JSON.stringify(new URL("../../metadata/db.ts", import.meta.url).href)
    };
      const db = MetadataDb.open(Deno.args[0]);
      for (let i = 0; i < 200; i++) {
        db.transaction(() => db.run(
          "INSERT INTO content (digest, size, created_at, updated_at) VALUES (?, ?, ?, ?)",
          "sha256:" + Deno.args[1] + "-" + i, i, "t", "t"));
      }
      db.close();
    `;
    const file = join(root, "writer.ts");
    await Deno.writeTextFile(file, script);
    const procs = ["a", "b", "c"].map((tag) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", file, root, tag],
        stdout: "null",
        stderr: "piped",
      }).output()
    );
    for (const out of await Promise.all(procs)) {
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    }
    const db = MetadataDb.open(root);
    assert.equal(db.all("SELECT * FROM content").length, 600);
    db.close();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("MetadataDb.open() of a new root by many processes at once succeeds in each", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const db = new URL("../../metadata/db.ts", import.meta.url).href;
    for (let round = 0; round < 5; round++) {
      const root = join(dir, `root-${round}`);
      const go = join(dir, `go-${round}`);
      // Every process loads first, then all open the new root the moment \`go\` appears.
      const code = `import { MetadataDb } from "${db}";
        while (true) { try { Deno.statSync(${
        JSON.stringify(go)
      }); break; } catch { /* not yet */ } }
        const m = MetadataDb.open(${JSON.stringify(root)});
        console.log(m.schemaVersion);
        m.close();`;
      const pending = Array.from({ length: 6 }, () =>
        new Deno.Command(Deno.execPath(), {
          args: ["eval", "--ext=ts", code],
          stdout: "piped",
          stderr: "piped",
        }).output());
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await Deno.writeTextFile(go, "");
      const runs = await Promise.all(pending);
      for (const r of runs) {
        assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
        assert.equal(new TextDecoder().decode(r.stdout).trim(), String(MIGRATIONS.at(-1)!.version));
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
