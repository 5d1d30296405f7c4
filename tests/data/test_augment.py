import torch

from netshrink.data import random_crop_flip


def test_crop_flip_is_seeded_and_shifts_content():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    a = random_crop_flip(x, torch.Generator().manual_seed(3))
    b = random_crop_flip(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    outs = [random_crop_flip(x, torch.Generator().manual_seed(s)) for s in range(20)]
    assert any(not torch.equal(o, x) for o in outs)
    # every output pixel is an input pixel of the same image or padding zero
    for o in outs:
        for i in range(2):
            assert set(o[i].flatten().tolist()) <= set(x[i].flatten().tolist()) | {0.0}


def test_no_pad_no_flip_is_identity():
    x = torch.randn(3, 2, 5, 5)
    assert torch.equal(random_crop_flip(x, torch.Generator(), pad=0, flip=False), x)
