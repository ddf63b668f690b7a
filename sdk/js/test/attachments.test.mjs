// Attachments through the SDK against a real running system (docs/attachments.md): upload a PNG
// made here, send it through the outbox, a second client receives it live with its attachment and
// downloads the same bytes; the refusals come back with the server's codes.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { deflateSync } from "node:zlib";

import { ERROR_CODES, MqchatClient, byteLength, errorInfo } from "../dist/index.js";
import { startSystem, uniqueName, waitFor } from "./system.mjs";

const PASSWORD = "correct horse battery";
let system;
before(async () => { system = await startSystem(); });
after(async () => { await system?.stop(); });

const clients = [];
after(async () => { for (const c of clients) await c.disconnect().catch(() => undefined); });

async function account(name) {
  const client = new MqchatClient({ apiUrl: system.api, deviceId: "node1" });
  clients.push(client);
  const username = uniqueName(name);
  await client.signup(username, PASSWORD);
  await client.login(username, PASSWORD);
  const messages = [];
  client.on("message", (m) => messages.push(m));
  return { client, messages };
}

/** Poll an asynchronous check until it returns a truthy value (each try is a real request). */
async function eventually(check, { timeoutMs = 20_000, everyMs = 250, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "ascii");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/** A real RGB PNG of `width` × `height` pixels (a gradient), as a Uint8Array. */
function png(width, height) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8 bits, truecolour, deflate, no filter, no interlace
  const rows = [];
  for (let y = 0; y < height; y++) {
    rows.push(0); // filter: none
    for (let x = 0; x < width; x++) rows.push((x * 7) & 0xff, (y * 5) & 0xff, (x + y) & 0xff);
  }
  const file = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(Buffer.from(rows))), chunk("IEND", Buffer.alloc(0))]);
  return new Uint8Array(file);
}

async function bytesOf(url) {
  const res = await fetch(url);
  assert.equal(res.status, 200, `GET ${url}`);
  return { type: res.headers.get("content-type"), bytes: new Uint8Array(await res.arrayBuffer()) };
}

test("the error table knows the upload codes, and byteLength measures every kind of data", () => {
  for (const code of ["upload_not_found", "upload_not_yours", "upload_incomplete", "upload_expired", "upload_used"]) {
    assert.ok(ERROR_CODES[code], code);
    assert.notEqual(errorInfo(code).action, "retry", `${code} is never retried as is`);
  }
  assert.equal(errorInfo("upload_not_yours").action, "fix");
  assert.equal(errorInfo("upload_used").action, "drop");
  const bytes = png(3, 2);
  assert.equal(byteLength(bytes), bytes.length);
  assert.equal(byteLength(bytes.buffer.slice(0)), bytes.length);
  assert.equal(byteLength(new Blob([bytes])), bytes.length);
});

test("a PNG sent with sendFile reaches another member live, with the same bytes behind its URLs", async () => {
  const alice = await account("alice");
  const bob = await account("bob");
  const a = alice.client;
  const b = bob.client;
  const channel = await a.createChannel("group", [b.userId], "files");
  await a.connect();
  await b.connect();

  const image = png(40, 30);
  const ack = await a.sendFile(channel, new Blob([image]), { filename: "dir/../pic.png", contentType: "image/png",
    caption: "a gradient" });
  assert.equal(ack.ok, true);

  const got = await waitFor(() => bob.messages.find((m) => m.seq === ack.seq), { what: "bob receives the file" });
  assert.equal(got.kind, "file");
  assert.equal(got.body, "a gradient");
  assert.equal(got.attachment.filename, "pic.png", "the server keeps the last path segment");
  assert.equal(got.attachment.size, image.length);
  assert.equal(got.attachment.content_type, "image/png");
  assert.equal(got.attachment.width, 40);
  assert.equal(got.attachment.height, 30);

  // The URL on the message, made absolute, and a fresh one from the download endpoint.
  const onMessage = await bytesOf(b.resolveAttachment(got.attachment).url);
  assert.deepEqual(onMessage.bytes, image);
  const fresh = await b.downloadUrl(got.attachment.id);
  assert.equal(fresh.id, got.attachment.id);
  assert.ok(fresh.url.startsWith("http"), fresh.url);
  const downloaded = await bytesOf(fresh.url);
  assert.equal(downloaded.type, "image/png");
  assert.deepEqual(downloaded.bytes, image);

  // The workers make a thumbnail; the download endpoint then signs its URL too.
  const withThumb = await eventually(async () => {
    const att = await b.downloadUrl(got.attachment.id);
    return att.thumbnail_url ? att : null;
  }, { what: "the thumbnail" });
  const thumb = await bytesOf(withThumb.thumbnail_url);
  assert.ok(thumb.type.startsWith("image/"), thumb.type);
  assert.ok(thumb.bytes.length > 0);

  // History carries the attachment as well.
  const page = await b.history(channel);
  assert.equal(page.messages.find((m) => m.seq === ack.seq).attachment.id, got.attachment.id);
});

