"""Policies (SGLang client, local transformers, scripted) behind one async protocol.

Empty until the policies issue lands; the package exists so the layout of the design card
(``policies/`` -> ``treegym.policies``) is fixed from the first release.
"""
