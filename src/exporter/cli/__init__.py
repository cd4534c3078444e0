"""The command line: start-up and signal handling (``startup``), the Hydra app (``app``), what it
makes of a composed config (``describe``), the config store, sweeps (``sweep``), and the readers of
finished builds (``card``, ``diff``, ``verify``). Imports nothing on its own: the console script
imports ``startup`` first, before Hydra."""
