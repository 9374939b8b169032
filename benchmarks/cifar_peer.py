"""Peer parity: a keras_resnet CIFAR net trained by the trainer, beside the same net in PyTorch
(benchmarks/torch_cifar.py) trained on the same batches with the same recipe and schedule.

    python benchmarks/cifar_peer.py --model=resnet56 --seeds=0,1,2,3,4 --train_steps=400 \\
        --no-evaluate --output=runs/peer-start              # the first 400 iterations
    python benchmarks/cifar_peer.py --model=resnet20 --seeds=0 --train_steps=7800 \\
        --lr_decay_steps=3900,5850 --final_split=test --output=runs/peer-final

Our leg is `keras_resnet.training.train`, the loop behind trainers/cifar10.py, on the recipe of
keras_resnet.recipes.CIFAR10 (batch 128, SGD momentum 0.9, rate 0.1, weight decay 1e-4 on
the kernels, 4-pixel padding, random crops and flips, option A) with a deterministic input
pipeline. The PyTorch leg reads the very batches the trainer reads at each step (the trainer's
own input streams), takes each step's rate from the trainer's own schedule, decays the same
kernels by the same amount, and is evaluated on the same padded evaluation batches, at the
same steps (every epoch and at the end). Both legs are resumable: ours from its checkpoints,
the peer from a torch checkpoint written every --log_every_steps; running the same command
again continues where it stopped and skips finished legs. PyTorch is an optional dependency
(`pip install torch torchvision`); without it the command says so and stops.

Printed per seed: training error (%) over each interval between the trainer's logs (every
--log_every_steps, and at each epoch's end) and evaluation error (%) side by side, then a
summary line per leg: the first interval below --chance_left training error ("left chance
at"), and the last interval's error. Everything printed is also in OUTPUT/results.json.
"""

import argparse
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10-jpg.tar.gz")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet56", help="a CIFAR net: resnet20, plain56, ...")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one pair of runs each")
    parser.add_argument("--train_steps", type=int, default=400)
    parser.add_argument("--batch_size", type=int, default=None, help="default: the recipe's, 128")
    parser.add_argument("--lr_decay_steps", default="", help="e.g. 3900,5850 (none: constant)")
    parser.add_argument("--log_every_steps", type=int, default=50)
    parser.add_argument("--checkpoint_every_steps", type=int, default=None,
                        help="our leg's checkpoints (default: every epoch); the peer's: every log")
    parser.add_argument("--final_split", default="test", choices=("validation", "test"))
    parser.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--dataset", default="cifar10_folder")
    parser.add_argument("--data_dir", default=DEFAULT_DATA)
    parser.add_argument("--legs", default="ours,peer", help="ours, peer, or both")
    parser.add_argument("--peer_classifier_init", default="torch", help="torch or glorot")
    parser.add_argument("--chance_left", type=float, default=80.0,
                        help="training error (%%) below which a run has left chance")
    parser.add_argument("--output", default="runs/cifar-peer")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.lr_decay_steps = tuple(int(s) for s in args.lr_decay_steps.split(",") if s.strip())
    args.legs = [leg.strip() for leg in args.legs.split(",") if leg.strip()]
    for leg in args.legs:
        if leg not in ("ours", "peer"):
            parser.error(f"--legs: {leg!r} is neither 'ours' nor 'peer'")
    if args.train_steps % args.log_every_steps:
        parser.error(f"--train_steps: {args.train_steps} is not a multiple of --log_every_steps")
    if args.log_every_steps % 10:
        parser.error("--log_every_steps: not a multiple of 10 (the recipe's steps per call)")
    return args


def train_config(args, seed, model_dir):
    """The trainer's TrainConfig for this benchmark: the CIFAR-10 recipe, deterministic input."""
    from keras_resnet import recipes

    settings = dict(
        dataset=args.dataset, data_dir=args.data_dir, final_split=args.final_split,
        train_steps=args.train_steps, log_every_steps=args.log_every_steps, seed=seed,
        deterministic=True, evaluate=args.evaluate,
        checkpoint_every_steps=args.checkpoint_every_steps,
    )  # fmt: skip
    if args.batch_size:  # the rate scales with it, as the trainer's --batch_size does
        settings["batch_size"] = args.batch_size
    if args.lr_decay_steps:
        settings["lr_decay_steps"] = args.lr_decay_steps
    else:
        settings["lr_decay_steps"] = (args.train_steps + 1,)  # a constant rate
    return recipes.config(args.model, model_dir, **settings)


