"""deploybench: deployment-centric LLM benchmarking (latency, memory, energy, APE)."""

# Bump when a change to the library alters measured figures: the workflow puts it in every
# measure job's params, so bumping it reruns every cell and nothing else does.
HARNESS_VERSION = "2"  # 2: default attention, warm-up before each measured shape, calibrations, profile
