"""Training throughput: keras.applications and keras_resnet under model.fit, the trainer, and
torchvision.

    python benchmarks/train_throughput.py                    # defaults: 10+ minutes
    python benchmarks/train_throughput.py --models resnet20,resnet56 --repeats 5
    python benchmarks/train_throughput.py --models resnet50 --precision mixed_bfloat16
    python benchmarks/train_throughput.py --models resnet18,resnet34,resnet50 \\
        --kinds trainer,trainer_torchvision_arch,torchvision \\
        --torch_python /path/to/venv-with-torch/bin/python

For each model it trains on synthetic data (`--dataset=synthetic`: one fixed random batch,
no decoding) and times, in configurations that each run in a fresh process:
  applications_fit  keras.applications.ResNet<depth>(weights=None) with model.fit: what a
                    Keras user has today (ResNet-50/101/152 only);
  keras_resnet_fit  the keras_resnet model with model.fit: the model's own cost;
  trainer           keras_resnet.training.train, the loop behind trainers/*.py: the trainer's
                    overhead on top of the model;
  trainer_torchvision_arch
                    the trainer with torchvision's layout (shortcut option B, a bottleneck's
                    stride on its 3x3: TORCHVISION_OPTIONS) instead of the paper's (option A
                    for ResNet-18/34, a bottleneck's stride on its first 1x1), so that it does
                    torchvision's arithmetic (ResNet-18/34/50/101/152 only; not run by
                    default);
  torchvision       torchvision.models.resnet<depth>(weights=None) under a plain PyTorch loop
                    that does the trainer's work per step (ResNet-18/34/50/101/152 only), run
                    by the interpreter --torch_python (default: this one), which needs torch
                    and torchvision but neither TensorFlow nor keras_resnet. Where it cannot
                    import them, the run says why in one line and goes on without this kind.
The configurations alternate (A B C A B C ...) for --repeats rounds, so that a shared
machine's noise shows in every one alike; the summary prints the median images/second of
each, the ratios of the medians (with the range of the per-round ratios), and the peak
resident memory of each process (from os.wait4, so the parent measures every child apart).
The first line names the CPU and whether it has bfloat16 instructions (avx512_bf16,
amx_bf16), which decide what --precision=mixed_bfloat16 can gain on either side.

Like with like: every Keras configuration reads the same tf.data pipeline, uses SGD with
momentum 0.9 and the trainer's learning-rate schedule, and the trainer's own loss
(keras_resnet.training.train_loss: the cross-entropy over the batch plus the weight decay,
0.5 * wd * ||w||^2 on conv and dense kernels; model.fit gets it through a compute_loss
override), computes top-1 and top-5 accuracy as the trainer does, runs --steps_per_execution
steps per tf.function call (the trainer's default: 1 for the ImageNet nets, 10 for the CIFAR
ones), and leaves XLA off on CPU (where it is slower) by the trainer's own --jit_compile=auto
rule (training.strategy.uses_jit). The first --warmup_steps (tracing, first-call allocation)
are not timed; the trainer's own figure (its result's images_per_second) leaves out its first
interval between metric reads in the same way, and its checkpoint save at the end.
The torchvision loop matches that on the CPU: float32 weights, channels-last model and
inputs, one fixed random batch and labels reused every step (no input pipeline at all: the
--input_check line shows what ours costs), SGD with the trainer's momentum and peak learning
rate (its schedule is constant over so few steps), the same weight decay added to the mean
cross-entropy, top-1 and top-5 hits (torch.topk) summed every step, os.cpu_count() threads,
and the same warm-up. --precision=mixed_bfloat16 runs forward and loss under
torch.autocast("cpu", dtype=torch.bfloat16); mixed_float16 skips it (not comparable on CPU).
It always runs on the CPU, so its ratios compare like with like only where the Keras
configurations do too (a machine without a GPU, or with CUDA_VISIBLE_DEVICES="").
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

KINDS = ("applications_fit", "keras_resnet_fit", "trainer", "trainer_torchvision_arch",
         "torchvision")  # fmt: skip
# Without --kinds: all but trainer_torchvision_arch, which only matters next to torchvision.
DEFAULT_KINDS = ("applications_fit", "keras_resnet_fit", "trainer", "torchvision")
APPLICATIONS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152"}
TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# Per family: batch, image size, warm-up and timed steps, chosen for about 10 minutes on 2
# CPU cores with the default 2 rounds (docs/performance.md: 599 s, without the torchvision
# leg, which adds its own ResNet-50 runs where torch is installed); steps per execution and
# the learning rate's reference batch are the trainers' (keras_resnet.recipes.FAMILIES).
FAMILY_DEFAULTS = {
    "imagenet": dict(batch_size=32, image_size=224, warmup_steps=1, steps=2),
    "cifar": dict(batch_size=128, image_size=32, warmup_steps=10, steps=20),
}
RESULT_PREFIX = "RESULT "


def settings(args, model):
    """The flags for `model`, family defaults filling in what was not given."""
    from keras_resnet import models, recipes

    family = models.family(model)
    chosen = dict(FAMILY_DEFAULTS[family],
                  steps_per_execution=recipes.FAMILIES[family]["steps_per_execution"])  # fmt: skip
    for name in chosen:
        if getattr(args, name) is not None:
            chosen[name] = getattr(args, name)
    spe = chosen["steps_per_execution"]
    for name in ("warmup_steps", "steps"):
        if chosen[name] % spe:
            sys.exit(f"--{name}: {chosen[name]} is not a multiple of --steps_per_execution {spe}")
    chosen = dict(chosen, model=model, family=family, precision=args.precision,
                  jit_compile=args.jit_compile)  # fmt: skip
    return dict(chosen, torch_loop=torch_loop_settings(chosen))


def torch_loop_settings(s):
    """The trainer's numbers that the torchvision worker, which cannot import keras_resnet,
    uses: the synthetic data's classes, the peak learning rate, momentum and weight decay."""
    from keras_resnet import data, training

    info = data.dataset_info("synthetic")
    config = train_config(s, model_dir="unused")
    schedule = training.make_schedule(config, info.num_train_examples // s["batch_size"],
                                      config.train_steps)  # fmt: skip
    return dict(classes=info.num_classes, learning_rate=schedule.peak_rate,
                momentum=config.momentum, weight_decay=config.weight_decay)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Workers: one configuration, in this process; the result is one line on stdout.


