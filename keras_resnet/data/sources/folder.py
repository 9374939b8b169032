"""Class folders: FolderSource (data_dir/train/<class>/*.jpg and a validation folder),
Cifar10FolderSource (CIFAR-10 as JPEG class folders, with the paper's 45k/5k split), and the
listing of a class folder."""

import os

import tensorflow as tf

from keras_resnet.data.sources.base import (
    Source,
    _cifar_like,
    _imagenet_like,
    read_list,
    resolve_archive,
)

CIFAR10_VALIDATION_FRACTION = 10  # the last 1/10 of each class: 10 x 500 = the paper's 5k
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
VALIDATION_FOLDERS = ("val", "validation", "test")


def _list_class_folder(root, class_names=None):
    """[(path, label)] for root/<class>/*.{jpg,jpeg,png} (any case), classes sorted by name
    (or the given class_names), files sorted by name within each class."""
    if not tf.io.gfile.isdir(root):
        raise FileNotFoundError(f"{root} does not exist; expected {root}/<class>/*.jpg")
    found = sorted(d.rstrip("/") for d in tf.io.gfile.listdir(root)
                   if tf.io.gfile.isdir(os.path.join(root, d)))  # fmt: skip
    if class_names is None:
        class_names = tuple(found)
    else:
        unknown = sorted(set(found) - set(class_names))
        if unknown:
            raise ValueError(
                f"{root} has class folders {unknown[:5]} that the training folder lacks; "
                f"expected a subset of the {len(class_names)} training classes"
            )
    items = []
    index = {name: i for i, name in enumerate(class_names)}
    for name in found:
        folder = os.path.join(root, name)
        files = sorted(f for f in tf.io.gfile.listdir(folder)
                       if f.lower().endswith(IMAGE_EXTENSIONS))  # fmt: skip
        items.extend((os.path.join(folder, f), index[name]) for f in files)
    if not items:
        raise FileNotFoundError(
            f"{root} holds no images; expected {root}/<class>/*.jpg (or .jpeg, .png) with one "
            "folder per class"
        )
    return class_names, items


class FolderSource(Source):
    """data_dir/train/<class>/*.{jpg,jpeg,png} and the first of data_dir/val, validation,
    test in the same layout; classes are the train/ folder names, sorted; label i is the
    i-th name. A .tar/.tar.gz data_dir is extracted into the cache first."""

    yields_paths = True
    # What data_dir holds, for the messages: {d} is data_dir.
    layout = "{d}/train/<class>/*.jpg"
    needs = "a folder with train/<class>/*.jpg (and val/<class>/...)"

    def __init__(self, data_dir, name="folder"):
        if not data_dir:
            raise FileNotFoundError(f"{name} needs data_dir: {self.needs}")
        data_dir = resolve_archive(data_dir)
        if not tf.io.gfile.isdir(data_dir):
            raise FileNotFoundError(f"{name}: data_dir {data_dir} does not exist")
        train = os.path.join(data_dir, "train")
        if not tf.io.gfile.isdir(train):
            raise FileNotFoundError(
                f"{name}: {train} does not exist; expected {self.layout.format(d=data_dir)}"
            )
        self.data_dir = data_dir
        class_names, train_items = _list_class_folder(train)
        if len(class_names) < 2:
            raise ValueError(
                f"{name}: {train} has {len(class_names)} class folder(s) {list(class_names)}; "
                "expected at least 2 (one folder per class)"
            )
        self.items = self._splits(class_names, train_items)
        self.info = self._info(name, class_names)

    def _splits(self, class_names, train_items):
        """{split: [(path, label)]}: train/ as train, the first validation folder found as
        validation."""
        items = {"train": train_items}
        for folder in VALIDATION_FOLDERS:
            path = os.path.join(self.data_dir, folder)
            if tf.io.gfile.isdir(path):
                items["validation"] = _list_class_folder(path, class_names)[1]
                break
        return items

    def _info(self, name, class_names):
        counts = len(self.items["train"]), len(self.items.get("validation", ()))
        return _imagenet_like(name, class_names, *counts, data_dir=self.data_dir)

    def examples(self, split, options):
        if split not in self.items:
            expected = " or ".join(os.path.join(self.data_dir, f) for f in VALIDATION_FOLDERS)
            raise FileNotFoundError(
                f"{self.info.name}: no {split} split: expected {expected} with <class>/*.jpg"
            )
        return read_list(self.items[split], options)


class Cifar10FolderSource(FolderSource):
    """CIFAR-10 as JPEG class folders (the layout of cifar10-jpg.tar.gz): train/<class>/*.jpg
    (5,000 a class) and test/<class>/*.jpg (1,000 a class). The paper's 45k/5k split of the
    training set is fixed: in each class, the last tenth of the files in name order (500 of
    5,000) are validation, the rest train. Splits: train (45k), validation (5k), trainval (all
    50k, in file order), test (10k)."""

    layout = "{d}/train/<class>/*.jpg and {d}/test/<class>/*.jpg"
    needs = (
        "a folder (or .tar.gz) with train/<class>/*.jpg and test/<class>/*.jpg, like "
        "cifar10-jpg.tar.gz"
    )

    def __init__(self, data_dir, name="cifar10_folder"):
        super().__init__(data_dir, name=name)

    def _splits(self, class_names, train_items):
        by_class = {}
        for path, label in train_items:  # already sorted by class, then file name
            by_class.setdefault(label, []).append((path, label))
        cut = {label: len(c) - len(c) // CIFAR10_VALIDATION_FRACTION
               for label, c in by_class.items()}  # fmt: skip
        items = {
            "train": [item for label, c in by_class.items() for item in c[: cut[label]]],
            "validation": [item for label, c in by_class.items() for item in c[cut[label]:]],
            "trainval": train_items,
        }  # fmt: skip
        test = os.path.join(self.data_dir, "test")
        if tf.io.gfile.isdir(test):
            items["test"] = _list_class_folder(test, class_names)[1]
        return items

    def _info(self, name, class_names):
        counts = {split: len(items) for split, items in self.items.items()}
        return _cifar_like(name, class_names, counts["train"], counts["validation"],
                           counts.get("test", 0), data_dir=self.data_dir,
                           num_trainval=counts["trainval"])  # fmt: skip
