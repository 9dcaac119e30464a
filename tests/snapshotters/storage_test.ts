import assert from "node:assert/strict";
import { MetadataDb } from "../../metadata/db.ts";
import { SnapshotStorage } from "../../snapshotters/storage.ts";
import { AlreadyExists, FailedPrecondition, InvalidArgument, NotFound } from "../../errors.ts";

const USAGE = { size: 4096, inodes: 1 };

async function withStorage(
  fn: (storage: SnapshotStorage, db: MetadataDb) => void | Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "strata-storage-" });
  const db = MetadataDb.open(root);
  try {
    await fn(new SnapshotStorage(db, "test"), db);
  } finally {
    db.close();
    await Deno.remove(root, { recursive: true });
  }
}

/** Makes a chain of committed snapshots c0 <- c1 <- ... and returns their ids. */
function chain(storage: SnapshotStorage, length: number): number[] {
  const ids: number[] = [];
  for (let i = 0; i < length; i++) {
    const parent = i === 0 ? {} : { parent: `c${i - 1}` };
    ids.push(storage.createSnapshot("active", `a${i}`, parent).id);
    storage.commitActive(`a${i}`, `c${i}`, { usage: USAGE });
  }
  return ids;
}

Deno.test("createSnapshot() returns parent ids immediate parent first", async () => {
  await withStorage((storage) => {
    const ids = chain(storage, 4);
    const s = storage.createSnapshot("active", "top", { parent: "c3" });
    assert.deepEqual(s.parentIds, [...ids].reverse());
    assert.equal(s.kind, "active");
    const v = storage.createSnapshot("view", "v", { parent: "c1" });
    assert.deepEqual(v.parentIds, [ids[1], ids[0]]);
    assert.deepEqual(storage.createSnapshot("view", "empty").parentIds, []);
    assert.deepEqual(storage.getSnapshot("top"), s);
  });
});

Deno.test("createSnapshot() rejects other kinds and empty keys", async () => {
  await withStorage((storage) => {
    assert.throws(() => storage.createSnapshot("committed", "k"), InvalidArgument);
    assert.throws(() => storage.createSnapshot("active", ""), InvalidArgument);
    assert.deepEqual(storage.list(), []);
  });
});

Deno.test("createSnapshot() checks the parent before the key", async () => {
  await withStorage((storage) => {
    storage.createSnapshot("active", "k");
    assert.throws(() => storage.createSnapshot("active", "k", { parent: "missing" }), NotFound);
    assert.throws(() => storage.createSnapshot("view", "k", { parent: "k" }), InvalidArgument);
    assert.throws(() => storage.createSnapshot("view", "k"), AlreadyExists);
  });
});

Deno.test("ids are monotonic and never reused, per snapshotter", async () => {
  await withStorage((storage, db) => {
    const a = storage.createSnapshot("active", "a").id;
    const b = storage.createSnapshot("active", "b").id;
    storage.remove("b");
    const c = storage.createSnapshot("active", "b").id;
    assert.ok(a < b && b < c, `${a} < ${b} < ${c}`);
    // A failed creation does not leave a record behind (the whole transaction rolls back).
    assert.throws(() => storage.createSnapshot("active", "a"), AlreadyExists);
    const d = storage.createSnapshot("active", "d").id;
    assert.equal(d, c + 1);
    const other = new SnapshotStorage(db, "other");
    assert.equal(other.createSnapshot("active", "a").id, 1);
    assert.deepEqual(other.list().map((i) => i.name), ["a"]);
    assert.deepEqual(storage.list().map((i) => i.name), ["a", "b", "d"]);
    assert.deepEqual(
      [...storage.idMap()].sort((x, y) => x[0] - y[0]),
      [[a, "a"], [c, "b"], [d, "d"]],
    );
  });
});

