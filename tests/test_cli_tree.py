"""The commands, arguments and options of the parts whose CLIs are module-level Typer apps, held
against a recorded tree (``tests/data/cli_tree.json``), so moving commands between files changes
nothing a user types or reads in ``--help``.

A deliberate change to one of these commands: regenerate the file with
``PYTHONPATH=src python tests/test_cli_tree.py`` and commit it with the change.
"""

import json
import sys
from pathlib import Path

import typer

# The command paths recorded (their subcommands too); the other parts' CLIs are not held here.
ROOTS = (("log",), ("joiner",), ("sim",), ("cluster",), ("profiles",), ("bench", "log"), ("bench", "joiner"))
RECORD = Path(__file__).resolve().parent / "data" / "cli_tree.json"
SKIP = {("profiles", "serve")}  # profiles/service_cli.py (another part) adds it


def _param(p) -> dict:
    fields = ("name", "param_type_name", "opts", "secondary_opts", "required", "multiple", "nargs", "help",
              "envvar", "is_flag", "min", "max", "hidden", "metavar", "show_default")  # fmt: skip
    out = {f: getattr(p, f, None) for f in fields}
    out["default"] = repr(p.default)
    out["type"] = repr(p.type_descriptor.annotation)
    return json.loads(json.dumps(out, default=repr))


def _walk(cmd, path: tuple[str, ...], out: dict) -> None:
    if path in SKIP:
        return
    out[" ".join(path)] = {
        "help": cmd.help,
        "short_help": cmd.short_help,
        "no_args_is_help": cmd.no_args_is_help,
        "params": [_param(p) for p in cmd.params],
    }
    if hasattr(cmd, "commands"):  # a group
        for name, sub in sorted(cmd.commands.items()):
            _walk(sub, (*path, name), out)


def cli_tree() -> dict:
    from streamrec.cli import app

    root = typer.main.get_command(app)
    out: dict = {}
    for path in ROOTS:
        cmd = root
        for name in path:
            cmd = cmd.commands[name]  # type: ignore[attr-defined]
        _walk(cmd, path, out)
    return out


def test_the_commands_and_options_are_the_recorded_ones():
    recorded = json.loads(RECORD.read_text())
    now = cli_tree()
    assert sorted(now) == sorted(recorded), "commands added or gone"
    for path, command in recorded.items():
        assert now[path] == command, f"`streamrec {path}` changed"


if __name__ == "__main__":
    RECORD.write_text(json.dumps(cli_tree(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}", file=sys.stderr)
