/**
 * Shared harness for integration tests that run real peer tools: skopeo, umoci, containerd's
 * `ctr` and Debian's `docker-registry`.
 *
 * Skipping: {@linkcode peerTest} registers a `Deno.test`. When a needed tool is not on `PATH`, or
 * the test needs root and the uid is not 0, the test is registered as ignored and its name ends
 * with the reason, e.g. `import works (skipped: needs umoci, root)`. When the environment has
 * `STRATA_REQUIRE_ALL=1` (as `.ci/run` sets), the test is registered normally instead and fails
 * with a `FailedPrecondition` naming what is missing, so nothing is skipped silently in CI.
 *
 * Cleanup: every process and temporary directory made here has an async `stop()` or is
 * `AsyncDisposable`. Use `await using` (or `try`/`finally`) so a failing test never leaks a
 * process, a mount or a directory. As a last resort, whatever is still alive when the test
 * process unloads is killed and removed synchronously.
 *
 * @example Run a test against a throwaway containerd
 * ```ts
 * import { peerTest, startContainerd } from "./_peers.ts";
 *
 * peerTest("ctr lists no images", { tools: ["containerd", "ctr"], root: true }, async () => {
 * await using containerd = await startContainerd();
 * await containerd.ctrOk(["images", "ls"]);
 * });
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { FailedPrecondition, InvalidArgument, NotFound, Unavailable } from "../errors.ts";

/** What a peer test needs from the machine. */
export interface PeerNeeds {
  /** Programs that must be on `PATH`. */
  tools?: string[];
  /** Whether the test must run as uid 0. */
  root?: boolean;
}

/**
 * Lists what the machine lacks for a test: each missing tool's name, and `"root"` if needed.
 *
 * @param needs The tools and privilege the test needs.
 * @returns The missing items, empty when everything is there.
 *
 * @example
 * ```ts
 * import { missingPeers } from "./_peers.ts";
 * console.log(missingPeers({ tools: ["umoci"], root: true }));
 * ```
 */
export function missingPeers(needs: PeerNeeds): string[] {
  const missing = (needs.tools ?? []).filter((tool) => findOnPath(tool) === undefined);
  if (needs.root === true && Deno.uid() !== 0) missing.push("root");
  return missing;
}

/**
 * Finds a program on `PATH`.
 *
 * @param tool The program name.
 * @returns Its absolute path, or `undefined` when it is not on `PATH`.
 *
 * @example
 * ```ts
 * import { findOnPath } from "./_peers.ts";
 * console.log(findOnPath("skopeo"));
 * ```
 */
export function findOnPath(tool: string): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter((dir) => dir !== "");
  for (const dir of dirs) {
    const path = join(dir, tool);
    try {
      const info = Deno.statSync(path);
      if (info.isFile && ((info.mode ?? 0) & 0o111) !== 0) return path;
    } catch {
      // Not in this directory.
    }
  }
  return undefined;
}

/**
 * Registers a `Deno.test` that needs peer tools or root; see the module docs for skipping rules.
 *
 * @param name The test name.
 * @param needs The tools and privilege the test needs.
 * @param fn The test body.
 *
 * @example
 * ```ts
 * import { peerTest, runOk } from "./_peers.ts";
 *
 * peerTest("skopeo runs", { tools: ["skopeo"] }, async () => {
 * await runOk(["skopeo", "--version"]);
 * });
 * ```
 */
export function peerTest(
  name: string,
  needs: PeerNeeds,
  fn: (t: Deno.TestContext) => Promise<void>,
): void {
  const missing = missingPeers(needs);
  if (missing.length === 0) {
    Deno.test({ name, fn });
  } else if (Deno.env.get("STRATA_REQUIRE_ALL") === "1") {
    Deno.test({
      name,
      fn() {
        throw new FailedPrecondition(
          `Cannot run test "${name}": STRATA_REQUIRE_ALL=1 is set but it needs ${
            describeMissing(missing)
          }`,
        );
      },
    });
  } else {
    Deno.test({ name: `${name} (skipped: needs ${missing.join(", ")})`, ignore: true, fn });
  }
}

