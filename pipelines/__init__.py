"""DVC stage entry points: each reads params.yaml and calls `zsl_bench.stages`; no logic here."""
