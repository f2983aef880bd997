"""Tools for developers of the harness (not shipped to remote hosts): the QEMU builds the Nox
matrix runs on, the benchmark, and the Invoke front of tasks.py."""