function describeMissing(missing: string[]): string {
  return missing.map((item) =>
    item === "root" ? `root (uid is ${Deno.uid()})` : `"${item}" (not on PATH)`
  ).join(", ");
}

/** Options for {@linkcode run}. */
export interface RunOptions {
  /** Working directory of the command. */
  cwd?: string;
  /** Variables added to the inherited environment. */
  env?: Record<string, string>;
  /** Bytes written to the command's standard input (otherwise it reads `/dev/null`). */
  stdin?: Uint8Array;
  /** Aborts the command (it is killed). */
  signal?: AbortSignal;
}

/** What a finished command returned. */
export interface RunResult {
  /** Exit code. */
  code: number;
  /** Standard output, decoded as UTF-8. */
  stdout: string;
  /** Standard error, decoded as UTF-8. */
  stderr: string;
}

/**
 * A command run by {@linkcode runOk} exited with a non-zero code.
 *
 * @example
 * ```ts
 * import { CommandError, runOk } from "./_peers.ts";
 * try {
 * await runOk(["false"]);
 * } catch (err) {
 * if (err instanceof CommandError) console.log(err.code);
 * }
 * ```
 */
export class CommandError extends Error {
  override readonly name: string = "CommandError";
  /** The command line. */
  readonly command: string[];
  /** Exit code. */
  readonly code: number;
  /** Standard output. */
  readonly stdout: string;
  /** Standard error. */
  readonly stderr: string;

  /**
   * Makes the error from a command line and its result.
   *
   * @param command The command line.
   * @param result What the command returned.
   */
  constructor(command: string[], result: RunResult) {
    const stderr = result.stderr.trim();
    super(
      `Cannot run "${formatCommand(command)}": exit code ${result.code}${
        stderr === "" ? "" : `: ${stderr}`
      }`,
    );
    this.command = command;
    this.code = result.code;
    this.stdout = result.stdout;
    this.stderr = result.stderr;
  }
}

/**
 * Runs a command to completion and collects its output; a non-zero exit is not an error.
 *
 * @param cmd The program and its arguments.
 * @param options Working directory, extra environment, standard input, abort signal.
 * @returns The exit code and the decoded output.
 * @throws {NotFound} When the program (or `cwd`) does not exist.
 *
 * @example
 * ```ts
 * import { run } from "./_peers.ts";
 * const { code, stdout } = await run(["umoci", "--version"]);
 * console.log(code, stdout);
 * ```
 */
