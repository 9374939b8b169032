"""Plain vs residual, from TensorBoard event files: the paper's Figures 4/6 and 7, Table 2.

    python -m keras_resnet.plot EXPERIMENT_DIR [--responses]

EXPERIMENT_DIR holds one run folder per model (as trainers/compare.py writes them, or any
trainer runs side by side). From the event files alone it writes:
  comparison.png  error (%) against iterations; training error thin, validation error bold;
                  plain nets in the left panel, residual nets in the right, same axes
  table.md        final top-1 validation error (%), depths in rows, plain and residual in
                  columns (the paper's Table 2)
With --responses, from each run's latest checkpoint and a batch of its validation images:
  responses.png, responses.csv  standard deviation of every 3x3 layer's response (after BN,
                  before the ReLU or the addition), in network order and sorted (Figure 7)
"""

import argparse
import csv
import os
import re

import numpy as np

PLOT_FILE = "comparison.png"
TABLE_FILE = "table.md"
RESPONSES_PLOT_FILE = "responses.png"
RESPONSES_CSV_FILE = "responses.csv"
RUN_NAME = re.compile(r"^(plain|resnet)(\d+)$")


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


def find_runs(experiment_dir):
    """{run name: run folder} of the runs in experiment_dir named plainN / resnetN."""
    found = {}
    for name in sorted(os.listdir(experiment_dir)):
        folder = os.path.join(experiment_dir, name)
        if RUN_NAME.match(name) and os.path.isdir(os.path.join(folder, "train")):
            found[name] = folder
    if not found:
        raise FileNotFoundError(
            f"no runs in {experiment_dir}: expected folders named like plain20/ or resnet56/ "
            "with TensorBoard event files under train/"
        )
    return found


def read_experiment(experiment_dir):
    """{run name: {"train": scalars, "validation": scalars}} for every run."""
    return {
        name: {
            split: read_scalars(os.path.join(folder, split))
            if os.path.isdir(os.path.join(folder, split))
            else {}
            for split in ("train", "validation")
        }
        for name, folder in find_runs(experiment_dir).items()
    }


def _depth(name):
    return int(RUN_NAME.match(name).group(2))


def plot_comparison(experiment, path, metric="top1_error"):
    """The paper's Figure 4/6 layout, written as PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True, sharey=True)
    colours = plt.get_cmap("tab10")
    depths = sorted({_depth(name) for name in experiment})
    for panel, kind, title in ((axes[0], "plain", "plain"), (axes[1], "resnet", "ResNet")):
        for name in sorted((n for n in experiment if n.startswith(kind)), key=_depth):
            colour = colours(depths.index(_depth(name)) % 10)
            label = f"{title}-{_depth(name)}"
            for split, width in (("train", 0.8), ("validation", 2.2)):
                points = experiment[name][split].get(metric, [])
                if points:
                    steps, values = zip(*points)
                    panel.plot(
                        steps,
                        100 * np.asarray(values),
                        color=colour,
                        linewidth=width,
                        alpha=0.7 if split == "train" else 1.0,
                        label=f"{label} ({'train' if split == 'train' else 'val'})",
                    )
        panel.set_title(f"{title} nets")
        panel.set_xlabel("iterations")
        panel.grid(alpha=0.3)
        panel.legend(fontsize=8)
    axes[0].set_ylabel("error (%)")
    figure.suptitle("thin: training error, bold: validation error")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def final_errors(experiment, metric="top1_error"):
    """{run name: last validation value of `metric`} (None where a run has none)."""
    result = {}
    for name, splits in experiment.items():
        points = splits["validation"].get(metric)
        result[name] = points[-1][1] if points else None
    return result


def table_markdown(experiment, metric="top1_error"):
    """The paper's Table 2: final top-1 validation error (%) by depth, plain vs residual."""
    errors = final_errors(experiment, metric)
    lines = ["| layers | plain | ResNet |", "| ---: | ---: | ---: |"]
    for depth in sorted({_depth(name) for name in experiment}):
        cells = []
        for kind in ("plain", "resnet"):
            value = errors.get(f"{kind}{depth}")
            cells.append("-" if value is None else f"{100 * value:.2f}")
        lines.append(f"| {depth} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


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


def experiment_responses(experiment_dir, batch_size=128):
    """{run name: [(layer, std), ...]} from each run's latest checkpoint and validation images."""
    from keras_resnet import data, runs

    responses = {}
    for name, folder in find_runs(experiment_dir).items():
        model, config, _ = runs.restore_model(folder)
        images, _ = next(
            iter(
                data.make_dataset(
                    config["dataset"],
                    "validation",
                    data_dir=config.get("data_dir"),
                    batch_size=batch_size,
                    image_size=config["image_size"],
                    training=False,
                )
            )
        )
        responses[name] = layer_responses(model, images)
    return responses


def write_responses(responses, csv_path, png_path):
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
    for name in sorted(responses, key=lambda n: (_depth(n), n)):
        stds = [std for _, std in responses[name]]
        style = "--" if name.startswith("plain") else "-"
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


def report(experiment_dir, responses=False, log=print):
    """Writes the plot and the table (and the responses) into experiment_dir."""
    experiment = read_experiment(experiment_dir)
    plot_comparison(experiment, os.path.join(experiment_dir, PLOT_FILE))
    table = table_markdown(experiment)
    with open(os.path.join(experiment_dir, TABLE_FILE), "w") as f:
        f.write("Final top-1 validation error (%)\n\n" + table)
    log(table)
    written = [PLOT_FILE, TABLE_FILE]
    if responses:
        write_responses(
            experiment_responses(experiment_dir),
            os.path.join(experiment_dir, RESPONSES_CSV_FILE),
            os.path.join(experiment_dir, RESPONSES_PLOT_FILE),
        )
        written += [RESPONSES_CSV_FILE, RESPONSES_PLOT_FILE]
    log(f"wrote {', '.join(os.path.join(experiment_dir, w) for w in written)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment_dir")
    parser.add_argument("--responses", action="store_true", help="also the Figure 7 analysis")
    args = parser.parse_args(argv)
    report(args.experiment_dir, responses=args.responses)


if __name__ == "__main__":
    main()
