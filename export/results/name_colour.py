"""How often a product's display name names another colour than its baseColour label, and what the model says then.

Run from the repository root (about a minute on 2 cores):

    .venv/bin/python export/results/name_colour.py --work runs/blr-lite0 \
        --model models/product-classifier/4/model.int8.onnx

The catalogue's `productDisplayName` often carries a colour ("Puma Men Navy Blue Polo T-shirt"). Where it
names exactly one of the catalogue's colour classes, the name and the `baseColour` label were written for
the same product, so their disagreement rate is a lower bound on how inconsistently colour is labelled
(a name can also be wrong, or name the print rather than the base). The names are not model inputs: the
service sees only photos. On the test split the script then splits the model's colour top-1 by whether
the name agrees with the label, and counts how often, where they disagree, the model sides with the name.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from catalogue_args import catalogue_parser, catalogue_splits

from export.card import markdown_table
from export.data import IGNORE, find_csv, read_labels
from export.pipeline import file_probabilities

COLUMN, NAME = "baseColour", "productDisplayName"


def named_colours(name: str, pattern: re.Pattern[str], canonical: dict[str, str]) -> set[str]:
    """The colour classes a display name mentions (longest first, so "Navy Blue" is not also "Blue")."""
    return {canonical[m.group(1).lower()] for m in pattern.finditer(name)}


def colour_pattern(colours: list[str]) -> tuple[re.Pattern[str], dict[str, str]]:
    ordered = sorted(colours, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(c) for c in ordered) + r")\b", re.IGNORECASE)
    return pattern, {c.lower(): c for c in colours}


def main() -> None:
    parser = catalogue_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="an ONNX file with a baseColour output")
    args = parser.parse_args()
    config, splits = catalogue_splits(args)
    rows, _ = read_labels(find_csv(args.data), config.data.id_column, [COLUMN, NAME])
    pattern, canonical = colour_pattern(sorted({r[COLUMN] for r in rows.values() if r[COLUMN]}))
    named: dict[str, str | None] = {}  # the one colour class each name names, or None for none or several
    for photo, row in rows.items():
        colours = named_colours(row[NAME], pattern, canonical)
        named[photo] = colours.pop() if len(colours) == 1 else None
    one = [(r[COLUMN], named[photo]) for photo, r in rows.items() if r[COLUMN] and named[photo] is not None]
    agree = sum(label == said for label, said in one)
    print(f"{len(rows)} catalogue rows; {len(one)} ({len(one) / len(rows):.1%}) have a name naming one colour class;")
    print(f"the name agrees with {COLUMN} on {agree} of them ({agree / len(one):.1%}).\n")
    pairs = Counter((label, said) for label, said in one if label != said)
    print("Most frequent disagreements (label, the name's colour):\n")
    top = [[a, b, str(n)] for (a, b), n in pairs.most_common(15)]
    print("\n".join(markdown_table(["label", "name says", "rows"], top)))

    test = splits.test
    classes = test.classes[COLUMN]
    index = {c: i for i, c in enumerate(classes)}
    predicted = file_probabilities(args.model, {COLUMN: COLUMN}, test.pixels)[COLUMN].argmax(1)
    labels = test.labels[COLUMN]
    groups: dict[str, list[int]] = {
        "all labelled": [],
        "name agrees": [],
        "name names another colour": [],
        "name names none or several": [],
    }
    sides_with_name = 0
    for i, photo in enumerate(test.ids):
        if labels[i] == IGNORE:
            continue
        groups["all labelled"].append(i)
        colour = index.get(named[photo] or "")
        if colour is None:
            groups["name names none or several"].append(i)
        elif colour == labels[i]:
            groups["name agrees"].append(i)
        else:
            groups["name names another colour"].append(i)
            sides_with_name += int(predicted[i] == colour)
    print(f"\nTest split ({len(test)} photos), {args.model}:\n")
    table = [
        [group, str(len(members)), f"{(predicted[members] == labels[members]).mean():.3f}" if members else "-"]
        for group, members in groups.items()
    ]
    print("\n".join(markdown_table(["photos", "count", f"{COLUMN} top-1"], table)))
    other = len(groups["name names another colour"])
    if other:
        print(
            f"\nWhere the name names another colour, the model answers the name's colour on {sides_with_name} of "
            f"{other} ({sides_with_name / other:.1%}); those photos are {other / len(groups['all labelled']):.1%} of "
            "the labelled test photos."
        )


if __name__ == "__main__":
    main()
