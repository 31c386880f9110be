from busd.cli import main

raise SystemExit(main())
