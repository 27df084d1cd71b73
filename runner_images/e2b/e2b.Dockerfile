# Paddock OpenClaw runner as an E2B template (a Firecracker microVM image), from the same inputs
# as runner_images/openclaw: Debian bookworm, the Node + OpenClaw prefix that runner_images/build
# installs from the pins at its top and openclaw/package-lock.json, and openclaw/entrypoint.mjs.
# Built by E2B's builders through runner_images/e2b/template.py (needs E2B_API_KEY), which stages
# the build context: runtime/ (that prefix, as built) and entrypoint.mjs.
#
# No start command: a template's start command runs once, at build time, and is snapshotted;
# the control plane starts the runner in each sandbox (envd, as `agent`) with the runner
# contract's environment. No sudo for `agent`: in the VM, root is the control plane's.
FROM debian:bookworm-slim
USER root
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates libatomic1 \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man
RUN groupadd --gid 10001 agent \
 && useradd --uid 10001 --gid 10001 --home-dir /home/agent --create-home --shell /bin/bash agent \
 && install -d -o 10001 -g 10001 -m 0755 /workspace
COPY runtime/ /usr/local/
COPY entrypoint.mjs /opt/paddock/entrypoint.mjs
# NODE_USE_SYSTEM_CA: E2B's header rules on https hosts go through its TLS inspection, whose CA
# is in the system store, not in Node's bundled one.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    OPENCLAW_NO_AUTO_UPDATE=1 \
    NODE_USE_SYSTEM_CA=1
WORKDIR /workspace
USER agent
