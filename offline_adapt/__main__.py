from offline_adapt.cli import main

raise SystemExit(main())
