"""deploybench: deployment-centric LLM benchmarking (latency, memory, energy, APE)."""

# Bump when a change to the library alters measured figures: the workflow puts it in every
# measure job's params, so bumping it reruns every cell and nothing else does.
# 2: default attention, warm-up before each measured shape, calibrations, profile
# 3: TTFT and decode runs repeat until the median's 95% interval is narrow (or a time/run cap);
#    intervals of the median; tail percentiles only where n supports them; the batch axis, random
#    weights seeded (no row was measured with 3 before the batch axis landed)
HARNESS_VERSION = "3"
