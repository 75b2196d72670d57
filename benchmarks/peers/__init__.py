"""The same workloads written for peer durable-execution libraries, run side by side."""
