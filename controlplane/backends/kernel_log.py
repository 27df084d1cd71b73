"""Container resource exhaustion, as the kernel reports it in its log (/dev/kmsg).

The pids controller logs the first fork it refuses in a cgroup ("fork rejected by pids
controller in /docker/<id>") and the OOM killer names the memory cgroup it acted in
("oom-kill:...,oom_memcg=/docker/<id>,..."). Both lines name the container and are written
before anything dies, so the reason survives the container: under gVisor, a pids limit that
the sandbox hits stops the whole sandbox, and its cgroup is gone by the time Docker reports it.

Reading needs root (or CAP_SYSLOG) on the Docker host itself; without it, `open()` returns False
and only the cgroup counters of running containers (`cgroup_exhaustion`) and Docker's own
`OOMKilled` flag are left.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from pathlib import Path

__all__ = ["KernelLog", "cgroup_exhaustion"]

logger = logging.getLogger(__name__)

_PIDS = re.compile(r"fork rejected by pids controller in \S*?([0-9a-f]{64})")
_OOM = re.compile(r"oom-kill:.*?oom_memcg=\S*?([0-9a-f]{64})")
_ID = re.compile(r"\s*\S*?([0-9a-f]{64})")
_KEEP = 10_000  # container ids remembered per kind (oldest forgotten first)
_MAX_RECORDS = 100_000  # per poll: the ring buffer is far smaller; a bound all the same


class KernelLog:
    def __init__(self, path: str = "/dev/kmsg") -> None:
        self._path = path
        self._fd: int | None = None
        self._pids: OrderedDict[str, None] = OrderedDict()
        self._oom: OrderedDict[str, None] = OrderedDict()
        self._pids_pending = False

    def open(self) -> bool:
        try:
            self._fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            logger.warning(
                "cannot read the kernel log (%s): pids exhaustion of runners goes unnoticed", exc
            )
            return False
        self.poll()
        return True

    def poll(self) -> None:
        """Read every record logged since the last call (non-blocking)."""
        if self._fd is None:
            return
        for _ in range(_MAX_RECORDS):
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                return
            except BrokenPipeError:  # records were overwritten before we read them
                continue
            except OSError as exc:
                logger.warning("kernel log read failed: %s", exc)
                return
            if not record:
                return
            self._read(record.decode("utf-8", "replace").partition(";")[2])

    def _read(self, text: str) -> None:
        if self._pids_pending:  # the cgroup path of a split "fork rejected" line
            self._pids_pending = False
            if match := _ID.match(text):
                _remember(self._pids, match.group(1))
                return
        for pattern, seen in ((_PIDS, self._pids), (_OOM, self._oom)):
            if match := pattern.search(text):
                _remember(seen, match.group(1))
        # The pids line is printed in two parts; another CPU's message may land in between,
        # and then the path arrives as a record of its own.
        self._pids_pending = text.rstrip().endswith("fork rejected by pids controller in")

    def pids_exhausted(self, container_id: str) -> bool:
        return container_id in self._pids

    def oom_killed(self, container_id: str) -> bool:
        return container_id in self._oom

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _remember(seen: OrderedDict[str, None], container_id: str) -> None:
    seen[container_id] = None
    while len(seen) > _KEEP:
        seen.popitem(last=False)


_CGROUP_DIRS = ("/sys/fs/cgroup/{c}/docker/{id}", "/sys/fs/cgroup/system.slice/docker-{id}.scope",
                "/sys/fs/cgroup/docker/{id}")  # fmt: skip


def cgroup_exhaustion(container_id: str) -> str | None:
    """`pids_exhausted` or `oom_killed` from a running container's cgroup counters (v1 or v2)."""
    for counters, key, reason in (
        (("pids", "pids.events"), "max", "pids_exhausted"),
        (("memory", "memory.oom_control"), "oom_kill", "oom_killed"),
        (("memory", "memory.events"), "oom_kill", "oom_killed"),
    ):
        controller, name = counters
        for pattern in _CGROUP_DIRS:
            try:
                text = Path(pattern.format(c=controller, id=container_id), name).read_text()
            except OSError:
                continue
            for line in text.splitlines():
                field, _, value = line.partition(" ")
                if field == key and value.strip().isdigit() and int(value) > 0:
                    return reason
    return None
