"""The tree-rollout harness (tree model, samplers, runner, advantages, export).

Empty until the harness issue lands; the package exists so the layout of the design card
(``harness/`` -> ``treegym.harness``) is fixed from the first release.
"""
