"""Preloaded by the fork server that loader and sharding workers start from
(:func:`cyclegan.data.catalog.worker_context`), and imported by nothing else.

Importing it makes the fork server ignore SIGTERM, and every worker forked from it starts so; the
workers' initializer (:func:`cyclegan.data.catalog.end_with_owner`) then lets only their owner's SIGTERM
end them.
SLURM, ``timeout`` and most launchers signal a job's whole process group: without this, the fork
server dies of the signal, the trainer then sees its workers as "exited unexpectedly", and a clean
preemption stop (save the state, exit 0) becomes a crash. The workers still end with their
parent: the fork server exits when its parent closes the pipe it watches, and each worker when
its queues close. SIGINT is left alone (the fork server already ignores it; Ctrl-C still stops
the parent at once).
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
