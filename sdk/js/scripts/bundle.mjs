// Build the browser files the web chat loads (committed, so its users need no Node):
//   web/vendor/mqchat-sdk.js  the SDK as one ES module; it imports "mqtt" (the page's import map)
//   web/vendor/mqtt.esm.js    MQTT.js's own browser ES module, copied as published
// `node scripts/bundle.mjs --out DIR` writes elsewhere (the staleness test compares the two).
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const sdk = path.resolve(here, "..");
const outFlag = process.argv.indexOf("--out");
const out = outFlag > 0 ? path.resolve(process.argv[outFlag + 1]) : path.resolve(sdk, "..", "..", "web", "vendor");
mkdirSync(out, { recursive: true });

const { version } = JSON.parse(readFileSync(path.join(sdk, "package.json"), "utf8"));
const mqttVersion = JSON.parse(readFileSync(path.join(sdk, "node_modules", "mqtt", "package.json"), "utf8")).version;

await build({
  entryPoints: [path.join(sdk, "src", "index.ts")],
  outfile: path.join(out, "mqchat-sdk.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2020",
  external: ["mqtt"],
  legalComments: "none",
  banner: { js: `// mqchat SDK ${version}, generated from sdk/js/src by \`npm run bundle\`: do not edit.` },
  logLevel: "warning",
});
copyFileSync(path.join(sdk, "node_modules", "mqtt", "dist", "mqtt.esm.js"), path.join(out, "mqtt.esm.js"));
console.log(`bundled mqchat SDK ${version} and MQTT.js ${mqttVersion} into ${out}`);
