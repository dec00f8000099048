from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mltag_artifact import Preprocessing
from model_training.config import AugmentConfig, DataConfig
from model_training.data import (
    DataError,
    MultilabelDataset,
    load_splits,
    read_coco,
    read_csv,
    read_jsonl,
    read_voc,
    stratified_holdout,
)
from model_training.data.transforms import Cutout, EvalTransform, TrainTransform, preprocessing_for

from .synth import COLOURS, make_images, write_coco


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, list[str]]]]:
    root = tmp_path_factory.mktemp("shapes")
    return root, make_images(root, 40, size=32, seed=1)


def test_coco_reader(shapes: tuple[Path, list[tuple[str, list[str]]]]) -> None:
    root, items = shapes
    path = write_coco(root, items)
    ds = read_coco(path)
    assert ds.labels == list(COLOURS)  # category order by id, not list order
    assert len(ds) == len(items)
    for (rel, labels), img, row in zip(items, ds.images, ds.targets, strict=True):
        assert img == root / rel
        assert [ds.labels[i] for i in np.flatnonzero(row > 0)] == labels
    n_empty = sum(1 for _, labels in items if not labels)
    assert n_empty > 0  # unlabeled images are kept as negatives...
    dropped = read_coco(path, empty_labels="drop")  # ...or dropped and counted
    assert len(dropped) == len(items) - n_empty
    assert dropped.skipped["no labels (dropped)"] == n_empty
    with pytest.raises(DataError, match=r"images\[\d+\].*no labels"):
        read_coco(path, empty_labels="error")


def test_coco_ignore_and_errors(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    doc = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "missing.png"}],
        "annotations": [
            {"image_id": 1, "category_id": 1},
            {"image_id": 1, "category_id": 2, "ignore": True},
            {"image_id": 1, "category_id": 1, "ignore": True},  # a normal one wins
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"ann\.json: images\[1\]: image not found: .*missing"):
        read_coco(p)
    ds = read_coco(p, skip_bad=True)
    assert ds.skipped["missing image"] == 1
    np.testing.assert_array_equal(ds.targets, [[1, -1]])
    doc["annotations"].append({"image_id": 7, "category_id": 1})  # type: ignore[attr-defined]
    p.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"annotations\[3\] refers to unknown image_id 7"):
        read_coco(p, skip_bad=False)
    p.write_text("{\n  bad")
    with pytest.raises(DataError, match=r"ann\.json:2: not valid JSON"):
        read_coco(p)


def _voc(root: Path) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    objects = {
        "0001": [("dog", 0), ("cat", 1)],  # cat only difficult -> ignore
        "0002": [("cat", 1), ("cat", 0), ("person", 0)],  # cat also non-difficult -> positive
        "0003": [],
    }
    for image_id, objs in objects.items():
        Image.new("RGB", (8, 8)).save(root / "JPEGImages" / f"{image_id}.jpg")
        body = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult></object>" for n, d in objs
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename>{body}</annotation>"
        )
    split = root / "ImageSets" / "Main" / "trainval.txt"
    split.write_text("0001\n0002\n0003\n")
    return split


def test_voc_reader_difficult(tmp_path: Path) -> None:
    split = _voc(tmp_path / "VOC2007")
    ds = read_voc(split)
    assert ds.labels == ["cat", "dog", "person"]
    np.testing.assert_array_equal(ds.targets, [[-1, 1, 0], [1, 0, 1], [0, 0, 0]])
    pos = read_voc(split, difficult="positive")
    np.testing.assert_array_equal(pos.targets[0], [1, 1, 0])
    neg = read_voc(split, difficult="negative")
    np.testing.assert_array_equal(neg.targets[0], [0, 1, 0])
    split.write_text("0001\n0009\n")
    with pytest.raises(DataError, match=r"trainval\.txt:2: cannot read .*0009\.xml"):
        read_voc(split)