def train_config(s, model_dir, model_options=None):
    from keras_resnet import recipes, training

    return training.TrainConfig(
        model_dir=model_dir,
        model=s["model"],
        model_options=model_options or {},
        dataset="synthetic",
        image_size=s["image_size"],
        batch_size=s["batch_size"],
        train_steps=s["warmup_steps"] + s["steps"],
        lr_reference_batch=recipes.FAMILIES[s["family"]]["lr_reference_batch"],
        mixed_precision=s["precision"],
        jit_compile=s["jit_compile"],
        steps_per_execution=s["steps_per_execution"],
        # The first read ends the warm-up; each read after it ends a timed interval.
        log_every_steps=s["warmup_steps"],
        evaluate=False,
    )


def run_trainer(s, model_options=None):
    from keras_resnet import training

    with tempfile.TemporaryDirectory() as model_dir:
        config = train_config(s, model_dir, model_options)
        result = training.train(config, log=lambda line: None)
    return result["images_per_second"]


def run_fit(s, kind):
    import keras
    import tensorflow as tf

    from keras_resnet import data, models, training
    from keras_resnet.training import train_loss
    from keras_resnet.training.strategy import uses_jit

    info = data.dataset_info("synthetic")
    config = train_config(s, model_dir="unused")
    total = config.train_steps
    schedule = training.make_schedule(config, info.num_train_examples // s["batch_size"], total)
    shape = (s["image_size"], s["image_size"], 3)
    keras.config.set_dtype_policy(s["precision"])
    if kind == "applications_fit":
        builder = getattr(keras.applications, APPLICATIONS[s["model"]])
        model = builder(weights=None, input_shape=shape, classes=info.num_classes,
                        classifier_activation=None)  # fmt: skip
    else:
        model = models.build(s["model"], input_shape=shape, classes=info.num_classes,
                             classifier_activation=None)  # fmt: skip
    kernels = training.decayed_variables(model)

    class WithTrainerLoss(keras.Model):
        """fit with the trainer's loss: its cross-entropy and its coupled decay on conv and
        dense kernels (one replica: the batch is the global batch). The `training` argument
        is Keras's."""

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            loss, _ = train_loss(y_pred, y, info.num_classes, s["batch_size"],
                                 config.label_smoothing, kernels, config.weight_decay)  # fmt: skip
            return loss

    model = WithTrainerLoss(model.inputs, model.outputs, name=model.name)
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=config.momentum),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(),
            keras.metrics.SparseTopKCategoricalAccuracy(5),
        ],
        steps_per_execution=s["steps_per_execution"],
        jit_compile=uses_jit(s["jit_compile"], tf.distribute.get_strategy()),
    )
    dataset = data.make_dataset("synthetic", "train", batch_size=s["batch_size"],
                                image_size=s["image_size"], training=True)  # fmt: skip

    class Timer(keras.callbacks.Callback):
        """Times from the end of the warm-up to the end, waiting for the device at both."""

        times = {}

        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 in (s["warmup_steps"], total):
                float(logs["loss"])
                self.times[batch + 1] = time.perf_counter()

    model.fit(dataset, epochs=1, steps_per_epoch=total, callbacks=[Timer()], verbose=0)
    seconds = Timer.times[total] - Timer.times[s["warmup_steps"]]
    return s["steps"] * s["batch_size"] / seconds


