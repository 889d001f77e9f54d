import pytest
import torch

from pdiff import similarity
from pdiff.similarity import iou_matrix, max_similarity, nearest_checkpoint, similarity_summary


def test_iou_hand_computed() -> None:
    labels = torch.tensor([0, 1, 2, 3, 4])
    predictions = torch.tensor([
        [9, 1, 9, 3, 4],  # wrong on {0, 2}
        [9, 9, 2, 3, 4],  # wrong on {0, 1}
        [0, 1, 2, 3, 4],  # wrong on {}
    ])
    iou = iou_matrix(predictions, labels)
    assert torch.allclose(iou[0, 1], torch.tensor(1 / 3))  # {0} / {0, 1, 2}
    assert iou[0, 2] == 0 and iou[2, 2] == 1 and iou[0, 0] == 1
    assert torch.equal(iou, iou.T)


def test_max_similarity_skips_self() -> None:
    iou = torch.tensor([[1.0, 0.2, 0.7], [0.2, 1.0, 0.4], [0.7, 0.4, 1.0]])
    values, nearest = max_similarity(iou, torch.tensor([0, 1, 2]), torch.tensor([0, 1]))
    assert torch.allclose(values, torch.tensor([0.2, 0.2, 0.7])) and nearest.tolist() == [1, 0, 0]


def test_summary_bookkeeping() -> None:
    labels = torch.tensor([0, 0, 0, 0])
    predictions = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]])
    summary = similarity_summary(predictions, labels, ["original", "original", "generated", "generated"])
    assert abs(summary["mean_iou"]["original-original"] - 1 / 3) < 1e-6
    generated = summary["max_iou_to_original"]["generated"]
    assert generated["values"] == pytest.approx([1.0, 1 / 3]) and generated["nearest"] == [0, 1]


def test_nearest_checkpoint_hand_computed() -> None:
    originals = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    values, nearest = nearest_checkpoint(torch.tensor([[3.0, 5.0], [0.0, 0.4]]), originals)
    assert values.tolist() == pytest.approx([1.0, 0.4]) and nearest.tolist() == [1, 0]
    values, nearest = nearest_checkpoint(originals, originals, exclude_self=True)  # the spread among originals
    assert values.tolist() == pytest.approx([1.0, 18 ** 0.5, 1.0]) and nearest.tolist() == [2, 2, 0]


def test_summary_with_distances() -> None:
    labels = torch.tensor([0, 0])
    predictions = torch.tensor([[1, 0], [0, 1], [1, 0]])
    standardised = torch.tensor([[0.0], [2.0], [1.5]])
    summary = similarity_summary(predictions, labels, ["original", "original", "noise@0.1"], standardised)
    assert summary["distance_to_original"]["original"]["values"] == pytest.approx([2.0, 2.0])
    assert summary["distance_to_original"]["noise@0.1"] == {"mean": pytest.approx(0.5), "values": [0.5],
                                                          "nearest": [1]}
    assert summary["max_iou_to_original"]["noise@0.1"]["nearest"] == [0]  # same mistakes as original 0


@pytest.mark.parametrize(("m", "k"), [(7, 5), (30, 27), (26, 3), (1, 40)])
@pytest.mark.parametrize("block_rows", [1, 3, 4, 100])
def test_distance_matrix_in_blocks_equals_one_cdist(m: int, k: int, block_rows: int) -> None:
    """Blocks of rows, their edges anywhere (one row, uneven, a whole side in one), change nothing but rounding;
    one cdist takes differences for 25 rows or fewer a side, matrix products above."""
    generator = torch.Generator().manual_seed(m * 100 + k)
    a, b = torch.randn(m, 6, generator=generator) + 5, torch.randn(k, 6, generator=generator) + 5
    centre = b.double().mean(0)
    whole = torch.cdist(a.double() - centre, b.double() - centre)
    blocked = similarity.distance_matrix(a, b, block_bytes=8 * 6 * block_rows)
    assert blocked.dtype == torch.float64 and blocked.shape == (m, k)
    torch.testing.assert_close(blocked, whole, rtol=1e-6, atol=0)


def test_rows_of_is_a_view_for_consecutive_rows() -> None:
    matrix = torch.arange(12.0).view(6, 2)
    view = similarity.rows_of(matrix, torch.tensor([2, 3, 4]))
    assert view.data_ptr() == matrix[2].data_ptr() and view.tolist() == matrix[2:5].tolist()
    assert similarity.rows_of(matrix, torch.tensor([4, 1])).tolist() == matrix[[4, 1]].tolist()
    assert similarity.rows_of(matrix, torch.tensor([], dtype=torch.long)).shape == (0, 2)
