"""`gpunode diag`: does each GPU compute correctly, hold its memory and sustain load.

Levels and phases in run.py; the GPU work behind the backend seam (backend.py, backend_torch.py);
verdicts from results and telemetry in verdicts.py; the document in results.py.
"""