def test_csv_and_jsonl(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    csv_path = tmp_path / "train.csv"
    csv_path.write_text('path,labels\na.png,"cat;dog"\nb.png,\n')
    ds = read_csv(csv_path)
    assert ds.labels == ["cat", "dog"]
    np.testing.assert_array_equal(ds.targets, [[1, 1], [0, 0]])
    pipe = tmp_path / "pipe.csv"
    pipe.write_text("a.png,cat|dog,bird\n")
    assert read_csv(pipe, label_sep="|", labels=["bird", "cat", "dog"]).targets.tolist() == [
        [-1, 1, 1]
    ]
    val = tmp_path / "val.csv"
    val.write_text("a.png,cat\nb.png,horse\n")
    with pytest.raises(DataError, match=r"val\.csv:2: unknown label\(s\) \['horse'\]"):
        read_csv(val, labels=ds.labels)
    assert len(read_csv(val, labels=ds.labels, skip_bad=True)) == 1
    jl = tmp_path / "train.jsonl"
    jl.write_text(json.dumps({"image": "a.png", "labels": ["x"], "ignore": ["y"]}) + "\n\n{oops\n")
    with pytest.raises(DataError, match=r"train\.jsonl:3: not valid JSON"):
        read_jsonl(jl)
    jds = read_jsonl(jl, skip_bad=True)
    assert jds.labels == ["x", "y"]
    np.testing.assert_array_equal(jds.targets, [[1, -1]])
    (tmp_path / "labels.txt").write_text("y\nx\nz\n")  # dataset builders ship the order
    assert read_jsonl(jl, skip_bad=True).labels == ["y", "x", "z"]


def test_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("bad.png,cat\nok.png,cat\n")
    with pytest.raises(DataError, match=r"t\.csv:1: cannot decode image"):
        read_csv(csv_path, verify_images=True)
    assert len(read_csv(csv_path, verify_images=True, skip_bad=True)) == 1
    ds = read_csv(csv_path)  # not verified up front: the loader names the record
    prep = Preprocessing(height=8, width=8)
    with pytest.raises(DataError, match=r"t\.csv:1: cannot load image .*bad\.png"):
        MultilabelDataset(ds, EvalTransform(prep))[0]


def test_stratified_holdout() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((500, 6)) < np.array([0.5, 0.3, 0.1, 0.05, 0.02, 0.4])).astype(np.int8)
    tr, va = stratified_holdout(y, 0.2, seed=3)
    assert sorted(np.r_[tr, va].tolist()) == list(range(500))
    assert abs(len(va) - 100) <= 2
    share = y[va].sum(0) / y.sum(0)
    np.testing.assert_allclose(share, 0.2, atol=0.04)  # every label, even the 2% one
    _, va2 = stratified_holdout(y, 0.2, seed=3)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, stratified_holdout(y, 0.2, seed=4)[1])


def test_load_splits_holdout(shapes: tuple[Path, list[tuple[str, list[str]]]]) -> None:
    root, items = shapes
    cfg = DataConfig(format="coco", train=str(write_coco(root, items)), val_fraction=0.25)
    s = load_splits(cfg, seed=0)
    assert len(s.train) + len(s.val) == len(items)
    assert set(s.train.images).isdisjoint(s.val.images)
    assert s.test is None
    with pytest.raises(DataError, match=r"data\.train is not set"):
        load_splits(DataConfig())


def test_eval_transform_matches_manual(shapes: tuple[Path, list[tuple[str, list[str]]]]) -> None:
    root, items = shapes
    data = DataConfig(image_size=24, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    prep = preprocessing_for(data)
    path = root / items[0][0]
    x = EvalTransform(prep)(path)
    im = Image.open(path).convert("RGB").resize((24, 24), Image.Resampling.BILINEAR)
    ref = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)
    ref = (ref - torch.tensor(data.mean)[:, None, None]) / torch.tensor(data.std)[:, None, None]
    torch.testing.assert_close(x, ref, atol=1e-4, rtol=0)


def test_train_transform_seeded(shapes: tuple[Path, list[tuple[str, list[str]]]]) -> None:
    root, items = shapes
    prep = preprocessing_for(DataConfig(image_size=32))
    t = TrainTransform(prep, AugmentConfig())
    path = root / items[0][0]
    torch.manual_seed(5)
    a = t(path)
    torch.manual_seed(5)
    b = t(path)
    assert a.shape == (3, 32, 32)
    torch.testing.assert_close(a, b)


def test_cutout_box() -> None:
    torch.manual_seed(0)
    x = torch.zeros(3, 50, 50)
    out = Cutout(p=1.0, size=0.4)(x)
    changed = (out != 0).any(dim=0)
    assert 0 < changed.sum() <= 20 * 20
    ys, xs = torch.nonzero(changed, as_tuple=True)
    assert ys.max() - ys.min() < 20
    assert xs.max() - xs.min() < 20
    torch.testing.assert_close(Cutout(p=0.0)(x), x)


def test_per_split_images_root(tmp_path: Path) -> None:
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        for i in range(4):
            Image.new("RGB", (8, 8)).save(tmp_path / split / f"{i}.png")
        rows = "".join(f"{i}.png,{'cat' if i % 2 else 'dog'}\n" for i in range(4))
        (tmp_path / f"{split}.csv").write_text(rows)
    cfg = DataConfig(format="csv", train=str(tmp_path / "train.csv"),
                     val=str(tmp_path / "val.csv"), images_root=str(tmp_path / "train"),
                     val_images_root=str(tmp_path / "val"))  # fmt: skip
    s = load_splits(cfg)
    assert s.val.images[0] == tmp_path / "val" / "0.png"
    assert s.train.images[0] == tmp_path / "train" / "0.png"
