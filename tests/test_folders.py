"""atomic_folder: a folder is written whole or not at all, replaces only a folder pdiff wrote (with force), keeps
the user's files in it byte for byte, refuses a second writer, and survives a kill at every step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pdiff.errors import ArtifactError, ConfigError
from pdiff.folders import Marker, atomic_folder
from pdiff.store import save_json

SRC = Path(__file__).resolve().parents[1] / "src"
MARKER = Marker("marker.json", "test", "test output")
KILL_POINTS = ("writing", "marker", "keeping", "swap", "after-swap", "two-renames")

# Fills `out` like `write` below, with a SIGKILL injected at one step of atomic_folder.
SCRIPT = """
import os, signal, sys
from pathlib import Path
import pdiff.folders as folders
from pdiff.store import save_json
out, point = Path(sys.argv[1]), sys.argv[2]

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def after(real):
    def wrapped(*args, **kwargs):
        real(*args, **kwargs)
        die()
    return wrapped

if point == "marker":  # every new file written, the marker not yet completed
    folders._record_files = die
elif point == "keeping":  # the user's first file linked into the new folder
    folders._link = after(folders._link)
elif point == "swap":  # the new folder complete, about to replace the old one
    folders._swap = die
elif point == "after-swap":  # swapped, the old folder not yet removed
    folders._swap = after(folders._swap)
elif point == "two-renames":  # no atomic exchange here: killed between moving the old folder aside and the new in
    folders._exchange = lambda a, b: False
    real_rename = os.rename
    def rename(a, b):
        real_rename(a, b)
        if str(b).endswith(".old"):
            die()
    folders.os.rename = rename
with folders.atomic_folder(out, folders.Marker("marker.json", "test", "test output"), force=True) as folder:
    for i in range(3):
        (folder / f"new_{i}.bin").write_bytes(bytes([i]) * 1000)
        if point == "writing" and i == 1:
            die()
    save_json(folder / "marker.json", {"library_name": "pdiff", "kind": "test"})
"""


def write(out: Path, prefix: str, force: bool = False) -> None:
    with atomic_folder(out, MARKER, force) as folder:
        for i in range(3):
            (folder / f"{prefix}_{i}.bin").write_bytes(bytes([i]) * 1000)
        save_json(folder / "marker.json", {"library_name": "pdiff", "kind": "test"})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def users_files(out: Path) -> dict[str, bytes]:
    """The user's own files, added to a folder pdiff wrote."""
    (out / "notes.txt").write_text("my notes")
    (out / "mine").mkdir()
    (out / "mine" / "data.bin").write_bytes(os.urandom(256))
    return {name: data for name, data in snapshot(out).items() if name in ("notes.txt", "mine/data.bin")}


def test_a_new_folder_appears_whole_with_its_marker_listing_the_files(tmp_path) -> None:
    out = tmp_path / "a" / "out"
    write(out, "old")
    assert sorted(snapshot(out)) == ["marker.json", "old_0.bin", "old_1.bin", "old_2.bin"]
    assert '"files"' in (out / "marker.json").read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no lock, no partial folder left


def test_a_folder_pdiff_did_not_write_is_never_touched(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "bert"}')
    (out / "model.safetensors").write_bytes(os.urandom(64))
    before = snapshot(out)
    for force in (False, True):
        with pytest.raises(ArtifactError, match=r"is not empty and holds no test output .* give a new or empty"):
            write(out, "new", force)
        assert snapshot(out) == before
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        write(out / "config.json", "new")
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_earlier_output_is_replaced_only_with_force_and_the_users_files_stay(tmp_path) -> None:
    out = tmp_path / "out"
    write(out, "old")
    mine = users_files(out)
    before = snapshot(out)
    with pytest.raises(ArtifactError, match="holds an earlier test output: pass --force"):
        write(out, "new")
    assert snapshot(out) == before
    write(out, "new", force=True)
    after = snapshot(out)
    assert sorted(after) == ["marker.json", "mine/data.bin", "new_0.bin", "new_1.bin", "new_2.bin", "notes.txt"]
    assert {name: after[name] for name in mine} == mine
    write(out, "again", force=True)  # the user's files were not listed as pdiff's: kept again
    assert {name: snapshot(out)[name] for name in mine} == mine and "new_0.bin" not in snapshot(out)


def test_a_user_file_the_new_output_would_overwrite_is_refused(tmp_path) -> None:
    out = tmp_path / "out"
    write(out, "old")
    (out / "new_1.bin").write_bytes(b"mine")
    before = snapshot(out)
    with pytest.raises(ArtifactError, match="new_1.bin was not written by pdiff"):
        write(out, "new", force=True)
    assert snapshot(out) == before


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path) -> None:
    out = tmp_path / "out"
    write(out, "old")
    before = snapshot(out)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".out.lock").write_text(f"{sleeper.pid}\n")  # another pdiff process writing `out`
        with pytest.raises(ArtifactError, match=f"in use by another pdiff process \\(pid {sleeper.pid}\\)"):
            write(out, "new", force=True)
        assert snapshot(out) == before
    finally:
        sleeper.kill()
        sleeper.wait()
    write(out, "new", force=True)  # its process is gone: the lock is stale
    assert "new_0.bin" in snapshot(out) and not (tmp_path / ".out.lock").exists()


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_at_any_step_leaves_the_old_folder_or_the_new_one(point: str, tmp_path) -> None:
    out = tmp_path / "out"
    write(out, "old")
    mine = users_files(out)
    old = snapshot(out)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.run([sys.executable, "-c", SCRIPT, str(out), point], env=env, capture_output=True)
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()
    if point == "two-renames":  # the old folder waits beside `out` until the next call puts it back
        with pytest.raises(ArtifactError, match="pass --force"):
            write(out, "other")
    now = snapshot(out)
    assert now == old or sorted(now) == ["marker.json", "mine/data.bin", "new_0.bin", "new_1.bin", "new_2.bin",
                                         "notes.txt"], sorted(now)
    assert {name: now[name] for name in mine} == mine  # the user's files, byte for byte
    assert (now == old) == (point in ("writing", "marker", "keeping", "swap", "two-renames"))
    write(out, "next", force=True)  # the next call cleans up what the kill left
    assert {name: snapshot(out)[name] for name in mine} == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
