"""Training: the shared protocol (``common``), the run around it (``driver``) and one module per framework
(``keras_train``, ``torch_train``) with the same public names."""
