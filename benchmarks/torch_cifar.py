"""The paper's CIFAR-10 nets (section 4.2) in PyTorch: the peer that keras_resnet's CIFAR nets
are checked against (benchmarks/cifar_peer.py).

The common 6n+2 reproduction: a 3x3 convolution with 16 filters, BN, ReLU; three stages of n
basic blocks with 16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps; option A shortcuts
(identity, and where the shape changes, stride-2 subsampling with the new channels zero-padded);
global average pooling; a 10-way fully connected layer. Convolutions pad 1 on every side, as
Caffe's and PyTorch's do. BN: epsilon 1e-5, momentum 0.1 (PyTorch's defaults, keras_resnet's
0.9 in Keras's convention).

Initialisation: convolutions as the paper's reference [13] (He et al., "Delving deep into
rectifiers": zero-mean Gaussian, std sqrt(2 / fan_in)); BN scale 1 and shift 0; the
classifier either PyTorch's nn.Linear default ("torch": uniform within +-1/sqrt(fan_in), as
torchvision's and fb.resnet.torch's ResNets keep it) or Keras's Dense default ("glorot":
Glorot-uniform kernel, zero bias), so that one factor can be swapped on its own.

Only torch and numpy are imported here: the TensorFlow side (the batches, the schedule) stays
in cifar_peer.py.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CLASSIFIER_INITS = ("torch", "glorot")


class ShortcutA(nn.Module):
    """Option A: subsample with the stride, zero-pad the new channels (after the old ones)."""

    def __init__(self, stride, extra_channels):
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x):
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x


class BasicBlock(nn.Module):
    """3x3 -> 3x3, BN after each convolution, ReLU after the addition (or without it: plain)."""

    def __init__(self, in_channels, channels, stride, residual):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = ShortcutA(stride, channels - in_channels) if residual else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    def __init__(self, depth, residual=True, classes=10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth {depth}: CIFAR nets have 6n+2 layers")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_channels = [], 16
        for stage, channels in enumerate((16, 32, 64)):
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(in_channels, channels, stride, residual))
                in_channels = channels
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)

    def features(self, x):
        """The pooled features the classifier sees."""
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self.fc(self.features(x))


def build(depth, residual=True, classifier_init="torch", seed=0, classes=10):
    """A CifarResNet initialised as the module docstring says, from torch's RNG at `seed`."""
    if classifier_init not in CLASSIFIER_INITS:
        raise ValueError(f"classifier_init: {classifier_init!r}, not one of {CLASSIFIER_INITS}")
    torch.manual_seed(seed)
    model = CifarResNet(depth, residual, classes)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if classifier_init == "glorot":
        nn.init.xavier_uniform_(model.fc.weight)
        nn.init.zeros_(model.fc.bias)
    return model.to(memory_format=torch.channels_last)


class SGD:
    """PyTorch's SGD with momentum (buf = m * buf + g; w -= lr * buf) and coupled weight decay
    (g += wd * w) on the conv and fc kernels only, as the keras_resnet trainer decays them (its
    0.5 * wd * ||w||^2 loss term has the gradient wd * w).

    Written out instead of torch.optim.SGD, whose constructor imports torch._dynamo and with it
    triton, which crashed (SIGSEGV) in a process that had TensorFlow loaded: the peer shares
    its process with the trainer's input pipeline."""

    def __init__(self, model, momentum, weight_decay):
        self.parameters = list(model.parameters())
        self.momentum = momentum
        self.decays = [weight_decay if p.ndim > 1 else 0.0 for p in self.parameters]
        self.buffers = [torch.zeros_like(p) for p in self.parameters]

    def zero_grad(self):
        for p in self.parameters:
            p.grad = None

    @torch.no_grad()
    def step(self, learning_rate):
        for p, decay, buffer in zip(self.parameters, self.decays, self.buffers):
            gradient = p.grad if not decay else p.grad.add(p, alpha=decay)
            buffer.mul_(self.momentum).add_(gradient)
            p.sub_(buffer, alpha=learning_rate)

    def state_dict(self):
        return {"buffers": [b.clone() for b in self.buffers]}

    def load_state_dict(self, state):
        for buffer, saved in zip(self.buffers, state["buffers"]):
            buffer.copy_(saved)


def to_tensors(images, labels):
    """NHWC float32 numpy images (as the tf.data pipeline gives them) -> channels-last NCHW."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last), torch.from_numpy(
        np.asarray(labels, np.int64))


def train_step(model, optimizer, images, labels, learning_rate):
    """One SGD step on a batch; returns (summed cross-entropy, top-1 hits)."""
    model.train()
    x, y = to_tensors(images, labels)
    logits = model(x)
    loss = F.cross_entropy(logits, y, reduction="sum")
    optimizer.zero_grad()
    (loss / len(y)).backward()
    optimizer.step(learning_rate)
    return float(loss.detach()), int((logits.argmax(1) == y).sum())


@torch.no_grad()
def evaluate(model, batches):
    """Top-1 error over padded batches: labels < 0 are padding and count for nothing."""
    model.eval()
    wrong = seen = 0
    for images, labels in batches:
        x, y = to_tensors(images, labels)
        real = y >= 0
        predicted = model(x).argmax(1)
        wrong += int(((predicted != y) & real).sum())
        seen += int(real.sum())
    return wrong / max(seen, 1), seen
