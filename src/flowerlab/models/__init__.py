"""The study's architectures: one small `build(...) -> keras.Model` module per architecture.

`registry` is the one list of them (no Keras import); `build` makes a model from it. The package
itself imports nothing, so reading the registry never starts TensorFlow.
"""
