"""Stages of a run: calibrate, train, evaluate, throughput, flops."""
