"""Every docstring example in ``src/streamrec`` runs, one test case per docstring that has one.

The examples are the package's first documentation (STYLE.md: docstrings that teach by example and
are tested), so an example that no longer runs, or prints another number, fails here. A module
that cannot be imported here (an optional dependency missing) is reported as a skip, not hidden.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import streamrec

# Optional dependencies: a module needing one is skipped (with the reason) where it is absent.
OPTIONAL = {"streamrec.log.kafka": "confluent_kafka"}


def _modules() -> list[str]:
    names = ["streamrec"]
    for info in pkgutil.walk_packages(streamrec.__path__, "streamrec."):
        if not info.name.endswith(("_pb2", "_pb2_grpc")) and not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


def _examples() -> list:
    cases = []
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name in _modules():
        needs = OPTIONAL.get(name)
        if needs and importlib.util.find_spec(needs) is None:
            cases.append(pytest.param(name, None, id=name, marks=pytest.mark.skip(reason=f"needs {needs}")))
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an optional dependency absent here: a visible skip
            if (exc.name or "").startswith("streamrec"):
                raise
            cases.append(pytest.param(name, None, id=name, marks=pytest.mark.skip(reason=f"needs {exc.name}")))
            continue
        for test in finder.find(module, name):
            if test.examples and (test.name == name or test.name.startswith(name + ".")):
                if getattr(module, "__file__", None) and test.filename != module.__file__:
                    continue  # re-exported from another module: collected there
                cases.append(pytest.param(name, test.name, id=test.name))
    return cases


CASES = _examples()


def test_the_examples_cover_the_modules_that_have_them():
    # a floor, so a collection that silently finds nothing fails: the count when this was written
    assert len(CASES) >= 40


@pytest.mark.parametrize(("module_name", "test_name"), CASES)
def test_docstring_example(module_name: str, test_name: str, tmp_path, monkeypatch) -> None:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    module = importlib.import_module(module_name)
    (test,) = [t for t in doctest.DocTestFinder().find(module, module_name) if t.name == test_name]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out: list[str] = []
    runner.run(test, out=out.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(out)