def run_input(s):
    """The synthetic input pipeline alone, pulled inside the trainer's own multi-step
    tf.function (training.steps.multi_step) with a step that does nothing."""
    import tensorflow as tf

    from keras_resnet import data
    from keras_resnet.training.steps import multi_step

    iterator = iter(data.make_dataset("synthetic", "train", batch_size=s["batch_size"],
                                      image_size=s["image_size"], training=True))  # fmt: skip
    pull = multi_step(tf.distribute.get_strategy(), lambda images, labels: None)
    pull(iterator, tf.constant(2))
    count = 500
    start = time.perf_counter()
    pull(iterator, tf.constant(count))
    return count * s["batch_size"] / (time.perf_counter() - start)


def run_torchvision(s):
    """torchvision's ResNet under a plain PyTorch loop that does the trainer's work per step
    (see the module docstring). It imports only torch, torchvision and the standard library:
    it runs under --torch_python, which need have neither TensorFlow nor keras_resnet."""
    import torch
    import torchvision

    torch.set_num_threads(os.cpu_count())
    loop = s["torch_loop"]
    model = getattr(torchvision.models, s["model"])(weights=None, num_classes=loop["classes"])
    model = model.to(memory_format=torch.channels_last).train()
    shape = (s["batch_size"], 3, s["image_size"], s["image_size"])
    images = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(loop["classes"], (s["batch_size"],))
    optimizer = torch.optim.SGD(model.parameters(), lr=loop["learning_rate"],
                                momentum=loop["momentum"])  # fmt: skip
    # The trainer decays conv and dense kernels only: not biases, not BN.
    kernels = [m.weight for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]  # fmt: skip
    # Top-1 and top-5 hits, summed on the side as the trainer's totals are (never read here).
    hits = torch.zeros(2)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16,
                              enabled=s["precision"] == "mixed_bfloat16")  # fmt: skip

    def step():
        with autocast:
            logits = model(images)
            decay = sum(kernel.square().sum() for kernel in kernels)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            loss = loss + 0.5 * loop["weight_decay"] * decay
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            top5 = torch.topk(logits, 5).indices == labels[:, None]
            hits.add_(torch.stack([top5[:, 0].sum(), top5.any(dim=1).sum()]))

    for _ in range(s["warmup_steps"]):
        step()
    # Eager PyTorch on the CPU returns when the work is done: no device to wait for.
    start = time.perf_counter()
    for _ in range(s["steps"]):
        step()
    return s["steps"] * s["batch_size"] / (time.perf_counter() - start)


def worker(kind, s):
    start = time.perf_counter()
    if kind == "trainer":
        rate = run_trainer(s)
    elif kind == "trainer_torchvision_arch":
        from keras_resnet.architectures import TORCHVISION_OPTIONS

        rate = run_trainer(s, model_options=TORCHVISION_OPTIONS)
    elif kind == "torchvision":
        rate = run_torchvision(s)
    elif kind == "input":
        rate = run_input(s)
    else:
        rate = run_fit(s, kind)
    print(RESULT_PREFIX + json.dumps(dict(images_per_second=rate,
                                          seconds=time.perf_counter() - start)))  # fmt: skip


