"""The tables of docs/cifar10-peer.md from the results.json files that cifar_peer.py writes:
test error at each evaluation, one column a run, and at the end of each stage of the rate
schedule the training error over the stage's last epoch beside the test error. A deeper net
that ends behind a shallower one with the higher training error too is under-trained (it
has not yet fitted the training set as well); with the lower training error, it over-fits.

    python benchmarks/cifar_peer_report.py runs/cifar-peer/final --lr_decay_steps=3900,5850
    python benchmarks/cifar_peer_report.py runs/cifar-peer/long --lr_decay_steps=7800,11700
    python benchmarks/cifar_peer_report.py runs/cifar-peer/final runs/cifar-peer/first4 \
        --runs="resnet56-seed0 ours,resnet56-seed0 peer" --up_to=1600

Our legs still training are reported too, from their run folders' TensorBoard events, as
"<name> ours (unfinished: step N)".

Training error is the trainer's running error on augmented batches (as in the paper's Fig. 6
thin curves), over the intervals it logged, weighted by their lengths in steps.
"""

import argparse
import json
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outputs", nargs="+",
                        help="cifar_peer.py --output folders (or their results.json)")
    parser.add_argument("--lr_decay_steps", default="", help="the runs' rate drops, e.g. 3900,5850")
    parser.add_argument("--up_to", type=int, default=None,
                        help="leave out what comes after this step (e.g. to compare a run's "
                        "first epochs with a shorter one's)")
    parser.add_argument("--runs", default="", help="comma-separated 'name leg' columns to keep, "
                        "e.g. 'resnet20-seed0 ours,resnet56-seed0 ours' (default: all)")
    args = parser.parse_args(argv)
    args.lr_decay_steps = tuple(int(s) for s in args.lr_decay_steps.split(",") if s.strip())
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    return args


def load_curves(outputs):
    """{"<name> <leg>": {"train": {step: %}, "eval": {step: %}}} over every results.json, and
    our legs still training (see in_progress)."""
    runs = {}
    for output in outputs:
        path = output if output.endswith(".json") else os.path.join(output, "results.json")
        absent = None
        try:
            with open(path) as file:
                results = json.load(file)
        except FileNotFoundError as error:
            results, absent = {}, error  # no leg has finished yet: there may be some in progress
        except (OSError, ValueError) as error:
            raise SystemExit(f"{path}: not a results.json of cifar_peer.py ({error})")
        found = {f"{name} {leg}": {kind: {int(step): value for step, value in curve.items()}
                                   for kind, curve in curves.items() if kind != "seconds"}
                 for name, entry in sorted(results.items()) for leg, curves in sorted(entry.items())}
        found.update(in_progress(os.path.dirname(path), found))
        if absent and not found:
            raise SystemExit(f"{path}: not a results.json of cifar_peer.py ({absent}), and no "
                             "run of ours in progress beside it")  # fmt: skip
        for run, curves in found.items():  # the same run in two outputs: both, told apart
            runs[run if run not in runs else f"{run} [{output}]"] = curves
    return runs


def in_progress(output, recorded):
    """Our legs that results.json does not hold yet (cifar_peer.py records a leg when it ends):
    the curves so far from each <name>/ours run folder's TensorBoard events, named
    "<name> ours (unfinished: step N)" unless the trainer's result.json says it ran every
    step. So a run of hours can be reported, and its partial results committed, while it runs.
    (The PyTorch leg's progress is in its own checkpoint, peer.pt: reported when it ends.)"""
    from cifar_peer import top1_curves  # what results.json would hold, read the same way
    from keras_resnet import plot  # the figures' reader of run folders

    runs = {}
    for name in sorted(os.listdir(output)) if os.path.isdir(output) else ():
        folder = os.path.join(output, name, "ours")
        if f"{name} ours" in recorded or not os.path.isdir(folder):
            continue
        run = plot.read_run(folder)
        if run is None:
            continue
        curves = top1_curves(run)
        last = max(curves["train"], default=0)
        runs[f"{name} ours" + ("" if run["finished"] else f" (unfinished: step {last:,})")] = curves
    return runs


def epoch_training_error(train, end, epoch_steps):
    """The training error over the steps (end - epoch_steps, end], from intervals that each
    end at a logged step and start at the one before; None if they do not cover it."""
    covered = weighted = 0
    previous = 0
    for step in sorted(train):
        if end - epoch_steps < step <= end:
            length = step - max(previous, end - epoch_steps)
            covered, weighted = covered + length, weighted + length * train[step]
        previous = step
    return weighted / covered if covered == epoch_steps else None


def epoch_table(runs):
    """Markdown: the test error (%) at every evaluation, one row a step, one column a run."""
    steps = sorted({step for curves in runs.values() for step in curves["eval"]})
    lines = ["| iteration | " + " | ".join(runs) + " |",
             "| ---: |" + " ---: |" * len(runs)]  # fmt: skip
    for step in steps:
        cells = [_cell(curves["eval"].get(step)) for curves in runs.values()]
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage_table(runs, decay_steps):
    """Markdown: at the end of each stage, training error over its last epoch / test error."""
    ends = sorted({*decay_steps, max(step for c in runs.values() for step in c["eval"])})
    epoch_steps = min(step for c in runs.values() for step in c["eval"])  # the first evaluation
    lines = ["| run | " + " | ".join(f"train / test at {end:,}" for end in ends) + " |",
             "| --- |" + " ---: |" * len(ends)]  # fmt: skip
    for run, curves in runs.items():
        cells = [_pair(epoch_training_error(curves["train"], end, epoch_steps),
                       curves["eval"].get(end)) for end in ends]  # fmt: skip
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value):
    return "" if value is None else f"{value:.2f}"


def _pair(train, test):  # blank where the run has not reached the step
    return "" if train is None and test is None else f"{_cell(train)} / {_cell(test)}"


def main(argv=None):
    args = parse_args(argv)
    runs = load_curves(args.outputs)
    if args.runs:
        chosen = {wanted: [run for run in runs if run == wanted or run.startswith(f"{wanted} ")]
                  for wanted in args.runs}  # "<name> <leg>" picks it in every output
        missing = [wanted for wanted, found in chosen.items() if not found]
        if missing:
            raise SystemExit(f"--runs: no {', '.join(missing)} in {', '.join(args.outputs)} "
                             f"(there: {', '.join(runs)})")  # fmt: skip
        runs = {run: runs[run] for found in chosen.values() for run in found}
    if args.up_to is not None:
        runs = {run: {kind: {step: value for step, value in curve.items() if step <= args.up_to}
                      for kind, curve in curves.items()} for run, curves in runs.items()}  # fmt: skip
    runs = {run: curves for run, curves in runs.items() if curves.get("eval")}
    if not runs:
        raise SystemExit(f"no run with evaluations in {', '.join(args.outputs)}")
    print("Test error (%) at each evaluation:\n")
    print(epoch_table(runs))
    print("\nTraining error (%) over the last epoch of each stage / test error (%) at its end:\n")
    print(stage_table(runs, args.lr_decay_steps))


if __name__ == "__main__":
    sys.exit(main())
