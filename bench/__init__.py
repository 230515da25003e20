"""The benchmark (not a test): `python -m bench` or `make bench`; see bench/README.md."""
