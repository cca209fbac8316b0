"""The label convention shared by every dataset module: train ids ``0..num_classes-1`` and ``IGNORE_INDEX``.

A pixel labelled ``IGNORE_INDEX`` is unannotated: datasets map void classes to it, transforms pad
labels with it, label noise never changes it, and it has no influence on a loss or a metric.
"""

IGNORE_INDEX = 255
