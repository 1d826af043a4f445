"""Hardware baselines: what a benchmark figure should be on given hardware, and the verdicts.

schema.py loads and validates baseline YAML files (baselines/*.yaml, a site directory);
select.py finds them and picks the one for the GPUs in a bench result; compare.py turns a
bench result into PASS/WARN/FAIL per metric; record.py writes a host's own baseline from
repeated bench runs.
"""
