"""Statistics of a built multilabel data set and its Markdown dataset card."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FREQUENCY_BUCKETS = (1, 10, 25, 50, 100, 250, 500, 1000)


def label_statistics(
    splits: Mapping[str, Sequence[Sequence[str]]], labels: Sequence[str]
) -> dict[str, Any]:
    """Images, labels, cardinality and frequency summaries, overall and per split."""
    all_rows = [row for rows in splits.values() for row in rows]
    freq = Counter(label for row in all_rows for label in row)
    card = np.array([len(row) for row in all_rows], dtype=np.float64)
    counts = np.array([freq[label] for label in labels], dtype=np.float64)
    per_split = {}
    for name, rows in splits.items():
        split_freq = Counter(label for row in rows for label in row)
        sizes = [len(row) for row in rows]
        per_split[name] = {
            "images": len(rows),
            "labels_present": sum(1 for label in labels if split_freq[label] > 0),
            "cardinality_mean": round(float(np.mean(sizes)), 3) if sizes else 0.0,
            "missing_labels": [label for label in labels if split_freq[label] == 0],
        }
    buckets = {f">={b}": int(np.sum(counts >= b)) for b in FREQUENCY_BUCKETS if counts.size}
    hist = Counter(int(c) for c in card)
    return {
        "images": len(all_rows),
        "labels": len(labels),
        "cardinality": {
            "mean": round(float(card.mean()), 3) if card.size else 0.0,
            "median": float(np.median(card)) if card.size else 0.0,
            "min": int(card.min()) if card.size else 0,
            "max": int(card.max()) if card.size else 0,
            "histogram": {str(k): hist[k] for k in sorted(hist)},
        },
        "label_frequency": {
            "min": int(counts.min()) if counts.size else 0,
            "median": float(np.median(counts)) if counts.size else 0.0,
            "mean": round(float(counts.mean()), 2) if counts.size else 0.0,
            "max": int(counts.max()) if counts.size else 0,
            "labels_with_at_least": buckets,
            "gini": round(_gini(counts), 3),
        },
        "label_counts": {label: freq[label] for label in labels},
        "splits": per_split,
    }


def _gini(values: np.ndarray) -> float:
    if values.size == 0 or values.sum() == 0:
        return 0.0
    v = np.sort(values)
    n = v.size
    return float((2 * np.arange(1, n + 1) - n - 1).dot(v) / (n * v.sum()))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_card(
    *,
    title: str,
    summary: str,
    stats: Mapping[str, Any],
    rules: Sequence[str],
    build: Mapping[str, Any],
    command: str,
    extra_sections: Sequence[tuple[str, str]] = (),
    top: int = 40,
) -> str:
    """A Markdown dataset card: summary, numbers, frequency table, rules, build record."""
    parts = [
        f"# {title}",
        "",
        summary.strip(),
        "",
        "Files: `train.jsonl`, `val.jsonl`, `test.jsonl` (one JSON object per line, "
        '`{"image": "relative/path", "labels": [...]}`, paths relative to the JSONL file), '
        "`labels.txt` (label order), `stats.json` (everything below, machine-readable).",
        "",
        *_statistics_section(stats, top),
        "## Rules applied",
        "",
        *[f"- {rule}" for rule in rules],
        "",
    ]
    for heading, body in extra_sections:
        parts += [f"## {heading}", "", body.strip(), ""]
    parts += [
        "## Build",
        "",
        "```bash",
        command,
        "```",
        "",
        "```json",
        json.dumps(build, indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(parts)


def _statistics_section(stats: Mapping[str, Any], top: int) -> list[str]:
    card = stats["cardinality"]
    freq = stats["label_frequency"]
    counts = sorted(stats["label_counts"].items(), key=lambda kv: (-kv[1], kv[0]))
    split_rows = [
        (name, s["images"], s["labels_present"], s["cardinality_mean"], len(s["missing_labels"]))
        for name, s in stats["splits"].items()
    ]
    overall = [
        ("images", stats["images"]),
        ("labels", stats["labels"]),
        ("labels per image: mean", card["mean"]),
        ("labels per image: median", card["median"]),
        ("labels per image: min / max", f"{card['min']} / {card['max']}"),
        (
            "images per label: min / median / mean / max",
            f"{freq['min']} / {freq['median']:g} / {freq['mean']} / {freq['max']}",
        ),
        ("label frequency Gini coefficient", freq["gini"]),
    ]
    return [
        "## Statistics",
        "",
        _table(["", "value"], overall),
        "",
        _table(
            ["split", "images", "labels present", "labels per image", "labels absent"],
            split_rows,
        ),
        "",
        "Labels with at least N images: "
        + ", ".join(f"{k[2:]}: {v}" for k, v in freq["labels_with_at_least"].items())
        + ".",
        "",
        "Labels per image (histogram): "
        + ", ".join(f"{k}: {v}" for k, v in card["histogram"].items())
        + ".",
        "",
        f"### Most frequent labels (top {min(top, len(counts))})",
        "",
        ", ".join(f"{label} ({n})" for label, n in counts[:top]),
        "",
        f"### Least frequent labels (bottom {min(top // 2, len(counts))})",
        "",
        ", ".join(f"{label} ({n})" for label, n in counts[-(top // 2) :]),
        "",
    ]
