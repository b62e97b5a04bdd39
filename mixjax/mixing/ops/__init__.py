"""Numerical building blocks shared by the methods: boxes, Beta/permutation sampling, saliency, Sinkhorn, the
PuzzleMix labeling solver, backbone facts and the decoupled mixup loss. No registration happens here.
"""
