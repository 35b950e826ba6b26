# SPDX-License-Identifier: Apache-2.0
from offline_adapt.cli import main

raise SystemExit(main())
