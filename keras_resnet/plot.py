"""Plain vs residual, from TensorBoard event files: the paper's Figures 4/6 and 7, Table 2.

    python -m keras_resnet.plot PATH [PATH ...] [--responses] [--output DIR]

Each PATH is a run folder (one trainer run: run.json, train/, validation/ or test/) or a
folder of run folders (as trainers/compare.py writes them). The model of each run comes from
its run.json (a folder without one is read only if it is named like plain20 or resnet56), so
runs may be named anything; plain and residual, one or many. From the event files it writes:
  comparison.png  error (%) against iterations; training error thin, evaluation error bold;
                  one panel for the plain nets and one for the residual nets, those present
  table.md        final top-1 error (%) on each run's evaluation split (validation, or test
                  for runs with --final_split=test), depths in rows, plain and residual in
                  columns (the paper's Table 2 and Table 6); a run that has not run all
                  its steps is marked "unfinished" with the step of its last evaluation
With --responses, from each run's latest checkpoint and a batch of its evaluation images:
  responses.png, responses.csv  standard deviation of every 3x3 layer's response (after BN,
                  before the ReLU or the addition), in network order and sorted (Figure 7)
"""

import argparse
import csv
import json
import os
import re
import sys

import numpy as np

PLOT_FILE = "comparison.png"
TABLE_FILE = "table.md"
RESPONSES_PLOT_FILE = "responses.png"
RESPONSES_CSV_FILE = "responses.csv"
MODEL_NAME = re.compile(r"^([a-z_]*?)(\d+)$")
KINDS = (("plain", "plain"), ("residual", "ResNet"))  # (kind, panel and column title)


def read_scalars(event_dir):
    """{tag: [(step, value), ...]} of every scalar summary in event_dir, sorted by step."""
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        event_dir, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0}
    )
    accumulator.Reload()
    values = {}
    for tag in accumulator.Tags().get("tensors", []):
        for event in accumulator.Tensors(tag):
            array = _tensor_value(event.tensor_proto)
            if array is not None:
                values.setdefault(tag, []).append((event.step, array))
    for tag in accumulator.Tags().get("scalars", []):
        values.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return {tag: sorted(points) for tag, points in values.items()}


def _tensor_value(proto):
    from tensorboard.util import tensor_util

    array = tensor_util.make_ndarray(proto)
    if array.ndim != 0 or array.dtype.kind != "f":
        return None  # not a scalar (hparams, text)
    return float(array)


def _read_json(path):
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not readable as JSON ({error})") from None


def describe_run(folder):
    """{"model", "kind", "depth", "eval_split", "finished"} of a run folder, or None if it is
    none. finished: whether the trainer's result.json says it ran all its steps (None for a
    folder without run.json, which no trainer wrote, or a result.json without total_steps)."""
    record = _read_json(os.path.join(folder, "run.json"))
    model = record.get("model") if record else os.path.basename(os.path.normpath(folder))
    match = MODEL_NAME.match(str(model))
    if not match or not os.path.isdir(os.path.join(folder, "train")):
        return None
    prefix, depth = match.groups()
    if not record and prefix not in ("plain", "resnet"):
        return None  # without run.json, only folders named like plain20 or resnet56
    return dict(
        model=model,
        kind="plain" if prefix == "plain" else "residual",
        depth=int(depth),
        eval_split=(record or {}).get("eval_split", "validation"),
        finished=_finished(folder) if record else None,
    )


def _finished(folder):
    """False without result.json (still training) or with fewer steps than planned; None
    where result.json does not say how many were planned (nothing to claim)."""
    result = _read_json(os.path.join(folder, "result.json"))  # written when a run stops
    if not result:
        return False
    if not isinstance(result.get("total_steps"), int):
        return None
    return result.get("steps", 0) >= result["total_steps"]


