// Paddock runner entrypoint for OpenClaw (runs under tini as uid 10001).
//
// 1. Writes base64-decoded PADDOCK_AGENT_CONFIG to $HOME/.openclaw/openclaw.json (a file, 0600).
// 2. Boot check: GET ${PADDOCK_GATEWAY_URL}/models with the runner token must answer 200 within
//    ~10 s, else one line on stderr and exit 3 (exit 2: missing env / unusable config).
// 3. Kernel without openat2 (gVisor from Debian bookworm): FS_SAFE_NATIVE_MODE=off.
// 4. With PADDOCK_EXEC_MODE=allowlist, seeds OpenClaw's exec approvals document from
//    PADDOCK_EXEC_ALLOWLIST (comma list of command names or path globs).
// 5. Becomes `openclaw gateway run --port 18789 --bind lan` in this same process (no extra Node).
// Warm pool (PADDOCK_AWAIT_CLAIM=1): the container starts with no per-runner secret, and OpenClaw
// starts at once (the slow part) on 127.0.0.1:18790 with placeholders: a local agent token
// made here, and a provider at a local relay (127.0.0.1:18791). A front on :18789 serves
// /healthz, /readyz ({"status": "pooled"} once OpenClaw is ready) and POST /paddock/claim
// {"env": {...}}, accepted with the claim secret it was started with (x-paddock-claim). The claim's secrets stay in this
// module's memory, never in process.env (so not in what exec'd tools inherit): the front then
// checks the claimed agent token and forwards to OpenClaw; the relay forwards OpenClaw's model
// calls to the real gateway with the claimed runner token and model.
import { spawnSync } from "node:child_process";
import { chmodSync, closeSync, constants as C, mkdirSync, openSync, unlinkSync, writeFileSync } from "node:fs";
import { randomBytes, timingSafeEqual } from "node:crypto";
import http from "node:http";
import https from "node:https";
import { createRequire } from "node:module";
import path from "node:path";

const OPENCLAW = "/usr/local/lib/openclaw/node_modules/openclaw/openclaw.mjs";
const FS_SAFE_ADDON = "/usr/local/lib/openclaw/node_modules/@openclaw/fs-safe-linux-x64-gnu/fs-safe-native.node";
const PORT = "18789";
const env = process.env;

const t0 = Date.now();
const note = (msg) => process.stderr.write(`paddock-runner: ${msg} (+${Date.now() - t0} ms)\n`);
const fail = (code, msg) => {
  process.stderr.write(`paddock-runner: ${msg}\n`);
  process.exit(code);
};

const POOLED = env.PADDOCK_AWAIT_CLAIM === "1";
const INTERNAL_PORT = 18790; // OpenClaw itself, loopback only, in a pooled runner
const RELAY_PORT = 18791; // the relay to the real gateway, loopback only
const POOLED_MODEL = "paddock-pooled"; // the model id in a pooled runner's config
const pool = { gateway: env.PADDOCK_GATEWAY_URL || "", claim: null, localToken: "", claimSecret: env.PADDOCK_CLAIM_SECRET || "" };
delete env.PADDOCK_CLAIM_SECRET; // the front checks it; OpenClaw never sees it
if (POOLED) {
  delete env.PADDOCK_AWAIT_CLAIM;
  pool.localToken = randomBytes(24).toString("hex");
  env.PADDOCK_GATEWAY_URL = `http://127.0.0.1:${RELAY_PORT}/v1`;
  env.PADDOCK_RUNNER_TOKEN = "pooled-placeholder";
  env.OPENCLAW_GATEWAY_TOKEN = pool.localToken;
  env.PADDOCK_MODEL = POOLED_MODEL;
}

const missing = ["PADDOCK_GATEWAY_URL", "PADDOCK_RUNNER_TOKEN", "OPENCLAW_GATEWAY_TOKEN", "PADDOCK_AGENT_CONFIG"]
  .filter((name) => !env[name]);
