"""Watching the served model: the prediction record, the reference profile, drift tests.

Torch-free (NumPy; SciPy for the drift report), so the service and a laptop reading a day of logs
need no training stack.
"""
