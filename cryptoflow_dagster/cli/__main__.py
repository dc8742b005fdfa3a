import sys

from cryptoflow_dagster.cli import main

sys.exit(main())
