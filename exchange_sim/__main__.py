from exchange_sim.server import main

raise SystemExit(main())
