// Paddock runner entrypoint for OpenClaw (runs under tini as uid 10001).
//
// 1. Writes base64-decoded PADDOCK_AGENT_CONFIG to $HOME/.openclaw/openclaw.json (a file, 0600).
// 2. Boot check: GET ${PADDOCK_GATEWAY_URL}/models with the runner token must answer 200 within
//    ~10 s, else one line on stderr and exit 3 (exit 2: missing env / unusable config).
// 3. Kernel without openat2 (gVisor from Debian bookworm): FS_SAFE_NATIVE_MODE=off.
// 4. With PADDOCK_EXEC_MODE=allowlist, seeds OpenClaw's exec approvals document from
//    PADDOCK_EXEC_ALLOWLIST (comma list of command names or path globs).
// 5. Becomes `openclaw gateway run --port 18789 --bind lan` in this same process (no extra Node).
// 0. Warm pool (PADDOCK_AWAIT_CLAIM=1): the container starts with no secret and no config. Until
//    claimed it serves only /healthz, /readyz ({"status": "pooled"}) and POST /paddock/claim
//    {"env": {...}}, accepted from its gateway address only; the claim's env then drives 1-5.
import { spawnSync } from "node:child_process";
import { chmodSync, closeSync, constants as C, mkdirSync, openSync, unlinkSync, writeFileSync } from "node:fs";
import http from "node:http";
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

function awaitClaim() {
  const gatewayHost = new URL(env.PADDOCK_GATEWAY_URL || "http://invalid").hostname;
  let claimed = false;
  return new Promise((resolve) => {
    const send = (res, code, obj) => {
      res.writeHead(code, { "content-type": "application/json" });
      res.end(JSON.stringify(obj));
    };
    const server = http.createServer((req, res) => {
      const route = (req.url || "").split("?")[0];
      if (req.method === "GET" && (route === "/healthz" || route === "/health")) return send(res, 200, { ok: true });
      if (req.method === "GET" && (route === "/readyz" || route === "/ready")) {
        return claimed ? send(res, 503, { ok: false, status: "claiming" }) : send(res, 200, { ok: true, status: "pooled" });
      }
      if (req.method !== "POST" || route !== "/paddock/claim") return send(res, 404, { error: { message: "not found" } });
      const source = (req.socket.remoteAddress || "").replace(/^::ffff:/, "");
      if (source !== gatewayHost) return send(res, 403, { error: { message: "claims come from the gateway address only" } });
      if (claimed) return send(res, 409, { error: { message: "already claimed" } });
      const chunks = [];
      let size = 0;
      req.on("data", (c) => {
        size += c.length;
        if (size <= 1 << 20) chunks.push(c);
      });
      req.on("end", () => {
        let given;
        try {
          given = JSON.parse(Buffer.concat(chunks).toString("utf8")).env;
          if (!given || typeof given !== "object" || Object.values(given).some((v) => typeof v !== "string")) throw new Error("bad env");
        } catch {
          return send(res, 400, { error: { message: 'expected {"env": {NAME: string}}' } });
        }
        if ((given.PADDOCK_RUNNER_ID ?? env.PADDOCK_RUNNER_ID) !== env.PADDOCK_RUNNER_ID) {
          return send(res, 409, { error: { message: "this claim is for another runner" } });
        }
        claimed = true;
        res.on("finish", () => {
          server.close(() => resolve(given)); // frees :18789 for OpenClaw
          server.closeAllConnections();
        });
        send(res, 200, { ok: true, status: "starting" });
      });
    });
    server.listen(Number(PORT), "0.0.0.0", () => note("pooled: waiting for a claim (no secrets yet)"));
  });
}
if (env.PADDOCK_AWAIT_CLAIM === "1") {
  Object.assign(env, await awaitClaim());
  delete env.PADDOCK_AWAIT_CLAIM;
  note("claimed");
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

async function bootCheck(budgetMs = 10_000) {
  const url = `${env.PADDOCK_GATEWAY_URL.replace(/\/+$/, "")}/models`;
  const deadline = Date.now() + budgetMs;
  let last = "no attempt";
  for (;;) {
    const left = deadline - Date.now();
    try {
      const res = await fetch(url, {
        headers: { authorization: `Bearer ${env.PADDOCK_RUNNER_TOKEN}` },
        signal: AbortSignal.timeout(Math.max(500, Math.min(3000, left))),
      });
      await res.arrayBuffer().catch(() => {});
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
      if (res.status === 401 || res.status === 403) break; // retrying will not fix a bad token
    } catch (err) {
      last = `${err.name}: ${err.cause?.code ?? err.message}`;
    }
    if (Date.now() + 500 >= deadline) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  fail(3, `gateway check failed: GET ${url} -> ${last}`);
}
await bootCheck();
note("gateway check ok");

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
process.argv = [process.execPath, OPENCLAW, "gateway", "run", "--port", PORT, "--bind", "lan"];
await import(OPENCLAW);
