"""The local web page: live values, history, peaks, costs, export and status (Starlette on uvicorn)."""
