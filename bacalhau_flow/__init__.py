"""bacalhau-flow: compute over data, as Prefect flows on a network of compute nodes.

The Python API (bacalhau_flow/api.py): `run(spec)`, `load(spec)` and the error `JobFailed`,
imported on first use so that `import bacalhau_flow` imports neither Prefect nor the spec.
"""

__version__ = "0.1.0"

__all__ = ["JobFailed", "__version__", "load", "run"]


def __getattr__(name: str):
    if name in ("run", "load", "JobFailed"):  # PEP 562: the API module is imported when first asked for
        from . import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
