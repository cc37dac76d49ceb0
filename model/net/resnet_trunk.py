"""The CLIP ResNet image trunk that RSICRC keeps: open_clip's ModifiedResNet without its attention pool.

Written here rather than imported because `import open_clip` pulls in torchvision,
torch._dynamo and transformers: 2 to 4 s that every worker start, the map tool's first click
and every Ray actor would pay, for a few convolutions. The layers, their order and their names
are open_clip 3.3's (`conv1` ... `layer4`, the `downsample` keys "-1", "0", "1"), so the released
state dict loads unchanged; tests/model/test_resnet_trunk.py checks both against open_clip.
"""
from collections import OrderedDict

from torch import nn

EXPANSION = 4  # a Bottleneck's output channels per planes


class Bottleneck(nn.Module):
    """Anti-aliased bottleneck: strides are an average pool after the 3x3 convolution (and before
    the shortcut's 1x1), never a strided convolution."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * EXPANSION:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * EXPANSION, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * EXPANSION)),
            ]))

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.avgpool(self.act2(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.act3(out)


def _stage(inplanes, planes, blocks, stride):
    return nn.Sequential(Bottleneck(inplanes, planes, stride),
                         *(Bottleneck(planes * EXPANSION, planes) for _ in range(1, blocks)))


def resnet_trunk(layers, width):
    """The 3-convolution stem, its average pool and the four stages, as children 0-13 (the
    official code's `nn.Sequential(*list(ModifiedResNet(...).children())[:14])`)."""
    half = width // 2
    stem = [nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.AvgPool2d(2)]
    stages, inplanes = [], width
    for i, blocks in enumerate(layers):
        planes = width * 2 ** i
        stages.append(_stage(inplanes, planes, blocks, stride=1 if i == 0 else 2))
        inplanes = planes * EXPANSION
    return nn.Sequential(*stem, *stages)
