"""Deployment-only server code: the SuperLink behind a gate on its Control and Runtime APIs
(control_gate.py); ``fedkd deploy`` (experiments/deploy.py) prints and runs the commands."""
