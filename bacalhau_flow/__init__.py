"""bacalhau-flow: compute over data, as Prefect flows on a network of compute nodes."""

__version__ = "0.1.0"
