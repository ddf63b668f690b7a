// The web chat loads the committed web/vendor files: they must be what `npm run bundle` makes now.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const sdk = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const committed = path.resolve(sdk, "..", "..", "web", "vendor");

test("the committed browser bundle is up to date with the SDK source (else: npm run bundle)", () => {
  const out = mkdtempSync(path.join(tmpdir(), "mqchat-bundle-"));
  try {
    execFileSync(process.execPath, [path.join(sdk, "scripts", "bundle.mjs"), "--out", out], { stdio: "pipe" });
    for (const name of ["mqchat-sdk.js", "mqtt.esm.js"]) {
      const fresh = readFileSync(path.join(out, name), "utf8");
      const kept = readFileSync(path.join(committed, name), "utf8");
      assert.ok(fresh === kept, `web/vendor/${name} is stale: run \`npm run bundle\` in sdk/js and commit it`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
