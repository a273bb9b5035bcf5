// Build app.js into a payproxy compliance component with componentize-js:
//
//   node build.mjs OUT.wasm WIT_DIR
//
// WIT_DIR is the contract (wit/payproxy-plugin@0.4.0). Run it where `npm ci` installed this
// directory's package.json (build.sh does both). componentize-js's `http` and `fetch-event`
// features are turned off: they import wasi:http, which payproxy does not grant (plugins
// make no requests of their own), and a component importing it is refused at load.
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const [out, witPath] = process.argv.slice(2);
if (!out || !witPath) {
  console.error("usage: node build.mjs OUT.wasm WIT_DIR");
  process.exit(2);
}
const { component } = await componentize({
  sourcePath: join(here, "app.js"),
  witPath,
  worldName: "compliance-plugin",
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(out, component);
console.log(`built ${out}: ${component.length} bytes`);
