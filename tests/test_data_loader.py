"""FaceDataset: [-1, 1] float faces from the memory-mapped store, flips, workers, DDP."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from facegen.data.loader import FaceDataset
from facegen.utils import FacegenError


def test_items_are_float_faces_in_minus_one_to_one(celeba_store32):
    ds = FaceDataset(celeba_store32)
    assert len(ds) == 448 and ds.resolution == 32 and ds.num_channels == 3
    x = ds[3]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.5 and x.max() > 0.5
    # Exact inverse of the uint8 -> float mapping.
    back = ((x + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(back, celeba_store32.split("train")[3])


def test_splits_and_paths(celeba_store32):
    holdout = FaceDataset(celeba_store32.path, split="holdout")
    assert len(holdout) == 64
    assert torch.equal(holdout[0], FaceDataset(str(celeba_store32.path), split="holdout")[0])
    with pytest.raises(FacegenError, match="no split 'val'"):
        FaceDataset(celeba_store32, split="val")


def test_hflip_mirrors_about_half_of_the_faces(celeba_store32):
    plain, flipping = FaceDataset(celeba_store32), FaceDataset(celeba_store32, hflip=True)
    torch.manual_seed(0)
    flipped = 0
    for i in range(100):
        x, y = plain[i], flipping[i]
        assert torch.equal(y, x) or torch.equal(y, x.flip(-1))
        flipped += not torch.equal(y, x)
    assert 30 < flipped < 70


def test_dataloader_workers_and_distributed_sampling(celeba_store32):
    ds = FaceDataset(celeba_store32)
    batches = list(DataLoader(ds, batch_size=64, num_workers=2, shuffle=False))
    assert len(batches) == 7 and batches[0].shape == (64, 3, 32, 32)
    assert torch.equal(torch.cat(batches), torch.stack([ds[i] for i in range(len(ds))]))
    # Two ranks of a DistributedSampler see disjoint halves that together cover every face.
    ranks = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 224
    assert sorted(ranks[0] + ranks[1]) == list(range(448))
