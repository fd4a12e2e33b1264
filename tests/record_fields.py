"""Reading what the TFRecords stage wrote, field by field, for tests: TensorFlow's own reader (which
checks every record's CRC) and protobuf parser, independent of the project's writer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any


def read_records(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The serialized records of one shard, read by `tf.data.TFRecordDataset`."""
    import tensorflow as tf

    yield from tf.data.TFRecordDataset(os.fspath(path)).as_numpy_iterator()


def decode_example(serialized: bytes) -> dict[str, Any]:
    """A record's fields as Python values : the inverse of `serialize_example`."""
    import tensorflow as tf

    feature = tf.train.Example.FromString(serialized).features.feature
    return {
        "image": feature["image"].bytes_list.value[0],
        "class": feature["class"].int64_list.value[0],
        "label": feature["label"].bytes_list.value[0].decode("utf-8"),
        "size": list(feature["size"].int64_list.value),
        "one_hot_class": list(feature["one_hot_class"].float_list.value),
        "id": feature["id"].bytes_list.value[0].decode("ascii"),
        "source": feature["source"].bytes_list.value[0].decode("utf-8", "surrogateescape"),
    }

