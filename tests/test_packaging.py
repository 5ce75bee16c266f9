"""The built wheel owns one import name, `arbiter`, and lives beside a user's own `server`/`engine`.

An engineer who adds Arbiter to a web project very likely has a top-level
`server` or `engine` package already; before, Arbiter installed those bare names
and one silently shadowed the other. This builds the real wheel, installs it into
a fresh virtual environment next to a package that provides top-level `server`
and `engine`, and imports both.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest
from support.paths import ROOT_DIR


def _wheel(source: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def arbiter_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _wheel(ROOT_DIR, tmp_path_factory.mktemp("arbiter-wheel"))


def test_wheel_installs_exactly_one_top_level_name(arbiter_wheel: Path) -> None:
    with zipfile.ZipFile(arbiter_wheel) as wheel:
        names = wheel.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert wheel.read(top_level).decode().split() == ["arbiter"]
        roots = {name.split("/")[0] for name in names}
    assert roots == {"arbiter", top_level.split("/")[0]}
    # The grammar and the typing markers travel with the code.
    for data in ("grammar.lark", "py.typed"):
        assert f"arbiter/dsl/{data}" in names
    assert "arbiter/engine/py.typed" in names and "arbiter/server/py.typed" in names


def test_wheel_lives_beside_a_users_own_server_and_engine(
    arbiter_wheel: Path, tmp_path: Path
) -> None:
    # A user's project that ships top-level `server` and `engine`.
    theirs = tmp_path / "theirs"
    (theirs / "engine").mkdir(parents=True)
    (theirs / "server.py").write_text("WHO = 'the user'\n")
    (theirs / "engine" / "__init__.py").write_text("WHO = 'the user'\n")
    (theirs / "pyproject.toml").write_text(
        textwrap.dedent("""
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "their-web-app"
            version = "1.0"
            [tool.setuptools]
            py-modules = ["server"]
            packages = ["engine"]
        """)
    )
    their_wheel = _wheel(theirs, tmp_path / "their-wheel")

    env = tmp_path / "fresh"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(arbiter_wheel),
            str(their_wheel),
        ],
        check=True,
        capture_output=True,
    )
    # Third-party dependencies (fastapi, redis, onnxruntime, ...) come from this
    # test run's environment, appended after the fresh one's own site-packages.
    fresh_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(fresh_site) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    probe = textwrap.dedent("""
        import server, engine
        assert server.WHO == engine.WHO == "the user", (server, engine)
        import arbiter.dsl, arbiter.engine, arbiter.server.app
        from arbiter.server.cli import main
        assert "fresh" in arbiter.dsl.__file__, arbiter.dsl.__file__
        print(server.__file__, engine.__file__, arbiter.engine.__file__, sep="\\n")
    """)
    done = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    their_server, their_engine, our_engine = done.stdout.split()
    assert their_server.endswith("site-packages/server.py")
    assert their_engine.endswith("site-packages/engine/__init__.py")
    assert our_engine.endswith("site-packages/arbiter/engine/__init__.py")

    # The installed command works from there too.
    check = subprocess.run(
        [str(env / "bin" / "arbiter"), "check", str(ROOT_DIR / "rulesets" / "retail.rules")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    # setuptools cannot discover packages under a mapped name: a new room must be
    # added to [tool.setuptools] packages, or the wheel silently lacks it.
    import tomllib

    listed = set(
        tomllib.loads((ROOT_DIR / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        "arbiter." + ".".join(init.parent.relative_to(ROOT_DIR).parts)
        for top in ("dsl", "engine", "server")
        for init in (ROOT_DIR / top).rglob("__init__.py")
    }
    assert on_disk - listed == set()
    assert listed - on_disk == set()
