"""Class colours shared by the figures and the HTML viewer: a colour-blind-safe 10-colour
palette in label order and, beyond 10 classes, colours by group (CIFAR-100's 20 superclasses, or
blocks of consecutive labels), so 100 classes never become 100 shades of one colormap.

What this is not: no drawing (``alviz.plots``), no method styles, no I/O.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["PALETTE", "PALETTE_DARK", "CIFAR100_SUPERCLASS", "CIFAR100_SUPERCLASS_NAMES", "class_groups",
           "class_colors"]

#: seaborn "colorblind" (10 colours), in class-label order.
PALETTE = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc",
           "#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9"]

#: 10 further colour-blind-distinguishable darker colours: with PALETTE, 20 group colours.
PALETTE_DARK = ["#4e3d8c", "#8c2d04", "#005a32", "#7a0177", "#084594",
                "#b15928", "#4d4d4d", "#1b7837", "#c51b7d", "#35978f"]

#: CIFAR-100's superclass of each fine class (fine labels in torchvision's alphabetical order).
CIFAR100_SUPERCLASS = [4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7,
                       6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17,
                       18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10,
                       0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0,
                       17, 8, 14, 13]
CIFAR100_SUPERCLASS_NAMES = [
    "aquatic mammals", "fish", "flowers", "food containers", "fruit and vegetables",
    "household electrical devices", "household furniture", "insects", "large carnivores",
    "large man-made outdoor things", "large natural outdoor scenes", "large omnivores and herbivores",
    "medium-sized mammals", "non-insect invertebrates", "people", "reptiles", "small mammals", "trees",
    "vehicles 1", "vehicles 2"]

def class_groups(class_names: Sequence[str]):
    """Groups that colour the classes when there are more than 10: ``(group names, group of
    each class)``; CIFAR-100's 20 superclasses when the names are CIFAR-100's, else blocks of
    consecutive labels (at most 20 groups). None for 10 classes or fewer."""
    names = [str(c) for c in class_names]
    n = len(names)
    if n <= len(PALETTE):
        return None
    if n == 100 and names[0] == "apple" and names[-1] == "worm":
        return list(CIFAR100_SUPERCLASS_NAMES), list(CIFAR100_SUPERCLASS)
    size = math.ceil(n / 20)
    of = [c // size for c in range(n)]
    ends = [(g * size, min(n, (g + 1) * size) - 1) for g in range(max(of) + 1)]
    group_names = [names[a] if a == b else f"{names[a]}\u2013{names[b]}" for a, b in ends]
    return group_names, of


def class_colors(n: int, groups: Sequence[int] | None = None) -> list[str]:
    """``n`` colours for class labels 0..n-1: the colour-blind-safe palette for n <= 10; beyond
    that the colour of each class's group (``groups[c]``, e.g. from ``class_groups``; default:
    blocks of consecutive labels), from 20 distinguishable colours."""
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be a non-negative number of classes; got {n}.")
    if n <= len(PALETTE) and groups is None:
        return PALETTE[:n]
    if groups is None:
        groups = class_groups([str(c) for c in range(n)])[1]
    colours = PALETTE + PALETTE_DARK
    return [colours[int(groups[c]) % len(colours)] for c in range(n)]
