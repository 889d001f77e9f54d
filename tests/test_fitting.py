import pytest
import torch

from pdiff.fitting import Batches, TokenCrop, lr_at, token_crop


def test_token_crop_is_aligned_wraps_and_covers_every_token() -> None:
    g = torch.Generator().manual_seed(0)
    crops = [token_crop(10, 4, 2, g) for _ in range(500)]
    for ids in crops:
        assert ids[0] % 2 == 0 and torch.equal(ids, (ids[0] + torch.arange(4)) % 10)  # whole windows, wrapping
    counts = torch.bincount(torch.cat(crops), minlength=10)
    assert counts.min() > 0.7 * counts.max()  # about 4/10 of the steps each, the first and last tokens too
    for ids in (token_crop(11, 4, 2, g, prefix=1) for _ in range(100)):  # a global token, then 10 others
        start = ids[1] - 1
        assert ids[0] == 0 and start % 2 == 0 and torch.equal(ids[1:], 1 + (start + torch.arange(4)) % 10)


def test_batches_draw_rows_and_a_crop_shared_by_the_rows() -> None:
    """Every step `size` rows of a permutation; with a TokenCrop one crop for all of them, the prefix first."""
    data = torch.arange(6 * 5).reshape(6, 5, 1).float()  # [K=6, T=5, 1]: token t of row k is 5k + t
    rows, token_ids = Batches(data, 4, torch.Generator().manual_seed(0)).draw()
    assert rows.shape == (4, 5, 1) and token_ids is None and len(set(rows[:, 0, 0].tolist())) == 4
    batches = Batches(data, 3, torch.Generator().manual_seed(0), TokenCrop(2, align=2, prefix=1))
    for _ in range(20):
        batch, token_ids = batches.draw()
        assert batch.shape == (3, 3, 1) and token_ids[0] == 0
        assert torch.equal(batch[:, :, 0] % 5, token_ids.expand(3, -1).float())  # the same tokens in every row


def test_lr_decays_from_the_peak_to_zero() -> None:
    assert lr_at(0, 100, 1e-3) == pytest.approx(1e-3)
    assert lr_at(50, 100, 1e-3) == pytest.approx(5e-4)
    assert lr_at(100, 100, 1e-3) == pytest.approx(0.0, abs=1e-12)