def find_runs(*paths):
    """{run name: run folder} of the run folders among `paths` and directly inside them.

    A run's name is its model's name (from run.json), or its folder's name where two runs
    share a model."""
    found = []
    for path in paths:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: no such folder")
        if describe_run(path):
            found.append(path)
            continue
        for name in sorted(os.listdir(path)):
            folder = os.path.join(path, name)
            if os.path.isdir(folder) and describe_run(folder):
                found.append(folder)
    if not found:
        raise FileNotFoundError(
            f"no runs in {', '.join(paths)}: expected trainer run folders (run.json and "
            "TensorBoard event files under train/), or folders of them"
        )
    models = [describe_run(folder)["model"] for folder in found]
    names = [
        model if models.count(model) == 1 else os.path.basename(os.path.normpath(folder))
        for model, folder in zip(models, found)
    ]
    if len(set(names)) < len(names):
        raise ValueError(f"two runs share a name among {found}: give each its own folder name")
    return dict(zip(names, found))


def read_run(folder):
    """{"train": scalars, "eval": scalars, **describe_run(folder)} of a run folder (a split
    without events yet has none), or None if it is none."""
    run = describe_run(folder)
    if run is not None:
        for key, split in (("train", "train"), ("eval", run["eval_split"])):
            event_dir = os.path.join(folder, split)
            run[key] = read_scalars(event_dir) if os.path.isdir(event_dir) else {}
    return run


def read_experiment(*paths):
    """{run name: read_run(folder)} per run."""
    return {name: read_run(folder) for name, folder in find_runs(*paths).items()}


def _split_label(experiment):
    return "/".join(sorted({run["eval_split"] for run in experiment.values()}))


def _main_split(experiment):
    """The evaluation split most runs report (the table marks the others)."""
    splits = [run["eval_split"] for run in experiment.values()]
    return max(sorted(set(splits)), key=splits.count)


def plot_comparison(experiment, path, metric="top1_error"):
    """The paper's Figure 4/6 layout, written as PNG to `path`: a panel per kind present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [(kind, title) for kind, title in KINDS
             if any(run["kind"] == kind for run in experiment.values())]  # fmt: skip
    figure, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), sharex=True,
                                sharey=True, squeeze=False)  # fmt: skip
    colours = plt.get_cmap("tab10")
    depths = sorted({run["depth"] for run in experiment.values()})
    for panel, (kind, title) in zip(axes[0], kinds):
        runs = sorted((n for n, r in experiment.items() if r["kind"] == kind),
                      key=lambda n: (experiment[n]["depth"], n))  # fmt: skip
        for name in runs:
            run = experiment[name]
            colour = colours(depths.index(run["depth"]) % 10)
            for key, width in (("train", 0.8), ("eval", 2.2)):
                points = run[key].get(metric, [])
                if points:
                    steps, values = zip(*points)
                    split = "train" if key == "train" else run["eval_split"]
                    panel.plot(steps, 100 * np.asarray(values), color=colour, linewidth=width,
                               alpha=0.7 if key == "train" else 1.0,
                               label=f"{name} ({split})")  # fmt: skip
        panel.set_title(f"{title} nets")
        panel.set_xlabel("iterations")
        panel.grid(alpha=0.3)
        if panel.get_legend_handles_labels()[0]:
            panel.legend(fontsize=8)
    axes[0][0].set_ylabel("error (%)")
    figure.suptitle(f"thin: training error, bold: {_split_label(experiment)} error")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def final_errors(experiment, metric="top1_error"):
    """{run name: last evaluation value of `metric`} (None where a run has none)."""
    result = {}
    for name, run in experiment.items():
        points = run["eval"].get(metric)
        result[name] = points[-1][1] if points else None
    return result


def table_markdown(experiment, metric="top1_error"):
    """The paper's Table 2 / Table 6: final top-1 error (%) by depth, plain vs residual.

    Runs evaluated on another split than the rest are marked with it; runs that have not
    run all their steps (still training, or stopped) with the step of their last evaluation."""
    errors = final_errors(experiment, metric)
    common = _main_split(experiment)
    lines = ["| layers | plain | ResNet |", "| ---: | ---: | ---: |"]
    for depth in sorted({run["depth"] for run in experiment.values()}):
        cells = []
        for kind, _ in KINDS:
            names = [n for n, r in experiment.items() if r["depth"] == depth and r["kind"] == kind]
            values = []
            for name in names:
                value = "-" if errors[name] is None else f"{100 * errors[name]:.2f}"
                if experiment[name]["eval_split"] != common:
                    value += f" ({experiment[name]['eval_split']})"
                points = experiment[name]["eval"].get(metric)
                if experiment[name]["finished"] is False and points:
                    value += f" (unfinished: step {points[-1][0]:,})"
                if len(names) > 1:
                    value = f"{name}: {value}"
                values.append(value)
            cells.append(", ".join(values) or "-")
        lines.append(f"| {depth} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def table_title(experiment):
    return f"Final top-1 error (%) on the {_main_split(experiment)} split"


def response_layers(model):
    """Names of the BN layers that follow each 3x3 conv: the responses of Figure 7."""
    names = []
    for layer in model.layers:
        if type(layer).__name__ == "Conv2D" and layer.kernel_size == (3, 3):
            names.append(layer.name[: -len("_conv")] + "_bn")
    return names


def layer_responses(model, images):
    """Standard deviation of each 3x3 layer's response (after BN, before ReLU/addition).

    The std is taken per channel over the batch and positions, then averaged over channels.
    Returns [(layer name, std), ...] in network order.
    """
    import keras

    names = response_layers(model)
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outputs = probe(images, training=False)
    stds = [float(np.mean(np.std(np.asarray(o, np.float32), axis=(0, 1, 2)))) for o in outputs]
    return list(zip(names, stds))


def experiment_responses(*paths, batch_size=128):
    """{run name: [(layer, std), ...]} from each run's latest checkpoint and evaluation images."""
    from keras_resnet import data, runs

    responses = {}
    for name, folder in find_runs(*paths).items():
        model, config, _ = runs.restore_model(folder)
        images, _ = next(
            iter(
                data.make_dataset(
                    config["dataset"],
                    config.get("eval_split", "validation"),
                    data_dir=config.get("data_dir"),
                    batch_size=batch_size,
                    image_size=config["image_size"],
                    training=False,
                )
            )
        )
        responses[name] = layer_responses(model, images)
    return responses


