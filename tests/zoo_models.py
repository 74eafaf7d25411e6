"""Outside architectures in plain PyTorch (nn.Conv2d / nn.Linear only), written from their papers for the
conversion tests and loaded through `--model-file tests/zoo_models.py:FACTORY`. Narrow widths, small inputs.

- resnet18: He et al. 2016 (Table 1), basic blocks [2, 2, 2, 2], 1x1 projection shortcuts, CIFAR stem (3x3);
- mobilenet_v2: Sandler et al. 2018 (Table 2), inverted residuals (1x1 expand, 3x3 depthwise, 1x1 linear
  bottleneck), ReLU6, residual when stride 1 and widths equal;
- vgg11_bn: Simonyan & Zisserman 2015 config A, with BN after every conv (Ioffe & Szegedy 2015);
- mlp: two hidden layers; concat_cnn: an Inception-style block (Szegedy et al. 2015) whose branches are
  concatenated along channels;
- resnet20_plain / lenet5_plain: plain copies of the cimnas zoo's resnet20 (option A) and lenet5, parameter
  names equal to the zoo's, so the zoo's weights load into them;
- models the crossbar model must refuse: attention (a matmul between activations), a transposed convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _bn_relu_conv(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:  # projection shortcut (option B)
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 8, stem: str = "cifar"):
        super().__init__()
        if stem == "imagenet":  # 7x7 stride-2 conv + 3x3 max-pool (224x224 inputs)
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(*_bn_relu_conv(in_channels, width))
        layers, c = [], width
        for i, n in enumerate([2, 2, 2, 2]):
            c_out = width * 2**i
            for b in range(n):
                layers.append(BasicBlock(c, c_out, 2 if (i > 0 and b == 0) else 1))
                c = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def resnet18(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return ResNet18(num_classes, in_channels, width=8)


def resnet18_imagenet(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """Full-width ResNet-18 for 224x224 (the benchmark)."""
    return ResNet18(num_classes, in_channels, width=64, stem="imagenet")


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),  # depthwise
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]  # linear bottleneck
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def mobilenet_v2(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    # (expansion t, channels c, repeats n, stride s) of Table 2, channels / 4, strides for 32x32
    cfg = [(1, 4, 1, 1), (6, 6, 2, 1), (6, 8, 3, 2), (6, 16, 2, 2), (6, 24, 1, 1)]
    layers: list[nn.Module] = list(_bn_relu_conv(in_channels, 8))
    c = 8
    for t, c_out, n, s in cfg:
        for i in range(n):
            layers.append(InvertedResidual(c, c_out, s if i == 0 else 1, t))
            c = c_out
    layers += [nn.Conv2d(c, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6(inplace=True),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def vgg11_bn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    cfg = [8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M"]  # config A, widths / 8
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += _bn_relu_conv(c, v)
            c = v
    return nn.Sequential(nn.Sequential(*layers), nn.Flatten(),
                         nn.Sequential(nn.Linear(c, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, num_classes)))


def mlp(num_classes: int = 10, in_channels: int = 1, image_size: int = 8) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, 32), nn.ReLU(),
                         nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, num_classes))


class InceptionBlock(nn.Module):
    def __init__(self, c_in: int):
        super().__init__()
        self.b1 = nn.Conv2d(c_in, 4, 1)
        self.b3 = nn.Sequential(nn.Conv2d(c_in, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        self.b5 = nn.Sequential(nn.Conv2d(c_in, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 5, padding=2))
        self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(c_in, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], dim=1)  # 14 channels


def concat_cnn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         InceptionBlock(8), nn.BatchNorm2d(14), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(14, num_classes))


# ---------------------------------------------------------------- plain copies of cimnas zoo models
class _PlainBlock(nn.Module):
    """cimnas.nn.models.resnet_cifar.BasicBlock (option A) in plain PyTorch; `binary_form` drops the ReLUs as
    HAWIS re-factorization does."""

    def __init__(self, c_in: int, c_out: int, stride: int, binary_form: bool):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = nn.Identity() if binary_form else nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = nn.Identity() if binary_form else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        sc = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if sc.shape[1] < out.shape[1]:  # option A: zero-pad the channels
            sc = torch.cat([sc, sc.new_zeros((sc.shape[0], out.shape[1] - sc.shape[1], *sc.shape[2:]))], 1)
        return self.act2(out + sc)


class _PlainResNet20(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, image_size: int, binary_form: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.Identity() if binary_form else nn.ReLU()
        blocks, c = [], 16
        for stage, w in enumerate([16, 32, 64]):
            for b in range(3):
                blocks.append(_PlainBlock(c, w, 2 if stage > 0 and b == 0 else 1, binary_form))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Identity() if binary_form else nn.AdaptiveAvgPool2d(1)  # HAWIS topology modification
        side = image_size // 4
        self.fc = nn.Linear(64 * side * side if binary_form else 64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.act1(self.bn1(self.conv1(x))))), 1))


def resnet20_plain(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return _PlainResNet20(num_classes, in_channels, image_size, binary_form=False)


def resnet20_binary_form(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return _PlainResNet20(num_classes, in_channels, image_size, binary_form=True)


class _PlainLeNet5(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        self.conv1, self.bn1, self.act1, self.pool1 = (nn.Conv2d(in_channels, 6, 5, padding=2, bias=False),
                                                       nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2, self.bn2, self.act2, self.pool2 = (nn.Conv2d(6, 16, 5, padding=2, bias=False),
                                                       nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1, self.bn3, self.act3 = nn.Linear(16 * (image_size // 4) ** 2, 120), nn.BatchNorm1d(120), nn.ReLU()
        self.fc2, self.bn4, self.act4 = nn.Linear(120, 84), nn.BatchNorm1d(84), nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = torch.flatten(self.pool2(self.act2(self.bn2(self.conv2(x)))), 1)
        x = self.act3(self.bn3(self.fc1(x)))
        return self.fc3(self.act4(self.bn4(self.fc2(x))))


def lenet5_plain(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    return _PlainLeNet5(num_classes, in_channels, image_size)


# ---------------------------------------------------------------- what the crossbar model refuses
class _Attention(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, d)
        att = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / x.shape[-1] ** 0.5, -1)
        return att @ self.v(x)


class TinyViT(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.patch = nn.Conv2d(in_channels, 16, 4, 4)
        self.attn = _Attention(16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)  # (N, T, 16)
        return self.head(self.attn(t).mean(1))


def tiny_vit(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return TinyViT(num_classes, in_channels)


def with_conv_transpose(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, 2, 1), nn.ConvTranspose2d(4, 4, 2, 2), nn.Flatten(),
                         nn.Linear(4 * 32 * 32, num_classes))  # 32x32 inputs


def raises(num_classes: int = 10) -> nn.Module:
    raise ValueError("the factory failed on purpose")


def not_a_model() -> int:
    return 3