def run_ours(config):
    """Trains with the trainer; returns {"train": {step: error}, "eval": {step: error}}."""
    from keras_resnet import plot, training

    training.train(config, log=lambda line: print(f"[ours] {line}", flush=True))
    return top1_curves(plot.read_run(config.model_dir))


def top1_curves(run):
    """{"train": {step: top-1 error in %}, "eval": {...}} of a run folder that plot.read_run
    read (its TensorBoard events): the curves results.json holds for our leg."""
    return {kind: {step: 100 * value for step, value in run[kind].get("top1_error", [])}
            for kind in ("train", "eval")}  # fmt: skip


def run_peer(config, folder, classifier_init):
    """Trains the PyTorch net on the trainer's batches and schedule; the same curves as
    run_ours. Resumes from folder/peer.pt, written every log interval."""
    import tensorflow as tf
    import torch_cifar
    from keras_resnet import data as data_lib, training
    from keras_resnet.training.inputs import Inputs, dataset_info

    info, train_split, eval_split = dataset_info(config)
    steps_per_epoch = data_lib.batches_per_epoch(info.num_examples(train_split), config.batch_size)
    schedule = training.make_schedule(config, steps_per_epoch, config.train_steps)
    # The trainer's own streams: step s gets the batch the trainer's step s gets.
    inputs = Inputs(config, tf.distribute.get_strategy(), info.default_image_size,
                    steps_per_epoch, train_split)  # fmt: skip
    depth, residual = _depth_and_kind(config.model)
    model = torch_cifar.build(depth, residual, classifier_init, config.seed, info.num_classes)
    optimizer = torch_cifar.SGD(model, config.momentum, config.weight_decay)
    state = _PeerCheckpoint(os.path.join(folder, "peer.pt"), model, optimizer)
    step, curves = state.restore()
    if step:
        print(f"[peer] resumed at step {step}", flush=True)
    loss_sum = hits = seen = 0
    while step < config.train_steps:
        for images, labels in inputs.train_iterator(step):
            rate = float(schedule(step))
            loss, correct = torch_cifar.train_step(model, optimizer, images.numpy(), labels.numpy(),
                                                   rate)  # fmt: skip
            step, loss_sum, hits = step + 1, loss_sum + loss, hits + correct
            seen += len(labels)
            # The trainer's intervals: every log_every_steps and at each epoch's end.
            if step % config.log_every_steps == 0 or step % steps_per_epoch == 0:
                curves["train"][step] = 100 * (1 - hits / seen)
                print(f"[peer] step {step}: loss {loss_sum / seen:.4f} top-1 error "
                      f"{curves['train'][step]:.2f}%", flush=True)  # fmt: skip
                loss_sum = hits = seen = 0
            at_end = step == config.train_steps
            if config.evaluate and (step % steps_per_epoch == 0 or at_end):
                error, count = torch_cifar.evaluate(model, _evaluation_batches(inputs, eval_split))
                curves["eval"][step] = 100 * error
                print(f"[peer] step {step}: {eval_split} top-1 error {100 * error:.2f}% "
                      f"({count} images)", flush=True)  # fmt: skip
            if step % config.log_every_steps == 0:
                state.save(step, curves)
            if at_end or step % steps_per_epoch == 0:
                break
    return curves


def _evaluation_batches(inputs, split):
    """The trainer's padded evaluation batches of `split`, each example once: the stream pads
    forever once every example has been seen, so it ends at the first batch of padding alone."""
    for images, labels in inputs(split, training=False):
        labels = labels.numpy()
        if not (labels >= 0).any():
            return
        yield images.numpy(), labels


