"""habc's data layer: episodes as RLDS (tfds array_record), written without TensorFlow.

Modules: ``schema`` (the one spec and validator), ``writer`` (atomic appends), ``reader``
(episodes -> windows -> batches, mixing), ``stats`` (normalisation), ``text`` (instruction
tokens), ``images`` (storage codec), ``converters`` (teleop formats), ``export`` (TFRecord copy),
``synthetic`` (test data), ``coverage`` (online data against the demonstrations). See
docs/data.md.
"""
