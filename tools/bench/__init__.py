"""The realtime benchmark: our server against a bare python-socketio baseline, side by side.

Run `python -m tools.bench --help`; `tools.bench.cli.main` is the entry point.
"""
