// Head starts for the per-layer syncs of an unpack (unpack/_sync.ts): SyncQueue.kick() and the
// EarlyWriteback loop, with a controllable syncfs so that the order of calls can be checked.

import assert from "node:assert/strict";
import { join } from "node:path";
import { FailedPrecondition } from "../../errors.ts";
import { EarlyWriteback, SyncQueue } from "../../unpack/_sync.ts";
import { makeTempDir } from "../_peers.ts";

/** A syncfs whose calls stay pending until the test settles them. */
class FakeSyncfs {
  calls: { fd: number; resolve: () => void; reject: (err: Error) => void }[] = [];
  syncfs = (fd: number): Promise<void> =>
    new Promise<void>((resolve, reject) => this.calls.push({ fd, resolve, reject }));

  /** Settles call `i` once it was made. */
  async settle(i: number, err?: Error): Promise<void> {
    await until(() => this.calls.length > i, `syncfs call ${i}`);
    const call = this.calls[i]!;
    if (err === undefined) call.resolve();
    else call.reject(err);
  }
}

/** Waits (at most 10 s) until `cond` holds. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`Timed out waiting for ${what}`);
}

/** A SyncQueue that records its head starts. */
class CountingQueue extends SyncQueue {
  kicks = 0;
  started = 0;
  override kick(dir: string): boolean {
    this.kicks++;
    const started = super.kick(dir);
    if (started) this.started++;
    return started;
  }
}

Deno.test("SyncQueue.kick() starts a syncfs only when none is running or queued", async () => {
  await using tmp = await makeTempDir({ prefix: "strata-kick-" });
  const fake = new FakeSyncfs();
  const q = new SyncQueue({ syncfs: fake.syncfs });
  assert.equal(q.kick(tmp.path), true);
  assert.equal(q.kick(tmp.path), false);
  // A sync asked for while the head start runs waits for a syncfs that starts after it.
  let synced = false;
  const sync = q.sync(tmp.path).then(() => synced = true);
  assert.equal(q.kick(tmp.path), false);
  await fake.settle(0);
  await until(() => fake.calls.length === 2, "the queued syncfs");
  assert.equal(synced, false);
  await fake.settle(1);
  await sync;
  assert.equal(synced, true);
  assert.equal(fake.calls.length, 2);
  // Idle again: a head start runs at once.
  assert.equal(q.kick(tmp.path), true);
  await fake.settle(2);
  assert.equal(q.kick(`${tmp.path}/missing`), false);
});

Deno.test("SyncQueue.sync() fails after a failed head start even when syncfs succeeds again", async () => {
  await using tmp = await makeTempDir({ prefix: "strata-kick-" });
  const fake = new FakeSyncfs();
  const q = new SyncQueue({ syncfs: fake.syncfs });
  assert.equal(q.kick(tmp.path), true);
  const queued = q.sync(tmp.path);
  await fake.settle(0, new Error("EIO: input/output error"));
  // The request queued behind the failed head start fails without a new syncfs.
  await assert.rejects(queued, (err: unknown) => {
    assert.ok(err instanceof FailedPrecondition);
    assert.match(err.message, /Cannot sync the file system of ".*": EIO/);
    return true;
  });
  // The kernel would report the error once only: every later request keeps failing.
  await assert.rejects(q.sync(tmp.path), FailedPrecondition);
  assert.equal(q.kick(tmp.path), false);
  assert.equal(fake.calls.length, 1);
});

Deno.test("SyncQueue.sync() does not keep a failure to open the directory", async () => {
  await using tmp = await makeTempDir({ prefix: "strata-kick-" });
  const fake = new FakeSyncfs();
  const q = new SyncQueue({ syncfs: fake.syncfs });
  // A file: its file system is found, opening it as a directory fails.
  const file = `${tmp.path}/f`;
  await Deno.writeTextFile(file, "x");
  await assert.rejects(q.sync(file), FailedPrecondition);
  assert.equal(fake.calls.length, 0);
  const second = q.sync(tmp.path);
  await fake.settle(0);
  await second;
});