if (missing.length) fail(2, `missing required env: ${missing.join(", ")}`);
const execMode = env.PADDOCK_EXEC_MODE || "";
if (!["", "deny", "allowlist", "full"].includes(execMode)) {
  fail(2, `PADDOCK_EXEC_MODE must be deny, allowlist or full (got ${execMode})`);
}

let configText;
try {
  configText = Buffer.from(env.PADDOCK_AGENT_CONFIG, "base64").toString("utf8");
  const parsed = JSON.parse(configText);
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
  if (POOLED) {
    parsed.gateway = { ...(parsed.gateway || {}), bind: "loopback", port: INTERNAL_PORT };
    configText = JSON.stringify(parsed);
  }
} catch (err) {
  fail(2, `PADDOCK_AGENT_CONFIG is not base64 of a JSON object (${err.message})`);
}
const home = env.HOME || "/home/agent";
const stateDir = path.join(home, ".openclaw");
const configPath = path.join(stateDir, "openclaw.json");
try {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  writeFileSync(configPath, configText, { mode: 0o600 });
  chmodSync(configPath, 0o600);
} catch (err) {
  fail(2, `cannot write ${configPath}: ${err.message} (is $HOME writable?)`);
}
delete env.PADDOCK_AGENT_CONFIG;
env.OPENCLAW_CONFIG_PATH = configPath;
env.OPENCLAW_NO_AUTO_UPDATE = "1";
env.OPENCLAW_CONFIG_READONLY = "1"; // the control plane owns the config: OpenClaw must not rewrite it

