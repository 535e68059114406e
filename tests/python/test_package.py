"""polyplug_client as a package: it type-checks with mypy under its own configuration,
installs with pip (without the network), and documents what it exports.

Where things are: $POLYPLUG_PYTHON_PATH is the build's python directory (the assembled
package and its generated stubs); the source tree is $POLYPLUG_SOURCE_DIR, or else the
tree this file lives in (<source>/tests/python).
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import polyplug_client
import polyplug_client.aio
from polyplug.host.v1 import host_pb2

# Safety net for each subprocess (mypy, pip, an interpreter).
SUBPROCESS_TIMEOUT = 300.0


def build_python_dir() -> Path:
    """$POLYPLUG_PYTHON_PATH: the build tree's python directory."""
    value = os.environ.get("POLYPLUG_PYTHON_PATH", "")
    if not value:
        pytest.fail("$POLYPLUG_PYTHON_PATH is not set: run these tests through ctest")
    return Path(value)


def source_dir() -> Path:
    """The source tree: $POLYPLUG_SOURCE_DIR, else the tree holding this file."""
    value = os.environ.get("POLYPLUG_SOURCE_DIR", "")
    return Path(value) if value else Path(__file__).resolve().parents[2]


def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT, check=False)


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return (f"`{' '.join(result.args)}` exited with {result.returncode}\n--- stdout\n"
            f"{result.stdout}--- stderr\n{result.stderr}")


def test_the_package_under_test_is_the_builds() -> None:
    """The imports above found the build's package, not something installed elsewhere."""
    package = Path(polyplug_client.__file__).resolve().parent
    assert package == (build_python_dir() / "polyplug_client").resolve()


def test_mypy_passes_with_the_packages_configuration(tmp_path: Path) -> None:
    config = source_dir() / "client" / "python" / "mypy.ini"
    assert config.is_file(), f"{config} is missing"
    # The cache goes to the test's own directory: nothing is written into the build tree,
    # and two runs at once do not share a cache.
    result = run([sys.executable, "-m", "mypy", "--config-file", str(config),
                  "--cache-dir", str(tmp_path / "mypy-cache"), "-p", "polyplug_client"],
                 cwd=build_python_dir())
    assert result.returncode == 0, shown(result)
    assert "Success: no issues found" in result.stdout, shown(result)


def copy_of_the_build_tree(destination: Path) -> Path:
    """The build's python directory without what earlier tools left in it (pip's in-tree
    build writes build/ and *.egg-info into the directory it installs from)."""
    return Path(shutil.copytree(
        build_python_dir(), destination,
        ignore=shutil.ignore_patterns(".mypy_cache", "__pycache__", "build", "*.egg-info")))


def test_pip_installs_it_without_the_network(tmp_path: Path) -> None:
    # pip builds in the tree it installs from: a copy, so that the build tree stays as the
    # build made it (and two runs at once do not share setuptools' build/ directory).
    tree = copy_of_the_build_tree(tmp_path / "src")
    target = tmp_path / "site"
    env = {**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PIP_INDEX_URL", None)
    result = run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                  "--no-index", "--target", str(target), str(tree)], cwd=tmp_path, env=env)
    assert result.returncode == 0, shown(result)

    installed = target / "polyplug_client"
    assert (installed / "py.typed").is_file(), "the typing marker was not installed"
    assert (installed / "_version.py").is_file()
    for stub in ("host_pb2.py", "host_pb2.pyi", "host_pb2_grpc.py"):
        assert (target / "polyplug" / "host" / "v1" / stub).is_file(), f"{stub} not installed"
    (dist_info,) = target.glob("polyplug_client-*.dist-info")
    assert dist_info.name == f"polyplug_client-{polyplug_client.__version__}.dist-info"

    # A fresh interpreter that sees only the installed copy (and the system's grpc).
    clean_env = {k: v for k, v in os.environ.items()
                 if k not in ("PYTHONPATH", "POLYPLUG_PYTHON_PATH", "PYTHONHOME")}
    clean_env["PYTHONPATH"] = str(target)
    probe = ("import polyplug_client, polyplug_client.aio\n"
             "from polyplug_client import HostClient\n"
             "from polyplug_client.aio import AsyncHostClient\n"
             "from polyplug.host.v1 import host_pb2, host_pb2_grpc\n"
             "print(polyplug_client.__version__)\n"
             "print(polyplug_client.__file__)\n"
             "print(host_pb2.__file__)\n")
    result = run([sys.executable, "-c", probe], cwd=tmp_path, env=clean_env)
    assert result.returncode == 0, shown(result)
    version, package_file, stub_file = result.stdout.splitlines()
    assert version == polyplug_client.__version__
    assert Path(package_file).resolve().is_relative_to(target.resolve()), package_file
    assert Path(stub_file).resolve().is_relative_to(target.resolve()), stub_file


