// A real running mqchat (`mqchat up`) on free loopback ports in a temporary directory, started with
// the repository's venv Python, as tests/conftest.py's System does.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const handedOut = new Set();

function ephemeralStart() {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
  } catch {
    return 32768;
  }
}

function tryBind(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(null));
    srv.listen(port, "127.0.0.1", () => {
      const got = srv.address().port;
      srv.close(() => resolve(got));
    });
  });
}

/**
 * A TCP port free on 127.0.0.1 now, chosen below the kernel's ephemeral range (where outgoing
 * connections never take it), never the same twice in this process; the same rule as the Python
 * harness (mobile_sim/ports.py).
 */
export async function freePort() {
  const high = ephemeralStart();
  const low = Math.max(1024, high - 12_000);
  for (let i = 0; i < 200; i++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (handedOut.has(port)) continue;
    if ((await tryBind(port)) === port) {
      handedOut.add(port);
      return port;
    }
  }
  return tryBind(0);
}

export function python() {
  const venv = path.join(ROOT, ".venv", "bin", "python");
  return process.env.MQCHAT_PYTHON ?? (existsSync(venv) ? venv : "python3");
}

/** The `mosquitto` executable, or null if it is not installed. */
export function mosquittoBinary() {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter).concat(["/usr/sbin"])) {
    const candidate = path.join(dir, "mosquitto");
    if (dir && existsSync(candidate)) return candidate;
  }
  return null;
}

function waitPort(port, proc, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      if (proc.exitCode !== null) { reject(new Error(`${what} exited with ${proc.exitCode}`)); return; }
      const sock = net.connect(port, "127.0.0.1");
      sock.once("connect", () => { sock.destroy(); resolve(); });
      sock.once("error", () => {
        sock.destroy();
        if (Date.now() > deadline) reject(new Error(`${what} is not listening on ${port}`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/**
 * An anonymous Mosquitto (no ACL, as the Python harness's) on free ports in `dir`: MQTT on
 * `port`, and MQTT over WebSocket on `wsPort`, where the login's `ws_url` points.
 */
async function startMosquitto(dir, wsPort) {
  const binary = mosquittoBinary();
  if (!binary) throw new Error("mosquitto is not installed");
  const port = await freePort();
  const conf = path.join(dir, "mosquitto.conf");
  writeFileSync(conf, `per_listener_settings false\nallow_anonymous true\npersistence false\n`
    + `listener ${port} 127.0.0.1\nlistener ${wsPort} 127.0.0.1\nprotocol websockets\n`);
  const fd = openSync(path.join(dir, "mosquitto.log"), "a");
  const proc = spawn(binary, ["-c", conf], { stdio: ["ignore", fd, fd], detached: true });
  await waitPort(port, proc, "mosquitto");
  await waitPort(wsPort, proc, "mosquitto (websockets)");
  return { port, proc };
}

/**
 * `env`: settings for this system (`MQCHAT_...` variables; the caller's own are never passed on).
 * `mosquitto`: carry MQTT over a Mosquitto started here (`mqchat up --broker`), whose WebSocket
 * listener is the login's `ws_url`; `system.mosquitto` is its `{port, proc}`.
 */
export async function startSystem({ timeoutMs = 60_000, env: settings = {}, mosquitto = false } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), "mqchat-sdk-"));
  const [wsPort, httpPort] = [await freePort(), await freePort()];
  let broker = null;
  try {
    if (mosquitto) broker = await startMosquitto(dir, wsPort);
  } catch (err) {
    try { if (broker) process.kill(-broker.proc.pid, "SIGKILL"); } catch { /* gone */ }
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const mqttPort = broker ? broker.port : await freePort();
  const log = path.join(dir, "up.log");
  const fd = openSync(log, "a");
  const env = { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("MQCHAT_"))),
    ...settings };
  const ports = broker ? ["--broker", `127.0.0.1:${mqttPort}`] : ["--mqtt-port", String(mqttPort)];
  const proc = spawn(python(), ["-m", "mqchat.cli", "up", "--data-dir", path.join(dir, "data"),
    ...ports, "--ws-port", String(wsPort), "--http-port", String(httpPort)],
  { cwd: ROOT, env, stdio: ["ignore", fd, fd], detached: true });
  const api = `http://127.0.0.1:${httpPort}`;
  const processes = broker ? ["bridge", "api", "workers"] : ["broker", "bridge", "api", "workers"];
  const system = {
    api, dir, mqttPort, wsPort, httpPort, proc, log, mosquitto: broker,
    async stop() {
      // SIGTERM to `mqchat up` only: it stops its children in order (they have groups of their own).
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once("exit", r));
        process.kill(proc.pid, "SIGTERM");
        const timer = setTimeout(() => { try { process.kill(-proc.pid, "SIGKILL"); } catch { /* gone */ } }, 20_000);
        await exited;
        clearTimeout(timer);
      }
      try { process.kill(-proc.pid, "SIGKILL"); } catch { /* the group is gone */ }
      if (broker && broker.proc.exitCode === null) {
        const exited = new Promise((r) => broker.proc.once("exit", r));
        try { process.kill(-broker.proc.pid, "SIGKILL"); } catch { /* gone */ }
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) break;
    const ready = processes.every((n) => existsSync(path.join(dir, "data", "run", `${n}.ready`)));
    if (ready) try {
      const res = await fetch(`${api}/readyz`);
      if (res.ok) return system;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  const tail = existsSync(log) ? readFileSync(log, "utf8").slice(-4000) : "";
  await system.stop();
  throw new Error(`mqchat up did not become ready:\n${tail}`);
}

/** Resolve when `predicate()` holds (checked on every event of `client` and every 50 ms). */
export function waitFor(predicate, { timeoutMs = 15_000, what = "condition" } = {}) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      let value;
      try { value = predicate(); } catch (err) { reject(err); return; }
      if (value) { resolve(value); return; }
      if (Date.now() - started > timeoutMs) { reject(new Error(`timed out waiting for ${what}`)); return; }
      setTimeout(tick, 50);
    };
    tick();
  });
}

export function uniqueName(prefix) {
  return `${prefix}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}
