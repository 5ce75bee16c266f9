"""What a running server tells its operators: Prometheus metrics, stage timings, learner lag."""