def _depth_and_kind(name):
    from keras_resnet import models

    match = re.fullmatch(r"(resnet|plain)(\d+)", models.canonical_name(name))
    if not match or models.family(name) != "cifar":
        raise SystemExit(f"--model: {name!r} is not a CIFAR ResNet or plain net")
    return int(match.group(2)), match.group(1) == "resnet"


class _PeerCheckpoint:
    """The peer's model, optimizer, step and curves in one file, replaced whole."""

    def __init__(self, path, model, optimizer):
        self.path, self.model, self.optimizer = path, model, optimizer

    def restore(self):
        import torch

        if not os.path.exists(self.path):
            return 0, {"train": {}, "eval": {}}
        saved = torch.load(self.path, weights_only=False)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        return saved["step"], saved["curves"]

    def save(self, step, curves):
        import torch

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        partial = self.path + ".partial"
        torch.save(dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                        step=step, curves=curves), partial)  # fmt: skip
        os.replace(partial, self.path)


def main(argv=None):
    args = parse_args(argv)
    if "peer" in args.legs:
        try:
            import torch  # noqa: F401  (optional dependency)
        except ImportError as error:
            raise SystemExit(f"the PyTorch leg needs torch ({error}): pip install torch "
                             "torchvision, or pass --legs=ours")  # fmt: skip
    os.makedirs(args.output, exist_ok=True)
    results_path = os.path.join(args.output, "results.json")
    from keras_resnet import files

    results = (files.read_json(results_path, "remove it to start the table anew")
               if os.path.exists(results_path) else {})  # fmt: skip
    for seed in args.seeds:
        name = f"{args.model}-seed{seed}"
        folder = os.path.join(args.output, name)
        config = train_config(args, seed, os.path.join(folder, "ours"))
        entry = results.setdefault(name, {})
        for leg in args.legs:
            if _finished(entry.get(leg), args.train_steps):
                # Its curves and timing are kept: a rerun would time the restore only.
                print(f"[{leg}] {name} has finished {args.train_steps} steps already", flush=True)
                continue
            started = time.monotonic()
            if leg == "ours":
                curves = run_ours(config)
            else:
                curves = run_peer(config, os.path.join(folder, "peer"), args.peer_classifier_init)
            entry[leg] = dict(curves, seconds=round(time.monotonic() - started))
            files.write_json_atomically(results_path, results)
        print_seed(name, entry, args)
    print_summary(results, args)


def _finished(curves, train_steps):
    return bool(curves) and max(_keyed(curves["train"]), default=0) >= train_steps


def _keyed(curve):
    return {int(step): value for step, value in curve.items()}


def print_seed(name, entry, args):
    legs = [leg for leg in ("ours", "peer") if leg in entry]
    print(f"\n{name}: error (%) per leg; train over the {args.log_every_steps} steps ending at "
          f"the step, eval on {args.final_split}")  # fmt: skip
    header = ["step"] + [f"{leg} train" for leg in legs] + [f"{leg} eval" for leg in legs]
    print(" | ".join(f"{h:>11}" for h in header))
    steps = sorted({step for leg in legs for kind in ("train", "eval")
                    for step in _keyed(entry[leg][kind])})  # fmt: skip
    for step in steps:
        cells = [str(step)]
        for kind in ("train", "eval"):
            for leg in legs:
                value = _keyed(entry[leg][kind]).get(step)
                cells.append("" if value is None else f"{value:.1f}")
        print(" | ".join(f"{c:>11}" for c in cells))


def left_chance_at(curve, threshold):
    """The first step whose interval's training error is below `threshold`, else None."""
    return next((step for step, error in sorted(curve.items()) if error < threshold), None)


def print_summary(results, args):
    print(f"\nsummary: step at which the training error first fell below {args.chance_left:g}% "
          "('never' within the run), and the last interval's training error")  # fmt: skip
    for name, entry in sorted(results.items()):
        for leg, curves in sorted(entry.items()):
            train = _keyed(curves["train"])
            if not train:
                continue
            last = max(train)
            at = left_chance_at(train, args.chance_left)
            print(f"{name} {leg:>4}: left chance at {at if at is not None else 'never'}, "
                  f"train error {train[last]:.1f}% at {last} ({curves['seconds']} s)")


if __name__ == "__main__":
    sys.exit(main())
