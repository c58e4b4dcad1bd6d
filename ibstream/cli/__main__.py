from ibstream.cli.main import main

raise SystemExit(main())
