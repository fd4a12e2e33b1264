"""A study's replicates: the runs of one architecture that differ only in their random seeds.

A replicate is one training seed (weights, shuffling, augmentation), and, when the config asks
for repeated splits (`data.split_seeds`), one train/validation split of the photos. Its name is
the folder its files go in, `results/models/{arch}/{name}/` and `results/evaluation/{arch}/{name}/`:
`seed-1`, or `split-7-seed-1` when the split varies too. The workflow, the collect stage and the
report all name replicates through this module, so the three always agree.

No TensorFlow, no pandas: the workflow imports this when it parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flowerlab.errors import DataError

NAME_PATTERN = r"(split-\d+-)?seed-\d+"  # a Snakemake wildcard constraint, and the parser's pattern
_NAME = re.compile(r"(?:split-(?P<split>\d+)-)?seed-(?P<seed>\d+)")


@dataclass(frozen=True, order=True)
class Replicate:
    """One replicate: its training seed, and its split seed when splits are repeated (else None:
    the study's one split, `data.seed`)."""

    seed: int
    split: int | None = None

    @property
    def name(self) -> str:
        return f"seed-{self.seed}" if self.split is None else f"{split_name(self.split)}-seed-{self.seed}"

    @property
    def label(self) -> str:
        """As people read it: `seed 1`, `split 7, seed 1`."""
        return f"seed {self.seed}" if self.split is None else f"split {self.split}, seed {self.seed}"


def split_name(split: int | None) -> str:
    """A repeated split's name, `split-7` (its TFRecords' folder, its TFRecords job's wildcards);
    empty for the study's one split."""
    return "" if split is None else f"split-{split}"


def parse(name: str) -> Replicate:
    """`seed-1` -> Replicate(1), `split-7-seed-1` -> Replicate(1, 7); anything else is a DataError."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise DataError(f"{name!r} is not a replicate name (seed-N or split-M-seed-N)")
    split = match.group("split")
    return Replicate(int(match.group("seed")), None if split is None else int(split))


def replicates(seeds: list[int], split_seeds: list[int] | None = None) -> list[Replicate]:
    """Every (split, seed) combination, splits outermost, in the order the config lists them."""
    if not split_seeds:
        return [Replicate(seed) for seed in seeds]
    return [Replicate(seed, split) for split in split_seeds for seed in seeds]
