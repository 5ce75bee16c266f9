"""Bandit learning: Vowpal Wabbit models, their state in Redis, the reward stream and the learner."""
