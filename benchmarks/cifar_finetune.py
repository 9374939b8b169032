"""Does starting from pretrained weights help? CIFAR-10 split in two: a net pretrained on five
classes, fine-tuned on the other five from a few hundred images a class, beside the same net
trained from scratch on those images for as many steps.

    python benchmarks/cifar_finetune.py                        # the evidence (about an hour on
                                                               # a 2-core CPU)
    python benchmarks/cifar_finetune.py --pretrain_epochs=0.02 --train_steps=4 \\
        --images_per_class=20 --output=runs/cifar-finetune-smoke      # a smoke run

From the CIFAR-10 JPEGs (--data_dir: cifar10-jpg.tar.gz or its extracted folder, train/<class>/
5,000 a class and test/<class>/ 1,000 a class; an archive is extracted once into the
KERAS_RESNET_CACHE folder, OUTPUT/.cache by default) two folder datasets of symbolic links are
made in OUTPUT/data:

    pretrain   airplane, automobile, bird, cat, deer: every training image (25,000); their
               test images (5,000) as val/
    finetune   dog, frog, horse, ship, truck: the first --images_per_class training images of
               each (in name order); their test images (5,000) as val/

and three runs of keras_resnet.training.train (the trainers' loop) in OUTPUT/:

    pretrain   --model (ResNet-20) on "pretrain": the CIFAR-10 recipe (0.1 at batch 128, SGD
               momentum 0.9, weight decay 1e-4 on kernels, 4-pixel padding, crops and flips) on
               a cosine schedule for --pretrain_epochs
    finetune   the same net on "finetune" from the pretrain run (--weights=OUTPUT/pretrain: its
               backbone, a new 5-class classifier), by recipes.FINETUNE's rules adapted to
               32x32: 0.04 at batch 256 scaled linearly (0.02 at 128), one epoch of linear
               warm-up, cosine, weight decay 1e-4 on kernels, --freeze_backbone_epochs; the
               cifar augmentation and --image_size=32 instead of 224 px random-resized crops
    scratch    the same net on "finetune" from random weights for the same --train_steps, by
               the from-scratch rules of the pretrain run (0.1 at 128, one epoch of warm-up,
               cosine)

Each prints its top-1 error on its val/ (the test images of its classes; the folder dataset
evaluates a centre crop of 0.875 of each 32x32 image, resized back to 32: the same for every
leg), and OUTPUT/results.json holds them. Rerunning the command skips the legs that finished.
"""

import argparse
import dataclasses
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10-jpg.tar.gz")
PRETRAIN_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
FINETUNE_CLASSES = ("dog", "frog", "horse", "ship", "truck")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=DEFAULT_DATA,
                        help="cifar10-jpg.tar.gz, or a folder of train/<class>/, test/<class>/")
    parser.add_argument("--output", default="runs/cifar-finetune")
    parser.add_argument("--model", default="resnet20", help="a CIFAR net of keras_resnet")
    parser.add_argument("--images_per_class", type=int, default=300,
                        help="training images a class of the finetune dataset")
    parser.add_argument("--pretrain_epochs", type=float, default=15.0)
    parser.add_argument("--train_steps", type=int, default=300,
                        help="steps of the finetune and scratch runs (300 at batch 128: about 25 "
                             "epochs of 1,500 images)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--freeze_backbone_epochs", type=float, default=0.0)
    parser.add_argument("--scratch_learning_rate", type=float, default=0.1,
                        help="the scratch run's rate at batch 128 (the from-scratch recipe's)")
    parser.add_argument("--finetune_rates", type=_rates, default=(),
                        help="more finetune legs at these base rates (at batch 256, as the "
                             "recipe's 0.04), e.g. 0.01,0.1: finetune-lr0.01, ...")  # fmt: skip
    parser.add_argument("--scratch_rates", type=_rates, default=(),
                        help="more scratch legs at these rates (at batch 128), e.g. 0.05,0.2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log_every_steps", type=int, default=50)
    args = parser.parse_args(argv)
    if args.images_per_class < 1 or args.train_steps < 1 or not args.pretrain_epochs > 0:
        parser.error("--images_per_class, --train_steps and --pretrain_epochs must be positive")
    return args


def _rates(text):
    rates = tuple(float(item) for item in text.split(",") if item.strip())
    if any(not rate > 0 for rate in rates):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return rates


def _link(target, link):
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(target), link)


def make_datasets(source, folder, images_per_class):
    """OUTPUT/data/{pretrain,finetune}: class folders of symbolic links into `source`."""
    pretrain, finetune = os.path.join(folder, "pretrain"), os.path.join(folder, "finetune")
    for root, classes in ((pretrain, PRETRAIN_CLASSES), (finetune, FINETUNE_CLASSES)):
        for split in ("train", "val"):
            os.makedirs(os.path.join(root, split), exist_ok=True)
        for name in classes:
            _link(os.path.join(source, "test", name), os.path.join(root, "val", name))
            if root == pretrain:
                _link(os.path.join(source, "train", name), os.path.join(root, "train", name))
    # The finetune subset in a fresh folder each time: another --images_per_class, another set.
    subset = os.path.join(finetune, "train")
    for name in FINETUNE_CLASSES:
        images = sorted(os.listdir(os.path.join(source, "train", name)))[:images_per_class]
        if len(images) < images_per_class:
            raise SystemExit(f"{source}/train/{name} has {len(images)} images, fewer than "
                             f"--images_per_class={images_per_class}")  # fmt: skip
        wanted = os.path.join(subset, name)
        os.makedirs(wanted, exist_ok=True)
        for stale in set(os.listdir(wanted)) - set(images):
            os.remove(os.path.join(wanted, stale))
        for image in images:
            _link(os.path.join(source, "train", name, image), os.path.join(wanted, image))
    return pretrain, finetune


