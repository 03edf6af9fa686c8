"""The FastAPI service around the engine (see DESIGN.md "The dialler contract")."""

from api.main import create_app

__all__ = ["create_app"]
