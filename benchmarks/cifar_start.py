"""The start of training, keras_resnet's CIFAR nets beside the PyTorch peer
(benchmarks/torch_cifar.py), on one batch of the trainer's own CIFAR-10 training stream.

    python benchmarks/cifar_start.py --depths=20,56 --seeds=0,1,2,3,4
    python benchmarks/cifar_start.py --inspect=RUN_FOLDER [RUN_FOLDER ...]

For each depth and seed, at initialisation (BN in training mode, as in the first step):
the logits' std, the loss, the RMS of the pooled features the classifier sees, and the
gradient norms of the classifier, the last and the first convolution (cross-entropy plus the
trainer's weight decay), for our net, the peer with PyTorch's classifier init and the peer
with Keras's (Glorot-uniform). Then the same-function check: our initial weights copied into
the peer must give the same logits and gradients (the largest difference, relative to the
largest entry, printed): in float32 the gradients differ by rounding that grows backward
through the BN layers (up to ~1e-2 near the input); --float64 shows it is rounding alone. So
what differs between the two nets is where their weights start, not the net, the loss or
the data.
PyTorch is an optional dependency (`pip install torch`).

--inspect looks inside trained run folders of ours instead (their latest checkpoint, BN in
inference mode, on the same batch): for the output of the first block, the last block of
each stage, and the pooled features, the share of ReLU outputs that are zero and of channels
that are zero for every image; the spread of the pooled features and of the logits across
images; the mean shift (beta) of each stage's last BN before the addition. A net stalled at
chance shows it there: features that no longer depend on the image.
"""

import argparse
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10-jpg.tar.gz")


def first_batch(data_dir, size):
    """The first `size` images and labels of the trainer's epoch-0 stream (seed 0)."""
    from keras_resnet import data as data_lib

    stream = data_lib.make_dataset("cifar10_folder", "trainval", data_dir=data_dir, batch_size=size,
                                   training=True, augmentation="cifar", seed=0, epoch=0,
                                   deterministic=True)  # fmt: skip
    images, labels = next(iter(stream))
    return images.numpy(), labels.numpy()


def ours(depth, seed, images, labels, weight_decay=1e-4):
    """(model, stats) of our ResNet-`depth` at `seed`."""
    import keras
    import tensorflow as tf
    from keras_resnet import models, training

    keras.utils.set_random_seed(seed)
    model = models.build(f"resnet{depth}", classes=10, input_shape=images.shape[1:],
                         classifier_activation=None)  # fmt: skip
    features = keras.Model(model.input, model.get_layer("avg_pool").output)
    kernels = training.decayed_variables(model)
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        decay = training.weight_decay_loss(kernels, weight_decay)
        total = loss + tf.cast(decay, loss.dtype)  # the trainer's decay is float32
    gradients = tape.gradient(total, kernels)
    pooled = features(images, training=True).numpy()
    return model, _stats(logits.numpy(), float(loss), pooled, [g.numpy() for g in gradients])


def peer(depth, seed, images, labels, classifier_init, weights_from=None, weight_decay=1e-4):
    """Stats of the peer at `seed`, or started from our model `weights_from`."""
    import torch
    import torch.nn.functional as F
    import torch_cifar

    model = torch_cifar.build(depth, classifier_init=classifier_init, seed=seed)
    if weights_from is not None:
        copy_weights(weights_from, model)
    model.train()
    x, y = torch_cifar.to_tensors(images, labels)
    pooled = model.features(x.to(torch.get_default_dtype()))
    logits = model.fc(pooled)
    loss = F.cross_entropy(logits, y)
    kernels = [p for p in model.parameters() if p.ndim > 1]
    (loss + 0.5 * weight_decay * sum((k * k).sum() for k in kernels)).backward()
    gradients = [_keras_layout(k.grad.numpy()) for k in kernels]
    with torch.no_grad():
        return _stats(logits.numpy(), float(loss), pooled.numpy(), gradients)


def _keras_layout(array):
    """A torch kernel or gradient (OIHW conv, (out, in) linear) in Keras's layout."""
    return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array.T