Deno.test("EarlyWriteback starts syncs while a writer is at work and enough was written", async () => {
  await using tmp = await makeTempDir({ prefix: "strata-early-" });
  const fake = new FakeSyncfs();
  const q = new CountingQueue({ syncfs: fake.syncfs });
  let written = 0;
  const early = new EarlyWriteback(q, { intervalMs: 5, minBytes: 100, written: () => written });
  early.watch(tmp.path);
  early.watch(tmp.path); // One file system: one head start at a time.
  const end = early.begin();
  // Below the threshold: the loop looks but starts nothing.
  written = 99;
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(fake.calls.length, 0);
  written = 100;
  await until(() => fake.calls.length === 1, "a head start");
  // None while it runs, even with more written.
  written = 1000;
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(fake.calls.length, 1);
  await fake.settle(0);
  await until(() => fake.calls.length === 2, "the next head start");
  await fake.settle(1);
  // The counter did not move since: nothing more.
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(fake.calls.length, 2);
  end();
  end(); // A second call does nothing.
  // No writer at work: nothing, whatever is written.
  written = 1_000_000;
  const kicks = q.kicks;
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(q.kicks, kicks);
  assert.equal(fake.calls.length, 2);
  // A new writer: the loop runs again, counting from where it starts.
  const end2 = early.begin();
  written = 1_000_050;
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(fake.calls.length, 2);
  written = 1_000_100;
  await until(() => fake.calls.length === 3, "a head start for the new writer");
  await fake.settle(2);
  early.close();
  end2();
  assert.equal(q.started, 3);
});

Deno.test("EarlyWriteback with no byte counter starts a sync on every tick with none running", async () => {
  await using tmp = await makeTempDir({ prefix: "strata-early-" });
  const fake = new FakeSyncfs();
  const q = new SyncQueue({ syncfs: fake.syncfs });
  const early = new EarlyWriteback(q, { intervalMs: 5, written: () => undefined });
  early.watch(tmp.path);
  const end = early.begin();
  await fake.settle(0);
  await fake.settle(1);
  end();
  await until(() => fake.calls.length >= 2, "two head starts");
  for (const [i, call] of fake.calls.entries()) if (i > 1) call.resolve();
});

Deno.test("EarlyWriteback counts the process's dirtied bytes by default", async () => {
  // In a process of its own: the test files running beside this one write too.
  await using tmp = await makeTempDir({ prefix: "strata-early-" });
  const child = join(import.meta.dirname!, "_early_writeback_child.ts");
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-code-cache", child, tmp.path],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  // No head start while nothing was written; one after 4 MiB dirtied by the process.
  assert.equal(text, "before=0 after=1");
});

Deno.test("SyncQueue keeps one descriptor per file system from track() until close()", async () => {
  await using tmp = await makeTempDir({ prefix: "strata-kick-" });
  await Deno.mkdir(`${tmp.path}/a`);
  await Deno.mkdir(`${tmp.path}/b`);
  const fake = new FakeSyncfs();
  const q = new SyncQueue({ syncfs: fake.syncfs });
  const opened = (fd: number) => {
    try {
      return Deno.readLinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return undefined;
    }
  };
  // Opened before any sync: writeback errors from then on reach the syncs.
  q.track(`${tmp.path}/a`);
  const first = q.sync(`${tmp.path}/a`);
  await fake.settle(0);
  await first;
  // Another directory of the same file system: the same descriptor, still the first one's.
  const second = q.sync(`${tmp.path}/b`);
  await fake.settle(1);
  await second;
  const fd = fake.calls[0]!.fd;
  assert.equal(fake.calls[1]!.fd, fd);
  assert.equal(opened(fd), `${tmp.path}/a`);
  // close() waits for a running sync before it closes the descriptor.
  assert.equal(q.kick(`${tmp.path}/b`), true);
  let closed = false;
  const closing = q.close().then(() => closed = true);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(closed, false);
  assert.equal(opened(fd), `${tmp.path}/a`);
  await fake.settle(2);
  await closing;
  assert.notEqual(opened(fd), `${tmp.path}/a`);
  // A later request opens a descriptor again.
  const third = q.sync(`${tmp.path}/b`);
  await fake.settle(3);
  await third;
  assert.equal(opened(fake.calls[3]!.fd), `${tmp.path}/b`);
  await q.close();
});