async function gatewayCheck(base, token, budgetMs = 10_000) {
  const url = `${base.replace(/\/+$/, "")}/models`;
  const deadline = Date.now() + budgetMs;
  let last = "no attempt";
  for (;;) {
    const left = deadline - Date.now();
    try {
      const res = await fetch(url, {
        headers: { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(Math.max(500, Math.min(3000, left))),
      });
      await res.arrayBuffer().catch(() => {});
      if (res.status === 200) return null;
      last = `HTTP ${res.status}`;
      if (res.status === 401 || res.status === 403) break; // retrying will not fix a bad token
    } catch (err) {
      last = `${err.name}: ${err.cause?.code ?? err.message}`;
    }
    if (Date.now() + 500 >= deadline) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  return `gateway check failed: GET ${url} -> ${last}`;
}

function send(res, code, obj) {
  res.writeHead(code, { "content-type": "application/json" });
  res.end(JSON.stringify(obj));
}

function readBody(req, limit = 8 << 20) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (c) => {
      size += c.length;
      if (size > limit) reject(new Error("body too large"));
      else chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function forward(res, target, method, headers, body) {
  delete headers["transfer-encoding"]; // the body is whole here
  headers["content-length"] = String(body.length);
  const up = (target.protocol === "https:" ? https : http).request(target, { method, headers }, (r) => {
    res.writeHead(r.statusCode || 502, r.headers);
    r.pipe(res);
  });
  up.on("error", (err) => (res.headersSent ? res.destroy() : send(res, 502, { error: { message: `upstream: ${err.message}` } })));
  up.end(body);
}

async function internalReady() {
  try {
    const r = await fetch(`http://127.0.0.1:${INTERNAL_PORT}/readyz`, { signal: AbortSignal.timeout(2000) });
    await r.arrayBuffer().catch(() => {});
    return r.status === 200;
  } catch {
    return false;
  }
}

// A claim presents the secret this pooled runner was started with (from any source: an E2B
// VM's requests come through E2B); without one, only the gateway address may claim.
function claimAllowed(req) {
  const secret = pool.claimSecret;
  if (secret) {
    const given = Buffer.from(String(req.headers["x-paddock-claim"] || ""));
    const want = Buffer.from(secret);
    return given.length === want.length && timingSafeEqual(given, want);
  }
  const source = (req.socket.remoteAddress || "").replace(/^::ffff:/, "");
  return source === new URL(pool.gateway).hostname;
}

async function takeClaim(req, res) {
  if (!claimAllowed(req)) return send(res, 403, { error: { message: "a claim needs this runner's claim secret" } });
  if (pool.claim || pool.claiming) return send(res, 409, { error: { message: "already claimed" } });
  let given;
  try {
    given = JSON.parse((await readBody(req, 1 << 20)).toString("utf8")).env;
    if (!given || typeof given !== "object" || Object.values(given).some((v) => typeof v !== "string")) throw new Error("bad env");
  } catch {
    return send(res, 400, { error: { message: 'expected {"env": {NAME: string}}' } });
  }
  if ((given.PADDOCK_RUNNER_ID ?? env.PADDOCK_RUNNER_ID) !== env.PADDOCK_RUNNER_ID) {
    return send(res, 409, { error: { message: "this claim is for another runner" } });
  }
  const want = ["PADDOCK_GATEWAY_URL", "PADDOCK_RUNNER_TOKEN", "OPENCLAW_GATEWAY_TOKEN", "PADDOCK_MODEL"];
  const lacking = want.filter((name) => !given[name]);
  if (lacking.length) return send(res, 400, { error: { message: `claim lacks ${lacking.join(", ")}` } });
  pool.claiming = true;
  const failure = await gatewayCheck(given.PADDOCK_GATEWAY_URL, given.PADDOCK_RUNNER_TOKEN);
  if (failure) {
    process.stderr.write(`paddock-runner: ${failure}\n`);
    res.on("finish", () => process.exit(3)); // as a failed boot check would
    return send(res, 502, { error: { message: failure } });
  }
  pool.claim = {
    gateway: given.PADDOCK_GATEWAY_URL.replace(/\/+$/, ""),
    token: given.PADDOCK_RUNNER_TOKEN,
    agentToken: given.OPENCLAW_GATEWAY_TOKEN,
    model: given.PADDOCK_MODEL,
  };
  note(`claimed as runner ${env.PADDOCK_RUNNER_ID}`);
  send(res, 200, { ok: true, status: "ready" });
}

// The front: what the control plane talks to on :18789.
function front() {
  return http.createServer((req, res) => {
    const route = (req.url || "").split("?")[0];
    if (req.method === "GET" && (route === "/healthz" || route === "/health")) return send(res, 200, { ok: true });
    if (req.method === "GET" && (route === "/readyz" || route === "/ready")) {
      return internalReady().then((ok) =>
        ok ? send(res, 200, { ok: true, status: pool.claim ? "ready" : "pooled" }) : send(res, 503, { ok: false }));
    }
    if (req.method === "POST" && route === "/paddock/claim") return takeClaim(req, res).catch(() => send(res, 500, {}));
    const auth = Buffer.from(req.headers.authorization || "");
    const want = Buffer.from(`Bearer ${pool.claim?.agentToken ?? ""}`);
    if (!pool.claim || auth.length !== want.length || !timingSafeEqual(auth, want)) {
      return send(res, 401, { error: { message: "unauthorized", type: "unauthorized" } });
    }
    readBody(req).then((body) => {
      const headers = { ...req.headers, authorization: `Bearer ${pool.localToken}`, host: `127.0.0.1:${INTERNAL_PORT}` };
      forward(res, new URL(`http://127.0.0.1:${INTERNAL_PORT}${req.url}`), req.method, headers, body);
    }, () => send(res, 413, { error: { message: "body too large" } }));
  });
}

// The relay: OpenClaw's provider, forwarding to the real gateway as the claimed runner.
function relay() {
  return http.createServer((req, res) => {
    if (!pool.claim) return send(res, 503, { error: { message: "runner not claimed yet" } });
    readBody(req).then((body) => {
      let out = body;
      if (body.length && (req.headers["content-type"] || "").includes("json")) {
        try {
          const parsed = JSON.parse(body.toString("utf8"));
          if (parsed && parsed.model === POOLED_MODEL) parsed.model = pool.claim.model;
          out = Buffer.from(JSON.stringify(parsed));
        } catch {
          // not JSON after all: forwarded as it came
        }
      }
      const target = new URL(pool.claim.gateway + (req.url || "").replace(/^\/v1/, ""));
      const headers = { ...req.headers, authorization: `Bearer ${pool.claim.token}`, host: target.host };
      forward(res, target, req.method, headers, out);
    }, () => send(res, 413, { error: { message: "body too large" } }));
  });
}

if (POOLED) {
  await new Promise((r) => relay().listen(RELAY_PORT, "127.0.0.1", r));
  await new Promise((r) => front().listen(Number(PORT), "0.0.0.0", r));
  note("pooled: OpenClaw starts now, the runner's secrets come with its claim");
} else {
  const failure = await gatewayCheck(env.PADDOCK_GATEWAY_URL, env.PADDOCK_RUNNER_TOKEN);
  if (failure) fail(3, failure);
  note("gateway check ok");
}

// OpenClaw's fs-safe addon needs openat2(2). gVisor as shipped by Debian bookworm (runsc
// 20221219) answers ENOSYS, and OpenClaw then cannot take its state lock: every startup migration
// is refused and the gateway never gets ready. Probe once; on ENOSYS use fs-safe's portable
// fallback (FS_SAFE_NATIVE_MODE=off). Under gVisor the sandbox, not fs-safe, is the boundary.
if (!env.FS_SAFE_NATIVE_MODE && !env.OPENCLAW_FS_SAFE_NATIVE_MODE) {
  try {
    const addon = createRequire(import.meta.url)(FS_SAFE_ADDON);
    const root = openSync("/", C.O_RDONLY | C.O_DIRECTORY);
    try {
      closeSync(addon.openBeneath(root, "etc", C.O_RDONLY | C.O_DIRECTORY).fd);
    } finally {
      closeSync(root);
    }
  } catch (err) {
    if (err?.code === "ENOSYS") {
      env.FS_SAFE_NATIVE_MODE = "off";
      note("kernel lacks openat2 (gVisor?): FS_SAFE_NATIVE_MODE=off");
    }
  }
}

// Exec allowlist: OpenClaw keeps it in the exec approvals document (state database), not in
// openclaw.json, so seed it from PADDOCK_EXEC_ALLOWLIST before the gateway starts. The config's
// tools.exec.mode must be "allowlist" too (approvals can only tighten the config). deny and full
// need no seeding: tools.exec.mode in the config expresses them. Until seeded, allowlist mode
// denies every command (fail closed).
if (execMode === "allowlist") {
  const patterns = (env.PADDOCK_EXEC_ALLOWLIST || "").split(",").map((s) => s.trim()).filter(Boolean);
  const doc = {
    version: 1,
    defaults: { security: "allowlist", ask: "off", askFallback: "deny" },
    agents: { "*": { allowlist: patterns.map((pattern) => ({ pattern })) } },
  };
  // An empty config keeps this CLI run from loading the providers and plugins (~2x faster).
  const emptyConfig = path.join(env.TMPDIR || "/tmp", "paddock-empty-openclaw.json");
  writeFileSync(emptyConfig, "{}\n", { mode: 0o600 });
  const res = spawnSync(process.execPath, [OPENCLAW, "approvals", "set", "--stdin"], {
    input: JSON.stringify(doc),
    env: { ...env, OPENCLAW_CONFIG_PATH: emptyConfig },
    stdio: ["pipe", "ignore", "pipe"],
    timeout: 300_000, // ~5 s under runc, ~30 s under runsc on an idle 2-core host
  });
  unlinkSync(emptyConfig);
  if (res.status !== 0) {
    fail(2, `cannot seed exec approvals: ${(res.stderr || "").toString().trim().split("\n").pop() || res.error}`);
  }
  note(`exec allowlist seeded (${patterns.length} patterns)`);
}

// Become `openclaw gateway run`: same process, so tini's signals reach OpenClaw directly.
note("starting openclaw gateway");
process.argv = POOLED
  ? [process.execPath, OPENCLAW, "gateway", "run", "--port", String(INTERNAL_PORT), "--bind", "loopback"]
  : [process.execPath, OPENCLAW, "gateway", "run", "--port", PORT, "--bind", "lan"];
await import(OPENCLAW);
