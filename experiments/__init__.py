"""The front door: CLI, engines, sweeps and figures."""
