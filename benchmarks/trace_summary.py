"""Where the time of a profiled training run went, from its TensorFlow profiler trace.

    python trainers/cifar10.py --dataset=synthetic --image_size=32 --train_steps=40 \\
        --log_every_steps=10 --noevaluate --profile_steps=11,40 --model_dir=/tmp/profile-r20
    python benchmarks/trace_summary.py /tmp/profile-r20

Reads the newest *.xplane.pb under the folder (what TensorBoard's Profile tab shows) and
prints, for the traced window: how much of the Python thread's time was spent inside the
compiled training calls (the rest is the loop's own Python work: metric reads, summaries,
progress lines), how long the training steps waited for the input pipeline
(IteratorGetNext), and the ops that took the most time on the compute threads.
"""

import argparse
import collections
import glob
import os

from tensorflow.tsl.profiler.protobuf import xplane_pb2


def load_space(folder):
    paths = glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)
    if not paths:
        raise SystemExit(f"no *.xplane.pb under {folder}")
    space = xplane_pb2.XSpace()
    with open(max(paths, key=os.path.getmtime), "rb") as f:
        space.ParseFromString(f.read())
    return space


def milliseconds_by_name(plane, line):
    totals, counts = collections.Counter(), collections.Counter()
    for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        totals[name] += event.duration_ps / 1e9
        counts[name] += 1
    return totals, counts


def ms_by_op_type(plane, lines):
    """Milliseconds of the ops on `lines` of `plane`, by op type (a Counter)."""
    ops = collections.Counter()
    for line in lines:
        for name, ms in milliseconds_by_name(plane, line)[0].items():
            # Ops are "node:OpType"; the rest are scopes ("a::b", "EagerLocalExecute: op").
            if ":" in name.replace("::", "") and ": " not in name:
                ops[name.rsplit(":", 1)[1]] += ms
    return ops


def span_ms(line):
    if not line.events:
        return 0.0
    start = min(e.offset_ps for e in line.events)
    return (max(e.offset_ps + e.duration_ps for e in line.events) - start) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a run's model_dir, or any folder holding the trace")
    parser.add_argument("--top", type=int, default=8, help="ops to list")
    args = parser.parse_args()

    host = next(p for p in load_space(args.folder).planes if p.name == "/host:CPU")
    python = [line for line in host.lines if line.name.endswith(".py") or "python" in line.name]
    compute = [line for line in host.lines if line.name.startswith("tf_Compute")]
    get_next = [line for line in host.lines if line.name.startswith("tf_data_iterator_get_next")]

    for line in python:
        window = span_ms(line)
        totals, counts = milliseconds_by_name(host, line)
        # The trainer's compiled call is the Python function _train_steps (training.steps).
        calls, count = totals["_train_steps"], counts["_train_steps"]
        print(f"traced window {window:.0f} ms; inside {count} train_steps calls: "
              f"{calls:.0f} ms ({100 * calls / window:.2f}%); the loop's own Python work: "
              f"{window - calls:.0f} ms")  # fmt: skip
    waits = sum(milliseconds_by_name(host, line)[0]["IteratorGetNextOp::DoCompute"]
                for line in get_next)  # fmt: skip
    window = max(span_ms(line) for line in host.lines)
    print(f"waiting for the input pipeline (IteratorGetNext): {waits:.1f} ms "
          f"({100 * waits / window:.3f}% of the window)")
    ops = ms_by_op_type(host, compute)
    busy = sum(ops.values())
    print(f"op time on {len(compute)} compute threads: {busy:.0f} ms; by op type:")
    for name, ms in ops.most_common(args.top):
        print(f"  {ms:10.0f} ms  {100 * ms / busy:5.1f}%  {name}")


if __name__ == "__main__":
    main()