export async function run(cmd: string[], options: RunOptions = {}): Promise<RunResult> {
  const [program, ...args] = cmd;
  if (program === undefined) {
    throw new InvalidArgument("Cannot run command: the command line is empty");
  }
  const command = new Deno.Command(program, {
    args,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    ...(options.env === undefined ? {} : { env: options.env }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
  let child: Deno.ChildProcess;
  try {
    child = command.spawn();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new NotFound(
        `Cannot run "${formatCommand(cmd)}": "${program}" is not on PATH${
          options.cwd === undefined ? "" : ` or "${options.cwd}" does not exist`
        }`,
      );
    }
    throw err;
  }
  const output = child.output();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    try {
      await writer.write(options.stdin);
      await writer.close();
    } catch (err) {
      // The command may exit without reading all of its input.
      if (!(err instanceof Deno.errors.BrokenPipe)) throw err;
    }
  }
  const { code, stdout, stderr } = await output;
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

/**
 * Runs a command like {@linkcode run} and throws when it exits with a non-zero code.
 *
 * @param cmd The program and its arguments.
 * @param options Working directory, extra environment, standard input, abort signal.
 * @returns The result of a successful run.
 * @throws {CommandError} With the command line, exit code and standard error on failure.
 *
 * @example
 * ```ts
 * import { runOk } from "./_peers.ts";
 * const { stdout } = await runOk(["skopeo", "--version"]);
 * console.log(stdout);
 * ```
 */
export async function runOk(cmd: string[], options: RunOptions = {}): Promise<RunResult> {
  const result = await run(cmd, options);
  if (result.code !== 0) throw new CommandError(cmd, result);
  return result;
}

function formatCommand(cmd: string[]): string {
  return cmd.map((arg) => /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`)
    .join(" ");
}

// ---------------------------------------------------------------------------------------------
// Last-resort cleanup of processes and directories a test forgot to stop or remove.

interface Leftover {
  pid?: number;
  kill?: () => void;
  dir: string;
}

const leftovers = new Set<Leftover>();
let unloadHooked = false;

function track(leftover: Leftover): void {
  if (!unloadHooked) {
    globalThis.addEventListener("unload", cleanupLeftoversSync);
    unloadHooked = true;
  }
  leftovers.add(leftover);
}

function cleanupLeftoversSync(): void {
  for (const leftover of leftovers) {
    try {
      leftover.kill?.();
    } catch {
      // Already gone.
    }
    if (leftover.pid !== undefined) waitGoneSync(leftover.pid);
    for (const mount of mountsUnderSync(leftover.dir)) {
      try {
        new Deno.Command("umount", { args: ["-l", mount], stdout: "null", stderr: "null" })
          .outputSync();
      } catch {
        // Best effort.
      }
    }
    try {
      Deno.removeSync(leftover.dir, { recursive: true });
    } catch {
      // Best effort.
    }
  }
  leftovers.clear();
}

function waitGoneSync(pid: number): void {
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      // A killed child that has not been reaped yet is a zombie ("Z"): it holds no files.
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) return;
    } catch {
      return;
    }
  }
}

function mountsUnderSync(dir: string): string[] {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/self/mountinfo");
  } catch {
    return [];
  }
  return parseMountsUnder(text, dir);
}

async function mountsUnder(dir: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile("/proc/self/mountinfo");
  } catch {
    return [];
  }
  return parseMountsUnder(text, dir);
}

function parseMountsUnder(mountinfo: string, dir: string): string[] {
  const mounts: string[] = [];
  for (const line of mountinfo.split("\n")) {
    const field = line.split(" ")[4];
    if (field === undefined) continue;
    const mount = field.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)));
    if (mount === dir || mount.startsWith(dir + "/")) mounts.push(mount);
  }
  // Deepest first, so nested mounts go before their parents.
  return mounts.sort().reverse();
}

async function unmountAndRemove(dir: string): Promise<void> {
  for (const mount of await mountsUnder(dir)) {
    await run(["umount", "-l", mount]).catch(() => undefined);
  }
  await Deno.remove(dir, { recursive: true }).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
}

// ---------------------------------------------------------------------------------------------
// Temporary directories.

/** A temporary directory removed on `stop()` or `await using`. */
export interface TempDir extends AsyncDisposable {
  /** Absolute path of the directory. */
  readonly path: string;
  /** Unmounts anything mounted below the directory and removes it. */
  stop(): Promise<void>;
}

/**
 * Makes a temporary directory that is removed when disposed.
 *
 * @param options `prefix` of the directory name (default `strata-test-`).
 * @returns The directory.
 *
 * @example
 * ```ts
 * import { makeTempDir } from "./_peers.ts";
 * await using tmp = await makeTempDir();
 * await Deno.writeTextFile(`${tmp.path}/a`, "a");
 * ```
 */
export async function makeTempDir(options: { prefix?: string } = {}): Promise<TempDir> {
  const path = await Deno.makeTempDir({ prefix: options.prefix ?? "strata-test-" });
  const leftover: Leftover = { dir: path };
  track(leftover);
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= unmountAndRemove(path).finally(() => leftovers.delete(leftover));
    return stopped;
  };
  return { path, stop, [Symbol.asyncDispose]: stop };
}

// ---------------------------------------------------------------------------------------------
// Background services (containerd, registry).

class Service {
  readonly dir: string;
  readonly log: string;
  readonly #child: Deno.ChildProcess;
  readonly #logDone: Promise<void>;
  readonly #leftover: Leftover;
  #exited: Deno.CommandStatus | undefined;
  #stopped: Promise<void> | undefined;

  constructor(cmd: string[], dir: string) {
    const [program, ...args] = cmd;
    if (program === undefined) throw new InvalidArgument("Cannot start service: no command");
    this.dir = dir;
    this.log = join(dir, "log");
    const logFile = Deno.openSync(this.log, { write: true, create: true, truncate: true });
    try {
      this.#child = new Deno.Command(program, {
        args,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      logFile.close();
      if (err instanceof Deno.errors.NotFound) {
        throw new NotFound(`Cannot start "${program}": it is not on PATH`);
      }
      throw err;
    }
    this.#child.status.then((status) => {
      this.#exited = status;
    });
    // Both streams go to the log file; they must be drained or the service blocks.
    const writer = logFile.writable.getWriter();
    const pump = async (stream: ReadableStream<Uint8Array>): Promise<void> => {
      for await (const chunk of stream) await writer.write(chunk);
    };
    this.#logDone = Promise.all([pump(this.#child.stdout), pump(this.#child.stderr)])
      .then(() => writer.close(), () => writer.close());
    this.#leftover = {
      pid: this.#child.pid,
      kill: () => this.#child.kill("SIGKILL"),
      dir,
    };
    track(this.#leftover);
  }

  get pid(): number {
    return this.#child.pid;
  }

  async readLog(): Promise<string> {
    try {
      return await Deno.readTextFile(this.log);
    } catch {
      return "";
    }
  }

  /** Polls `ready` until it returns true; fails early if the process exits. */
  async waitUntil(what: string, ready: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      if (this.#exited !== undefined) {
        throw new Unavailable(
          `Cannot start ${what}: it exited with code ${this.#exited.code}: ${await this
            .#logTail()}`,
        );
      }
      if (await ready().catch(() => false)) return;
      if (Date.now() > deadline) {
        throw new Unavailable(
          `Cannot start ${what}: not ready after ${timeoutMs} ms: ${await this.#logTail()}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async #logTail(): Promise<string> {
    const lines = (await this.readLog()).trim().split("\n");
    return lines.slice(-10).join("\n");
  }

  stop(): Promise<void> {
    this.#stopped ??= this.#stop().finally(() => leftovers.delete(this.#leftover));
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    if (this.#exited === undefined) {
      try {
        this.#child.kill("SIGTERM");
      } catch {
        // It exited meanwhile.
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), 10_000);
      });
      const result = await Promise.race([this.#child.status, timeout]);
      clearTimeout(timer);
      if (result === "timeout") {
        try {
          this.#child.kill("SIGKILL");
        } catch {
          // It exited meanwhile.
        }
      }
    }
    await this.#child.status;
    await this.#logDone;
    await unmountAndRemove(this.dir);
  }
}

async function makeServiceDir(prefix: string): Promise<string> {
  let dir = await Deno.makeTempDir({ prefix });
  // A unix socket path must fit in 108 bytes; fall back to /tmp if TMPDIR is too deep.
  if (dir.length > 80) {
    await Deno.remove(dir);
    dir = await Deno.makeTempDir({ prefix, dir: "/tmp" });
  }
  return dir;
}

function requireRoot(action: string): void {
  if (Deno.uid() !== 0) {
    throw new FailedPrecondition(`Cannot ${action}: it needs root, uid is ${Deno.uid()}`);
  }
}

async function isSocket(path: string): Promise<boolean> {
  try {
    return (await Deno.lstat(path)).isSocket === true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// containerd.

/** A throwaway containerd with its own root, state and socket. */
export interface Containerd extends AsyncDisposable {
  /** Path of its gRPC socket. */
  readonly socket: string;
  /** Its temporary directory (config, root, state, sockets, log). */
  readonly dir: string;
  /** The containerd namespace {@linkcode Containerd.ctr} uses. */
  readonly namespace: string;
  /** Process id of containerd. */
  readonly pid: number;
  /**
   * Runs `ctr -a SOCKET -n NAMESPACE ...args`.
   *
   * @param args The `ctr` arguments.
   * @param options As for {@linkcode run}.
   * @returns The result; a non-zero exit is not an error.
   */
  ctr(args: string[], options?: RunOptions): Promise<RunResult>;
  /**
   * Runs `ctr` like {@linkcode Containerd.ctr} and throws when it fails.
   *
   * @param args The `ctr` arguments.
   * @param options As for {@linkcode run}.
   * @returns The result of a successful run.
   */
  ctrOk(args: string[], options?: RunOptions): Promise<RunResult>;
  /**
   * Reads containerd's log so far.
   *
   * @returns The log text.
   */
  readLog(): Promise<string>;
  /** Stops containerd (SIGTERM, then SIGKILL), unmounts what is left under its dir, removes it. */
  stop(): Promise<void>;
}

/** Options for {@linkcode startContainerd}. */
export interface ContainerdOptions {
  /** Namespace used by `ctr()` (default `strata-test`). */
  namespace?: string;
}

/**
 * Starts Debian's containerd with its own root, state and socket in a temporary directory.
 *
 * Always stop it: `await using containerd = await startContainerd()`, or `try`/`finally` with
 * `await containerd.stop()`. Needs root.
 *
 * @param options The `ctr` namespace.
 * @returns The running containerd, answering `ctr version`.
 * @throws {FailedPrecondition} When not running as root.
 * @throws {Unavailable} When containerd exits or does not answer in time.
 *
 * @example
 * ```ts
 * import { startContainerd } from "./_peers.ts";
 * await using containerd = await startContainerd();
 * const { stdout } = await containerd.ctrOk(["images", "ls", "-q"]);
 * console.log(stdout);
 * ```
 */
export async function startContainerd(options: ContainerdOptions = {}): Promise<Containerd> {
  requireRoot("start containerd");
  const namespace = options.namespace ?? "strata-test";
  const dir = await makeServiceDir("strata-containerd-");
  const socket = join(dir, "containerd.sock");
  const config = [
    "version = 2",
    `root = ${JSON.stringify(join(dir, "root"))}`,
    `state = ${JSON.stringify(join(dir, "state"))}`,
    `disabled_plugins = ["io.containerd.grpc.v1.cri"]`,
    "",
    "[grpc]",
    `  address = ${JSON.stringify(socket)}`,
    "",
    "[ttrpc]",
    `  address = ${JSON.stringify(socket + ".ttrpc")}`,
    "",
    "[debug]",
    `  address = ""`,
    "",
    "[metrics]",
    `  address = ""`,
    "",
    // Keep the "opt" plugin from creating /opt/containerd on the host.
    `[plugins."io.containerd.internal.v1.opt"]`,
    `  path = ${JSON.stringify(join(dir, "opt"))}`,
    "",
  ].join("\n");
  const configPath = join(dir, "config.toml");
  let service: Service;
  try {
    await Deno.writeTextFile(configPath, config);
    service = new Service(["containerd", "--config", configPath], dir);
  } catch (err) {
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
  const ctr = (args: string[], runOptions?: RunOptions): Promise<RunResult> =>
    run(["ctr", "-a", socket, "-n", namespace, ...args], runOptions);
  try {
    await service.waitUntil("containerd", () => isSocket(socket));
    await service.waitUntil(
      "containerd",
      async () => (await run(["ctr", "-a", socket, "version"])).code === 0,
    );
  } catch (err) {
    await service.stop();
    throw err;
  }
  const stop = (): Promise<void> => service.stop();
  return {
    socket,
    dir,
    namespace,
    pid: service.pid,
    ctr,
    async ctrOk(args: string[], runOptions?: RunOptions): Promise<RunResult> {
      const cmd = ["ctr", "-a", socket, "-n", namespace, ...args];
      const result = await run(cmd, runOptions);
      if (result.code !== 0) throw new CommandError(cmd, result);
      return result;
    },
    readLog: () => service.readLog(),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

// ---------------------------------------------------------------------------------------------
// docker-registry: see tests/_registry.ts (startRegistry, a fault-injecting proxy, pushToRegistry).

// ---------------------------------------------------------------------------------------------
// umoci.

/** An OCI image layout built by {@linkcode makeUmociImage}. */
export interface UmociImage {
  /** Path of the OCI image layout directory. */
  layout: string;
  /** Tag of the image in the layout (`org.opencontainers.image.ref.name`). */
  tag: string;
}

/** Number of layers in the image {@linkcode makeUmociImage} builds. */
export const UMOCI_IMAGE_LAYERS = 2;

/**
 * Builds a small two-layer OCI image layout offline with umoci, in `DIR/layout`.
 *
 * Layer 1 holds text files, a 200 KiB random binary, relative and absolute symlinks, a
 * hardlink, nested and empty directories, an executable and a 0600 file owned by 1000:1000.
 * Layer 2 deletes `to-delete.txt` (a whiteout), changes `etc/motd` and adds `etc/layer2.txt`.
 * The config gets `/bin/sh` as entrypoint and an env var. Needs root (for ownership).
 *
 * @param dir The directory to build in; created if missing, must not contain `layout`.
 * @param options `tag` of the image (default `latest`).
 * @returns The layout path and tag.
 * @throws {FailedPrecondition} When not running as root.
 *
 * @example
 * ```ts
 * import { makeTempDir, makeUmociImage, skopeoInspect } from "./_peers.ts";
 * await using tmp = await makeTempDir();
 * const { layout, tag } = await makeUmociImage(tmp.path);
 * console.log(await skopeoInspect(`oci:${layout}:${tag}`));
 * ```
 */
export async function makeUmociImage(
  dir: string,
  options: { tag?: string } = {},
): Promise<UmociImage> {
  requireRoot("build an image with umoci");
  const tag = options.tag ?? "latest";
  await Deno.mkdir(dir, { recursive: true });
  const layout = join(dir, "layout");
  const image = `${layout}:${tag}`;
  await runOk(["umoci", "init", "--layout", layout]);
  await runOk(["umoci", "new", "--image", image]);
  await withBundle(image, join(dir, "bundle-1"), "strata test: layer 1", writeFirstLayer);
  await withBundle(image, join(dir, "bundle-2"), "strata test: layer 2", writeSecondLayer);
  await runOk([
    "umoci",
    "config",
    "--image",
    image,
    "--config.entrypoint=/bin/sh",
    "--config.env=STRATA_TEST=1",
    "--config.workingdir=/",
    "--history.created_by=strata test: config",
  ]);
  await runOk(["umoci", "gc", "--layout", layout]);
  return { layout, tag };
}

async function withBundle(
  image: string,
  bundle: string,
  createdBy: string,
  write: (rootfs: string) => Promise<void>,
): Promise<void> {
  try {
    await runOk(["umoci", "unpack", "--image", image, bundle]);
    await write(join(bundle, "rootfs"));
    await runOk(["umoci", "repack", "--image", image, `--history.created_by=${createdBy}`, bundle]);
  } finally {
    await Deno.remove(bundle, { recursive: true }).catch(() => undefined);
  }
}

async function writeFile(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  if (typeof data === "string") await Deno.writeTextFile(path, data);
  else await Deno.writeFile(path, data);
  await Deno.chmod(path, mode);
}

async function writeFirstLayer(rootfs: string): Promise<void> {
  const at = (path: string): string => join(rootfs, path);
  for (const path of ["etc", "data", "usr/bin", "usr/share/doc/strata/deep/nested", "var/empty"]) {
    await Deno.mkdir(at(path), { recursive: true, mode: 0o755 });
  }
  await writeFile(at("etc/hostname"), "strata\n");
  await writeFile(at("etc/motd"), "Welcome to a Strata test image.\n");
  await writeFile(at("to-delete.txt"), "This file is removed by layer 2.\n");
  await writeFile(at("usr/share/doc/strata/deep/nested/file.txt"), "nested\n".repeat(100));
  await writeFile(at("usr/bin/hello"), "#!/bin/sh\necho hello\n", 0o755);
  const random = new Uint8Array(200 * 1024);
  for (let offset = 0; offset < random.length; offset += 65536) {
    crypto.getRandomValues(random.subarray(offset, offset + 65536));
  }
  await writeFile(at("data/random.bin"), random);
  await Deno.link(at("data/random.bin"), at("data/random.hardlink"));
  await Deno.symlink("../etc/motd", at("data/motd.symlink"));
  await Deno.symlink("/etc/hostname", at("data/hostname.abs-symlink"));
  await Deno.mkdir(at("home/user"), { recursive: true });
  await Deno.chmod(at("home/user"), 0o700);
  await Deno.chown(at("home/user"), 1000, 1000);
  await writeFile(at("home/user/secret"), "secret\n", 0o600);
  await Deno.chown(at("home/user/secret"), 1000, 1000);
}

async function writeSecondLayer(rootfs: string): Promise<void> {
  await Deno.remove(join(rootfs, "to-delete.txt"));
  await writeFile(join(rootfs, "etc/motd"), "Welcome to layer 2 of a Strata test image.\n");
  await writeFile(join(rootfs, "etc/layer2.txt"), "added by layer 2\n");
}

/**
 * Unpacks an image of an OCI layout with `umoci unpack` into a new bundle directory.
 *
 * @param image The image, `LAYOUT:TAG`.
 * @param bundle The bundle directory to create; it must not exist.
 * @returns The path of the unpacked root filesystem, `BUNDLE/rootfs`.
 *
 * @example
 * ```ts
 * import { umociUnpack } from "./_peers.ts";
 * const rootfs = await umociUnpack("/tmp/x/layout:latest", "/tmp/x/bundle");
 * console.log(rootfs);
 * ```
 */
export async function umociUnpack(image: string, bundle: string): Promise<string> {
  await runOk([
    "umoci",
    "unpack",
    ...(Deno.uid() === 0 ? [] : ["--rootless"]),
    "--image",
    image,
    bundle,
  ]);
  return join(bundle, "rootfs");
}

// ---------------------------------------------------------------------------------------------
// skopeo.

/**
 * Copies an image with `skopeo copy --insecure-policy SRC DST`.
 *
 * `--insecure-policy` makes the copy independent of `/etc/containers/policy.json`.
 *
 * @param src Source reference, e.g. `oci:LAYOUT:TAG` or `docker-archive:FILE`.
 * @param dst Destination reference.
 * @param extra More `skopeo copy` arguments, e.g. `["--dest-tls-verify=false"]`.
 * @returns The result of a successful copy.
 * @throws {CommandError} When skopeo fails.
 *
 * @example
 * ```ts
 * import { skopeoCopy } from "./_peers.ts";
 * await skopeoCopy("oci:/tmp/layout:latest", "docker-archive:/tmp/image.tar:test:latest");
 * ```
 */
export function skopeoCopy(src: string, dst: string, extra: string[] = []): Promise<RunResult> {
  return runOk(["skopeo", "copy", "--insecure-policy", "--quiet", ...extra, src, dst]);
}

/** Options for {@linkcode skopeoInspect}. */
export interface SkopeoInspectOptions {
  /** Print the raw manifest (or index) instead of skopeo's summary. */
  raw?: boolean;
  /** Print the image config (with `raw`, the raw config blob). */
  config?: boolean;
  /** More `skopeo inspect` arguments, e.g. `["--tls-verify=false"]`. */
  args?: string[];
}

/**
 * Runs `skopeo inspect` and parses its JSON output.
 *
 * @param ref The image reference, e.g. `oci:LAYOUT:TAG`.
 * @param options `raw`, `config` and extra arguments.
 * @returns The parsed JSON.
 * @throws {CommandError} When skopeo fails.
 *
 * @example
 * ```ts
 * import { skopeoInspect } from "./_peers.ts";
 * const info = await skopeoInspect("oci:/tmp/layout:latest") as { Layers: string[] };
 * console.log(info.Layers.length);
 * ```
 */
export async function skopeoInspect(
  ref: string,
  options: SkopeoInspectOptions = {},
): Promise<unknown> {
  const cmd = [
    "skopeo",
    "inspect",
    ...(options.raw === true ? ["--raw"] : []),
    ...(options.config === true ? ["--config"] : []),
    ...(options.args ?? []),
    ref,
  ];
  const { stdout } = await runOk(cmd);
  try {
    return JSON.parse(stdout);
  } catch (err) {
    throw new InvalidArgument(
      `Cannot parse output of "${formatCommand(cmd)}": ${(err as Error).message}`,
    );
  }
}
