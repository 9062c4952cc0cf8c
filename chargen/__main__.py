from chargen.cli import main

raise SystemExit(main())
