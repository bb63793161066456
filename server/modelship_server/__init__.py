"""modelship inference server: FastAPI + uvicorn + torch, probe-ready, OIP v2 compatible."""
