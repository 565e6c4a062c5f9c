"""Evaluation of samples and models, beside the metrics they use (:mod:`bench.metrics`): scoring any
samples against a dataset in the classifier's feature space (``scoring``), the NLL bound in bits/dim
(``likelihood``) and a network's FLOPs, speed and hardware efficiency (``throughput``). A new metric goes in
``bench/metrics/`` and is wired into the scores here."""
