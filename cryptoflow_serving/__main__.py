from cryptoflow_serving.server import main

raise SystemExit(main())
