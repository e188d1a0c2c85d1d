"""facegen: train, sample, evaluate and serve realistic face generators."""

__version__ = "0.1.0"
