"""The latency benchmark (bench/latency.py) and its helpers; not part of the installed package."""
