# SPDX-License-Identifier: Apache-2.0
"""offline_adapt: recorded drives -> pair data sets -> supervised training, self-distillation
adaptation to a new area without ground truth, evaluation, and export (workstation side)."""
