"""MobileNetV2 transfer learning: `mobilenet_v2` (frozen, course notebook 04) and
`mobilenet_v2_finetune` (the same backbone, unfrozen).

`mobilenet_v2`: [0, 1] -> [-1, 1] -> MobileNetV2(include_top=False, frozen) -> Flatten ->
Dense(num_classes, softmax). At 192 px with 5 classes: 2,488,389 parameters, 230,405 trainable
(the head: 6·6·1280·5 + 5); the backbone is 2,257,984. The backbone is called with training=False as in the course; in
Keras 3 its being frozen is what keeps its batch norms in inference mode (see below).

`mobilenet_v2_finetune`: every backbone weight trainable except the BatchNormalization layers,
which are frozen (trainable=False) and so run in inference mode, normalising with the ImageNet
moving statistics and never updating them. keras.io's transfer-learning guide keeps batch norms
in inference mode when fine-tuning: the statistics of small flower batches (32 per replica
here) differ from ImageNet's, and letting them overwrite the moving statistics while the head
is still random wrecks the pretrained features the fine-tuning starts from. The guide does it
by calling the backbone with training=False, but in Keras 3 a functional model's outer
`training=True` (what `fit` passes) overrides that nested argument (keras-team/keras#20285);
a frozen BatchNormalization layer is in inference mode whatever `training` says, so freezing
the layers is what actually holds (keras.io's EfficientNet fine-tuning example does the same).
Their gamma/beta stay fixed too: 34,112 of 2.2 M weights, a negligible loss of capacity.
The head is GlobalAveragePooling -> Dense (as the course's fine-tuned Xception) rather than
Flatten: 6,405 head parameters instead of 230,405, and the count does not depend on the image
size. 2,264,389 parameters with 5 classes, 2,196,165 trainable (all but the 17,056 batch-norm
channels' gamma, beta, moving mean and moving variance).
"""

from __future__ import annotations

import keras

from flowerlab.models.backbone import load_backbone, unit_to_symmetric_range
from flowerlab.models.common import image_input, softmax_classifier


def _backbone(arch: str, image_size: int, weights: str) -> keras.Model:
    return load_backbone(
        keras.applications.MobileNetV2, arch=arch, image_size=image_size, weights=weights
    )


def freeze_batch_norms(model: keras.Model) -> None:
    """Batch norms in inference mode for good, whatever `training` a caller passes."""
    for layer in model.layers:  # keras.applications backbones are flat
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def build_frozen(*, num_classes: int, image_size: int, weights: str = "imagenet") -> keras.Model:
    backbone = _backbone("mobilenet_v2", image_size, weights)
    backbone.trainable = False
    inputs = image_input(image_size)
    x = unit_to_symmetric_range()(inputs)
    x = backbone(x, training=False)
    x = keras.layers.Flatten()(x)
    outputs = softmax_classifier(num_classes)(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def build_finetune(*, num_classes: int, image_size: int, weights: str = "imagenet") -> keras.Model:
    backbone = _backbone("mobilenet_v2_finetune", image_size, weights)
    backbone.trainable = True
    freeze_batch_norms(backbone)
    inputs = image_input(image_size)
    x = unit_to_symmetric_range()(inputs)
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = softmax_classifier(num_classes)(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2_finetune")
