"""`gpunode apply` and `rollback`: change a host to a profile and undo it exactly.

plan.py decides what to write (through gpunode.tune.kinds, the same code the audit judges
with), persist.py adds what makes it survive a reboot, execute.py journals, writes, verifies
and rolls a failed batch back, rollback.py undoes an apply. actions.py holds one class per
action type (knob, file, enable, service, grubby, gpu, mig); files.py is the one write path for
whole files; journal.py/lock.py hold the state (a journal per apply, a lock per root).
"""
