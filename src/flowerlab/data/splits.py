"""Which photo goes to which split and shard: a pure function of each photo's content and the seed.

A photo goes to validation when u < validation_fraction, where
u = int(sha256(f"{seed}:{photo_sha256}")[:16], 16) / 2**64: its side depends only on its own
content and the seed, so adding or removing photos never moves any other photo, and the split
is stratified by class in expectation. One guard for tiny classes: a class that got no
validation photo sends its lowest-u photo to validation, and a class that got no training photo
sends its highest-u photo to training (the photos nearest the threshold). A class needs at
least two kept photos; fewer stops the run with an error naming it.

validation shards = max(1, round(shards * fraction)), training shards = the rest (16 and 0.19
give the course's 13 + 3), never more shards than records. Each split's records are put in a
seeded order (by sha256(f"{seed}:order:{photo_sha256}"), also stable under additions) and dealt
out as evenly as possible: the first `records % shards` shards get one more.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flowerlab.errors import DataError

MIN_KEPT_PER_CLASS = 2  # one photo for each split

SPLITS = ("train", "validation")
SHARD_SUFFIX = ".tfrec"
SPLIT_RULE = (
    "validation iff int(sha256(f'{seed}:{photo_sha256}')[:16], 16) / 2**64 < validation_fraction; "
    "a class with no validation (training) photo moves its lowest-u (highest-u) photo over"
)


@dataclass(frozen=True)
class Photo:
    """A kept photo of the inventory, placed in a split."""

    path: str
    class_name: str
    class_index: int
    sha256: str
    split: str = ""


def unit_hash(seed: int, *parts: str) -> float:
    """A uniform number in [0, 1) from sha256 of "seed:part:...": stable across machines."""
    digest = hashlib.sha256(":".join([str(seed), *parts]).encode("ascii")).hexdigest()
    return int(digest[:16], 16) / 2**64


def split_value(seed: int, photo_sha256: str) -> float:
    """u of the split rule: the photo is in validation iff u < validation_fraction."""
    return unit_hash(seed, photo_sha256)


def assign_splits(photos: list[Photo], validation_fraction: float, seed: int) -> list[Photo]:
    """Each photo with its split (module docstring: rule and tiny-class guard)."""
    by_class: dict[str, list[Photo]] = {}
    for photo in photos:
        by_class.setdefault(photo.class_name, []).append(photo)
    placed: list[Photo] = []
    for class_name, members in by_class.items():
        if len(members) < MIN_KEPT_PER_CLASS:
            raise DataError(f"class {class_name!r} has {len(members)} photo(s); at least {MIN_KEPT_PER_CLASS} are needed")
        ranked = sorted(members, key=lambda p: (split_value(seed, p.sha256), p.path))
        flags = [split_value(seed, p.sha256) < validation_fraction for p in ranked]
        if not any(flags):
            flags[0] = True  # lowest u goes to validation
        if all(flags):
            flags[-1] = False  # highest u goes to training
        placed += [Photo(p.path, p.class_name, p.class_index, p.sha256, "validation" if v else "train")
                   for p, v in zip(ranked, flags, strict=True)]
    return sorted(placed, key=lambda p: p.path)


def shard_split_counts(shards: int, validation_fraction: float) -> dict[str, int]:
    """Number of shard files per split: validation max(1, round(shards*fraction)), train the rest (>= 1)."""
    validation = min(shards - 1, max(1, round(shards * validation_fraction)))
    return {"train": shards - validation, "validation": validation}


def shard_sizes(records: int, shards: int) -> list[int]:
    """`records` dealt into at most `shards` non-empty shards as evenly as possible."""
    shards = max(1, min(shards, records))
    base, extra = divmod(records, shards)
    return [base + (1 if index < extra else 0) for index in range(shards)]


@dataclass(frozen=True)
class Shard:
    split: str
    index: int
    photos: tuple[Photo, ...]

    @property
    def file(self) -> str:
        return f"{self.split}-{self.index:02d}-{len(self.photos)}{SHARD_SUFFIX}"


def plan_shards(photos: list[Photo], shards: int, validation_fraction: float, seed: int) -> list[Shard]:
    """The shards of both splits, train first, each holding its photos in write order."""
    plan: list[Shard] = []
    for split, count in shard_split_counts(shards, validation_fraction).items():
        members = sorted((p for p in photos if p.split == split), key=lambda p: (unit_hash(seed, "order", p.sha256), p.path))
        start = 0
        for index, size in enumerate(shard_sizes(len(members), count)):
            plan.append(Shard(split, index, tuple(members[start:start + size])))
            start += size
    return plan

