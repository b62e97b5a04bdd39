"""The mixing machinery every method plugs into: registry, step protocol, plan, per-device execution, MixResult.

Nothing here knows a particular method; the methods live in ``mixing/input`` (functions of the batch alone) and
``mixing/model_aware`` (methods that need the network), and the shared numerical pieces in ``mixing/ops``.
"""
