// Runs one sys/ call in a child process and prints the outcome as JSON, so that tests can check
// behaviour that needs other permissions or another uid.
//   no-ffi <path>:  lstat(path) without --allow-ffi
//   mkdir <path>:   mkdirat(AT_FDCWD, path, 0o755), e.g. as an unprivileged uid
import { AT_FDCWD, lstat, mkdirat } from "../../sys/mod.ts";

const [what, path = "."] = Deno.args;
try {
  if (what === "no-ffi") lstat(path);
  else if (what === "mkdir") mkdirat(AT_FDCWD, path, 0o755);
  else throw new Error(`Unknown child action "${what}"`);
  console.log(JSON.stringify({ ok: true }));
} catch (err) {
  const e = err as Error & { code?: string };
  console.log(JSON.stringify({ ok: false, name: e.name, code: e.code, message: e.message }));
  Deno.exit(1);
}
