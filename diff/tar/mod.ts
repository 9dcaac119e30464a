/**
 * Tar archives for container layers: a streaming reader and a writer for ustar, GNU and PAX.
 *
 * The reader ({@linkcode readTar}) takes any async source of byte chunks (a file's `readable`,
 * `node:zlib` output) and yields one {@linkcode TarEntry} per file, directory, link, device or
 * fifo, with PAX records (`path`, `linkpath`, `size`, ids, names, nanosecond times,
 * `SCHILY.xattr.*`), GNU long names, base-256 numbers and GNU sparse maps (old GNU and PAX
 * 0.0/0.1/1.0) merged into its {@linkcode TarHeader}. File data comes out as views of the input
 * chunks, never copied. Malformed input throws {@linkcode TarError}, an `InvalidArgument`.
 *
 * The writer ({@linkcode TarWriter}, {@linkcode createTar}) writes ustar headers when every
 * field fits and PAX records (or, in the GNU format, long-name records and base-256 numbers) when
 * one does not.
 *
 * @example Write an archive and read it back
 * ```ts
 * import { createTar, readTar } from "@strata/strata/tar";
 *
 * const archive = await createTar([
 *   { header: { name: "etc", type: "directory" } },
 *   {
 *     header: { name: "etc/hostname", type: "file", mtime: { sec: 1700000000, nsec: 5 } },
 *     body: new TextEncoder().encode("box\n"),
 *   },
 *   { header: { name: "hostname", type: "symlink", linkname: "etc/hostname" } },
 * ]);
 * for await (const entry of readTar([archive])) {
 *   const { name, type, size } = entry.header;
 *   let bytes = 0;
 *   for await (const chunk of entry.body) bytes += chunk.length;
 *   console.log(type, name, size, bytes);
 * }
 * ```
 *
 * @module
 */

export {
  type TarEntryType,
  TarError,
  type TarFormat,
  type TarHeader,
  type TarSparse,
  type TarSparseSegment,
  type TarTime,
} from "./_header.ts";
export { readTar, type ReadTarOptions, type TarEntry } from "./reader.ts";
export {
  createTar,
  type TarBody,
  type TarInput,
  type TarSink,
  type TarWriteHeader,
  TarWriter,
  type TarWriterOptions,
} from "./writer.ts";
