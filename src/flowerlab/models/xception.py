"""`xception`: the course's best model, Xception fine-tuned end to end at 331 px (notebook 07).

[0, 1] -> [-1, 1] -> Xception(include_top=False, all layers trainable) -> GlobalAveragePooling
-> Dense(num_classes, softmax, float32): 20,871,725 parameters with 5 classes (20,817,197
trainable). As in the course, the backbone is called in the ordinary way, so its batch norms
train (batch statistics, moving statistics updated): this reproduces the recipe that printed
0.9676 validation accuracy. (mobilenet_v2_finetune, our own addition, keeps its batch norms in
inference mode instead; see that module.)
"""

from __future__ import annotations

import keras

from flowerlab.models.backbone import load_backbone, unit_to_symmetric_range
from flowerlab.models.common import image_input, softmax_classifier


def build(*, num_classes: int, image_size: int, weights: str = "imagenet") -> keras.Model:
    backbone = load_backbone(
        keras.applications.Xception, arch="xception", image_size=image_size, weights=weights
    )
    backbone.trainable = True
    inputs = image_input(image_size)
    x = unit_to_symmetric_range()(inputs)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = softmax_classifier(num_classes)(x)
    return keras.Model(inputs, outputs, name="xception")
