"""The source archive and the wheel, built as a release would build them, and tests run from the archive.

One build (~10 s: sdist, then the wheel from the unpacked sdist, which proves the sdist builds) and
two fast test files run from the unpacked archive with PYTHONPATH pointing at it (~15 s), instead
of a fresh venv and the whole suite (minutes, and TensorFlow downloaded again). `--no-isolation`
keeps it offline: the test extra installs the setuptools that pyproject's build-system asks for,
and `build` refuses to start if it is missing.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import chargen
from chargen import errors

from conftest import ROOT

# Shipped beside the package in the sdist because tests read them (tests/test_alphabet.py trains on
# corpora/alphabet.txt, tests/test_state_ablation.py runs benchmarks/state_ablation.py).
SOURCE_DIRS = ("chargen", "tests", "corpora", "benchmarks")


def _files(root: Path, folder: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")}


# Left out of the copy that is built: setuptools adds every file an old chargen.egg-info/SOURCES.txt
# lists to the sdist, so building in this checkout would hide a file that MANIFEST.in forgets.
NOT_SOURCE = (".git", "*.egg-info", "build", "dist", "checkpoints", "exports", "__pycache__", "*.py[co]", ".*cache",
              ".venv")


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    tree = tmp_path_factory.mktemp("clone") / "chargen"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(tree)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def _sdist(dist: Path) -> Path:
    (archive,) = dist.glob("chargen-*.tar.gz")
    return archive


def test_the_sdist_has_everything_the_tests_need(dist):
    with tarfile.open(_sdist(dist)) as tar:
        top = f"chargen-{chargen.__version__}/"
        names = {n[len(top):] for n in tar.getnames() if n.startswith(top)}
    for folder in SOURCE_DIRS:
        missing = _files(ROOT, folder) - names
        assert not missing, f"not in the sdist: {sorted(missing)}"
    assert {"LICENSE", "README.md", "pyproject.toml", "tests/conftest.py", "corpora/tinyshakespeare.txt"} <= names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("checkpoints/", "exports/"))]


def test_the_wheel_is_the_package_with_its_licence_and_version(dist):
    (wheel,) = dist.glob(f"chargen-{chargen.__version__}-py3-none-any.whl")  # version from chargen.__version__
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = f"chargen-{chargen.__version__}.dist-info"
        metadata = z.read(f"{info}/METADATA").decode()
    assert {f"chargen/{p.name}" for p in (ROOT / "chargen").glob("*.py")} <= names
    assert f"{info}/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "corpora/", "benchmarks/"))]
    assert "License-Expression: MIT" in metadata and f"Version: {chargen.__version__}" in metadata


def test_tests_pass_when_run_from_the_unpacked_sdist(dist, tmp_path):
    with tarfile.open(_sdist(dist)) as tar:
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    src = tmp_path / f"chargen-{chargen.__version__}"
    env = {**os.environ, "PYTHONPATH": str(src)}
    where = subprocess.run([sys.executable, "-c", "import chargen; print(chargen.__file__)"], cwd=src, env=env,
                           capture_output=True, text=True)
    assert Path(where.stdout.strip()).parent == src / "chargen"  # the archive's copy, not this checkout's
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_tokenizer.py", "tests/test_alphabet.py::test_shipped_corpus_is_what_its_script_makes"],
                       cwd=src, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and "failed" not in r.stdout and "error" not in r.stdout.lower()


def test_every_error_is_importable_from_chargen():
    raised = {name for name, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, errors.ChargenError)}
    assert "TensorBoardError" in raised
    for name in raised:
        assert name in chargen.__all__ and getattr(chargen, name) is getattr(errors, name), name
    from chargen.callbacks import TensorBoardError

    assert TensorBoardError is chargen.TensorBoardError and issubclass(TensorBoardError, chargen.ChargenError)