test("sendUpload: a retry with the same cmid gets the same message; refusals carry the upload codes", async () => {
  const alice = await account("alice");
  const bob = await account("bob");
  const carol = await account("carol");
  const a = alice.client;
  const b = bob.client;
  const channel = await a.createChannel("group", [b.userId], "refusals");
  await a.connect();
  await b.connect();

  const bytes = png(4, 4);
  const upload = await a.uploadFile(channel, bytes.buffer.slice(0), { filename: "x.png", contentType: "image/png" });
  assert.equal(upload.state, "ready");
  assert.equal(upload.size, bytes.length);

  // Another member sending alice's upload: refused, nothing stored.
  await assert.rejects(b.sendUpload(channel, upload.upload_id),
    (e) => e.code === "upload_not_yours" && e.action === "fix");
  await assert.rejects(a.sendUpload(channel, "u0000000000000000000000000000000"), (e) => e.code === "upload_not_found");

  const first = await a.sendUpload(channel, upload.upload_id, { cmid: "file-1" });
  const again = await a.sendUpload(channel, upload.upload_id, { cmid: "file-1" });
  assert.deepEqual([again.id, again.seq], [first.id, first.seq], "same cmid: the original ack");
  await assert.rejects(a.sendUpload(channel, upload.upload_id, { cmid: "file-2" }),
    (e) => e.code === "upload_used" && e.action === "drop");
  assert.equal(a.pendingSends().length, 0, "refused sends leave the outbox");

  // An upload started but never given its bytes cannot be sent.
  const started = await a.api.createUpload(channel, { filename: "y.png", contentType: "image/png", size: 10 });
  await assert.rejects(a.sendUpload(channel, started.upload_id), (e) => e.code === "upload_incomplete");

  // HTTP refusals of uploadFile: a type the server does not take, bytes that are not what they claim,
  // and a channel the uploader is not in.
  await assert.rejects(a.uploadFile(channel, new TextEncoder().encode("<svg/>"),
    { filename: "x.svg", contentType: "image/svg+xml" }), (e) => e.code === "forbidden_type" && e.status === 415);
  await assert.rejects(a.uploadFile(channel, new TextEncoder().encode("not a png at all"),
    { filename: "fake.png", contentType: "image/png" }), (e) => e.code === "type_mismatch" && e.status === 422);
  await assert.rejects(carol.client.uploadFile(channel, bytes, { filename: "x.png", contentType: "image/png" }),
    (e) => e.code === "channel_not_found");
  // Only members of the channel get download URLs.
  await assert.rejects(carol.client.downloadUrl(upload.upload_id), (e) => e.code === "upload_not_found");

  const history = await b.history(channel);
  assert.deepEqual(history.messages.map((m) => [m.seq, m.kind]), [[first.seq, "file"]], "one message stored");
});
