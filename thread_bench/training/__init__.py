"""Training: the shared protocol (``common``), the run around it (``driver``) and one trainer per framework
(``keras_trainer``, ``torch_trainer``: twins with the same public names, see ``thread_bench.frameworks``)."""