# ---------------------------------------------------------------------------------------
# The parent: alternate the configurations, each in a fresh process; summarise.


def cpu_description():
    """The CPU's model name and its bfloat16 instructions, which decide what mixed_bfloat16
    can gain on either side."""
    from keras_resnet.training import cpu_info

    name, flags = cpu_info()

    def has(flag):
        return "unknown" if flags is None else ("yes" if flag in flags else "no")

    return (f"CPU: {name or platform.processor() or 'unknown'} ({os.cpu_count()} CPUs; "
            f"avx512_bf16: {has('avx512_bf16')}, amx_bf16: {has('amx_bf16')})")  # fmt: skip


def torchvision_unavailable(args):
    """Why the torchvision kind cannot run (None when it can): a mixed_float16 run, or an
    interpreter that cannot import torch and torchvision."""
    if args.precision == "mixed_float16":
        return "--precision=mixed_float16 is not comparable on CPU"
    try:
        probe = subprocess.run([args.torch_python, "-c", "import torch, torchvision"],
                               capture_output=True, text=True, timeout=300)  # fmt: skip
    except OSError as error:  # no such interpreter
        return f"{error.strerror}: {args.torch_python}"
    except subprocess.TimeoutExpired:
        return f"importing torch took over 300 s in {args.torch_python}"
    if probe.returncode:
        # The exception's message, e.g. "No module named 'torch'", without its class name.
        last_line = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
        return f"{last_line.split(': ', 1)[-1]} from {args.torch_python}"
    return None


def run_child(kind, s, timeout, python):
    """(images/s, peak RSS in MB, wall seconds) of one configuration in its own process,
    run by the interpreter `python`."""
    command = [python, os.path.abspath(__file__), "--worker", kind,
               "--worker_settings", json.dumps(s)]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)  # fmt: skip
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    output = process.stdout.read()
    watchdog.cancel()
    # wait4, not wait: the child's own rusage, so each configuration's peak RSS is its own.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    results = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode or not results:
        sys.exit(f"{kind} {s['model']} failed (exit {process.returncode}):\n{output[-4000:]}")
    result = json.loads(results[-1][len(RESULT_PREFIX):])
    return result["images_per_second"], usage.ru_maxrss / 1024, time.perf_counter() - start


def summarise(runs, models, kinds_of):
    """Prints the table of medians, the ratios and the peak memory."""
    width = max([17] + [len(kind) for kinds in kinds_of.values() for kind in kinds])
    print(f"\nmodel      batch  size  precision        {'configuration':<{width}} {'img/s':>7}"
          "  (min-max)       peak RSS MB")
    medians = {}
    for model, s in models.items():
        for kind in kinds_of[model]:
            rates = [r[0] for r in runs[model, kind]]
            memory = statistics.median(r[1] for r in runs[model, kind])
            medians[model, kind] = statistics.median(rates)
            print(f"{model:<10} {s['batch_size']:>5} {s['image_size']:>5}  {s['precision']:<16} "
                  f"{kind:<{width}} {medians[model, kind]:>7.2f}  "
                  f"({min(rates):.2f}-{max(rates):.2f})  {memory:>8.0f}")
    print()
    for model in models:
        kinds = kinds_of[model]
        pairs = [(a, b) for a, b in (("trainer", "applications_fit"),
                                     ("trainer", "keras_resnet_fit"),
                                     ("keras_resnet_fit", "applications_fit"),
                                     ("trainer", "torchvision"),
                                     ("trainer_torchvision_arch", "torchvision"))
                 if a in kinds and b in kinds]  # fmt: skip
        for a, b in pairs:
            per_round = [x[0] / y[0] for x, y in zip(runs[model, a], runs[model, b])]
            memory = (statistics.median(r[1] for r in runs[model, a])
                      / statistics.median(r[1] for r in runs[model, b]))  # fmt: skip
            print(f"ratio {model} {a} / {b}: {medians[model, a] / medians[model, b]:.3f} "
                  f"img/s (per round {min(per_round):.3f}-{max(per_round):.3f}), "
                  f"peak RSS {memory:.3f}")


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", default="resnet50,resnet20",
                        help="comma-separated keras_resnet model names, e.g. resnet50,resnet56")
    parser.add_argument("--batch_size", type=int, help="default: 32 ImageNet nets, 128 CIFAR")
    parser.add_argument("--image_size", type=int, help="default: 224 ImageNet nets, 32 CIFAR")
    parser.add_argument("--precision", default="float32",
                        choices=("float32", "mixed_float16", "mixed_bfloat16"))
    parser.add_argument("--jit_compile", default="auto", choices=("auto", "on", "off"),
                        help="XLA, as the trainer's flag: auto is on for GPU only")
    parser.add_argument("--steps_per_execution", type=int,
                        help="default: the trainer's, 1 ImageNet nets, 10 CIFAR")
    parser.add_argument("--warmup_steps", type=int, help="untimed; default 1 ImageNet, 10 CIFAR")
    parser.add_argument("--steps", type=int, help="timed steps; default 2 ImageNet, 20 CIFAR")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds")
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                        help=f"configurations to run, some of {','.join(KINDS)}")
    parser.add_argument("--torch_python", default=sys.executable,
                        help="the interpreter of the torchvision kind, with torch and "
                             "torchvision (default: this one)")  # fmt: skip
    parser.add_argument("--input_check", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the input pipeline alone, once per model")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker_settings", help=argparse.SUPPRESS)
    return parser.parse_args()


