"""modelship inference server: FastAPI + uvicorn + torch, probe-ready, OIP v2 compatible.

Public entry points: :func:`create_app` (the ASGI app), :class:`Settings` and
:func:`load_settings` (env vars + CLI flags), :func:`main` (``modelship-server``).
"""

__version__ = "0.1.0"

__all__ = ["Settings", "__version__", "create_app", "load_settings", "main"]


def __getattr__(name: str) -> object:
    # Lazy: `import modelship_server` stays cheap (no torch) until something is used.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("Settings", "load_settings"):
        from . import settings

        return getattr(settings, name)
    if name == "main":
        from .cli import main

        return main
    raise AttributeError(name)
