"""Processes and signals: the one way a job reaches the process that builds it (``dispatch``), a
process forked for each job of a sweep (``forked_jobs``), the job's side (``child``), the tool's OmegaConf
resolvers (``resolvers``), and the interpreter internals process code relies on (``internals``)."""
