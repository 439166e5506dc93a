"""Every command, argument and option of ``streamrec`` (the root, its groups and the order they list
their commands in), held against a recorded tree (``tests/data/cli_tree.json``), so moving commands
between files changes nothing a user types or reads in ``--help``.

A deliberate change to one of these commands: regenerate the file with
``PYTHONPATH=src python tests/test_cli_tree.py`` and commit it with the change.
"""

import ast
import importlib
import inspect
import json
import sys
from pathlib import Path

import typer

RECORD = Path(__file__).resolve().parent / "data" / "cli_tree.json"


def _param(p) -> dict:
    fields = ("name", "param_type_name", "opts", "secondary_opts", "required", "multiple", "nargs", "help",
              "envvar", "is_flag", "min", "max", "hidden", "metavar", "show_default", "is_eager")  # fmt: skip
    out = {f: getattr(p, f, None) for f in fields}
    out["default"] = repr(p.default)
    out["type"] = repr(p.type_descriptor.annotation)
    return json.loads(json.dumps(out, default=repr))


def _walk(cmd, path: tuple[str, ...], out: dict) -> None:
    node = {
        "help": cmd.help,
        "short_help": cmd.short_help,
        "no_args_is_help": cmd.no_args_is_help,
        "hidden": cmd.hidden,
        "params": [_param(p) for p in cmd.params],
    }
    if hasattr(cmd, "commands"):  # a group: its commands in the order --help lists them
        node["commands"] = list(cmd.commands)
    out[" ".join(path)] = node  # the root's key is ""
    for name, sub in getattr(cmd, "commands", {}).items():
        _walk(sub, (*path, name), out)


def cli_tree() -> dict:
    from streamrec.cli import app

    out: dict = {}
    _walk(typer.main.get_command(app), (), out)
    return out


def test_the_commands_and_options_are_the_recorded_ones():
    recorded = json.loads(RECORD.read_text())
    now = cli_tree()
    assert sorted(now) == sorted(recorded), "commands added or gone"
    for path, command in recorded.items():
        assert now[path] == command, f"`streamrec {path}` changed"


def test_every_part_defines_its_commands_at_module_level_and_register_only_attaches_them():
    from streamrec.cli import _PARTS

    for name in _PARTS:
        module = importlib.import_module(name)
        (register,) = [n for n in ast.parse(inspect.getsource(module)).body if getattr(n, "name", None) == "register"]
        nested = [n.name for n in ast.walk(register) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)][1:]
        assert not nested, f"{name}.register defines {nested}; define them at module level"


if __name__ == "__main__":
    RECORD.write_text(json.dumps(cli_tree(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}", file=sys.stderr)
