"""pyneuralode's benchmarks: speed, memory, NFE and agreement, measured side by side in one run."""
