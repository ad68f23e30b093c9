"""alviz: train Associated Learning (AL) and matched backprop models and study their hidden layers."""

__version__ = "0.1.0"
