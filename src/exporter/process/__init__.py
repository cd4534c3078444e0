"""Processes and signals: the standby process a single run builds in (``standby``), a process forked
for each job of a sweep (``forked_jobs``), the job's side of both (``child``), the tool's OmegaConf
resolvers (``resolvers``), and the interpreter internals process code relies on (``internals``)."""
