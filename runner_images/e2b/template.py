#!/usr/bin/env python3
"""Build the E2B template of the OpenClaw runner (needs E2B_API_KEY; this machine cannot).

    runner_images/build --only openclaw              # makes the Node + OpenClaw prefix first
    E2B_API_KEY=e2b_... python runner_images/e2b/template.py [--name paddock-openclaw]
    python runner_images/e2b/template.py --print     # offline: the steps E2B would run

The VM size is the template's (E2B has no per-sandbox limits): the e2b backend refuses a
profile whose memory or CPUs are below it, so keep it at or under the smallest profile used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from e2b import Template, default_build_logger

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent


def runtime_prefix() -> Path:
    """The prefix runner_images/build installed (the newest complete one)."""
    done = sorted((IMAGES / ".build" / "runtime").glob("*/.complete"), key=os.path.getmtime)
    if not done:
        sys.exit("no OpenClaw prefix: run `runner_images/build --only openclaw` first")
    return done[-1].parent / "runtime"


def stage(context: Path, runtime: Path) -> None:
    """The build context: the prefix (hard links, symlinks kept) and the entrypoint."""
    shutil.copytree(runtime, context / "runtime", symlinks=True, copy_function=os.link)
    shutil.copy2(IMAGES / "openclaw" / "entrypoint.mjs", context / "entrypoint.mjs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="paddock-openclaw")
    parser.add_argument("--cpu", type=int, default=1)
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--print", action="store_true", help="print the steps, build nothing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=IMAGES / ".build") as tmp:
        context = Path(tmp)
        if not args.print:
            stage(context, runtime_prefix())
        template = Template(file_context_path=context).from_dockerfile(str(HERE / "e2b.Dockerfile"))
        if args.print:
            print(Template.to_dockerfile(template))
            return
        info = Template.build(
            template,
            args.name,
            cpu_count=args.cpu,
            memory_mb=args.memory_mb,
            on_build_logs=default_build_logger(),
        )
        print(f"built E2B template {args.name}: {info}")


if __name__ == "__main__":
    main()