Deno.test("ids are not reused after reopening the database with every record removed", async () => {
  const root = await Deno.makeTempDir({ prefix: "strata-storage-" });
  try {
    let db = MetadataDb.open(root);
    const first = new SnapshotStorage(db, "test").createSnapshot("active", "a").id;
    new SnapshotStorage(db, "test").remove("a");
    db.close();
    db = MetadataDb.open(root);
    const second = new SnapshotStorage(db, "test").createSnapshot("active", "a").id;
    db.close();
    assert.ok(second > first, `${second} > ${first}`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("getSnapshot() rejects committed and missing snapshots", async () => {
  await withStorage((storage) => {
    chain(storage, 1);
    assert.throws(() => storage.getSnapshot("c0"), FailedPrecondition);
    assert.throws(() => storage.getSnapshot("nope"), NotFound);
  });
});

Deno.test("getInfo() returns stored usage for committed and zero otherwise", async () => {
  await withStorage((storage) => {
    const id = storage.createSnapshot("active", "a").id;
    assert.deepEqual(storage.getInfo("a").usage, { size: 0, inodes: 0 });
    storage.commitActive("a", "c", { usage: { size: 12288, inodes: 3 } });
    const got = storage.getInfo("c");
    assert.equal(got.id, id);
    assert.deepEqual(got.usage, { size: 12288, inodes: 3 });
    assert.throws(() => storage.getInfo("a"), NotFound);
  });
});

Deno.test("commitActive() checks name, key, kind, rebase parent in that order", async () => {
  await withStorage((storage) => {
    chain(storage, 2);
    storage.createSnapshot("active", "act", { parent: "c0" });
    storage.createSnapshot("view", "view");
    // Name exists wins over a missing key.
    assert.throws(() => storage.commitActive("missing", "c1", { usage: USAGE }), AlreadyExists);
    assert.throws(() => storage.commitActive("missing", "new", { usage: USAGE }), NotFound);
    assert.throws(() => storage.commitActive("view", "new", { usage: USAGE }), FailedPrecondition);
    assert.throws(() => storage.commitActive("c1", "new", { usage: USAGE }), FailedPrecondition);
    assert.throws(
      () => storage.commitActive("act", "new", { usage: USAGE, parent: "c1" }),
      InvalidArgument,
    );
    assert.throws(() => storage.commitActive("act", "", { usage: USAGE }), InvalidArgument);
    // Nothing changed.
    assert.equal(storage.getInfo("act").info.kind, "active");
    storage.commitActive("act", "new", { usage: USAGE, parent: "c0" });
    assert.equal(storage.getInfo("new").info.parent, "c0");
  });
});

Deno.test("commitActive() with an id commits only that record", async () => {
  await withStorage((storage) => {
    const first = storage.createSnapshot("active", "a").id;
    storage.remove("a");
    const second = storage.createSnapshot("active", "a").id;
    assert.throws(() => storage.commitActive("a", "c", { usage: USAGE, id: first }), NotFound);
    assert.equal(storage.commitActive("a", "c", { usage: USAGE, id: second }), second);
  });
});

Deno.test("commitActive() rebases a parentless active and checks the rebase parent", async () => {
  await withStorage((storage) => {
    const ids = chain(storage, 2);
    storage.createSnapshot("active", "x");
    storage.createSnapshot("active", "other");
    assert.throws(
      () => storage.commitActive("x", "y", { usage: USAGE, parent: "nope" }),
      NotFound,
    );
    assert.throws(
      () => storage.commitActive("x", "y", { usage: USAGE, parent: "other" }),
      FailedPrecondition,
    );
    const id = storage.commitActive("x", "y", { usage: USAGE, parent: "c1" });
    assert.equal(storage.getInfo("y").info.parent, "c1");
    storage.createSnapshot("active", "z", { parent: "y" });
    assert.deepEqual(storage.getSnapshot("z").parentIds, [id, ids[1], ids[0]]);
    // The rebase parent is now protected from removal.
    storage.remove("z");
    assert.throws(() => storage.remove("c1"), FailedPrecondition);
  });
});

Deno.test("commitActive() replaces labels and sets Created == Updated", async () => {
  await withStorage((storage) => {
    storage.createSnapshot("active", "a", { labels: { old: "1" } });
    const before = Date.now();
    storage.commitActive("a", "c", { usage: USAGE, labels: { new: "2", empty: "" } });
    const after = Date.now();
    const { info } = storage.getInfo("c");
    assert.deepEqual(info.labels, { new: "2" });
    assert.equal(info.created.getTime(), info.updated.getTime());
    assert.ok(info.created.getTime() >= before && info.created.getTime() <= after);
  });
});

Deno.test("remove() refuses parents with children and honours the id guard", async () => {
  await withStorage((storage) => {
    const ids = chain(storage, 2);
    storage.createSnapshot("view", "v", { parent: "c1" });
    assert.throws(() => storage.remove("c0"), FailedPrecondition);
    assert.throws(() => storage.remove("c1"), FailedPrecondition);
    assert.throws(() => storage.remove("v", { id: 12345 }), NotFound);
    assert.deepEqual(storage.remove("v"), { id: ids[1]! + 1, kind: "view" });
    assert.deepEqual(storage.remove("c1"), { id: ids[1], kind: "committed" });
    assert.deepEqual(storage.remove("c0"), { id: ids[0], kind: "committed" });
    assert.throws(() => storage.remove("c0"), NotFound);
  });
});

Deno.test("remove() joins the caller's transaction", async () => {
  await withStorage((storage, db) => {
    storage.createSnapshot("active", "a");
    assert.throws(() =>
      db.transaction(() => {
        storage.remove("a");
        throw new Error("boom");
      }), /boom/);
    assert.equal(storage.getInfo("a").info.kind, "active");
  });
});

Deno.test("updateInfo() follows field paths and validates labels", async () => {
  await withStorage((storage) => {
    storage.createSnapshot("active", "a", { labels: { a: "1", b: "2" } });
    const created = storage.getInfo("a").info.created;
    let info = storage.updateInfo({ name: "a", labels: { c: "3" } }, { fieldpaths: ["labels.a"] });
    assert.deepEqual(info.labels, { b: "2" });
    info = storage.updateInfo({ name: "a", labels: { c: "3" } }, { fieldpaths: ["labels.c"] });
    assert.deepEqual(info.labels, { b: "2", c: "3" });
    info = storage.updateInfo({ name: "a", labels: { b: "" } }, { fieldpaths: ["labels.b"] });
    assert.deepEqual(info.labels, { c: "3" });
    info = storage.updateInfo({ name: "a", labels: { x: "1", y: "" } }, { fieldpaths: ["labels"] });
    assert.deepEqual(info.labels, { x: "1" });
    info = storage.updateInfo({ name: "a", labels: {} });
    assert.deepEqual(info.labels, {});
    assert.equal(info.created.getTime(), created.getTime());
    assert.throws(
      () => storage.updateInfo({ name: "a", labels: {} }, { fieldpaths: ["parent"] }),
      InvalidArgument,
    );
    assert.throws(() => storage.updateInfo({ name: "nope", labels: {} }), NotFound);
    assert.throws(
      () => storage.updateInfo({ name: "a", labels: { k: "v".repeat(4096) } }),
      InvalidArgument,
    );
    assert.deepEqual(storage.getInfo("a").info.labels, {});
  });
});

Deno.test("labels: key plus value up to 4096 bytes, counted in UTF-8", async () => {
  await withStorage((storage) => {
    storage.createSnapshot("active", "ok", { labels: { k: "v".repeat(4095) } });
    assert.throws(
      () => storage.createSnapshot("active", "big", { labels: { k: "v".repeat(4096) } }),
      InvalidArgument,
    );
    // "é" is two bytes: 1 + 2 * 2048 = 4097.
    assert.throws(
      () => storage.createSnapshot("active", "utf8", { labels: { k: "é".repeat(2048) } }),
      InvalidArgument,
    );
    assert.deepEqual(storage.list().map((i) => i.name), ["ok"]);
  });
});

Deno.test("list() filters on kind, name, parent and labels in byte order", async () => {
  await withStorage((storage) => {
    chain(storage, 1);
    storage.createSnapshot("active", "b", { parent: "c0", labels: { l: "x" } });
    storage.createSnapshot("view", "B");
    storage.createSnapshot("active", "_u", { labels: { "a.b": "dot" } });
    storage.createSnapshot("active", "é");
    const names = (filters?: string[]) => storage.list(filters).map((i) => i.name);
    assert.deepEqual(names(), ["B", "_u", "b", "c0", "é"]);
    assert.deepEqual(names(["kind==view"]), ["B"]);
    assert.deepEqual(names(["kind==active"]), ["_u", "b", "é"]);
    assert.deepEqual(names(['parent==""']), ["B", "_u", "c0", "é"]);
    assert.deepEqual(names(["parent"]), ["B", "_u", "b", "c0", "é"]);
    assert.deepEqual(names(['parent!=""']), ["b"]);
    assert.deepEqual(names(["labels.l"]), ["b"]);
    assert.deepEqual(names(['labels."a.b"==dot']), ["_u"]);
    assert.deepEqual(names(["labels.l!=x"]), ["B", "_u", "c0", "é"]);
    assert.deepEqual(names(["name==b", "name==B"]), ["B", "b"]);
    assert.deepEqual(names(["kind==active,name~=^[a-z]"]), ["b"]);
    assert.throws(() => storage.list(["name=="]), InvalidArgument);
  });
});

Deno.test("walkInfo() lets the callback use the storage", async () => {
  await withStorage(async (storage) => {
    storage.createSnapshot("active", "a");
    storage.createSnapshot("active", "b");
    const seen: string[] = [];
    await storage.walkInfo(async (info) => {
      await Promise.resolve();
      seen.push(storage.getInfo(info.name).info.name);
      storage.updateInfo({ name: info.name, labels: { seen: "1" } });
    });
    assert.deepEqual(seen, ["a", "b"]);
    assert.deepEqual(storage.list(["labels.seen==1"]).map((i) => i.name), ["a", "b"]);
  });
});
