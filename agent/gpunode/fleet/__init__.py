"""Fleets: drive the playbooks in playbooks/ through ansible-runner and aggregate every host's
JSON report into one fleet report (specs: what each playbook needs; validate: inventory and vars
checked before anything runs; runner: the ansible-runner call; progress: live per-host lines;
report: the aggregation, outliers and rendering)."""
