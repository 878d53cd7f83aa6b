"""Adapters that hand treegym's trees to external trainers, one module per trainer.

Each module imports its trainer, so each is importable only where that trainer is installed
(``treegym.integrations.trl`` in treegym's own environment with ``treegym[trl]``;
``treegym.integrations.verl`` and ``treegym.integrations.openrlhf`` in those libraries' own
environments, whose pins conflict with treegym's: see ``scripts/setup_trainers.sh``). This
package imports none of them.
"""
