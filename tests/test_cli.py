import subprocess
import sys

from typer.testing import CliRunner

from streamrec import __version__
from streamrec.cli import app


def test_version_flag_prints_the_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"streamrec {__version__}"


def test_help_lists_the_commands_users_touch():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "bench"):
        assert command in result.output


def test_console_script_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "streamrec", "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert __version__ in out.stdout
