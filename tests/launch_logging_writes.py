"""The pdiff command line, logging "RANK PATH" to $PDIFF_WRITE_LOG for every file a process writes.

tests/test_distributed.py launches it under `accelerate launch` to check that each artifact is written once.
"""

import os
from contextlib import contextmanager

import pdiff.store
from pdiff.cli import app

atomic_path = pdiff.store.atomic_path


@contextmanager
def logged_atomic_path(path, **kwargs):
    with open(os.environ["PDIFF_WRITE_LOG"], "a") as log:
        log.write(f"{os.environ.get('RANK', '0')} {path}\n")
    with atomic_path(path, **kwargs) as tmp:
        yield tmp


pdiff.store.atomic_path = logged_atomic_path
app(prog_name="pdiff")
