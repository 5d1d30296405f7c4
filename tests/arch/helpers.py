"""A user's residual CNN whose convolutions separable_ can convert (3x3, several input channels),
and small helpers for the arch tests."""

import torch
from torch import nn

from tests.models import INPUT_SHAPE, NUM_CLASSES


class ResidualCNN(nn.Module):
    """Stem, then a residual block of two 3x3 convs with BatchNorm, a strided dilated conv, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2)
        self.head = nn.Linear(12, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))  # (B, 8, 8, 8)
        x = torch.relu(x + self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.head(torch.relu(self.down(x)).mean(dim=(2, 3)))  # (B, classes)


def sample(batch: int = 6) -> torch.Tensor:
    return torch.randn(batch, *INPUT_SHAPE, generator=torch.Generator().manual_seed(1))


def is_one_line(error: BaseException) -> bool:
    return "\n" not in str(error) and len(str(error)) < 400
