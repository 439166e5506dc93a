"""The import-linter layers contract of pyproject.toml: it names every part, and the tree keeps it."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import streamrec

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(streamrec.__file__).resolve().parent


def _layers() -> list[list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [[m.strip() for m in re.split(r"[|:]", line)] for line in contract["layers"]]


def test_every_part_of_the_package_sits_in_one_layer():
    parts = {
        f"streamrec.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem not in ("__init__", "__main__")) or (p / "__init__.py").is_file()
    }
    named = [m for line in _layers() for m in line]
    assert len(named) == len(set(named)), "a module is named in two layers"
    assert parts == set(named), f"missing from the contract: {parts - set(named)}; gone: {set(named) - parts}"


def test_no_part_imports_a_part_above_it_or_beside_it():
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    run = subprocess.run(
        [str(lint), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "1 kept, 0 broken" in run.stdout
