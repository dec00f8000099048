"""The photo model's builder pieces on a small hand-made WordNet: data-line parsing, the tag set
(pruning, folding, names, parents), the score graph and the threshold policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model_training.photo.builder import PhotoTagModel, membership_matrix, photo_preprocessing
from model_training.photo.hierarchy import PhotoTag, build_tags, check_tags
from model_training.photo.thresholds import ThresholdPolicy, coverage_thresholds
from model_training.photo.wordnet import Synset, ancestors, parse_data_line, read_nouns

TABBY_LINE = (
    "02123045 05 n 02 tabby 1 tabby_cat 0 001 @ 02121808 n 0000 | a cat with a grey or tawny "
    "coat mottled with black  "
)


def _syn(sid: str, lemmas: str, hypernyms: str = "", count: int = 0, lex: str = "animal") -> Synset:
    return Synset(
        id=sid,
        lemmas=tuple(lemmas.split(",")),
        hypernyms=tuple(hypernyms.split()) if hypernyms else (),
        counts=(count,),
        lexname=lex,
    )


# entity > organism (dropped) > animal > {cat > {tabby, siamese}, dog > pug, crane (bird)};
# entity > container (familiar 0) > mug (0) > coffee mug;   entity > crane (machine);
# entity > beverage > coffee (familiar) > espresso.
FAKE = {
    s.id: s
    for s in [
        _syn("n1", "entity", lex="tops", count=11),
        _syn("n2", "organism", "n1", 15, "tops"),
        _syn("n3", "animal,beast", "n2", 87, "tops"),
        _syn("n4", "cat", "n3", 18),
        _syn("n5", "tabby,tabby cat", "n4"),
        _syn("n6", "Siamese cat", "n4"),
        _syn("n7", "dog", "n3", 42),
        _syn("n8", "pug", "n7"),
        _syn("n9", "crane", "n3"),
        _syn("n10", "container", "n1", 5, "artifact"),
        _syn("n11", "mug", "n10", 0, "artifact"),
        _syn("n12", "coffee mug", "n11", 0, "artifact"),
        _syn("n13", "crane", "n1", 3, "artifact"),
        _syn("n14", "beverage", "n1", 5, "food"),
        _syn("n15", "coffee,java", "n14", 47, "food"),
        _syn("n16", "espresso", "n15", 0, "food"),
    ]
}
CLASSES = ["n5", "n6", "n8", "n9", "n12", "n13", "n16"]


def test_parse_data_line() -> None:
    s = parse_data_line(TABBY_LINE, {"tabby%1:05:01::": 2, "tabby_cat%1:05:00::": 1})
    assert s.id == "n02123045"
    assert s.lemmas == ("tabby", "tabby cat")
    assert s.hypernyms == ("n02121808",)
    assert s.counts == (2, 1) and s.familiarity == 3
    assert s.lexname == "animal"
    assert s.gloss.startswith("a cat with")
    # License header lines (leading spaces) are skipped
    assert list(read_nouns(["  1 This software...", TABBY_LINE])) == ["n02123045"]


def test_ancestors_transitive() -> None:
    assert set(ancestors(FAKE, "n5")) == {"n4", "n3", "n2", "n1"}


def _tags() -> dict[str, PhotoTag]:
    tags = build_tags(FAKE, CLASSES, dropped={"n1", "n2"})
    check_tags(tags)
    return {t.name: t for t in tags}


def test_tags_classes_first_then_ancestors_broadest_first() -> None:
    tags = build_tags(FAKE, CLASSES, dropped={"n1", "n2"})
    assert [t.synset for t in tags[: len(CLASSES)]] == CLASSES
    rest = tags[len(CLASSES) :]
    assert rest[0].name == "animal"  # covers the most classes
    assert [len(t.classes) for t in rest] == sorted((len(t.classes) for t in rest), reverse=True)


def test_dropped_synsets_are_not_tags_but_are_climbed_through() -> None:
    by_name = _tags()
    assert "entity" not in by_name and "organism" not in by_name
    assert by_name["animal"].parents == ()  # its only ancestors were dropped
    assert by_name["animal"].classes == (0, 1, 2, 3)


def test_same_coverage_folds_unfamiliar_names_into_aliases() -> None:
    by_name = _tags()
    # mug and container cover only "coffee mug" and are unfamiliar: aliases of it
    assert "mug" not in by_name
    assert {"mug"} <= set(by_name["coffee mug"].aliases)
    # coffee covers only espresso but is a familiar word: kept, and espresso's parent
    assert by_name["espresso"].parents == ("coffee",)
    assert by_name["coffee"].classes == by_name["espresso"].classes == (6,)
    assert by_name["coffee"].aliases == ("java",)
    assert by_name["beverage"].classes == (6,)  # familiar (5): kept too


def test_names_unique_and_readable() -> None:
    by_name = _tags()
    cranes = [t for t in by_name.values() if t.name.startswith("crane")]
    assert sorted(t.name for t in cranes) == ["crane", "crane (animal)"]
    assert by_name["tabby"].aliases == ("tabby cat",)


def test_parents_nearest_and_categories() -> None:
    by_name = _tags()
    assert by_name["tabby"].parents == ("cat",)
    assert by_name["cat"].parents == ("animal",)
    assert by_name["pug"].parents == ("dog",)
    assert by_name["animal"].category == "animal"  # a `tops` synset votes by its classes
    assert by_name["coffee"].category == "food"


def test_check_tags_rejects_a_parent_that_does_not_cover() -> None:
    bad = [PhotoTag("a", "n1", (0, 1), parents=("b",)), PhotoTag("b", "n2", (0,))]
    with pytest.raises(ValueError, match="does not cover"):
        check_tags(bad)
    with pytest.raises(ValueError, match="not a tag"):
        check_tags([PhotoTag("a", "n1", (0,), parents=("zzz",))])


def test_unknown_class_is_an_error() -> None:
    with pytest.raises(ValueError, match="not WordNet"):
        build_tags(FAKE, ["n5", "n99"])


class _TinyNet(nn.Module):
    """forward_features / forward_head like a timm classifier: 3 channels -> 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :2, :2]  # (B, 3, 2, 2)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f.mean(dim=(2, 3)))  # (B, 4)


def test_score_graph_sums_class_probabilities() -> None:
    tags = [PhotoTag(f"c{i}", f"n{i}", (i,)) for i in range(4)]
    tags += [PhotoTag("ab", "n10", (0, 1)), PhotoTag("all", "n11", (0, 1, 2, 3))]
    m = membership_matrix(tags, 4)
    assert m.shape == (4, 2)
    model = PhotoTagModel(_TinyNet(), m, photo_preprocessing(8)).eval()
    x = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    with torch.no_grad():
        out = model(x).numpy()
        p = model.class_probabilities(model.features(x)).numpy()
    assert out.shape == (3, 6)
    np.testing.assert_allclose(out[:, :4], p, atol=1e-6)
    np.testing.assert_allclose(out[:, 4], p[:, 0] + p[:, 1], atol=1e-6)
    np.testing.assert_allclose(out[:, 5], 1.0, atol=1e-5)
    assert out.max() <= 1.0


def test_threshold_policy() -> None:
    policy = ThresholdPolicy(base=0.3, chance_factor=2.0, ceiling=0.8)
    assert coverage_thresholds([1, 100, 398, 1000], 1000, policy) == [0.3, 0.3, 0.796, 0.8]
    with pytest.raises(ValueError, match="base"):
        ThresholdPolicy(base=0.9, ceiling=0.8)
