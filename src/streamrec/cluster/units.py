"""The processes of ``cluster up`` as systemd units, for running a cluster under a real supervisor.

``cluster up`` supervises its processes itself, and deliberately simply: it starts them in order,
waits until each answers, and stops them all when one dies (a half cluster hides lost training or
profiles). That suits trying cluster mode and the end-to-end tests. A deployment wants what a
supervisor gives instead: restart of the one process that died, start at boot, logs rotated, limits.
``streamrec cluster up --print systemd`` prepares the cluster's folder exactly as ``cluster up`` does
(config, model, fixed ports) and writes one unit per process with the *same* command lines
(:meth:`Cluster.commands`), plus a target that starts them all:

* ordering is ``After=``/``Requires=`` on what a process needs started first (Redis, then a
  one-shot unit that creates the topics with their partition counts, then the profile nodes, then
  the stages and the API);
* each service restarts on failure; the parts already tolerate a neighbour that is restarting
  (clients retry; the trainer and the joiner resume from committed offsets and their snapshot or
  state, which is what makes ``kill -9`` of any one of them safe);
* ``SIGTERM`` with ``TimeoutStopSec`` equal to ``--grace`` stops a part as ``cluster down`` does;
  output is appended to the same ``<dir>/logs/<name>.log`` files.

A compose file is not generated: the project ships no container image, and a compose file naming
one that does not exist would not run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from streamrec.cluster.launcher import PartCommand

__all__ = ["exec_args", "systemd_units"]

ENVIRONMENT = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # as the launcher sets for its children
_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def _environment() -> dict[str, str]:
    # The launcher's children inherit its environment; a unit inherits none, so the one variable
    # that decides which streamrec runs (a source checkout on PYTHONPATH) travels explicitly.
    extra = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
    return {**ENVIRONMENT, **extra}


def _quote(arg: str) -> str:
    """One argument in systemd's ExecStart syntax (``%`` and ``$`` are specifiers there)."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN.match(arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_args(line: str) -> list[str]:
    """The arguments of an ``ExecStart=`` value written by :func:`systemd_units` (its inverse)."""
    args, i = [], 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        if line[i] == '"':
            out, i = [], i + 1
            while line[i] != '"':
                if line[i] == "\\":
                    i += 1
                out.append(line[i])
                i += 1
            i += 1
            word = "".join(out)
        else:
            end = line.find(" ", i)
            end = len(line) if end < 0 else end
            word, i = line[i:end], end
        args.append(word.replace("%%", "%").replace("$$", "$"))
    return args


def systemd_units(
    parts: Sequence[PartCommand], directory: Path, *, prefix: str = "streamrec", grace_s: float = 10.0
) -> dict[str, str]:
    """Unit files (file name -> text): one ``<prefix>-<name>.service`` per part and ``<prefix>.target``.

    Examples
    --------
    >>> parts = [PartCommand("redis", ["/usr/bin/redis-server", "--save", ""], (), "127.0.0.1:6379"),
    ...          PartCommand("api", ["python", "-m", "streamrec", "serve"], ("redis",), "http://127.0.0.1:8000")]
    >>> units = systemd_units(parts, Path("/srv/cluster"))
    >>> sorted(units)
    ['streamrec-api.service', 'streamrec-redis.service', 'streamrec.target']
    >>> [line for line in units["streamrec-api.service"].splitlines() if line.startswith(("After", "ExecStart"))]
    ['After=streamrec-redis.service', 'ExecStart=python -m streamrec serve']
    >>> exec_args(units["streamrec-redis.service"].split("ExecStart=")[1].splitlines()[0])
    ['/usr/bin/redis-server', '--save', '']
    """
    directory = Path(directory).resolve()
    target = f"{prefix}.target"
    units = {}
    for part in parts:
        needs = " ".join(f"{prefix}-{name}.service" for name in part.after)
        where = f" ({part.address})" if part.address else ""
        unit = [
            "[Unit]",
            f"Description=streamrec cluster {directory}: {part.name}{where}",
            f"PartOf={target}",
        ]
        if needs:
            unit += [f"After={needs}", f"Requires={needs}"]
        service = [
            "",
            "[Service]",
            f"Type={'oneshot' if part.oneshot else 'simple'}",
            f"WorkingDirectory={directory}",
            "Environment=" + " ".join(_quote(f"{k}={v}") for k, v in _environment().items()),
            "ExecStart=" + " ".join(_quote(a) for a in part.args),
            f"StandardOutput=append:{directory / 'logs' / (part.name + '.log')}",
            "StandardError=inherit",
        ]
        if part.oneshot:
            service += ["RemainAfterExit=yes"]
        else:
            service += ["Restart=on-failure", "RestartSec=2", "KillSignal=SIGTERM", f"TimeoutStopSec={grace_s:g}"]
        units[f"{prefix}-{part.name}.service"] = "\n".join([*unit, *service, "", "[Install]", f"WantedBy={target}", ""])
    wants = " ".join(f"{prefix}-{p.name}.service" for p in parts)
    units[target] = "\n".join(
        [
            "[Unit]",
            f"Description=streamrec cluster {directory} (every process of `streamrec cluster up`)",
            f"Wants={wants}",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )
    return units
