"""The in-process engine: a Flower ``Grid`` that calls the ClientApp directly (grid.py), on
threads or on worker processes (pool.py), with idle nodes' state waiting on disk (idle_state.py)."""