def configs(args, pretrain_data, finetune_data):
    """{leg: TrainConfig}: pretrain, finetune, scratch, then the --finetune_rates and
    --scratch_rates legs."""
    from keras_resnet import recipes

    shared = dict(dataset="folder", image_size=32, augmentation="cifar", batch_size=args.batch_size,
                  lr_schedule="cosine", lr_decay_epochs=(), lr_decay_steps=None, seed=args.seed,
                  log_every_steps=args.log_every_steps, eval_every_epochs=0,
                  steps_per_execution=10, final_split="validation", train_steps=None)  # fmt: skip
    out = lambda leg: os.path.join(args.output, leg)  # noqa: E731
    pretrain = recipes.config(args.model, out("pretrain"), **shared, data_dir=pretrain_data,
                              epochs=args.pretrain_epochs, warmup_epochs=1.0)  # fmt: skip
    finetune_rules = {**recipes.IMAGENET, **recipes.FINETUNE}

    def finetune(leg, **rate):
        return recipes.TrainConfig(**{
            **finetune_rules, **shared, "model": args.model, "model_dir": out(leg),
            "data_dir": finetune_data, "train_steps": args.train_steps,
            "weights": os.path.abspath(out("pretrain")),
            "freeze_backbone_epochs": args.freeze_backbone_epochs, **rate,
        })  # fmt: skip

    def scratch(leg, rate):
        return recipes.config(args.model, out(leg), **{
            **shared, "data_dir": finetune_data, "train_steps": args.train_steps,
            "warmup_epochs": 1.0, "base_learning_rate": rate,
        })  # fmt: skip

    legs = dict(pretrain=pretrain, finetune=finetune("finetune"),
                scratch=scratch("scratch", args.scratch_learning_rate))
    legs.update({f"finetune-lr{r:g}": finetune(f"finetune-lr{r:g}", base_learning_rate=r)
                 for r in args.finetune_rates})  # fmt: skip
    legs.update({f"scratch-lr{r:g}": scratch(f"scratch-lr{r:g}", r) for r in args.scratch_rates})
    return legs


def _check_same_settings(name, config, recorded):
    """A finished leg is reused only if it ran with this leg's settings (a recipe or flag
    changed since would otherwise be reported under the new settings)."""
    changed = [field.name for field in dataclasses.fields(config) if field.name != "model_dir"
               and getattr(config, field.name) != getattr(recorded, field.name)]  # fmt: skip
    if changed:
        raise SystemExit(
            f"{name}: {config.model_dir} holds a finished run with other settings "
            f"({', '.join(f'{f}={getattr(recorded, f)!r}, now {getattr(config, f)!r}' for f in changed)}); "
            "remove it (and its entry in results.json) to run the leg again"
        )


def run_leg(name, config):
    """Trains a leg (or finds it finished); returns its result.json's numbers."""
    from keras_resnet import runs, training

    result = runs.read_result(config.model_dir)
    if result is not None:
        _check_same_settings(name, config, runs.read_train_config(config.model_dir))
    if result is None or config.train_steps not in (None, result.get("steps")):
        started = time.monotonic()
        result = training.train(config, log=lambda line: print(f"[{name}] {line}", flush=True))
        result["seconds"] = round(time.monotonic() - started)
    split = result.get("eval_split", "validation")
    error = (result.get(split) or {}).get("top1_error")
    return dict(steps=result["steps"], test_top1_error=error, seconds=result.get("seconds"))


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    os.environ.setdefault("KERAS_RESNET_CACHE", os.path.join(args.output, ".cache"))
    from keras_resnet import files, runs
    from keras_resnet.data.sources import resolve_archive

    source = resolve_archive(args.data_dir)
    data = make_datasets(source, os.path.join(args.output, "data"), args.images_per_class)
    results_path = os.path.join(args.output, "results.json")
    results = (files.read_json(results_path, "remove it to start the table anew")
               if os.path.exists(results_path) else {})  # fmt: skip
    legs = configs(args, *data)
    for name, config in legs.items():
        if (results.get(name) or {}).get("test_top1_error") is not None:
            _check_same_settings(name, config, runs.read_train_config(config.model_dir))
        else:
            results[name] = run_leg(name, config)
            results["settings"] = vars(args)
            files.write_json_atomically(results_path, results)
    for name in legs:
        error = results[name]["test_top1_error"]
        print(f"{name:>9}: {results[name]['steps']} steps, test top-1 error "
              f"{'n/a' if error is None else f'{100 * error:.2f}%'} (val/ of its classes)")  # fmt: skip
    print(f"results: {results_path}")
    return results


if __name__ == "__main__":
    main()