def kinds_per_model(args, models):
    """{model: the kinds it runs}: the --kinds that apply to it, without torchvision where
    torch or torchvision is missing."""
    wanted = args.kinds.split(",")
    unknown = set(wanted) - set(KINDS)
    if unknown:
        sys.exit(f"--kinds: unknown {sorted(unknown)}; expected some of {KINDS}")
    # Kinds that run for some models only; the others run for every model.
    only_for = {"applications_fit": APPLICATIONS, "trainer_torchvision_arch": TORCHVISION_MODELS,
                "torchvision": TORCHVISION_MODELS}  # fmt: skip
    kinds_of = {
        model: [k for k in KINDS if k in wanted and model in only_for.get(k, [model])]
        for model in models
    }
    if any("torchvision" in kinds for kinds in kinds_of.values()):
        reason = torchvision_unavailable(args)
        if reason:
            print(f"torchvision: skipped ({reason})", flush=True)
            for kinds in kinds_of.values():
                if "torchvision" in kinds:
                    kinds.remove("torchvision")
    return kinds_of


def main():
    args = parse_args()
    # Before anything imports keras_resnet: the torchvision worker's interpreter may not have
    # TensorFlow.
    if args.worker:
        worker(args.worker, json.loads(args.worker_settings))
        return

    print(cpu_description(), flush=True)
    from keras_resnet.models import canonical_name

    try:
        names = [canonical_name(name) for name in args.models.split(",")]
    except ValueError as error:
        sys.exit(f"--models: {error}")
    models = {name: settings(args, name) for name in names}
    print(f"load average {os.getloadavg()[0]:.2f}; " + ", ".join(
        f"{m}: batch {s['batch_size']}, {s['image_size']}x{s['image_size']}, {s['precision']}, "
        f"{s['steps_per_execution']} steps/execution, {s['warmup_steps']} warm-up + "
        f"{s['steps']} timed steps" for m, s in models.items()), flush=True)  # fmt: skip
    kinds_of = kinds_per_model(args, models)

    runs = {(model, kind): [] for model in models for kind in kinds_of[model]}
    fastest = {}
    started = time.perf_counter()
    for round_index in range(args.repeats):
        for model, s in models.items():
            for kind in kinds_of[model]:
                python = args.torch_python if kind == "torchvision" else sys.executable
                rate, memory, seconds = run_child(kind, s, args.timeout, python)
                runs[model, kind].append((rate, memory))
                if kind != "torchvision":  # our pipeline feeds our configurations only
                    fastest[model] = max(fastest.get(model, 0), rate)
                print(f"round {round_index + 1}/{args.repeats} {model} {kind}: {rate:.2f} img/s,"
                      f" peak RSS {memory:.0f} MB ({seconds:.0f} s)", flush=True)
    if args.input_check:
        for model, fastest_rate in fastest.items():  # models that had one of ours to run
            rate, _, _ = run_child("input", models[model], args.timeout, sys.executable)
            print(f"input pipeline alone, {model} batches: {rate:.0f} img/s, "
                  f"{rate / fastest_rate:.0f}x our fastest training rate", flush=True)
    summarise(runs, models, kinds_of)
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average now "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
