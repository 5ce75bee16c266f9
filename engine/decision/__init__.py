"""The pure decision: evaluate, score through an oracle, arbitrate, explain. No I/O; replayable."""
