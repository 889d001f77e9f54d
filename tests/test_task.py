"""The Task: a pretraining dataset must fit the model the task's data builds."""

import pytest

from pdiff.errors import ConfigError
from pdiff.task import Task
from tests.conftest import SHARED_DATA, tiny_config


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="no MNIST copy in ../shared/data")
def test_a_pretraining_dataset_of_another_shape_is_one_line() -> None:
    task = Task(tiny_config("data.pretrain=mnist", f"data.data_dir={SHARED_DATA}", "data.download=false"),
                progress=False)
    assert len(task.data.train) == 1000  # the task's own data is unchanged
    with pytest.raises(ConfigError, match=r"data.pretrain=mnist has inputs \[1, 28, 28\] in 10 classes, "
                                          r"data.name=mnist1d \[1, 40\] in 10: pretrain on a dataset of the same"):
        _ = task.pretrain