def test_the_version_is_the_projects() -> None:
    version = polyplug_client.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    project = (source_dir() / "CMakeLists.txt").read_text()
    match = re.search(r"project\(\s*polyplug_host\s+VERSION\s+([0-9.]+)", project)
    assert match is not None, "no project(... VERSION ...) in CMakeLists.txt"
    assert version == match.group(1)


def own_docstring(value: object) -> str:
    """The docstring `value` was given itself: not one inherited from its class, nor the
    signature @dataclass writes for a class that has none."""
    if inspect.isclass(value):
        doc = value.__dict__.get("__doc__") or ""
        return "" if re.fullmatch(rf"{re.escape(value.__name__)}\(.*\)", doc, re.S) else doc
    if inspect.isroutine(value) or inspect.ismodule(value):
        return value.__doc__ or ""
    return ""


# The exported names that are plain values, which cannot carry a docstring of their own:
# host.proto's outcome numbers, the version string, and a type alias (a union of classes).
_OUTCOMES = {name: getattr(host_pb2, name) for name in dir(host_pb2)
             if name.startswith(("RELOAD_OUTCOME_", "PUSH_OUTCOME_"))}


def test_every_exported_name_has_a_docstring() -> None:
    assert polyplug_client.__doc__, "the package has no docstring"
    exported = polyplug_client.__all__
    assert len(exported) == len(set(exported)), "a name is listed twice in __all__"
    missing: list[str] = []
    for name in exported:
        assert hasattr(polyplug_client, name), f"__all__ lists {name}, which is not there"
        value = getattr(polyplug_client, name)
        if name in _OUTCOMES:
            assert value == _OUTCOMES[name], name
        elif name == "__version__":
            assert isinstance(value, str)
        elif isinstance(value, types.UnionType):
            # An alias: each member is a documented class.
            for member in value.__args__:
                if not own_docstring(member).strip():
                    missing.append(f"{name} member {member.__name__}")
        elif not own_docstring(value).strip():
            missing.append(name)
    assert not missing, f"exported without a docstring: {missing}"
    # Every name that looks public is exported.
    public = {name for name in vars(polyplug_client) if not name.startswith("_")
              and not inspect.ismodule(getattr(polyplug_client, name))}
    assert public <= set(exported), f"public but not in __all__: {sorted(public - set(exported))}"


def test_the_asyncio_module_documents_its_classes() -> None:
    assert polyplug_client.aio.__doc__
    for cls in (polyplug_client.aio.AsyncHostClient, polyplug_client.aio.AsyncEventStream):
        assert own_docstring(cls).strip(), cls.__name__


def test_the_package_is_marked_typed() -> None:
    package = Path(polyplug_client.__file__).parent
    marker = package / "py.typed"
    assert marker.is_file(), f"no py.typed in {package}"
    assert (source_dir() / "client" / "python" / "polyplug_client" / "py.typed").is_file()
    # The generated messages come with their stubs, for the type checkers of users.
    assert (Path(host_pb2.__file__).with_suffix(".pyi")).is_file()
