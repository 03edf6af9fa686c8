"""The FastAPI service around the engine (see DESIGN.md); built in the service issue."""
