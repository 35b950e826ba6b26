# SPDX-License-Identifier: Apache-2.0
"""xview_testbed: the synthetic world the project is tested and demonstrated on (cities, aerial tiles,
recorded drives, pair data sets), the bag replayer that plays a drive through the real node, and the demo.

Never imported by the vehicle (`xview_loc_ros`) nor by the offline tools (`offline_adapt`).
"""
