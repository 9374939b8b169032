"""The plain-vs-residual comparison: compare.py, the plot and table, the layer responses."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras_resnet
from keras_resnet import plot, runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARE = os.path.join(REPO, "trainers", "compare.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def demo_cache(tmp_path_factory):
    os.environ.setdefault("KERAS_RESNET_CACHE", str(tmp_path_factory.mktemp("cache")))


def write_events(folder, values):
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for step, value in values:
            tf.summary.scalar("top1_error", value, step=step)
    writer.close()


def test_table_and_plot_from_hand_made_event_files(tmp_path):
    finals = {"plain20": 0.25, "plain56": 0.3125, "resnet20": 0.125, "resnet56": 0.0625}
    for name, final in finals.items():
        write_events(tmp_path / name / "train", [(100, 0.875), (200, 0.5), (300, final / 2)])
        write_events(tmp_path / name / "validation", [(150, 0.75), (300, final)])
    (tmp_path / "notes").mkdir()  # other folders are ignored

    experiment = plot.read_experiment(str(tmp_path))
    assert set(experiment) == set(finals)
    assert experiment["plain56"]["train"]["top1_error"] == [(100, 0.875), (200, 0.5), (300, 0.15625)]
    assert plot.final_errors(experiment) == finals
    assert plot.table_markdown(experiment).splitlines() == [
        "| layers | plain | ResNet |",
        "| ---: | ---: | ---: |",
        "| 20 | 25.00 | 12.50 |",
        "| 56 | 31.25 | 6.25 |",
    ]
    plot.report(str(tmp_path), log=lambda line: None)
    with open(tmp_path / plot.PLOT_FILE, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert "| 56 | 31.25 | 6.25 |" in (tmp_path / plot.TABLE_FILE).read_text()


def test_missing_runs_give_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no runs in"):
        plot.read_experiment(str(tmp_path))
    missing = subprocess.run([sys.executable, "-m", "keras_resnet.plot", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'x'}: no such folder"
    assert "Traceback" not in missing.stderr


def write_run(folder, model, eval_split, train, evaluation, steps=10, total_steps=10):
    os.makedirs(folder)
    with open(os.path.join(folder, "run.json"), "w") as f:
        json.dump({"model": model, "eval_split": eval_split}, f)
    if steps is not None:  # None: still training, no result.json yet
        with open(os.path.join(folder, "result.json"), "w") as f:
            json.dump({"steps": steps, "total_steps": total_steps}, f)
    write_events(os.path.join(folder, "train"), train)
    write_events(os.path.join(folder, eval_split), evaluation)


def test_any_run_folder_name_one_kind_only_and_the_split_from_run_json(tmp_path):
    # A single residual run named as the demo names it: one panel, the model from run.json.
    demo = str(tmp_path / "demo-resnet20")
    write_run(demo, "resnet20", "validation", [(10, 0.5)], [(10, 0.25)])
    plot.report(demo, log=lambda line: None)
    assert (tmp_path / plot.TABLE_FILE).read_text().splitlines() == [
        "Final top-1 error (%) on the validation split", "", "| layers | plain | ResNet |",
        "| ---: | ---: | ---: |", "| 20 | - | 25.00 |",
    ]  # fmt: skip
    with open(tmp_path / plot.PLOT_FILE, "rb") as f:
        assert f.read(8) == PNG_MAGIC

    # Test-split runs, any folder names, given one by one; the table names the split.
    experiment_dir = tmp_path / "final"
    write_run(str(experiment_dir / "a"), "resnet56", "test", [(10, 0.5)], [(10, 0.0625)])
    write_run(str(experiment_dir / "b"), "resnet20", "test", [(10, 0.5)], [(10, 0.125)])
    write_run(str(experiment_dir / "c"), "plain20", "validation", [(10, 0.5)], [(10, 0.5)])
    experiment = plot.read_experiment(str(experiment_dir / "a"), str(experiment_dir / "b"),
                                      str(experiment_dir / "c"))  # fmt: skip
    assert {n: r["eval_split"] for n, r in experiment.items()} == {
        "resnet56": "test", "resnet20": "test", "plain20": "validation"}  # fmt: skip
    assert plot.table_title(experiment) == "Final top-1 error (%) on the test split"
    assert plot.table_markdown(experiment).splitlines()[2:] == [
        "| 20 | 50.00 (validation) | 12.50 |",
        "| 56 | - | 6.25 |",
    ]

    # A run still training (no result.json) or stopped early: its last error is not final.
    write_run(str(tmp_path / "now" / "plain56"), "plain56", "test", [(1000, 0.5)],
              [(390, 0.75), (1170, 0.5)], steps=None)  # fmt: skip
    write_run(str(tmp_path / "now" / "plain20"), "plain20", "test", [(10, 0.5)], [(10, 0.25)],
              steps=10, total_steps=7800)  # fmt: skip
    write_run(str(tmp_path / "now" / "resnet20"), "resnet20", "test", [(10, 0.5)], [(10, 0.125)])
    # A result.json that does not say how many steps were planned: no claim either way.
    write_run(str(tmp_path / "now" / "resnet56"), "resnet56", "test", [(10, 0.5)], [(10, 0.0625)],
              total_steps=None)  # fmt: skip
    assert plot.table_markdown(plot.read_experiment(str(tmp_path / "now"))).splitlines()[2:] == [
        "| 20 | 25.00 (unfinished: step 10) | 12.50 |",
        "| 56 | 50.00 (unfinished: step 1,170) | 6.25 |",
    ]


def test_layer_responses_give_one_value_per_3x3_layer():
    images = np.random.rand(4, 32, 32, 3).astype("float32")
    for model in (keras_resnet.ResNet20(), keras_resnet.Plain20()):
        responses = plot.layer_responses(model, images)
        assert len(responses) == 19  # conv1 and the two 3x3 convs of 9 blocks
        assert responses[0][0] == "conv1_bn" and responses[-1][0] == "conv4_block3_2_bn"
        assert all(std > 0 for _, std in responses)
    bottleneck = keras_resnet.ResNet50(input_shape=(32, 32, 3))
    assert len(plot.response_layers(bottleneck)) == 16  # one 3x3 per bottleneck block


def run_compare(experiment_dir, models):
    return subprocess.run(
        [
            sys.executable,
            COMPARE,
            f"--models={models}",
            f"--experiment_dir={experiment_dir}",
            "--dataset=demo",
            "--image_size=32",
            "--batch_size=16",
            "--train_steps=4",
            "--lr_decay_steps=2",
            "--log_every_steps=2",
            "--steps_per_execution=2",
            "--augmentation=none",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_compare_trains_each_model_then_writes_plot_table_responses_and_resumes(tmp_path):
    first = run_compare(tmp_path, "plain20")
    assert first.returncode == 0, first.stderr[-3000:]
    plain_checkpoint = tf.train.latest_checkpoint(str(tmp_path / "plain20" / "checkpoints"))
    assert plain_checkpoint.endswith("ckpt-4")
    mtime = os.path.getmtime(plain_checkpoint + ".index")

    # The "interrupted" comparison goes on: plain20 is finished and skipped, resnet20 trains.
    second = run_compare(tmp_path, "plain20,resnet20")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "[plain20]" in second.stdout and "nothing to train" in second.stdout
    assert "[resnet20] Training resnet20" in second.stdout
    assert os.path.getmtime(plain_checkpoint + ".index") == mtime
    for name in ("plain20", "resnet20"):
        assert tf.train.latest_checkpoint(str(tmp_path / name / "checkpoints")).endswith("ckpt-4")
    with open(tmp_path / plot.PLOT_FILE, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    table = (tmp_path / plot.TABLE_FILE).read_text()
    assert "| 20 |" in table and " - " not in table
    with open(tmp_path / plot.RESPONSES_CSV_FILE) as f:
        rows = list(csv.DictReader(f))
    assert {row["model"] for row in rows} == {"plain20", "resnet20"}
    assert sum(row["model"] == "resnet20" for row in rows) == 19
    # Both runs saw the same settings and seed.
    configs = [runs.read_run_config(str(tmp_path / n)) for n in ("plain20", "resnet20")]
    assert configs[0]["flags"]["seed"] == configs[1]["flags"]["seed"] == 0
