"""The inference service: FastAPI + uvicorn around an exported model (see the README)."""
