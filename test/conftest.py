# SPDX-License-Identifier: Apache-2.0
"""Shared test set-up: each test process talks DDS on its own random domain (DESIGN §3)."""

import os
import random

os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