def copy_weights(keras_model, torch_model):
    """Our weights into the peer, layer by layer in order (convolutions, BN, classifier)."""
    import torch
    from torch import nn

    ours_ = [layer for layer in keras_model.layers if layer.weights]
    theirs = [m for m in torch_model.modules()
              if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]  # fmt: skip
    if len(ours_) != len(theirs):
        raise ValueError(f"{len(ours_)} weighted layers against the peer's {len(theirs)}")
    with torch.no_grad():
        for layer, module in zip(ours_, theirs):
            values = [np.asarray(w) for w in layer.weights]
            if isinstance(module, nn.BatchNorm2d):
                for target, value in zip((module.weight, module.bias, module.running_mean,
                                          module.running_var), values):  # fmt: skip
                    target.copy_(torch.from_numpy(value))
                continue
            kernel = values[0].transpose(3, 2, 0, 1) if values[0].ndim == 4 else values[0].T
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            if module.bias is not None:
                module.bias.copy_(torch.from_numpy(values[1]))


def _stats(logits, loss, pooled, gradients):
    norm = lambda g: float(np.sqrt(np.sum(np.square(g))))  # noqa: E731
    return dict(logit_std=float(logits.std()), loss=loss,
                feature_rms=float(np.sqrt(np.mean(np.square(pooled)))),
                grad_fc=norm(gradients[-1]), grad_last_conv=norm(gradients[-2]),
                grad_first_conv=norm(gradients[0]), logits=logits, gradients=gradients)  # fmt: skip


COLUMNS = ("logit_std", "loss", "feature_rms", "grad_fc", "grad_last_conv", "grad_first_conv")


def largest_relative_difference(a, b):
    return max(float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-12)) for x, y in zip(a, b))


def inspect(folder, images):
    """Prints what is alive inside the run in `folder` (see the module docstring)."""
    import keras
    from keras_resnet import runs

    model, _, checkpoint = runs.restore_model(folder)
    outputs = [layer.name for layer in model.layers if layer.name.endswith("_out")]
    stages = [name.split("_")[0] for name in outputs]  # conv2_block9_out -> conv2
    stage_ends = [name for i, name in enumerate(outputs) if stages[i] not in stages[i + 1:]]
    picked = [outputs[0], *stage_ends]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in picked]
                        + [model.get_layer("avg_pool").output, model.output])  # fmt: skip
    *maps, pooled, logits = [np.asarray(v) for v in probe(images, training=False)]
    print(f"{checkpoint}:")
    for name, values in zip(picked, maps):
        flat = values.reshape(-1, values.shape[-1])
        print(f"  {name:>18}: zero {np.mean(flat == 0):.2f}, channels zero for every image "
              f"{np.mean(np.all(flat == 0, axis=0)):.2f}")  # fmt: skip
    print(f"  pooled features: RMS {np.sqrt(np.mean(pooled ** 2)):.3g}, std across images "
          f"{pooled.std(0).mean():.3g}; logits: std across images {logits.std(0).mean():.3g}")
    betas = {name.split("_")[0]: float(np.mean(model.get_layer(name[:-4] + "_2_bn").beta))
             for name in stage_ends}  # fmt: skip
    print("  last block's second BN, mean shift: "
          + ", ".join(f"{stage} {beta:.2f}" for stage, beta in betas.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", default="20,56")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--data_dir", default=DEFAULT_DATA)
    parser.add_argument("--float64", action="store_true",
                        help="both nets in float64: the same-function check without rounding")
    parser.add_argument("--inspect", nargs="+", metavar="RUN_FOLDER",
                        help="trained run folders to look inside instead")
    args = parser.parse_args(argv)
    images, labels = first_batch(args.data_dir, args.batch_size)
    if args.inspect:
        for folder in args.inspect:
            inspect(folder, images)
        return
    if args.float64:
        import keras
        import torch

        keras.config.set_floatx("float64")
        torch.set_default_dtype(torch.float64)
        images = images.astype(np.float64)
    print(f"{args.batch_size} images of the trainer's first CIFAR-10 training batches (seed 0)")
    print(f"{'net':>22} | " + " | ".join(f"{c:>15}" for c in COLUMNS))
    for depth in (int(d) for d in args.depths.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            model, mine = ours(depth, seed, images, labels)
            rows = {"ours": mine}
            for init in ("torch", "glorot"):
                rows[f"peer[{init}]"] = peer(depth, seed, images, labels, init)
            for name, row in rows.items():
                print(f"{f'resnet{depth} s{seed} {name}':>22} | "
                      + " | ".join(f"{row[c]:>15.4g}" for c in COLUMNS))  # fmt: skip
            same = peer(depth, seed, images, labels, "torch", weights_from=model)
            logits = largest_relative_difference([same["logits"]], [mine["logits"]])
            gradients = largest_relative_difference(same["gradients"], mine["gradients"])
            print(f"{'':>22}   our weights in the peer: logits differ by at most {logits:.1e}, "
                  f"gradients by {gradients:.1e} (relative to the largest)")


if __name__ == "__main__":
    main()
