"""facegen: train, sample, evaluate and serve realistic face generators."""

__version__ = "0.2.0"  # also in pyproject.toml; sample folders record it (facegen.sample.sample_record)