def write_responses(responses, csv_path, png_path, kinds):
    """kinds: {run name: "plain" or "residual"} (plain nets are dashed)."""
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "index", "layer", "std"])
        for name, values in responses.items():
            for index, (layer, std) in enumerate(values, 1):
                writer.writerow([name, index, layer, f"{std:.6f}"])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7))
    for name in sorted(responses, key=lambda n: (len(responses[n]), n)):
        stds = [std for _, std in responses[name]]
        style = "--" if kinds[name] == "plain" else "-"
        top.plot(range(1, len(stds) + 1), stds, style, label=name)
        bottom.plot(range(1, len(stds) + 1), sorted(stds, reverse=True), style, label=name)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for axis in (top, bottom):
        axis.set_ylabel("std")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("standard deviation of 3x3 layer responses (after BN, before ReLU/addition)")
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)


def report(*paths, responses=False, output=None, log=print):
    """Writes the plot and the table (and the responses) into `output` (default: the first
    path if it holds several runs, else the folder above that run)."""
    experiment = read_experiment(*paths)
    if output is None:
        first = os.path.normpath(paths[0])
        output = os.path.dirname(first) if describe_run(first) else first
    os.makedirs(output or ".", exist_ok=True)
    plot_comparison(experiment, os.path.join(output, PLOT_FILE))
    table = table_markdown(experiment)
    with open(os.path.join(output, TABLE_FILE), "w") as f:
        f.write(f"{table_title(experiment)}\n\n{table}")
    log(table)
    written = [PLOT_FILE, TABLE_FILE]
    if responses:
        write_responses(
            experiment_responses(*paths),
            os.path.join(output, RESPONSES_CSV_FILE),
            os.path.join(output, RESPONSES_PLOT_FILE),
            {name: run["kind"] for name, run in experiment.items()},
        )
        written += [RESPONSES_CSV_FILE, RESPONSES_PLOT_FILE]
    log(f"wrote {', '.join(os.path.join(output, w) for w in written)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="run folders, or folders of run folders")  # fmt: skip
    parser.add_argument("--responses", action="store_true",
                        help="also the Figure 7 analysis (needs the runs' checkpoints and data)")
    parser.add_argument("--output", help="where to write the files (default: beside the runs)")
    args = parser.parse_args(argv)
    try:
        report(*args.paths, responses=args.responses, output=args.output)
    except (FileNotFoundError, ValueError, OSError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
